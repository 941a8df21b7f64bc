"""Case discovery, data-root confinement and upload safety."""

from __future__ import annotations

import io
import json
import os
import stat
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import InputNotFoundError
from medseg.io import Volume, write_mask, write_volume
from medseg.io.cases import is_dicom_folder
from medseg.viewer.core import loading

AFFINE = np.diag([-1.0, -1.0, 2.0, 1.0])


def _write_case(path: Path, label_path: Path | None = None) -> Volume:
    vol = Volume(np.arange(8 * 6 * 4, dtype=np.float32).reshape(8, 6, 4), AFFINE)
    write_volume(vol, path)
    if label_path is not None:
        mask = np.zeros(vol.shape, np.uint8)
        mask[2:4, 2:4, 1:3] = 1
        write_mask(mask, vol, label_path)
    return vol


def test_discover_nnunet_flat_and_multichannel(tmp_path: Path) -> None:
    ds = tmp_path / "brain_mr"
    for n in (1, 2):
        _write_case(
            ds / "imagesTr" / f"brain_{n:03d}_0000.nii.gz",
            ds / "labelsTr" / f"brain_{n:03d}.nii.gz",
        )
        _write_case(ds / "imagesTr" / f"brain_{n:03d}_0001.nii.gz")
    (ds / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "FLAIR", "1": "T1c"},
                "labels": {"background": 0, "tumour_core": 1, "oedema": 2},
            }
        )
    )
    ct = tmp_path / "ct_abdomen"
    _write_case(ct / "ct_001.nii.gz", ct / "ct_001_label.nii.gz")
    refs = {r.name: r for r in loading.discover_cases(tmp_path)}
    assert set(refs) == {"brain_mr/brain_001", "brain_mr/brain_002", "ct_abdomen/ct_001"}
    brain = refs["brain_mr/brain_002"]
    assert [p.name for p in brain.images] == ["brain_002_0000.nii.gz", "brain_002_0001.nii.gz"]
    assert brain.label.name == "brain_002.nii.gz"
    assert brain.class_names == ("background", "tumour_core", "oedema")
    assert refs["ct_abdomen/ct_001"].label.name == "ct_001_label.nii.gz"
    assert loading.default_case(list(refs.values())).name == "brain_mr/brain_002"
    case = loading.load_case(brain)
    assert case.channel_names == ["FLAIR", "T1c"]
    assert len(case.channels) == 2
    assert case.truth is not None
    assert case.truth.array.max() == 1
    assert case.digest == loading.load_case(brain).digest  # stable cache key


def test_resolve_in_root_refuses_escapes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.nii.gz").write_bytes(b"x")
    (tmp_path / "secret.nii.gz").write_bytes(b"x")
    assert loading.resolve_in_root(root, "sub/a.nii.gz") == (root / "sub" / "a.nii.gz").resolve()
    for escape in ("../secret.nii.gz", "sub/../../secret.nii.gz", str(tmp_path / "secret.nii.gz")):
        with pytest.raises(loading.DataRootError, match="outside the data root"):
            loading.resolve_in_root(root, escape)
    os.symlink(tmp_path / "secret.nii.gz", root / "link.nii.gz")
    with pytest.raises(loading.DataRootError):
        loading.resolve_in_root(root, "link.nii.gz")
    with pytest.raises(InputNotFoundError):
        loading.resolve_in_root(root, "sub/missing.nii.gz")


def test_case_list_skips_symlinks_leaving_the_root(tmp_path: Path) -> None:
    """The --data-root listing offers only what resolve_in_root would open."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    _write_case(root / "inside.nii.gz", root / "inside_label.nii.gz")
    _write_case(outside / "secret.nii.gz", outside / "secret_label.nii.gz")
    (outside / "nested").mkdir()
    _write_case(outside / "nested" / "hidden.nii.gz")
    os.symlink(outside / "secret.nii.gz", root / "link.nii.gz")
    _write_case(root / "mixed.nii.gz")
    os.symlink(outside / "secret_label.nii.gz", root / "mixed_label.nii.gz")
    os.symlink(outside / "nested", root / "linked_dir")
    os.symlink(root / "inside.nii.gz", root / "alias.nii.gz")  # stays inside: kept
    names = {r.name for r in loading.discover_cases(root)}
    assert names == {"inside", "alias"}
    # the operator-configured sample folder may link elsewhere on purpose
    loose = {r.name for r in loading.discover_cases(root, confine=False)}
    assert {"link", "mixed", "linked_dir/hidden"} <= loose


def _zip(entries: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if symlink:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("entries", "symlink", "message"),
    [
        ({"../evil.dcm": b"x"}, None, "outside the archive"),
        ({"/abs/evil.dcm": b"x"}, None, "outside the archive"),
        ({"series/..\\..\\evil.dcm": b"x"}, None, "outside the archive"),
        ({"series/1.dcm": b"x"}, "series/link", "symbolic link"),
        ({"a/1.dcm": b"x", "b/1.dcm": b"x"}, None, "2 folders"),
    ],
    ids=["dotdot", "absolute", "backslash", "symlink", "two-series"],
)
def test_unsafe_zip_refused(entries, symlink, message, tmp_path: Path) -> None:
    with pytest.raises(loading.UploadError, match=message):
        loading.read_upload("series.zip", _zip(entries, symlink))
    assert not (tmp_path.parent / "evil.dcm").exists()


def test_upload_limits_and_types() -> None:
    with pytest.raises(loading.UploadError, match="upload limit"):
        loading.read_upload("big.nii.gz", b"x" * 2048, max_mb=0.001)
    with pytest.raises(loading.UploadError, match="unsupported upload"):
        loading.read_upload("notes.txt", b"hello")


def test_upload_nifti_roundtrip_and_temp_files_removed(tmp_path: Path, monkeypatch) -> None:
    vol = _write_case(tmp_path / "scan.nii.gz")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    loaded = loading.read_upload("scan.nii.gz", (tmp_path / "scan.nii.gz").read_bytes())
    np.testing.assert_array_equal(loaded.array, vol.array)
    np.testing.assert_allclose(loaded.affine, vol.affine)
    assert loaded.metadata["source"] == "upload:scan.nii.gz"
    assert list(scratch.iterdir()) == []  # temporary folder removed
    with pytest.raises(loading.UploadError):
        loading.read_upload("bad.nii.gz", b"garbage")
    assert list(scratch.iterdir()) == []


def test_real_dicom_series_zip_upload(shared_data: Path, tmp_path: Path) -> None:
    """A zipped real CT DICOM series (JPEG 2000, extension-less files) opens as a CT volume."""
    series = shared_data / "totalseg" / "example_ct_dicom"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(series.iterdir()):
            zf.write(path, f"study/{series.name}/{path.name}")
    volume = loading.read_upload("ct_series.zip", buffer.getvalue())
    assert volume.shape == (512, 512, 20)
    assert volume.metadata["source"] == "upload:ct_series.zip"
    assert volume.array.min() < -500  # Hounsfield units: air
    assert is_dicom_folder(series)
    refs = loading.discover_cases(series.parent)
    assert "example_ct_dicom" in [r.name for r in refs]


def test_soft_ground_truth_is_refused_not_rounded():
    """A probability map given as ground truth would be rounded to an empty mask and show a
    wrong Dice; the viewer refuses it with a readable message instead."""
    import numpy as np
    import pytest

    from medseg.errors import DatasetError
    from medseg.io import Volume
    from medseg.viewer.core.loading import attach_truth

    image = Volume(np.zeros((4, 4, 3), np.float32), np.eye(4), {"source": "scan.nii.gz"})
    soft = image.with_array(np.full((4, 4, 3), 0.4, np.float32), source="prob.nii.gz")
    with pytest.raises(DatasetError, match=r"prob\.nii\.gz.*threshold soft masks"):
        attach_truth(image, soft)
    stored = image.with_array(np.ones((4, 4, 3), np.float32), source="seg.nii.gz")
    truth = attach_truth(image, stored)
    assert truth.array.dtype == np.int16
    assert int(truth.array.sum()) == 4 * 4 * 3


def test_digest_hashes_fortran_ordered_scans_without_a_copy_and_sees_one_voxel() -> None:
    from medseg.io import Volume

    array = np.asfortranarray(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6))
    vol = Volume(array, np.eye(4))
    key = loading.volume_digest([vol])
    assert key == loading.volume_digest([Volume(array.copy(order="F"), np.eye(4))])
    changed = array.copy(order="F")
    changed[3, 4, 5] += 1
    assert loading.volume_digest([Volume(changed, np.eye(4))]) != key
    shifted = np.diag([2.0, 1.0, 1.0, 1.0])
    assert loading.volume_digest([Volume(array, shifted)]) != key


def test_brats_data_root_lists_one_case_per_patient(shared_data: Path) -> None:
    """Per-patient folders are one case each: flair + t1c, seg as truth, brainmask never."""
    refs = {r.name: r for r in loading.discover_cases(shared_data / "brats2015", confine=False)}
    assert set(refs) == {"pat0001", "pat0002", "pat0003", "pat0004"}
    for ref in refs.values():
        assert [p.name for p in ref.images] == ["flair.nii.gz", "t1c.nii.gz"]
        assert ref.label is not None
        assert ref.label.name == "seg.nii.gz"
        assert ref.named_channels


def test_flat_folder_masks_are_never_cases(tmp_path: Path) -> None:
    _write_case(tmp_path / "ct_001.nii.gz", tmp_path / "ct_001-seg.nii.gz")
    _write_case(tmp_path / "ct_002.nii.gz", tmp_path / "ct_002_segmentation.nii.gz")
    _write_case(tmp_path / "brainmask.nii.gz")
    refs = {r.name: r for r in loading.discover_cases(tmp_path)}
    assert set(refs) == {"ct_001", "ct_002"}
    assert refs["ct_001"].label.name == "ct_001-seg.nii.gz"
    assert refs["ct_002"].label.name == "ct_002_segmentation.nii.gz"


def test_nnunet_listing_reads_msd_labels_and_skips_incomplete_cases(tmp_path: Path) -> None:
    ds = tmp_path / "ds"
    for name in ("a_0000", "a_0001", "b_0000", "c_0000", "c_0002"):
        _write_case(ds / "imagesTr" / f"{name}.nii.gz")
    (ds / "dataset.json").write_text(
        json.dumps(
            {"modality": {"0": "FLAIR", "1": "T1c"}, "labels": {"0": "background", "1": "tumour"}}
        )
    )
    refs = {r.name: r for r in loading.discover_cases(tmp_path)}
    # b lacks T1c, c has a gap: not listed (a warning names them), the rest still is
    assert set(refs) == {"ds/a"}
    assert refs["ds/a"].class_names == ("background", "tumour")
    assert refs["ds/a"].channel_names == ("FLAIR", "T1c")
