"""DICOM-SEG reading (dcmqi examples): label map geometry and segment descriptions."""

from __future__ import annotations

import numpy as np

from medseg.io import read_dicom_seg, read_volume


def test_liver_seg_matches_dcmqi_nrrd(shared_data):
    seg, segments = read_dicom_seg(shared_data / "dcmqi" / "liver.dcm")
    nrrd = read_volume(shared_data / "dcmqi" / "liver_seg.nrrd")
    assert segments[0]["number"] == 1
    assert segments[0]["label"] == "Liver"
    assert segments[0]["type"] == "Liver"
    assert seg.same_grid(nrrd, atol=1e-4)
    np.testing.assert_array_equal(seg.array, nrrd.array)
    assert int(seg.array.sum()) == 107098
    assert seg.metadata["modality"] == "SEG"


def test_seg_on_its_ct_grid(shared_data):
    ct = read_volume(shared_data / "dcmqi" / "ct-3slice")
    seg, _ = read_dicom_seg(shared_data / "dcmqi" / "liver.dcm", reference=ct)
    assert seg.same_grid(ct)
    assert seg.metadata["alignment"] == "exact"
    liver_hu = np.median(ct.array[seg.array == 1])
    assert 30 <= liver_hu <= 120, liver_hu  # soft tissue, not air/bone
    assert np.median(ct.array[seg.array == 0]) < liver_hu


def test_read_volume_on_seg_file(shared_data):
    vol = read_volume(shared_data / "dcmqi" / "liver.dcm")
    assert vol.shape == (512, 512, 3)
    assert set(np.unique(vol.array).tolist()) == {0, 1}


def test_overlapping_segments(shared_data):
    seg, segments = read_dicom_seg(shared_data / "dcmqi" / "partial_overlaps.dcm")
    assert [s["number"] for s in segments] == [1, 2, 3, 4, 5]
    assert seg.metadata["overlapping_voxels"] > 0
    assert set(np.unique(seg.array).tolist()) <= {0, 1, 2, 3, 4, 5}
