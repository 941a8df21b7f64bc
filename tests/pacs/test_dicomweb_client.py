"""medseg.io.dicomweb without a server: URLs, credentials (environment, ~/.netrc, never in
the URL or a repr), query parsing, UIDs and the study listing's pseudonyms."""

from __future__ import annotations

import pytest
import requests

from medseg.errors import DicomwebError
from medseg.io.dicomweb import (
    BearerAuth,
    Credentials,
    DicomwebServer,
    check_uid,
    credentials_from,
    is_dicomweb_url,
    parse_query,
    server_url,
    study_rows,
)

URL = "dicomweb+https://pacs.example.org/dicom-web"


def test_urls():
    assert is_dicomweb_url(URL)
    assert not is_dicomweb_url("https://pacs.example.org/dicom-web")
    assert not is_dicomweb_url("scans/ct")
    assert server_url(URL + "/") == "https://pacs.example.org/dicom-web"
    with pytest.raises(DicomwebError, match="carries credentials"):
        server_url("dicomweb+https://u:secret@pacs.example.org/dicom-web")
    with pytest.raises(DicomwebError, match="has a query"):
        server_url(URL + "?StudyDate=2026")
    with pytest.raises(DicomwebError, match="not a DICOMweb URL"):
        server_url("dicomweb+ftp://pacs.example.org")


def test_credentials_order_environment_then_netrc(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine pacs.example.org login reader password from-netrc\n")
    netrc.chmod(0o600)
    env = {"MEDSEG_DICOMWEB_TOKEN": "tok", "MEDSEG_DICOMWEB_USER": "u"}
    assert credentials_from(env, URL, netrc) == Credentials(
        "bearer", "tok", source="MEDSEG_DICOMWEB_TOKEN"
    )
    basic = credentials_from(
        {"MEDSEG_DICOMWEB_USER": "u", "MEDSEG_DICOMWEB_PASSWORD": "p"}, URL, netrc
    )
    assert (basic.kind, basic.user, basic.secret) == ("basic", "u", "p")
    from_file = credentials_from({}, URL, netrc)
    assert (from_file.user, from_file.secret, from_file.source) == (
        "reader",
        "from-netrc",
        str(netrc),
    )
    assert credentials_from({}, "dicomweb+https://other.example.org/x", netrc) is None
    assert credentials_from({}, URL, tmp_path / "absent") is None
    with pytest.raises(DicomwebError, match="MEDSEG_DICOMWEB_PASSWORD is not set"):
        credentials_from({"MEDSEG_DICOMWEB_USER": "u"}, URL, netrc)
    assert "from-netrc" not in repr(from_file)


def test_bearer_token_is_sent_and_never_shown():
    request = requests.Request("GET", "https://pacs.example.org/").prepare()
    assert BearerAuth("tok-123")(request).headers["Authorization"] == "Bearer tok-123"
    assert "tok-123" not in repr(BearerAuth("tok-123"))
    server = DicomwebServer(URL, credentials=Credentials("bearer", "tok-123"), retries=0)
    assert isinstance(server.client._session.auth, BearerAuth)


def test_missing_ca_bundle(tmp_path):
    with pytest.raises(DicomwebError, match=r"--ca-bundle .* does not exist"):
        DicomwebServer(URL, ca_bundle=tmp_path / "ca.pem")


def test_parse_query():
    assert parse_query("ModalitiesInStudy=MR&StudyDate=20260101-") == {
        "ModalitiesInStudy": "MR",
        "StudyDate": "20260101-",
    }
    with pytest.raises(DicomwebError, match="did you mean 'StudyDate'"):
        parse_query("StudyDat=2026")
    with pytest.raises(DicomwebError, match="use --limit N or --all"):
        parse_query("limit=5")
    with pytest.raises(DicomwebError, match="KEY=VALUE"):
        parse_query("MR")


def test_uids_name_files_so_only_digits_and_dots():
    assert check_uid(" 1.2.840.10008 ", "--study") == "1.2.840.10008"
    for bad in ("../../etc", "1.2.3/4", "1." + "2" * 70, ""):
        with pytest.raises(DicomwebError, match="not a DICOM UID"):
            check_uid(bad, "--study")


def test_study_rows_hide_identifiers_by_default():
    item = {
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Quokka^Zed"}]},
        "00100020": {"vr": "LO", "Value": ["PID-77"]},
        "00080020": {"vr": "DA", "Value": ["20260105"]},
        "00080061": {"vr": "CS", "Value": ["MR", "SEG"]},
        "00081030": {"vr": "LO", "Value": ["Brain"]},
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
    }
    (row,) = study_rows([item])
    assert row["date"] == "20260105"
    assert row["modalities"] == "MR/SEG"
    assert row["description"] == "Brain"
    assert len(row["patient"]) == 8
    assert "Quokka" not in str(row)
    assert "PID-77" not in str(row)
    (shown,) = study_rows([item], show_identifiers=True)
    assert shown["patient_name"] == "Quokka^Zed"
    assert shown["patient_id"] == "PID-77"
