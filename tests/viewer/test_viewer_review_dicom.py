"""A reviewed case read from a DICOM series is also saved as a DICOM-SEG referencing it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medseg.errors import OverwriteError
from medseg.io import read_dicom_seg, read_volume
from medseg.viewer.core.review import ReviewSession, review_record, save_reviewed_case

NAMES = ["background", "lesion", "liver"]


@pytest.fixture(scope="module")
def ct_series(sample_data, tmp_path_factory):
    """The sample CT's DICOM series (a private copy: the test checks it stays untouched)."""
    folder = tmp_path_factory.mktemp("dicom") / "ct_001_dicom"
    shutil.copytree(sample_data / "ct_abdomen" / "ct_001_dicom", folder)
    return folder, read_volume(folder)


def _reviewed(volume):
    """Two lesions on the series' grid; one rejected, a stroke of 'lesion' brushed."""
    pred = np.zeros(volume.shape, np.uint8)
    pred[30:50, 30:50, 10:16] = 2
    pred[90:96, 60:66, 20:23] = 1
    session = ReviewSession(pred, volume.voxel_volume_ml, num_classes=3)
    small = next(les for les in session.lesions.values() if les.label == 1)
    session.decide(small.id, "reject", note="vessel")
    stroke = np.array([[i, 40, 12] for i in range(60, 70)])
    assert session.paint(stroke, 1) == 10
    record = review_record(
        session, case_name="ct_001", class_names=NAMES, model="runs/x/best.pt", model_sha256=None
    )
    return session, volume.with_array(np.array(session.working())), record


def _frames_expected(mask: np.ndarray) -> int:
    return sum(int((mask[:, :, k] == cls).any()) for cls in (1, 2) for k in range(mask.shape[2]))


def test_reviewed_dicom_case_gets_a_seg_referencing_its_series(ct_series, tmp_path):
    folder, volume = ct_series
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    session, mask, record = _reviewed(volume)
    saved = save_reviewed_case(
        mask, record, tmp_path / "out", "ct_001", channels=[volume], class_names=NAMES
    )
    assert saved.dicom_seg == tmp_path / "out" / "ct_001_reviewed_seg.dcm"
    assert json.loads(saved.record.read_text())["dicom_seg"] == "ct_001_reviewed_seg.dcm"
    seg = pydicom.dcmread(saved.dicom_seg)
    assert seg.Modality == "SEG"
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["lesion", "liver"]
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"SEMIAUTOMATIC"}
    assert int(seg.NumberOfFrames) == _frames_expected(session.working())
    sources = {
        pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in folder.iterdir()
    }
    series = seg.ReferencedSeriesSequence[0]
    assert (
        series.SeriesInstanceUID == pydicom.dcmread(next(iter(sources.values()))).SeriesInstanceUID
    )
    assert {r.ReferencedSOPInstanceUID for r in series.ReferencedInstanceSequence} == set(sources)
    per_frame = {
        ref.ReferencedSOPInstanceUID
        for frame in seg.PerFrameFunctionalGroupsSequence
        for derivation in frame.DerivationImageSequence
        for ref in derivation.SourceImageSequence
    }
    assert per_frame <= set(sources)
    # re-read onto the source grid: exactly the reviewed mask (segment number = class)
    labels, segments = read_dicom_seg(saved.dicom_seg, reference=volume)
    np.testing.assert_allclose(labels.affine, volume.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(labels.array), session.working())
    assert [s["label"] for s in segments] == ["lesion", "liver"]
    nifti = read_volume(saved.mask)
    np.testing.assert_allclose(nifti.affine, volume.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(nifti.array), session.working())
    # the source series is untouched, and a second save refuses to overwrite the SEG too
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    saved.mask.unlink()
    saved.record.unlink()
    with pytest.raises(OverwriteError, match=r"ct_001_reviewed_seg\.dcm already exists"):
        save_reviewed_case(mask, record, tmp_path / "out", "ct_001", channels=[volume])


def test_dataset_case_keeps_its_seg_beside_the_review_record(ct_series, tmp_path):
    _, volume = ct_series
    _, mask, record = _reviewed(volume)
    root = tmp_path / "ds"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    meta = {"channel_names": {"0": "CT"}, "labels": dict(zip(NAMES, range(3), strict=True))}
    (root / "dataset.json").write_text(json.dumps({**meta, "file_ending": ".nii.gz"}))
    saved = save_reviewed_case(
        mask, record, root, "ct_rev", channels=[volume], as_training_case=True, class_names=NAMES
    )
    assert saved.dicom_seg == root / "reviews" / "ct_rev_seg.dcm"
    assert not list((root / "labelsTr").glob("*.dcm"))  # nnU-Net folders stay NIfTI-only
    assert pydicom.dcmread(saved.dicom_seg).Modality == "SEG"


def test_no_seg_when_the_series_files_are_gone(ct_series, tmp_path):
    _, volume = ct_series
    _, mask, record = _reviewed(volume)
    gone = volume.with_array(np.asarray(volume.array))
    gone.metadata = {**volume.metadata, "dicom_files": [str(tmp_path / "deleted.dcm")]}
    saved = save_reviewed_case(mask, record, tmp_path / "out", "up", channels=[gone])
    assert saved.dicom_seg is None
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "up_review.json",
        "up_reviewed.nii.gz",
    ]


def test_an_uploaded_series_keeps_its_headers_for_the_seg(ct_series, tmp_path):
    import io
    import zipfile

    from medseg.viewer.core.loading import read_upload

    folder, _ = ct_series
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, f"series/{path.name}")
    upload = read_upload("ct.zip", buffer.getvalue())
    assert not any(Path(f).exists() for f in upload.metadata["dicom_files"])  # temp copy gone
    _, mask, record = _reviewed(upload)
    saved = save_reviewed_case(mask, record, tmp_path / "out", "ct_up", channels=[upload])
    seg = pydicom.dcmread(saved.dicom_seg)
    uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in folder.iterdir()}
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert {r.ReferencedSOPInstanceUID for r in referenced} == uids
