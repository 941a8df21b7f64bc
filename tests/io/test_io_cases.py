"""Format detection and case naming (medseg.io.cases) and 4D probability maps through medseg.io."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from medseg.errors import DatasetError, DimensionError, OverwriteError
from medseg.io import Volume, write_probabilities
from medseg.io.cases import (
    CaseLayoutError,
    case_folder,
    channel_names_of,
    class_names_of,
    group_channels,
    image_stem,
    is_dicom_folder,
    is_label_file,
    labels_of,
    pick_label,
    read_dataset_json,
    split_channel,
)


def test_image_stem_and_channels() -> None:
    assert image_stem("CT_001.NII.GZ") == "CT_001"
    assert image_stem("a.mha") == "a"
    assert image_stem("notes.txt") is None
    assert image_stem("x.nrrd", (".nii.gz",)) is None
    assert split_channel("BRATS_001_0002") == ("BRATS_001", 2)
    assert split_channel("case_12") == ("case_12", None)


def test_dicom_folder_by_dicomdir_suffix_or_marker(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.nii.gz").write_bytes(b"\0" * 200)
    assert not is_dicom_folder(plain)
    marker = tmp_path / "marker"
    marker.mkdir()
    (marker / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    assert is_dicom_folder(marker)
    suffix = tmp_path / "suffix"
    suffix.mkdir()
    (suffix / "x.dcm").write_bytes(b"")
    assert is_dicom_folder(suffix)
    assert not is_dicom_folder(marker / "IM0001")  # a file is not a folder


def test_dataset_json_both_label_directions(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    path.write_text(
        json.dumps({"channel_names": {"1": "t1c", "0": "flair"}, "labels": {"bg": 0, "tumour": 1}})
    )
    meta = read_dataset_json(path)
    assert channel_names_of(meta) == ["flair", "t1c"]
    assert labels_of(meta["labels"], path) == {0: "bg", 1: "tumour"}
    assert labels_of({"0": "bg", "1": "tumour"}, path) == {0: "bg", 1: "tumour"}  # MSD
    assert channel_names_of({}) == ["image"]
    path.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        read_dataset_json(path)
    with pytest.raises(DatasetError, match="label entry"):
        labels_of({"x": "y"}, path)


def test_probability_maps_are_written_through_io(tmp_path: Path) -> None:
    affine = np.array([[0.0, 0, 2, 10], [-1, 0, 0, 20], [0, 1.5, 0, -5], [0, 0, 0, 1]])
    like = Volume(np.zeros((4, 5, 3), np.int16), affine)
    probs = np.random.default_rng(0).random((3, 4, 5, 3)).astype(np.float32)
    path = write_probabilities(probs, like, tmp_path / "p.nii.gz")
    img = nib.load(str(path))
    assert img.shape == (4, 5, 3, 3)
    np.testing.assert_allclose(img.affine, affine)
    np.testing.assert_array_equal(np.asarray(img.dataobj)[..., 2], probs[2])
    assert sitk.ReadImage(str(path)).GetNumberOfComponentsPerPixel() in (1, 3)  # SimpleITK reads it
    with pytest.raises(OverwriteError):
        write_probabilities(probs, like, path)
    with pytest.raises(DimensionError, match="do not lie on the grid"):
        write_probabilities(probs[:, :2], like, tmp_path / "q.nii.gz")


def _touch(*paths: Path) -> list[Path]:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return list(paths)


@pytest.mark.parametrize(
    "name",
    ["seg.nii.gz", "segmentation.nii.gz", "brainmask.nii.gz", "BraTS-001-seg.nii.gz",
     "ct_001_label.nii.gz", "labels.nrrd", "gt.nii", "tumour_mask.mha", "seg_model_fusion.nii.gz"],
)  # fmt: skip
def test_mask_named_files_are_labels(name: str) -> None:
    assert is_label_file(name)


@pytest.mark.parametrize(
    "name", ["flair.nii.gz", "t1c.nii.gz", "pat_0000.nii.gz", "BraTS-001-t2w.nii.gz", "ct.mha"]
)
def test_image_named_files_are_not_labels(name: str) -> None:
    assert not is_label_file(name)


def test_pick_label_prefers_the_segmentation_over_a_brain_mask(tmp_path: Path) -> None:
    seg, brainmask, named = (
        tmp_path / n for n in ("seg.nii.gz", "brainmask.nii.gz", "p-seg.nii.gz")
    )
    assert pick_label([brainmask, seg]) == seg
    assert pick_label([brainmask]) is None  # a brain mask is never the ground truth
    assert pick_label([named, seg]) == seg  # the bare name wins
    assert pick_label([seg, tmp_path / "label.nii.gz"]) is None  # a tie: ambiguous


def test_case_folder_never_takes_a_mask_as_channel(tmp_path: Path) -> None:
    folder = tmp_path / "pat0001"
    _touch(*(folder / f"{n}.nii.gz" for n in ("brainmask", "flair", "seg", "t1c")))
    found = case_folder(folder)
    assert [p.name for p in found.images] == ["flair.nii.gz", "t1c.nii.gz"]
    assert found.label == folder / "seg.nii.gz"
    assert found.named
    assert found.channel_names == ("flair", "t1c")
    numbered = tmp_path / "numbered"
    _touch(numbered / "p_0001.nii.gz", numbered / "p_0000.nii.gz", numbered / "segmentation.nii.gz")
    found = case_folder(numbered)
    assert [p.name for p in found.images] == ["p_0000.nii.gz", "p_0001.nii.gz"]
    assert found.label.name == "segmentation.nii.gz"
    assert not found.named
    _touch(numbered / "q_0000.nii.gz")
    with pytest.raises(CaseLayoutError, match="several cases"):
        case_folder(numbered)


def test_group_channels_refuses_duplicates_and_lists_missing_channels(tmp_path: Path) -> None:
    scan, scan0 = _touch(tmp_path / "scan.nii.gz", tmp_path / "scan_0000.nii.gz")
    with pytest.raises(CaseLayoutError) as err:
        group_channels([scan, scan0], unnumbered=True, where=tmp_path)
    assert str(scan) in str(err.value)
    assert str(scan0) in str(err.value)  # both files named
    assert group_channels([scan, scan0]) == {"scan": [scan0]}  # unnumbered skipped
    files = _touch(*(tmp_path / n for n in ("a_0000.nii.gz", "a_0002.nii.gz", "b_0000.nii.gz")))
    with pytest.raises(CaseLayoutError, match=str(tmp_path)) as err:
        group_channels(files, n_channels=3, where=tmp_path)
    message = str(err.value)
    for missing in ("a_0001.nii.gz", "b_0001.nii.gz", "b_0002.nii.gz"):  # every one listed
        assert missing in message
    assert err.value.bad_cases == ("a", "b")
    assert isinstance(err.value, DatasetError)
    assert group_channels(_touch(tmp_path / "c_0001.nii.gz", tmp_path / "c_0000.nii.gz")) == {
        "c": [tmp_path / "c_0000.nii.gz", tmp_path / "c_0001.nii.gz"]
    }


def test_dataset_json_v2_msd_and_region_labels(tmp_path: Path) -> None:
    path = tmp_path / "dataset.json"
    v2 = {"background": 0, "whole tumour": [1, 2, 3], "tumour core": [2, 3], "enhancing": 3}
    assert labels_of(v2, path) == {
        0: "background",
        1: "whole tumour",
        2: "whole tumour",
        3: "enhancing",
    }
    msd = {"0": "background", "1": "necrosis", "4": "enhancing"}
    assert class_names_of(labels_of(msd, path)) == (
        "background", "necrosis", "label 2", "label 3", "enhancing"
    )  # fmt: skip
    assert class_names_of(labels_of({"background": 0, "tumour": 1}, path)) == (
        "background",
        "tumour",
    )
    assert class_names_of({}) == ()
