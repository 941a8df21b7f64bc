"""The identifier scan of tests/inference/test_no_identifiers_in_outputs.py on the PACS path:
a study with patient identifiers goes through `medseg predict dicomweb+http://... --push`;
none reaches stdout, stderr, the log (debug level, dicomweb-client's included), the mask,
the reports or the CSVs."""

from __future__ import annotations

import gzip
import logging

from tests.inference.infer_factory import run_cli, write_tiny_checkpoint
from tests.inference.test_no_identifiers_in_outputs import NAME_PARTS, OTHER, PATIENT_ID, _found
from tests.io.dicom_factory import edit, write_series
from tests.pacs.conftest import upload


def test_pacs_prediction_prints_and_writes_no_identifiers(orthanc, tmp_path, capsys, caplog):
    series, _ = write_series(tmp_path / "patient" / "ct", n=6, shape=(24, 20))
    for path in series.glob("*.dcm"):
        edit(path, PatientName="^".join(NAME_PARTS), PatientID=PATIENT_ID, **OTHER)
    study, series_uid = upload(orthanc, series.glob("*.dcm"))
    ckpt = write_tiny_checkpoint(tmp_path / "m.pt", modality="ct")
    out = tmp_path / "out"
    caplog.set_level(logging.DEBUG)
    args = ["--verbose", "predict", orthanc.medseg_url, "--study", study, "--series", series_uid, "-o", out,
            "--model", ckpt, "--device", "cpu", "--push", "--save-probabilities"]  # fmt: skip
    code = run_cli(args)
    captured = capsys.readouterr()
    log = (captured.out + captured.err + caplog.text).encode()
    assert code == 0, log[-3000:]
    assert "pushed: study" in captured.out
    assert any(r.name.startswith("dicomweb_client") for r in caplog.records)
    assert _found(log) == []
    files = sorted(p for p in out.rglob("*") if p.is_file())
    kinds = {"nii.gz" if p.name.endswith(".nii.gz") else p.suffix[1:] for p in files}
    assert {"nii.gz", "json", "csv", "dcm"} <= kinds, kinds
    for path in files:
        if path.suffix == ".dcm":  # the DICOM-SEG carries the patient module by the standard
            continue
        blob = path.read_bytes()
        if path.name.endswith(".gz"):
            blob += gzip.decompress(blob)
        assert _found(blob) == [], path
