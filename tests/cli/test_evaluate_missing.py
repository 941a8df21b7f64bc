"""``medseg evaluate`` with a reference case that has no prediction: it counts (Dice 0)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from medseg.io import Volume, write_volume
from tests.inference.infer_factory import run_cli


def _mask(value_boxes) -> np.ndarray:
    arr = np.zeros((20, 20, 10), np.uint8)
    for value, (lo, hi) in value_boxes:
        arr[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = value
    return arr


def test_missing_prediction_counts_as_dice_zero_and_exits_1(tmp_path, capsys):
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    ref = _mask([(1, ((2, 2, 2), (6, 6, 6))), (2, ((10, 10, 2), (14, 14, 4)))])
    for name in ("c1", "c2", "c3"):
        write_volume(Volume(ref, affine), gt_dir / f"{name}.nii.gz")
    for name in ("c1", "c2"):  # c3 was never predicted
        write_volume(Volume(ref, affine), pred_dir / f"{name}.nii.gz")
    csv = tmp_path / "metrics.csv"
    assert run_cli(["evaluate", pred_dir, gt_dir, "--output", csv]) == 1
    err = capsys.readouterr().err
    assert "missing: 1 reference case(s) have no prediction" in err
    assert "c3" in err
    table = pd.read_csv(csv, comment="#")
    assert len(table) == 6  # 3 cases x classes 1, 2
    missing = table[table["case"] == "c3"]
    assert missing["missing"].all()
    assert (missing["dice"] == 0.0).all()
    assert missing["hd95_mm"].isna().all()
    assert (missing["fn"] == 1).all()
    assert (missing["ref_ml"] > 0).all()
    assert not table.loc[table["case"] != "c3", "missing"].any()
    summary = pd.read_csv(tmp_path / "metrics_summary.csv", comment="#")
    row = summary[summary["class"] == 1].iloc[0]
    assert row["cases"] == 3
    assert row["missing_cases"] == 1
    assert math.isclose(row["dice_mean"], 2 / 3)  # 1, 1 and the missing 0


def test_complete_predictions_exit_0_and_are_not_flagged(tmp_path):
    affine = np.eye(4)
    ref = _mask([(1, ((2, 2, 2), (6, 6, 6)))])
    write_volume(Volume(ref, affine), tmp_path / "gt" / "a.nii.gz")
    write_volume(Volume(ref, affine), tmp_path / "pred" / "a.nii.gz")
    write_volume(Volume(ref, affine), tmp_path / "pred" / "extra.nii.gz")  # no reference: ignored
    csv = tmp_path / "m.csv"
    assert run_cli(["evaluate", tmp_path / "pred", tmp_path / "gt", "-o", csv]) == 0
    table = pd.read_csv(csv, comment="#")
    assert list(table["case"]) == ["a"]
    assert not table["missing"].any()
