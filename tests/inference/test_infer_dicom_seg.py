"""DICOM-SEG output for anonymised DICOM input (patient/study attributes deleted)."""

from __future__ import annotations

import pydicom

from medseg.inference.dicom_seg import REQUIRED_EMPTY_OK, SEG_NOTICE
from medseg.io import read_volume
from medseg.io.dicom_write import write_dicom_series
from tests.inference.infer_factory import blob_volume, run_cli


def test_predict_anonymised_dicom_writes_a_readable_seg(tiny_checkpoint, tmp_path, capsys):
    import highdicom as hd

    series = write_dicom_series(blob_volume(shape=(24, 20, 6)), tmp_path / "anon", modality="MR")
    files = sorted(series.glob("*.dcm"))
    for file in files:  # what an anonymiser that deletes (not blanks) attributes leaves
        ds = pydicom.dcmread(file)
        for keyword in REQUIRED_EMPTY_OK:
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(file)
    before = {f: f.read_bytes() for f in files}
    out = tmp_path / "out"
    args = ["predict", series, "-o", out, "--model", tiny_checkpoint, "--device", "cpu", "-q"]
    assert run_cli(args) == 0, capsys.readouterr().err
    seg_path = out / "anon_seg.dcm"
    seg = hd.seg.segread(str(seg_path))
    assert seg.ContentDescription == SEG_NOTICE == "For research use only. Not for diagnostic use."
    assert len(SEG_NOTICE) <= 64
    for keyword in REQUIRED_EMPTY_OK:
        assert getattr(seg, keyword) == ""
    source_uid = pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID
    referenced = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
    assert referenced == source_uid
    # the DICOM-SEG and the NIfTI mask hold the same foreground
    mask = read_volume(out / "anon.nii.gz")
    n_fg = int((mask.array > 0).sum())
    assert n_fg > 0
    assert int(seg.pixel_array.sum()) == n_fg
    # inputs untouched: the repairs happen on in-memory copies
    assert all(f.read_bytes() == data for f, data in before.items())
