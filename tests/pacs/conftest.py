"""A real Orthanc PACS with its DICOMweb plugin, started once per session (Debian packages
``orthanc`` and ``orthanc-dicomweb``; tests skip when the ``Orthanc`` binary is absent).

Two servers: ``orthanc`` (no authentication) and ``orthanc_auth`` (HTTP basic, one user).
Both listen on 127.0.0.1 only, with the DICOM port off and their storage in a temporary
folder; readiness is polled on ``/system`` (bounded), teardown stops the process by its PID.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from collections.abc import Iterator
from pathlib import Path

import pytest

ORTHANC = shutil.which("Orthanc") or next(
    (p for p in ("/usr/sbin/Orthanc", "/usr/bin/Orthanc") if Path(p).is_file()), None
)
PLUGIN_GLOBS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so*",
)
USER, PASSWORD = "radiology", "s3cret-pw"
READY_TIMEOUT_S = 30.0


@dataclasses.dataclass(frozen=True)
class Orthanc:
    """A running Orthanc: ``root`` (http://127.0.0.1:PORT), ``url`` (its DICOMweb root)."""

    root: str
    auth: tuple[str, str] | None

    @property
    def url(self) -> str:
        return f"{self.root}/dicom-web"

    @property
    def medseg_url(self) -> str:
        return f"dicomweb+{self.url}"

    def rest(self, path: str, method: str = "GET") -> object:
        """Orthanc's own REST API (JSON), for test setup and checks."""
        request = urllib.request.Request(self.root + path, method=method)
        if self.auth:
            token = b64encode(":".join(self.auth).encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def clear(self) -> None:
        """Delete every patient (each test starts from an empty PACS)."""
        for patient in self.rest("/patients"):
            self.rest(f"/patients/{patient}", method="DELETE")


def _plugin() -> str | None:
    return next((hit for pattern in PLUGIN_GLOBS for hit in sorted(glob.glob(pattern))), None)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(server: Orthanc, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"Orthanc exited with {process.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            server.rest("/system")
            return
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.1)  # polling interval, bounded by the deadline
    raise RuntimeError(f"Orthanc not ready after {READY_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _start(folder: Path, auth: bool) -> tuple[Orthanc, subprocess.Popen, Path]:
    port = _free_port()
    folder.mkdir(parents=True)
    config = {
        "Name": "medseg-test",
        "HttpPort": port,
        "RemoteAccessAllowed": False,  # 127.0.0.1 only
        "DicomServerEnabled": False,  # no DICOM port: DICOMweb over HTTP only
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "Plugins": [_plugin()],
        "AuthenticationEnabled": auth,
        "RegisteredUsers": {USER: PASSWORD} if auth else {},
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "HttpTimeout": 30,
        "StableAge": 1,
    }
    path = folder / "orthanc.json"
    path.write_text(json.dumps(config))
    log = folder / "orthanc.log"
    with log.open("wb") as sink:
        process = subprocess.Popen([ORTHANC, str(path)], stdout=sink, stderr=subprocess.STDOUT)
    server = Orthanc(f"http://127.0.0.1:{port}", (USER, PASSWORD) if auth else None)
    try:
        _wait_ready(server, process, log)
    except RuntimeError:
        _stop(process)
        raise
    return server, process, log


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _server(tmp_path_factory, auth: bool) -> Iterator[Orthanc]:
    if ORTHANC is None:
        pytest.skip("the Orthanc binary is absent (apt-get install orthanc orthanc-dicomweb)")
    if _plugin() is None:
        pytest.skip("Orthanc's DICOMweb plugin is absent (apt-get install orthanc-dicomweb)")
    server, process, _ = _start(tmp_path_factory.mktemp("orthanc") / "server", auth)
    try:
        yield server
    finally:
        _stop(process)


@pytest.fixture(scope="session")
def orthanc_server(tmp_path_factory) -> Iterator[Orthanc]:
    """Orthanc without authentication (one per session)."""
    yield from _server(tmp_path_factory, auth=False)


@pytest.fixture(scope="session")
def orthanc_auth_server(tmp_path_factory) -> Iterator[Orthanc]:
    """Orthanc with HTTP basic authentication (user ``USER``, password ``PASSWORD``)."""
    yield from _server(tmp_path_factory, auth=True)


@pytest.fixture
def orthanc(orthanc_server) -> Orthanc:
    """The unauthenticated Orthanc, emptied for this test."""
    orthanc_server.clear()
    return orthanc_server


def upload(server: Orthanc, files) -> tuple[str, str]:
    """Store DICOM ``files`` on ``server`` through STOW-RS (medseg's own client); returns
    the (StudyInstanceUID, SeriesInstanceUID) of the first file."""
    import pydicom

    from medseg.io.dicomweb import Credentials, DicomwebServer

    files = sorted(files)
    credentials = Credentials("basic", server.auth[1], user=server.auth[0]) if server.auth else None
    client = DicomwebServer(server.url, credentials=credentials, retries=0)
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    for path in files:
        client.store(path, str(first.StudyInstanceUID))
    return str(first.StudyInstanceUID), str(first.SeriesInstanceUID)


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    """The folder Python's tempfile uses here (to see that downloads are private and removed)."""
    import tempfile

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture(scope="session")
def ct_checkpoint(tmp_path_factory) -> Path:
    """Tiny random 1-channel CT model trained at 2 mm in-plane (fast on 512 x 512 slices)."""
    from tests.inference.infer_factory import write_tiny_checkpoint

    folder = tmp_path_factory.mktemp("ckpt_ct")
    return write_tiny_checkpoint(folder / "ct.pt", modality="ct", target_spacing=(2.0, 2.0))
