"""`medseg view --dicomweb URL` lists a PACS's studies (QIDO-RS): a patient pseudonym, the
date, modalities, description and StudyInstanceUID; names and IDs only when asked."""

from __future__ import annotations

from medseg.io.dicomweb import study_rows
from tests.inference.infer_factory import run_cli
from tests.inference.test_no_identifiers_in_outputs import NAME_PARTS, PATIENT_ID, _found
from tests.io.dicom_factory import edit, write_series
from tests.pacs.conftest import upload


def test_listing_hides_identifiers_unless_asked(orthanc, tmp_path, capsys):
    series, _ = write_series(tmp_path / "ct", n=3, shape=(8, 8))
    for path in series.glob("*.dcm"):
        edit(path, PatientName="^".join(NAME_PARTS), PatientID=PATIENT_ID, StudyDate="20260105",
             StudyDescription="Abdomen")  # fmt: skip
    study, _ = upload(orthanc, series.glob("*.dcm"))
    assert run_cli(["view", "--dicomweb", orthanc.medseg_url]) == 0
    out = capsys.readouterr().out
    header, line = out.splitlines()[:2]
    assert header.split() == ["patient", "date", "modalities", "description", "study_uid"]
    assert line.split()[1:] == ["20260105", "CT", "Abdomen", study]
    assert len(line.split()[0]) == 8
    assert "1 study(ies)" in out
    assert _found(out.encode()) == []
    assert run_cli(["view", "--dicomweb", orthanc.medseg_url, "--show-identifiers"]) == 0
    out = capsys.readouterr().out
    assert PATIENT_ID in out
    assert NAME_PARTS[0] in out


def test_pseudonyms_are_keyed():
    items = [{"00100020": {"vr": "LO", "Value": [pid]}} for pid in ("A1", "A1", "B2")]
    rows = study_rows(items, key=b"k")
    assert rows[0]["patient"] == rows[1]["patient"] != rows[2]["patient"]
    assert study_rows(items, key=b"other")[0]["patient"] != rows[0]["patient"]
