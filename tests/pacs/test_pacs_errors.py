"""Every PACS failure is one `error:` line (exit 2) that says what failed and what to do,
and writes nothing: server down, wrong or missing credentials, unknown study, a query
matching too many studies, a study without images, a series the model cannot use, a SEG the
server refuses and an untrusted TLS certificate."""

from __future__ import annotations

import http.server
import logging
import shutil
import ssl
import subprocess
import threading

import pytest

from medseg.errors import DicomwebError
from medseg.inference import pacs
from medseg.io.dicomweb import Credentials, DicomwebServer, credentials_from
from tests.inference.infer_factory import run_cli, write_tiny_checkpoint
from tests.io.dicom_factory import edit, write_series
from tests.pacs.conftest import PASSWORD, USER, _free_port, upload

CT = "dcmqi/ct-3slice"


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def _predict(url, out, *extra, model=None) -> int:
    args = ["predict", url, "-o", out, "--device", "cpu", "-q", "--retries", "0", *extra]
    return run_cli([*args, *(["--model", model] if model else [])])


def test_server_down(tmp_path, capsys):
    url = f"dicomweb+http://127.0.0.1:{_free_port()}/dicom-web"
    assert _predict(url, tmp_path / "out", "--study", "1.2.3") == 2
    line = _error(capsys)
    assert "server unreachable" in line
    assert "Connection refused" in line
    assert not (tmp_path / "out").exists()


def test_wrong_and_missing_credentials(orthanc_auth_server, tmp_path, capsys, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    url = orthanc_auth_server.medseg_url
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.delenv("MEDSEG_DICOMWEB_TOKEN", raising=False)
    monkeypatch.setenv("MEDSEG_DICOMWEB_USER", USER)
    monkeypatch.setenv("MEDSEG_DICOMWEB_PASSWORD", "wrong-pw-9")
    assert _predict(url, tmp_path / "out", "--study", "1.2.3") == 2
    line = _error(capsys)
    assert "HTTP 401" in line
    assert "MEDSEG_DICOMWEB_USER/MEDSEG_DICOMWEB_PASSWORD" in line
    assert "wrong-pw-9" not in line
    monkeypatch.delenv("MEDSEG_DICOMWEB_USER")
    monkeypatch.delenv("MEDSEG_DICOMWEB_PASSWORD")
    assert _predict(url, tmp_path / "out", "--study", "1.2.3") == 2
    assert "the server wants credentials" in _error(capsys)
    assert not (tmp_path / "out").exists()
    # the right ones from ~/.netrc get through (and an unknown study is then the error)
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login {USER} password {PASSWORD}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert _predict(url, tmp_path / "out", "--study", "1.2.3") == 2
    assert "study 1.2.3 not found" in _error(capsys)
    creds = credentials_from({}, url, netrc)
    assert DicomwebServer(url, credentials=creds, retries=0).search_studies({}) == []
    assert "wrong-pw-9" not in caplog.text
    assert PASSWORD not in caplog.text
    assert len(caplog.records) > 0


def test_unknown_study(orthanc, tmp_path, capsys):
    assert _predict(orthanc.medseg_url, tmp_path / "out", "--study", "1.2.3.4.5") == 2
    assert "study 1.2.3.4.5 not found" in _error(capsys)
    assert not (tmp_path / "out").exists()


def test_query_matching_too_many_studies(orthanc, ct_checkpoint, tmp_path, capsys, monkeypatch):
    for k in range(2):  # two small synthetic CT studies
        folder, _ = write_series(tmp_path / f"s{k}", n=4, shape=(24, 20))
        for path in folder.glob("*.dcm"):
            edit(path, StudyInstanceUID=f"1.2.826.0.1.3680043.8.498.{100 + k}")
        upload(orthanc, folder.glob("*.dcm"))
    query = ["--query", "ModalitiesInStudy=CT"]
    assert _predict(orthanc.medseg_url, tmp_path / "out", *query, "--limit", "1") == 2
    line = _error(capsys)
    assert "matches more than 1 studies" in line
    assert "--all" in line
    monkeypatch.setattr(pacs, "DEFAULT_QUERY_LIMIT", 1)
    assert _predict(orthanc.medseg_url, tmp_path / "out", *query) == 2
    assert "--limit N" in _error(capsys)
    assert not (tmp_path / "out").exists()
    # allowed: both studies predicted, one summary
    out = tmp_path / "out"
    assert _predict(orthanc.medseg_url, out, *query, "--limit", "2", model=ct_checkpoint) == 0
    assert "2 study(ies): 2 predicted" in capsys.readouterr().out
    assert len(list(out.glob("*.nii.gz"))) == 2


def test_query_keys_are_checked(orthanc, tmp_path, capsys):
    assert _predict(orthanc.medseg_url, tmp_path / "o", "--query", "ModalityInStudy=MR") == 2
    assert "did you mean 'ModalitiesInStudy'" in _error(capsys)


def test_study_without_image_series(orthanc, shared_data, tmp_path, capsys):
    study, _ = upload(orthanc, [shared_data / "dcmqi" / "liver.dcm"])  # a SEG alone
    assert _predict(orthanc.medseg_url, tmp_path / "out", "--study", study) == 2
    assert "has no image series (only SEG)" in _error(capsys)


def test_series_the_model_cannot_use(orthanc, shared_data, tmp_path, capsys):
    study, series = upload(orthanc, (shared_data / CT).glob("*.dcm"))
    mr = write_tiny_checkpoint(tmp_path / "mr.pt", modality="mr")
    assert _predict(orthanc.medseg_url, tmp_path / "a", "--study", study, model=mr) == 2
    assert "no series this model can use (it was trained on MR)" in _error(capsys)
    extra = ("--study", study, "--series", series)
    assert _predict(orthanc.medseg_url, tmp_path / "b", *extra, model=mr) == 2
    assert "cannot be used by this model" in _error(capsys)
    two = write_tiny_checkpoint(tmp_path / "two.pt", channel_names=("t1", "t2"), modality="ct")
    assert _predict(orthanc.medseg_url, tmp_path / "c", "--study", study, model=two) == 2
    assert "the model expects 2 channels" in _error(capsys)
    assert not list((tmp_path / "c").glob("*.nii.gz"))


def test_server_refuses_the_seg(orthanc, shared_data):
    server = DicomwebServer(orthanc.url, retries=0)
    with pytest.raises(DicomwebError, match=r"the server refused the DICOM-SEG liver\.dcm"):
        server.store(shared_data / "dcmqi" / "liver.dcm", "1.2.3.999")  # not its study


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory):
    """A local HTTPS server with a self-signed certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is absent (needed to make a test certificate)")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
         "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
        check=True, capture_output=True,
    )  # fmt: skip
    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}/dicom-web", cert
    httpd.shutdown()
    httpd.server_close()


def test_untrusted_certificate(tls_server, tmp_path, capsys):
    url, cert = tls_server
    assert _predict(f"dicomweb+{url}", tmp_path / "out", "--study", "1.2.3") == 2
    line = _error(capsys)
    assert "TLS failure" in line
    assert "--ca-bundle" in line
    # with the CA bundle the TLS handshake passes (this toy server then answers 501)
    with pytest.raises(DicomwebError, match="HTTP 501") as info:
        DicomwebServer(url, ca_bundle=cert, retries=0).series_of("1.2.3")
    assert "TLS" not in str(info.value)


def test_credentials_never_on_the_command_line(tmp_path, capsys):
    url = "dicomweb+https://radiology:pw@pacs.example.org/dicom-web"
    assert _predict(url, tmp_path / "out", "--study", "1.2.3") == 2
    line = _error(capsys)
    assert "carries credentials" in line
    assert ":pw@" not in line
    assert repr(Credentials("basic", "s3cret", user="u")).count("s3cret") == 0


def test_pacs_flags_need_a_pacs(tmp_path, capsys):
    assert run_cli(["predict", tmp_path, "-o", tmp_path / "out", "--push"]) == 2
    assert "apply to a PACS" in _error(capsys)
