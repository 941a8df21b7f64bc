"""Appending a reviewed case to an nnU-Net dataset folder (medseg.data.append)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.data.append import append_case
from medseg.data.datasets import load_dataset
from medseg.errors import DatasetError, OverwriteError
from medseg.io import Volume

AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def _dataset(root, labels):
    root.mkdir()
    meta = {"channel_names": {"0": "flair"}, "labels": labels, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _case(top: int):
    image = Volume(np.ones((6, 5, 4), np.float32), AFFINE)
    mask = np.zeros((6, 5, 4), np.uint8)
    mask[1:3, 1:3, 1:3] = top
    return image, Volume(mask, AFFINE)


@pytest.mark.parametrize(
    "labels",
    [
        {"0": "background", "1": "tumour"},
        {"background": 0, "tumour": 1},
        {"background": 0, "tumour": [1]},
    ],
    ids=["msd", "nnunet-v2", "regions"],
)
def test_labels_beyond_dataset_json_are_refused_in_every_form(tmp_path, labels) -> None:
    root = _dataset(tmp_path / "ds", labels)
    image, mask = _case(top=2)
    with pytest.raises(DatasetError, match="defines labels up to 1"):
        append_case(root, "pat", [image], mask, {"reviewer": "x"})
    assert not (root / "labelsTr").exists()


def test_append_writes_the_case_and_recounts(tmp_path) -> None:
    root = _dataset(tmp_path / "ds", {"0": "background", "1": "tumour"})
    image, mask = _case(top=1)
    added = append_case(root, "pat", [image], mask, {"reviewer": "x"})
    assert added.images == (root / "imagesTr" / "pat_0000.nii.gz",)
    assert json.loads((root / "dataset.json").read_text())["numTraining"] == 1
    assert json.loads(added.review.read_text())["mask"] == "labelsTr/pat.nii.gz"
    assert load_dataset(root).case("pat").label == added.label
    with pytest.raises(OverwriteError, match="already exists"):
        append_case(root, "pat", [image], mask, {})
