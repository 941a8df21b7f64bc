"""The viewer's access token: no token, nothing of a case; the right token, the page renders."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from medseg.viewer.launch import ViewerConfig
from medseg.viewer.ui.access import TOKEN_ENV, token_matches

APP = Path(__file__).resolve().parents[2] / "apps" / "viewer.py"
TOKEN = "s3cret-Token_for-tests"


def _run(case_root: Path, constant_checkpoint: Path, token: str | None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["medseg_config"] = ViewerConfig(
        sample_root=case_root, model=constant_checkpoint, device="cpu"
    )
    if token is not None:
        at.query_params["token"] = token
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _shows_nothing_of_a_case(at: AppTest) -> None:
    assert len(at.get("image")) == 0
    assert len(at.sidebar.selectbox) == 0
    assert len(at.sidebar.file_uploader) == 0
    assert len(at.get("download_button")) == 0
    assert any("Access token required" in e.value for e in at.error)


@pytest.mark.parametrize("given", [None, "", "wrong", TOKEN + "x", TOKEN[:-1]])
def test_without_the_token_the_page_shows_only_the_message(
    given, case_root, constant_checkpoint, monkeypatch
):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    _shows_nothing_of_a_case(_run(case_root, constant_checkpoint, given))


def test_with_the_token_the_page_renders_and_stays_unlocked(
    case_root, constant_checkpoint, monkeypatch
):
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    at = _run(case_root, constant_checkpoint, TOKEN)
    assert len(at.get("image")) == 1
    assert not at.error
    del at.query_params["token"]  # the session stays unlocked on later reruns
    at.run()
    assert len(at.get("image")) == 1


def test_no_configured_token_means_no_gate(case_root, constant_checkpoint, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    at = _run(case_root, constant_checkpoint, None)
    assert len(at.get("image")) == 1


def test_token_comparison():
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(None, TOKEN)
    assert not token_matches("", TOKEN)
    assert not token_matches(TOKEN.upper(), TOKEN)
