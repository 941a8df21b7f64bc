"""A PACS over DICOMweb: QIDO-RS search, WADO-RS retrieval and STOW-RS storage
(``dicomweb-client``), with authentication, verified TLS, timeouts, retries with backoff and
one clear :class:`~medseg.errors.DicomwebError` per failure.

medseg names a server ``dicomweb+https://HOST/dicom-web`` (:func:`server_url` drops the
``dicomweb+``). Credentials never come from the command line or the URL:
:func:`credentials_from` reads ``MEDSEG_DICOMWEB_TOKEN`` (bearer), else
``MEDSEG_DICOMWEB_USER`` / ``MEDSEG_DICOMWEB_PASSWORD`` (basic), else the ``~/.netrc`` entry
of the host. Neither credentials nor patient identifiers are logged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import netrc
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from medseg.errors import ConfigError, DicomwebError, first_line
from medseg.io.dicom_series import NON_IMAGE_MODALITIES
from medseg.registry import did_you_mean

logger = logging.getLogger(__name__)

PREFIX = "dicomweb+"
ENV_TOKEN = "MEDSEG_DICOMWEB_TOKEN"
ENV_USER = "MEDSEG_DICOMWEB_USER"
ENV_PASSWORD = "MEDSEG_DICOMWEB_PASSWORD"
AUTH_HINT = (
    f"set {ENV_USER} and {ENV_PASSWORD} (basic) or {ENV_TOKEN} (bearer) in the environment, "
    "or add a ~/.netrc entry for the host"
)
# a DICOM UID: digits and dots, at most 64 characters; it names output files, so nothing else
UID = re.compile(r"[0-9]+(\.[0-9]+)*")
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
# QIDO-RS paging parameters: medseg sets them itself (--limit, --all)
RESERVED_QUERY_KEYS = {"limit", "offset", "includefield", "fuzzymatching"}
#: a query may match at most this many studies unless --limit or --all says more
DEFAULT_QUERY_LIMIT = 10

T = TypeVar("T")


def is_dicomweb_url(text: object) -> bool:
    """Whether ``text`` names a DICOMweb server (``dicomweb+http(s)://...``)."""
    return str(text).startswith((PREFIX + "http://", PREFIX + "https://"))


def server_url(text: str) -> str:
    """The server's base URL of ``dicomweb+https://HOST/PATH`` (``https://HOST/PATH``);
    refused: another scheme, no host, credentials or a query in the URL."""
    url = text.removeprefix(PREFIX).rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DicomwebError(
            f"{text}: not a DICOMweb URL; expected dicomweb+https://HOST/PATH (the server's "
            "DICOMweb root, e.g. dicomweb+https://pacs.example.org/dicom-web)"
        )
    if parts.username or parts.password:
        raise DicomwebError(
            f"{PREFIX}{parts.scheme}://{parts.hostname}: the URL carries credentials, which "
            f"would end up in shell history and logs; remove them from the URL and {AUTH_HINT}"
        )
    if parts.query or parts.fragment:
        raise DicomwebError(
            f"{text}: the URL has a query; give the DICOMweb root only and the search with "
            '--query "ModalitiesInStudy=MR&StudyDate=20260101-"'
        )
    return url


def check_uid(value: str, what: str) -> str:
    """``value`` if it is a DICOM UID (digits and dots, at most 64 characters)."""
    text = str(value).strip()
    if len(text) > 64 or not UID.fullmatch(text):
        raise DicomwebError(
            f"{what} {text[:80]!r} is not a DICOM UID; expected digits and dots (at most 64 "
            "characters), e.g. 1.2.840.113619.2.55.3"
        )
    return text


@dataclasses.dataclass(frozen=True)
class Credentials:
    """``kind`` ``"basic"`` (``user`` + ``secret``) or ``"bearer"`` (``secret`` is the token);
    ``source`` says where they came from, for messages. The secret is never shown."""

    kind: str
    secret: str = dataclasses.field(repr=False)
    user: str = ""
    source: str = ""


def credentials_from(
    environ: Mapping[str, str], url: str, netrc_path: str | Path | None = None
) -> Credentials | None:
    """The credentials for ``url``: ``MEDSEG_DICOMWEB_TOKEN``, else ``MEDSEG_DICOMWEB_USER``
    with ``MEDSEG_DICOMWEB_PASSWORD``, else the ``~/.netrc`` (``netrc_path``) machine entry
    of the URL's host; ``None`` when there are none."""
    if environ.get(ENV_TOKEN):
        return Credentials("bearer", environ[ENV_TOKEN], source=ENV_TOKEN)
    user, password = environ.get(ENV_USER), environ.get(ENV_PASSWORD)
    if user or password:
        if not (user and password):
            missing = ENV_PASSWORD if user else ENV_USER
            raise DicomwebError(
                f"{missing} is not set but {ENV_USER if user else ENV_PASSWORD} is; basic "
                "authentication needs both (or set MEDSEG_DICOMWEB_TOKEN for a bearer token)"
            )
        return Credentials("basic", password, user=user, source=f"{ENV_USER}/{ENV_PASSWORD}")
    path = Path(netrc_path) if netrc_path else Path(environ.get("NETRC") or Path.home() / ".netrc")
    if not path.is_file():
        return None
    try:
        entry = netrc.netrc(str(path)).authenticators(urlsplit(server_url(url)).hostname or "")
    except (netrc.NetrcParseError, OSError) as err:
        raise DicomwebError(
            f"{path}: cannot read it ({first_line(err)}); fix the file (`machine HOST login "
            "USER password PASSWORD`) or use the MEDSEG_DICOMWEB_* environment variables"
        ) from err
    if entry is None:
        return None
    login, _, password = entry
    return Credentials("basic", password or "", user=login or "", source=str(path))


@dataclasses.dataclass(frozen=True)
class SeriesInfo:
    """One series of a study as QIDO-RS lists it."""

    uid: str
    modality: str
    description: str
    instances: int

    @property
    def is_image(self) -> bool:
        return self.modality.upper() not in NON_IMAGE_MODALITIES

    def label(self) -> str:
        """One line for messages (no patient identifiers)."""
        desc = self.description or "(no description)"
        return f"{self.uid} '{desc}' {self.modality} {self.instances} instance(s)"


def parse_query(text: str) -> dict[str, str]:
    """QIDO-RS search filters from ``"ModalitiesInStudy=MR&StudyDate=20260101-"``; every key
    must be a DICOM keyword (or a tag such as ``00080061``)."""
    from pydicom.datadict import keyword_dict, tag_for_keyword

    pairs = parse_qsl(text, keep_blank_values=True)
    if not pairs or any("=" not in part for part in text.split("&") if part):
        raise DicomwebError(
            f"--query {text!r}: expected KEY=VALUE pairs joined by '&', e.g. "
            '"ModalitiesInStudy=MR&StudyDate=20260101-"'
        )
    for key, _ in pairs:
        if key.lower() in RESERVED_QUERY_KEYS:
            raise DicomwebError(
                f"--query {text!r}: {key} is set by medseg; use --limit N or --all instead"
            )
        if tag_for_keyword(key) is None and not re.fullmatch(r"[0-9A-Fa-f]{8}", key):
            hint = did_you_mean(key, keyword_dict)
            raise DicomwebError(
                f"--query {text!r}: {key!r} is not a DICOM keyword.{' ' + hint if hint else ''} "
                "Use attribute keywords such as ModalitiesInStudy, StudyDate, StudyDescription"
            )
    return dict(pairs)


def check_selection(
    study: str | None, series: str | None, query: str | None, limit: int | None, every: bool
) -> None:
    """The studies of a DICOMweb source are one ``study`` (optionally one ``series``) or a
    ``query`` (with ``limit`` or ``every``); anything else is refused."""
    if (study is None) == (query is None):
        raise ConfigError(
            "a DICOMweb server: give exactly one of --study UID (optionally with --series UID) "
            'or --query "ModalitiesInStudy=MR&StudyDate=20260101-"'
        )
    if series is not None and study is None:
        raise ConfigError("--series UID needs --study UID (a query may find many studies)")
    if (limit is not None or every) and query is None:
        raise ConfigError("--limit and --all apply to --query only")
    if limit is not None and every:
        raise ConfigError("--limit N and --all contradict each other; pass one")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: expected a number of studies, 1 or more")


def value_of(item: Mapping[str, Any], tag: str) -> Any:
    """The first value of ``tag`` (8 hex digits) in a DICOM JSON object, or ``None``."""
    values = (item.get(tag) or {}).get("Value") or [None]
    return values[0]


class DicomwebServer:
    """One DICOMweb server. ``url``: its base URL (``https://HOST/dicom-web``).

    ``timeout`` (s) applies to connecting and to each read; ``retries`` more attempts follow a
    failed connection or a busy answer (408, 429, 503, 504), after ``backoff_s``, twice that,
    and so on. TLS certificates are verified, against ``ca_bundle`` (PEM) when given.
    """

    def __init__(
        self,
        url: str,
        *,
        credentials: Credentials | None = None,
        ca_bundle: str | Path | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.5,
    ) -> None:
        from dicomweb_client import DICOMwebClient
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        self.url = server_url(url)
        self.credentials = credentials
        self.retries = retries
        self.timeout = timeout
        if ca_bundle is not None and not Path(ca_bundle).is_file():
            raise DicomwebError(
                f"--ca-bundle {ca_bundle} does not exist; give the PEM file of the CA that "
                "signed the server's certificate (ask the PACS administrators)"
            )
        session = _session_class()(None if ca_bundle is None else str(ca_bundle))
        if credentials is not None:
            session.auth = (
                BearerAuth(credentials.secret)
                if credentials.kind == "bearer"
                else (credentials.user, credentials.secret)
            )
        # connection failures retried here (the request never reached the server, so a
        # POST is safe too); busy answers by dicomweb-client's own retry below
        retry = Retry(
            total=None, connect=retries, read=retries, status=0, other=0,
            backoff_factor=backoff_s, raise_on_status=False,
        )  # fmt: skip
        for scheme in ("http://", "https://"):
            session.mount(scheme, HTTPAdapter(max_retries=retry))
        parts = urlsplit(self.url)
        if credentials and parts.scheme == "http" and parts.hostname not in LOCAL_HOSTS:
            logger.warning(
                "sending credentials to %s over plain HTTP (readable on the network); use "
                "dicomweb+https://",
                parts.hostname,
            )
        self.client = DICOMwebClient(self.url, session=session, timeout=timeout)
        self.client.set_http_retry_params(
            retry=retries > 0,
            max_attempts=retries + 1,
            wait_exponential_multiplier=max(1, int(backoff_s * 1000)),
        )

    def call(
        self,
        action: str,
        fn: Callable[[], T],
        not_found: str | None = None,
        refused: str | None = None,
    ) -> T:
        """``fn()``, with each network or HTTP failure turned into one DicomwebError that says
        what failed while doing ``action`` and what to do (``not_found``: the message for
        404; ``refused``: the start of the message for any other HTTP error but 401/403)."""
        import requests

        where = PREFIX + self.url
        try:
            return fn()
        except requests.exceptions.SSLError as err:
            raise DicomwebError(
                f"{where}: TLS failure while {action} ({_reason(err)}); the server's certificate "
                "is not trusted here: pass --ca-bundle FILE with your hospital's CA (PEM), or "
                "check that the host name matches the certificate"
            ) from err
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as err:
            raise DicomwebError(
                f"{where}: server unreachable while {action} ({_reason(err)}; "
                f"{self.retries + 1} attempt(s), timeout {self.timeout:g} s); check the URL, "
                "that the server is running, and the proxy settings (HTTPS_PROXY, NO_PROXY)"
            ) from err
        except requests.exceptions.HTTPError as err:
            code = err.response.status_code if err.response is not None else 0
            if code in (401, 403):
                refused = (
                    f"the credentials from {self.credentials.source} were refused; check them"
                    if self.credentials
                    else f"the server wants credentials: {AUTH_HINT}"
                )
                kind = "unauthorised" if code == 401 else "forbidden"
                raise DicomwebError(
                    f"{where}: HTTP {code} ({kind}) while {action}; {refused}"
                ) from err
            if code == 404 and not_found:
                raise DicomwebError(f"{where}: {not_found}") from err
            if refused:
                raise DicomwebError(
                    f"{where}: {refused} (HTTP {code} while {action}: {_reason(err)}); check "
                    "the server's log"
                ) from err
            raise DicomwebError(
                f"{where}: HTTP {code} while {action} ({_reason(err)}); check the URL (the "
                "DICOMweb root, e.g. https://HOST/dicom-web) and the server's log"
            ) from err

    def search_studies(
        self, filters: Mapping[str, str], limit: int | None = None, fields: Sequence[str] = ()
    ) -> list[dict[str, Any]]:
        """QIDO-RS studies matching ``filters`` (DICOM JSON objects), at most ``limit``."""
        return self.call(
            "searching studies (QIDO-RS)",
            lambda: self.client.search_for_studies(
                search_filters=dict(filters), limit=limit, fields=list(fields) or None
            ),
        )

    def study_uids(self, filters: Mapping[str, str], cap: int | None) -> list[str]:
        """StudyInstanceUIDs matching ``filters``; more than ``cap`` (``None``: no cap) is an
        error that asks for ``--limit`` or ``--all``."""
        found = self.search_studies(filters, None if cap is None else cap + 1)
        if cap is not None and len(found) > cap:
            raise DicomwebError(
                f"{PREFIX}{self.url}: the query matches more than {cap} studies; narrow it "
                f"(e.g. StudyDate=20260101-20260131), or pass --limit N to allow up to N "
                "studies, or --all for every match"
            )
        return [check_uid(value_of(item, "0020000D") or "", "StudyInstanceUID") for item in found]

    def select_studies(
        self, study: str | None, query: str | None, limit: int | None, every: bool, default: int
    ) -> list[str]:
        """``[study]`` (checked as a UID), or the studies ``query`` matches: more than
        ``limit`` (``None``: ``default``) is an error unless ``every``."""
        if study is not None:
            return [check_uid(study, "--study")]
        return self.study_uids(parse_query(query or ""), None if every else (limit or default))

    def series_of(self, study: str) -> list[SeriesInfo]:
        """Every series of ``study``; an unknown study is an error."""
        items = self.call(
            f"listing the series of study {study} (QIDO-RS)",
            lambda: self.client.search_for_series(study_instance_uid=study),
            not_found=f"study {study} not found; check the StudyInstanceUID (--study)",
        )
        if not items:
            raise DicomwebError(
                f"{PREFIX}{self.url}: study {study} not found (no series); check the "
                "StudyInstanceUID (--study) and that the study has arrived on this server"
            )
        return [
            SeriesInfo(
                uid=check_uid(value_of(item, "0020000E") or "", "SeriesInstanceUID"),
                modality=str(value_of(item, "00080060") or ""),
                description=str(value_of(item, "0008103E") or ""),
                instances=int(value_of(item, "00201209") or 0),
            )
            for item in items
        ]

    def download_series(self, study: str, series: str, folder: Path) -> list[Path]:
        """WADO-RS: write every instance of ``series`` as a file into the new ``folder``
        (created private, mode 0700); returns the files."""
        folder.mkdir(mode=0o700)
        files: list[Path] = []

        def fetch() -> None:
            for ds in self.client.iter_series(study, series):
                path = folder / f"{len(files):05d}.dcm"
                ds.save_as(path, enforce_file_format=True)
                files.append(path)

        self.call(
            f"retrieving series {series} of study {study} (WADO-RS)",
            fetch,
            not_found=f"series {series} of study {study} not found; check --series",
        )
        if not files:
            raise DicomwebError(
                f"{PREFIX}{self.url}: series {series} of study {study} returned no instances; "
                "check that the series has arrived completely on the server"
            )
        logger.info("retrieved %d instance(s) of series %s", len(files), series)
        return files

    def store(self, path: Path, study: str, again: str = "rerun with --push") -> str:
        """STOW-RS: store the DICOM file ``path`` in ``study``; returns its SeriesInstanceUID.
        A server that refuses it (HTTP error or a failed-SOP answer) is an error whose
        message ends with ``again`` (how to retry)."""
        import pydicom

        ds = pydicom.dcmread(path)
        answer = self.call(
            f"storing {path.name} (STOW-RS)",
            lambda: self.client.store_instances([ds], study_instance_uid=study),
            refused=f"the server refused the DICOM-SEG {path.name}",
        )
        failed = answer.get("FailedSOPSequence") or []
        stored = {
            str(item.ReferencedSOPInstanceUID) for item in answer.get("ReferencedSOPSequence") or []
        }
        if failed or str(ds.SOPInstanceUID) not in stored:
            reasons = sorted({f"{int(item.get('FailureReason', 0)):#06x}" for item in failed})
            raise DicomwebError(
                f"{PREFIX}{self.url}: the server refused the DICOM-SEG {path.name} "
                f"(failure reason {', '.join(reasons) or 'none given; it is not listed as stored'}); "
                "the file stays in the output folder: check the server's log (SEG storage "
                f"allowed? the study's UID?) and {again}"
            )
        return str(ds.SeriesInstanceUID)


def _session_class() -> type:
    import requests

    class PinnedSession(requests.Session):
        """A session whose ``ca_bundle`` wins over REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE in
        the environment (requests lets those replace ``session.verify``); proxies still come
        from the environment (HTTPS_PROXY, NO_PROXY)."""

        def __init__(self, ca_bundle: str | None) -> None:
            super().__init__()
            self.ca_bundle = ca_bundle

        def merge_environment_settings(self, url, proxies, stream, verify, cert):  # type: ignore[no-untyped-def]
            settings = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if self.ca_bundle is not None:
                settings["verify"] = self.ca_bundle
            return settings

    return PinnedSession


class BearerAuth:
    """``Authorization: Bearer TOKEN`` on every request (a requests auth callable)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: Any) -> Any:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(***)"


def _reason(err: BaseException) -> str:
    """The useful end of a requests error (``Connection refused``, ``certificate verify
    failed``), not urllib3's whole chain."""
    text = str(err)
    for pattern in (r"\[SSL: [A-Z_]+\] ([^(')\]]+)", r"\[Errno -?\d+\] ([^')\]]+)", r"timed out"):
        match = re.search(pattern, text)
        if match:
            return (match.group(1) if match.groups() else match.group(0)).strip()
    return first_line(err, 160)


def study_rows(
    items: Sequence[Mapping[str, Any]], show_identifiers: bool = False, key: bytes | None = None
) -> list[dict[str, str]]:
    """One row per QIDO-RS study: ``patient`` (a pseudonym: 8 hex digits of an HMAC-SHA-256
    of PatientID under ``key``, default a random key per call, so the same patient has the
    same pseudonym within one listing and an ID cannot be recovered by hashing candidates),
    ``date``, ``modalities``, ``description``, ``study_uid``; the patient's name and ID
    themselves only with ``show_identifiers``."""
    key = key if key is not None else secrets.token_bytes(32)
    rows = []
    for item in items:
        patient_id = str(value_of(item, "00100020") or "")
        digest = hmac.new(key, patient_id.encode(), hashlib.sha256).hexdigest()[:8]
        row = {
            "patient": digest if patient_id else "",
            "date": str(value_of(item, "00080020") or ""),
            "modalities": "/".join(str(m) for m in (item.get("00080061") or {}).get("Value", [])),
            "description": str(value_of(item, "00081030") or ""),
            "study_uid": str(value_of(item, "0020000D") or ""),
        }
        if show_identifiers:
            name = value_of(item, "00100010") or {}
            row["patient_name"] = str(
                name.get("Alphabetic", "") if isinstance(name, dict) else name
            )
            row["patient_id"] = patient_id
        rows.append(row)
    return rows


def list_studies(
    server: DicomwebServer, limit: int = 100, show_identifiers: bool = False
) -> list[dict[str, str]]:
    """The server's studies (at most ``limit``) as :func:`study_rows`."""
    fields = ("PatientID", "StudyDate", "ModalitiesInStudy", "StudyDescription")
    return study_rows(server.search_studies({}, limit, fields), show_identifiers)
