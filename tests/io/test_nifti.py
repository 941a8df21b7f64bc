"""NIfTI reading/writing: float labels, 4D, truncated files, qform/sform, overwrite rules."""

from __future__ import annotations

import gzip
import logging

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import CorruptFileError, DimensionError, OverwriteError
from medseg.io import Volume, read_volume, write_mask, write_volume


def _affine() -> np.ndarray:
    aff = np.diag([-1.5, 2.0, 3.0, 1.0])
    aff[:3, 3] = [10.0, -20.0, 30.0]
    return aff


def _save(path, data, affine=None):
    nib.save(nib.Nifti1Image(data, _affine() if affine is None else affine), str(path))
    return path


def test_float_stored_labels_become_integers(tmp_path):
    labels = np.zeros((5, 6, 7), np.float32)
    labels[1:3, 2:4, 3:5] = 2.0
    labels[0, 0, 0] = 4.0
    vol = read_volume(_save(tmp_path / "seg.nii.gz", labels))
    assert vol.array.dtype == np.uint8
    np.testing.assert_array_equal(vol.array, labels.astype(np.uint8))
    assert vol.metadata["labels_stored_as_float"] is True
    assert vol.metadata["stored_dtype"] == "float32"


def test_float_intensities_stay_float(tmp_path):
    image = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    vol = read_volume(_save(tmp_path / "img.nii.gz", image))
    assert vol.array.dtype == np.float32
    # integer-valued but many distinct values (e.g. CT stored as float): still an image
    ct = np.arange(5 * 6 * 7 * 10, dtype=np.float32).reshape(10, 6, 35) - 1000
    assert read_volume(_save(tmp_path / "ct.nii.gz", ct)).array.dtype == np.float32


def test_4d_needs_channel(tmp_path):
    data = np.stack([np.full((3, 4, 5), c, np.int16) for c in range(3)], axis=-1)
    path = _save(tmp_path / "multi.nii.gz", data)
    with pytest.raises(DimensionError, match=r"4D with 3 channels.*--channel N, N in 0\.\.2"):
        read_volume(path)
    assert read_volume(path, channel=2).array.max() == 2
    with pytest.raises(DimensionError, match="out of range"):
        read_volume(path, channel=3)


def test_trailing_singleton_axis_is_dropped(tmp_path):
    path = _save(tmp_path / "x.nii.gz", np.ones((3, 4, 5, 1), np.int16))
    assert read_volume(path).shape == (3, 4, 5)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_gz(tmp_path, keep):
    path = _save(tmp_path / "full.nii.gz", np.arange(4000, dtype=np.int16).reshape(10, 20, 20))
    raw = path.read_bytes()
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(CorruptFileError, match=r"cut\.nii\.gz.*truncated"):
        read_volume(bad)


def test_truncated_uncompressed_and_garbage(tmp_path):
    path = _save(tmp_path / "full.nii", np.arange(4000, dtype=np.int16).reshape(10, 20, 20))
    raw = path.read_bytes()
    (tmp_path / "cut.nii").write_bytes(raw[: len(raw) - 100])
    with pytest.raises(CorruptFileError, match="truncated"):
        read_volume(tmp_path / "cut.nii")
    (tmp_path / "junk.nii.gz").write_bytes(gzip.compress(b"not a nifti header"))
    with pytest.raises(CorruptFileError):
        read_volume(tmp_path / "junk.nii.gz")


def test_write_read_roundtrip_exact(tmp_path):
    arr = np.random.default_rng(1).integers(-1000, 1000, size=(4, 5, 6)).astype(np.int16)
    vol = Volume(arr, _affine(), {"source": "memory"})
    out = write_volume(vol, tmp_path / "out.nii.gz")
    back = read_volume(out)
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.affine, _affine(), atol=1e-5)
    hdr = nib.load(str(out)).header
    assert (int(hdr["qform_code"]), int(hdr["sform_code"])) == (1, 1)
    np.testing.assert_allclose(hdr.get_qform(), hdr.get_sform(), atol=1e-5)


def test_refuses_to_overwrite(tmp_path):
    src = _save(tmp_path / "img.nii.gz", np.zeros((3, 4, 5), np.int16))
    vol = read_volume(src)
    with pytest.raises(OverwriteError, match="would overwrite the input"):
        write_volume(vol, src, overwrite=True)
    with pytest.raises(OverwriteError, match="would overwrite the input"):
        write_mask(np.zeros(vol.shape, np.uint8), vol, src, overwrite=True)
    other = write_volume(vol, tmp_path / "copy.nii.gz")
    with pytest.raises(OverwriteError, match="already exists"):
        write_volume(vol, other)
    write_volume(vol, other, overwrite=True)  # explicit permission


def test_write_mask_dtypes(tmp_path):
    vol = Volume(np.zeros((3, 4, 5), np.float32), _affine(), {})
    big = np.zeros((3, 4, 5), np.int64)
    big[0, 0, 0] = 300
    assert read_volume(write_mask(big, vol, tmp_path / "a.nii.gz")).array.dtype == np.int16
    small = np.ones((3, 4, 5), bool)
    assert read_volume(write_mask(small, vol, tmp_path / "b.nii.gz")).array.dtype == np.uint8
    with pytest.raises(Exception, match="non-integer"):
        write_mask(np.full((3, 4, 5), 0.3), vol, tmp_path / "c.nii.gz")
    assert not (tmp_path / "c.nii.gz").exists()


def test_qform_sform_disagreement_is_flagged(tmp_path, caplog):
    data = np.zeros((3, 4, 5), np.uint8)
    img = nib.Nifti1Image(data, None)
    q = np.diag([2.0, 2.0, 2.0, 1.0])
    s = q.copy()
    s[:3, 3] = [5, 6, 7]
    img.set_qform(q, code=1)
    img.set_sform(s, code=2)  # aligned-anat sform: ITK prefers the qform here
    nib.save(img, str(tmp_path / "qs.nii"))
    with caplog.at_level(logging.WARNING):
        vol = read_volume(tmp_path / "qs.nii")
    assert vol.metadata["qform_sform_mismatch"] is True
    assert "qform and sform disagree" in caplog.text
    np.testing.assert_allclose(vol.affine, s)  # nibabel's choice


def test_scaled_integer_mask_with_rounding_error(tmp_path):
    """BraTS brain masks: int32 with scl_slope/inter making 1 read as 0.99999997."""
    mask = np.zeros((4, 5, 6), np.uint8)
    mask[1:3, 1:4, 2:5] = 1
    img = nib.Nifti1Image(mask.astype(np.float64) * 0.99999997, _affine())
    img.set_data_dtype(np.int32)  # nibabel picks a slope/intercept to store the floats
    nib.save(img, str(tmp_path / "brainmask.nii.gz"))
    assert np.asanyarray(nib.load(str(tmp_path / "brainmask.nii.gz")).dataobj).max() < 1
    vol = read_volume(tmp_path / "brainmask.nii.gz")
    assert vol.array.dtype == np.uint8
    np.testing.assert_array_equal(vol.array, mask)


def test_real_brats_labels(shared_data):
    seg = read_volume(shared_data / "brats2015" / "pat0001" / "seg.nii.gz")
    assert seg.array.dtype == np.uint8
    assert set(np.unique(seg.array).tolist()) <= {0, 1, 2, 3, 4}
    brain = read_volume(shared_data / "brats2015" / "pat0001" / "brainmask.nii.gz")
    assert set(np.unique(brain.array).tolist()) == {0, 1}
