"""Region-based models (overlapping classes, BraTS style): label values, loss, decoding,
prediction and the ensemble export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.data.preprocessing import PreprocessingParams
from medseg.inference import Predictor
from medseg.inference.slices import LabelDecoder
from medseg.losses import RegionDiceBCELoss
from tests.inference.infer_factory import blob_volume, write_tiny_checkpoint

BRATS_NAMES = ["background", "necrosis", "oedema", "non_enhancing", "enhancing"]
BRATS_REGIONS = {"whole_tumour": [1, 2, 3, 4], "tumour_core": [1, 3, 4], "enhancing": [4]}


def test_region_labels_are_the_outermost_value_each_region_adds():
    params = PreprocessingParams(class_names=BRATS_NAMES, regions=BRATS_REGIONS)
    assert params.region_labels == [2, 1, 4]
    assert params.num_outputs == 3
    with pytest.raises(ValueError, match=r"label values 1\.\.4"):
        PreprocessingParams(class_names=BRATS_NAMES, regions={"bad": [5]})


def test_decoder_writes_inner_regions_over_outer_ones():
    probs = torch.zeros(1, 3, 1, 4)
    probs[0, 0] = torch.tensor([[0.2, 0.9, 0.9, 0.9]])  # whole tumour
    probs[0, 1] = torch.tensor([[0.0, 0.1, 0.8, 0.8]])  # core
    probs[0, 2] = torch.tensor([[0.0, 0.0, 0.1, 0.7]])  # enhancing
    labels = LabelDecoder(3, [2, 1, 4])(probs)
    assert labels.tolist() == [[[0, 2, 1, 4]]]


def test_region_loss_matches_a_hand_computation():
    target = torch.tensor([[[0, 2], [1, 4]]])  # (1, 2, 2)
    logits = torch.zeros(1, 3, 2, 2)
    loss = RegionDiceBCELoss(list(BRATS_REGIONS.values()), smooth=0.0)
    regions = loss.region_targets(target)
    assert regions[0, 0].tolist() == [[0, 1], [1, 1]]  # whole tumour
    assert regions[0, 1].tolist() == [[0, 0], [1, 1]]  # core
    assert regions[0, 2].tolist() == [[0, 0], [0, 1]]  # enhancing
    # p = 0.5 everywhere: Dice per region 1 - 2*0.5*n/(0.5*4 + n); BCE = ln 2
    n = torch.tensor([3.0, 2.0, 1.0])
    dice = (1 - 2 * 0.5 * n / (2 + n)).mean()
    assert float(loss(logits, target)) == pytest.approx(float(dice) + np.log(2), abs=1e-5)


@pytest.fixture(scope="module")
def region_checkpoint(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(
        tmp_path_factory.mktemp("regions") / "m.pt",
        class_names=tuple(BRATS_NAMES),
        regions=BRATS_REGIONS,
        context=0,
    )


def test_region_model_predicts_in_the_source_label_values(region_checkpoint):
    vol = blob_volume(shape=(40, 36, 12))
    pred = Predictor.load(region_checkpoint, device="cpu").predict(vol, return_probabilities=True)
    values = set(np.unique(pred.label.array).tolist())
    assert values <= {0, 1, 2, 4}
    assert len(values) > 1
    assert pred.probabilities.shape == (3, 40, 36, 12)  # one probability per region
    # nested: every enhancing voxel has core and whole-tumour probability decided too
    wt = pred.probabilities[0] > 0.5
    assert np.isin(pred.label.array[wt], [1, 2, 4]).all()


def test_model_folder_exports_as_one_averaging_network(region_checkpoint, tmp_path):
    import json
    import shutil

    from medseg.checkpoint import ModelRecord, load_record
    from medseg.inference.export import export_model
    from medseg.inference.model_folder import write_model_folder

    other = write_tiny_checkpoint(
        tmp_path / "b.pt", class_names=tuple(BRATS_NAMES), regions=BRATS_REGIONS, context=0, seed=5
    )
    folder = tmp_path / "folder"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "fold_1").mkdir()
    shutil.copy(region_checkpoint, folder / "fold_0" / "m.pt")
    shutil.copy(other, folder / "fold_1" / "m.pt")
    record: ModelRecord = load_record(region_checkpoint)[0]
    folds = [{"fold": k, "checkpoint": f"fold_{k}/m.pt"} for k in (0, 1)]
    write_model_folder(folder, record, folds)
    ensemble = Predictor.load(folder, device="cpu")
    vol = blob_volume(shape=(40, 36, 12))
    ref = ensemble.predict(vol)
    single = Predictor.load(region_checkpoint, device="cpu").predict(vol)
    assert not np.array_equal(ref.label.array, single.label.array)  # two folds are averaged
    onnx_path = tmp_path / "ensemble.onnx"
    meta = export_model(folder, onnx_path, "onnx")
    assert meta["ensemble_folds"] == 2
    assert meta["max_abs_diff"] < 1e-3
    exported = Predictor.load(onnx_path, device="cpu").predict(vol)
    agree = np.mean(exported.label.array == ref.label.array)
    assert agree > 0.999, agree
    assert json.loads((folder / "model.json").read_text())["format"] == "medseg-model-folder"
