"""Review -> correct -> retrain, end to end on the synthetic sample data (docs/viewer.md).

Predict a case new to the dataset, reject a lesion and brush a stroke through the review API
the viewer uses, save the case into a copy of the dataset, fine-tune one epoch with
``medseg train CONFIG --init-from MODEL`` and predict again with the new checkpoint.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from medseg.checkpoint import load_checkpoint
from medseg.io import read_volume
from medseg.viewer.core import render
from medseg.viewer.core.review import (
    ReviewSession,
    brush_plane_pixels,
    display_to_source,
    foreground_probability,
    review_record,
    save_reviewed_case,
)
from tests.inference.infer_factory import run_cli

DEMO = Path(__file__).resolve().parents[2] / "medseg" / "assets" / "default_model.pt"
NEW = "brain_008"  # not copied into the dataset: the new patient


def _dataset_copy(sample: Path, root: Path) -> Path:
    """``sample_data/brain_mr`` without ``brain_008`` (the dataset before the review)."""
    shutil.copytree(sample, root, ignore=shutil.ignore_patterns(f"{NEW}*"))
    meta = json.loads((root / "dataset.json").read_text())
    meta["numTraining"] = len(list((root / "labelsTr").glob("*.nii.gz")))
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _config(tmp: Path, dataset: Path) -> Path:
    """Fine-tuning settings of the demo model's network (tiny epochs, CPU)."""
    raw = {
        "name": "tune",
        "seed": 0,
        "device": "cpu",
        "data": {
            "dataset": str(dataset),
            "cache_dir": str(tmp / "cache"),
            "preprocessing": {"modality": "mr", "slice_axis": 2},
            "crop_size": [64, 64],
            "samples_per_epoch": 16,
            "val_fraction": 0.25,
            "num_workers": 0,
            "augmentation": {"enabled": False},
        },
        "model": {"name": "unet", "options": {"depth": 3, "base_channels": 16, "norm": "batch"}},
        "optim": {"lr": 1e-5},
        "train": {"epochs": 1, "batch_size": 8, "overlays": 0, "val_batch_size": 32},
    }
    path = tmp / "tune.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _review(model: Path, flair) -> tuple[ReviewSession, object, dict]:
    """Predict, reject the first lesion in review order, brush an 'oedema' stroke."""
    from medseg.inference import Predictor

    pred = Predictor.load(model, device="cpu").predict([flair], return_probabilities=True)
    fg = foreground_probability(pred.probabilities)
    session = ReviewSession(pred.label.array, pred.label.voxel_volume_ml, fg, num_classes=3)
    assert session.lesions, "the fine-tuned demo model found no lesion on brain_008"
    first = session.review_order()[0]
    session.decide(first.id, "reject", note="not a lesion")
    shown = render.to_display(pred.label)
    index = shown.shape[2] // 2
    plane = render.extract_slice(np.asarray(shown.array), "axial", index).shape
    pixels = np.vstack(
        [brush_plane_pixels(plane, (2.0, 2.0), (10.0, 10.0 + t), 3.0) for t in range(8)]
    )
    voxels = render.plane_to_volume("axial", index, pixels, shown.shape)
    assert session.paint(display_to_source(voxels, shown.affine, pred.label.affine), 2) > 0
    record = review_record(
        session, case_name=NEW, class_names=pred.class_names, model=str(model), model_sha256=None
    )
    return session, pred.label.with_array(np.array(session.working())), record


@pytest.mark.slow
def test_review_correct_retrain_loop(sample_data: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    dataset = _dataset_copy(sample_data / "brain_mr", tmp_path / "Dataset_reviewed")
    config = _config(tmp_path, dataset)
    cpu = ["--device", "cpu"]
    # the researcher's model of this dataset: the demo model fine-tuned on it (split recorded)
    run1, run2 = tmp_path / "run1", tmp_path / "run2"
    assert run_cli(["train", config, "--init-from", DEMO, "-o", run1, *cpu]) == 0
    first_split = json.loads((run1 / "split.json").read_text())
    assert NEW + "_rev" not in first_split["train"] + first_split["val"]
    best1 = run1 / "checkpoints" / "best.pt"

    flair = read_volume(sample_data / "brain_mr" / "imagesTr" / f"{NEW}_0000.nii.gz")
    session, mask, record = _review(best1, flair)
    saved = save_reviewed_case(
        mask, record, dataset, f"{NEW}_rev", channels=[flair], as_training_case=True
    )
    assert saved.mask == dataset / "labelsTr" / f"{NEW}_rev.nii.gz"
    assert session.changed_voxels() > 0
    np.testing.assert_array_equal(np.asarray(read_volume(saved.mask).array), session.working())
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 8

    args = ["train", config, "--init-from", best1, "--set", "train.epochs=1", "-o", run2, *cpu]
    assert run_cli(args) == 0
    split = json.loads((run2 / "split.json").read_text())
    assert f"{NEW}_rev" in split["train"]  # the corrected case trains ...
    assert split["val"] == first_split["val"]  # ... and no earlier case changed side
    assert set(split["train"]) == {*first_split["train"], f"{NEW}_rev"}
    assert split["added_in_this_run"] == {"train": [f"{NEW}_rev"]}

    tuned = load_checkpoint(run2 / "checkpoints" / "best.pt")
    assert tuned["config"]["train"]["init_from"] == str(best1)
    start = load_checkpoint(best1)["state_dict"]
    from medseg.engine.state import seed_everything
    from medseg.models import build_model

    seed_everything(0)
    fresh = build_model("unet", 1, 3, depth=3, base_channels=16, norm="batch").state_dict()
    weights = [k for k, v in start.items() if v.is_floating_point() and "running" not in k]

    def distance(a, b) -> float:
        return float(sum((a[k].float() - b[k].float()).pow(2).sum() for k in weights))

    moved = distance(tuned["state_dict"], start)
    assert 0 < moved < distance(tuned["state_dict"], fresh) / 100  # started from best1

    out = tmp_path / "pred"
    image = sample_data / "brain_mr" / "imagesTr" / f"{NEW}_0000.nii.gz"
    model = run2 / "checkpoints" / "best.pt"
    assert run_cli(["predict", image, "-o", out, "--model", model, "-q", *cpu]) == 0
    again = read_volume(out / f"{NEW}.nii.gz")
    np.testing.assert_allclose(again.affine, flair.affine, atol=1e-4)
    assert again.shape == flair.shape
    assert set(np.unique(np.asarray(again.array))) <= {0, 1, 2}
    assert json.loads((out / f"{NEW}.json").read_text())["class_names"] == [
        "background",
        "tumour_core",
        "oedema",
    ]
