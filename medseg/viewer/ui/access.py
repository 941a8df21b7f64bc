"""Access token for the viewer page (required on non-local binds; see ``docs/security.md``).

``medseg view`` hands the token to the Streamlit server in the environment variable
:data:`TOKEN_ENV` (never on its command line, which other local users can read). The page
accepts it from the URL (``?token=...``, as printed at launch) or from a cookie named
:data:`TOKEN_COOKIE` (e.g. set by a reverse proxy), compared in constant time. Once a browser
session has shown the right token it stays unlocked for that session.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os

import streamlit as st

from medseg.viewer.ui import keys

logger = logging.getLogger(__name__)

TOKEN_ENV = "MEDSEG_VIEW_TOKEN"
TOKEN_PARAM = "token"
TOKEN_COOKIE = "medseg_token"


def token_matches(given: str | None, expected: str) -> bool:
    """Constant-time comparison; ``None`` or an empty string never matches."""
    if not isinstance(given, str) or not given:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _given_tokens() -> list[str]:
    found = [st.query_params.get(TOKEN_PARAM)]
    with contextlib.suppress(Exception):  # no browser context (AppTest): no cookies to read
        found.append(st.context.cookies.get(TOKEN_COOKIE))
    return [t for t in found if isinstance(t, str) and t]


def require_access() -> bool:
    """True when this page may render; otherwise shows only "access token required".

    Call first thing in the page's main flow: ``if not require_access(): return``. Without a
    configured token (a loopback bind without ``--token``) every visitor may render.
    """
    expected = os.environ.get(TOKEN_ENV, "")
    if not expected or st.session_state.get(keys.ACCESS_OK):
        return True
    if any(token_matches(given, expected) for given in _given_tokens()):
        st.session_state[keys.ACCESS_OK] = True
        return True
    st.error(
        "Access token required. Open the address printed by `medseg view` (it ends in "
        "`?token=...`), or ask whoever started the viewer for the token."
    )
    return False
