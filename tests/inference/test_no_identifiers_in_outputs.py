"""Patient identifiers of a DICOM source reach the DICOM-SEG (the standard's patient module)
and nothing else: not the mask, the JSON report, the CSVs, the probabilities or the log."""

from __future__ import annotations

import gzip
import logging

import pydicom

from tests.inference.infer_factory import run_cli, write_tiny_checkpoint
from tests.io.dicom_factory import edit, write_series

NAME_PARTS = ("Quokkafamily", "Zyxwvutgiven")
PATIENT_ID = "PIDx7h3QUNIQUE"
OTHER = {"AccessionNumber": "ACCq9w8e7r", "PatientBirthDate": "19230405"}
SECRETS = (*NAME_PARTS, PATIENT_ID, *OTHER.values())


def _found(blob: bytes) -> list[str]:
    text = blob.decode("latin-1")
    return [s for s in SECRETS if s in text or s.lower() in text.lower()]


def test_dicom_prediction_outputs_and_log_carry_no_identifiers(tmp_path, capsys, caplog):
    series, _ = write_series(tmp_path / "patient" / "ct", n=6, shape=(24, 20))
    for path in series.glob("*.dcm"):
        edit(path, PatientName="^".join(NAME_PARTS), PatientID=PATIENT_ID, **OTHER)
    ckpt = write_tiny_checkpoint(tmp_path / "m.pt")
    out = tmp_path / "out"
    caplog.set_level(logging.DEBUG)
    args = ["--verbose", "predict", series, "-o", out, "--model", ckpt, "--device", "cpu",
            "--save-probabilities"]  # fmt: skip
    code = run_cli(args)
    captured = capsys.readouterr()
    log = (captured.out + captured.err + caplog.text).encode()
    assert code == 0, log[-3000:]
    assert "predicted" in captured.out
    assert len(caplog.records) > 0
    assert _found(log) == []
    files = sorted(p for p in out.rglob("*") if p.is_file())
    kinds = {p.name.split(".", 1)[-1] for p in files}
    assert {"nii.gz", "json", "csv", "dcm"} <= kinds, kinds
    for path in files:
        if path.suffix == ".dcm":
            continue
        blob = path.read_bytes()
        if path.name.endswith(".gz"):
            blob += gzip.decompress(blob)
        assert _found(blob) == [], path
    # the DICOM-SEG carries the patient module, as the standard requires
    (seg,) = [p for p in files if p.suffix == ".dcm"]
    ds = pydicom.dcmread(seg)
    assert str(ds.PatientID) == PATIENT_ID
    assert str(ds.PatientName) == "^".join(NAME_PARTS)
