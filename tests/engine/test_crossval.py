"""Cross-validation in one command: disjoint folds, out-of-fold-only decisions, the model folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from medseg.checkpoint import load_checkpoint
from medseg.data.splits import plan_split
from medseg.engine.config import build_config
from medseg.engine.crossval import cross_validate, parse_folds
from medseg.engine.crossval_join import choose_postprocessing
from medseg.errors import ConfigError, DatasetError
from medseg.inference import Predictor
from medseg.inference.postprocess import Structure
from tests.inference.infer_factory import run_cli as _run_cli


def _tiny_cv_config(tmp: Path, make_tiny_raw, dataset: Path) -> Path:
    raw = make_tiny_raw(dataset, tmp / "cache")
    raw["data"] = {**raw["data"], "num_folds": 2}
    raw["data"].pop("val_fraction")
    path = tmp / "cv.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def finished_cv(tmp_path_factory, make_tiny_raw, tiny_dataset) -> tuple[Path, Path]:
    """A finished 2-fold cross-validation of the tiny 4-case dataset, through the CLI."""
    tmp = tmp_path_factory.mktemp("cv")
    config = _tiny_cv_config(tmp, make_tiny_raw, tiny_dataset)
    out = tmp / "cv_out"
    assert _run_cli(["train", config, "--folds", "all", "--output", out, "--device", "cpu"]) == 0
    return config, out


def test_folds_are_disjoint_complete_and_never_validate_on_training_cases(finished_cv):
    _, out = finished_cv
    plan = json.loads((out / "splits.json").read_text())
    vals = [set(f["val"]) for f in plan["folds"]]
    assert len(vals) == 2
    assert not (vals[0] & vals[1])
    assert vals[0] | vals[1] == {f"case_{i:03d}" for i in range(4)}
    model = json.loads((out / "model.json").read_text())
    for fold in model["folds"]:
        ckpt = load_checkpoint(out / fold["checkpoint"])
        assert ckpt["config"]["data"]["val_cases"] == fold["val_cases"]
        assert not set(fold["train_cases"]) & set(fold["val_cases"])
        assert set(fold["train_cases"]) | set(fold["val_cases"]) == vals[0] | vals[1]
    rows = [r for r in (out / "cv_summary.csv").read_text().splitlines() if not r.startswith("#")]
    header = rows[0].split(",")
    assert {"case", "fold", "structure", "dice", "hd95_mm", "fp_lesions"} <= set(header)
    # each case scored once per structure (lesion, rim) by the fold that held it out
    by_case = {}
    for line in rows[1:]:
        row = dict(zip(header, line.split(","), strict=True))
        by_case.setdefault(row["case"], set()).add(int(row["fold"]))
        assert row["case"] in plan["folds"][int(row["fold"])]["val"]
    assert len(by_case) == 4
    assert all(len(f) == 1 for f in by_case.values())
    assert (out / "cv_summary.png").read_bytes()[:4] == b"\x89PNG"
    for k in (0, 1):
        assert (out / f"fold_{k}" / "checkpoints" / "best.pt").is_file()
        assert (out / f"fold_{k}" / "metrics.csv").is_file()


def test_model_folder_predicts_as_an_ensemble_with_its_postprocessing(
    finished_cv, tiny_dataset, tmp_path
):
    _, out = finished_cv
    model = json.loads((out / "model.json").read_text())
    predictor = Predictor.load(out, device="cpu")
    assert len(predictor.networks) == 2
    assert [r.model_dump(mode="json") for r in predictor.postprocess.rules] == model["record"][
        "postprocessing"
    ]
    scans = tiny_dataset / "imagesTr"
    pred_dir = tmp_path / "pred"
    assert (
        _run_cli(["predict", scans, "-o", pred_dir, "--model", out, "-q", "--device", "cpu"]) == 0
    )
    report = json.loads((pred_dir / "case_000.json").read_text())
    assert report["settings"]["ensemble_size"] == 2
    assert report["settings"]["model_format"] == "model_folder"
    # --no-postprocessing switches the chosen rules off
    raw_dir = tmp_path / "raw"
    args = ["predict", scans, "-o", raw_dir, "--model", out, "-q", "--no-postprocessing"]
    assert _run_cli([*args, "--device", "cpu"]) == 0
    raw = json.loads((raw_dir / "case_000.json").read_text())
    assert raw["settings"]["postprocess"]["rules"] == []


def test_rerun_joins_without_retraining(finished_cv, capsys):
    config, out = finished_cv
    ckpt = out / "fold_0" / "checkpoints" / "best.pt"
    before = ckpt.stat().st_mtime_ns
    summary_before = (out / "model.json").stat().st_mtime_ns
    capsys.readouterr()
    assert _run_cli(["train", config, "--folds", "all", "--output", out, "--device", "cpu"]) == 0
    assert ckpt.stat().st_mtime_ns == before
    assert (out / "model.json").stat().st_mtime_ns > summary_before
    printed = capsys.readouterr().out
    assert "warning: only 4 cases: these figures cannot be trusted" in printed
    assert "(95% CI over 4 cases)" in printed
    assert "lesion sensitivity: " in printed


def test_out_of_fold_figures_carry_intervals_and_the_few_cases_warning(finished_cv):
    _, out = finished_cv
    cv = json.loads((out / "model.json").read_text())["cross_validation"]["summary"]
    assert cv["cases"] == 4
    assert "only 4 cases" in cv["warning"]
    assert set(cv["structures"]) == {"lesion", "rim"}
    for figs in cv["structures"].values():
        for key in ("dice", "lesion_sensitivity", "lesion_f1", "fp_lesions_raw"):
            assert key in figs
        dice = figs["dice"]
        assert dice["cases"] == 4
        assert dice["low"] <= dice["value"] <= dice["high"]
        assert dice["text"].endswith("(95% CI over 4 cases)")
    intervals = pd.read_csv(out / "cv_summary_intervals.csv", comment="#")
    assert intervals["warning"].str.startswith("only 4 cases").all()
    per_case = pd.read_csv(out / "cv_summary.csv", comment="#")
    assert {"lesion_sensitivity", "lesion_f1", "lesion_f1_raw", "tp_lesions"} <= set(per_case)


def test_a_fold_trained_on_its_own_validation_case_is_refused(finished_cv, tmp_path):
    import shutil

    config, out = finished_cv
    copy = tmp_path / "leaky"
    shutil.copytree(out, copy)
    plan = json.loads((copy / "splits.json").read_text())
    plan["folds"][0]["val"], plan["folds"][1]["val"] = (
        plan["folds"][1]["val"],
        plan["folds"][0]["val"],
    )
    (copy / "splits.json").write_text(json.dumps(plan))
    cfg = build_config(yaml.safe_load(Path(config).read_text()))
    with pytest.raises(DatasetError, match="trained on its own held-out case"):
        cross_validate(cfg, copy, "all", device="cpu", progress=False)


def test_splits_are_stable_when_cases_are_added(tmp_path):
    path = tmp_path / "splits.json"
    first = plan_split(["a", "b", "c", "d"], path, num_folds=2, seed=0)
    again = plan_split(["a", "b", "c", "d", "e", "f"], path, num_folds=2, seed=0)
    assert [f["val"] for f in again["folds"]] == [f["val"] for f in first["folds"]]
    assert again["added_cases"] == ["e", "f"]
    with pytest.raises(ConfigError, match="2 folds but 3"):
        plan_split(["a", "b", "c"], path, num_folds=3, seed=0)


def test_parse_folds():
    assert parse_folds("all", 3) == [0, 1, 2]
    assert parse_folds("2,0", 3) == [0, 2]
    with pytest.raises(ConfigError, match=r"0\.\.2"):
        parse_folds("3", 3)


def _case(truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    return {"case_id": "x", "fold": 0, "truth": truth, "pred": pred, "spacing": (1.0, 1.0, 1.0)}


def test_postprocessing_kept_only_when_it_raises_the_out_of_fold_dice():
    truth = np.zeros((30, 30, 30), np.uint8)
    truth[5:15, 5:15, 5:15] = 1
    speck = truth.copy()
    speck[24:27, 24:27, 24:27] = 1  # a false-positive speck far from the tumour (27 mm3)
    structure = Structure(name="tumour", values=(1,))
    rules, decision = choose_postprocessing([_case(truth, speck)] * 2, [structure])
    assert decision["tumour"]["chosen"] != "none"
    assert decision["tumour"]["candidates"]["none"]["mean_fp_lesions"] == 1
    assert len(rules) == 1
    # a second real lesion: removing small components would now lose it -> nothing chosen
    multifocal = speck.copy()
    rules, decision = choose_postprocessing([_case(multifocal, speck)] * 2, [structure])
    assert decision["tumour"]["chosen"] == "none"
    assert rules == []
