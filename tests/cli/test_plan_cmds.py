"""``medseg plan`` and ``medseg train DATASET``: a commented, valid, reproducible plan; the
fingerprint cache; bad input as one error line; planned training to a usable model folder."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from medseg.cli.main import main
from medseg.engine.config import load_config

REPO = Path(__file__).resolve().parents[2]
BRAIN = REPO / "sample_data" / "brain_mr"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One private HOME for the module: the step time is measured once, caches stay out of
    the user's."""
    return tmp_path_factory.mktemp("home")


@pytest.fixture
def brain(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the sample dataset (its fingerprint cache is keyed by its path)."""
    monkeypatch.setenv("HOME", str(home))
    return Path(shutil.copytree(BRAIN, tmp_path / "brain_mr"))


def _exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().err


def test_plan_writes_a_commented_config_that_trains(brain: Path, tmp_path: Path, capsys) -> None:
    plan = tmp_path / "plan.yaml"
    main(["plan", str(brain), "--time-budget", "20m", "--device", "cpu", "-o", str(plan)])
    text = plan.read_text()
    assert "research use only" in text.lower()
    cfg = load_config(plan)  # an ordinary medseg config
    assert cfg.data.preprocessing.slice_axis == 2  # 2 x 2 x 4 mm: across the thick axis
    assert cfg.data.preprocessing.target_spacing == (2.0, 2.0)
    # the whole head: at most the 96 x 112 slice, in multiples of 16
    assert all(c % 16 == 0 for c in cfg.data.crop_size)
    assert cfg.data.crop_size[0] <= 96
    assert cfg.data.crop_size[1] <= 112
    assert cfg.data.preprocessing.class_names == ["background", "tumour_core", "oedema"]
    # training fills its share of the budget; prediction averages the four flips
    assert cfg.train.fill_time_limit
    assert cfg.train.test_time_augmentation
    assert cfg.train.time_limit_minutes is not None
    lines = {line.split(":")[0].strip(): line for line in text.splitlines() if ":" in line}
    for key in ("slice_axis", "target_spacing", "crop_size", "epochs", "batch_size", "modality"):
        assert "  # " in lines[key], f"{key} has no reason: {lines[key]}"
    assert "fills" not in capsys.readouterr().err  # nothing but logging on stderr


def test_same_fingerprint_and_device_give_the_same_plan(
    brain: Path, tmp_path: Path, monkeypatch
) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    main(["plan", str(brain), "--device", "cpu", "-o", str(first)])
    # the second plan reads no image: the fingerprint comes from the cache
    import medseg.data.fingerprint as fingerprint

    def no_reading(*_args, **_kwargs):
        raise AssertionError("the fingerprint was recomputed although the data did not change")

    monkeypatch.setattr(fingerprint, "load_case", no_reading)
    main(["plan", str(brain), "--device", "cpu", "-o", str(second)])
    assert first.read_text() == second.read_text()


def test_changed_data_invalidates_the_fingerprint(brain: Path, tmp_path: Path) -> None:
    from medseg.data.datasets import load_dataset
    from medseg.data.fingerprint import compute_fingerprint

    spec = load_dataset(brain)
    first = compute_fingerprint(spec, tmp_path / "cache")
    label = brain / "labelsTr" / "brain_001.nii.gz"
    img = nib.load(label)
    data = np.asarray(img.dataobj).copy()
    data[data == 2] = 0  # drop the oedema of one case
    nib.save(nib.Nifti1Image(data, img.affine, img.header), label)
    second = compute_fingerprint(load_dataset(brain), tmp_path / "cache")
    assert first["source_key"] != second["source_key"]
    assert second["classes"][1]["cases_present"] == first["classes"][1]["cases_present"] - 1


def test_explain_prints_the_decisions(brain: Path, capsys) -> None:
    main(["plan", str(brain), "--device", "cpu", "--explain"])
    out = capsys.readouterr().out
    assert "setting" in out
    assert "why" in out
    assert "data.preprocessing.slice_axis" in out
    assert "anisotropic" in out
    assert "only 8 labelled cases" in out  # fewer than 10: the figures will not carry over


def test_budget_shorter_than_an_epoch_names_the_minimum(brain: Path, capsys) -> None:
    code, err = _exit(["plan", str(brain), "--device", "cpu", "--time-budget", "5s"], capsys)
    assert code == 2
    assert err.strip().splitlines()[-1].startswith("error: time budget")
    assert "--time-budget" in err
    assert "minimum" in err


def test_a_budget_too_short_to_train_well_says_what_would(
    brain: Path, capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fixed_step_time(monkeypatch, tmp_path)
    main(["plan", str(brain), "--device", "cpu", "--time-budget", "2m", "--explain"])
    out = capsys.readouterr().out
    assert "expect an undertrained model" in out
    advised = int(out.split("need about --time-budget ")[1].split("m")[0])
    assert advised > 2
    main(["plan", str(brain), "--device", "cpu", "--time-budget", f"{advised + 2}m", "--explain"])
    assert "expect an undertrained model" not in capsys.readouterr().out


def _fixed_step_time(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, seconds: float = 0.15):
    """Plan with a fixed training-step time: a busy or idle machine changes no decision."""
    from medseg.engine import planner

    monkeypatch.setattr(planner, "step_times_path", lambda: tmp_path / "steps.json")
    monkeypatch.setattr(planner, "time_training_step", lambda *a, **k: seconds)


def test_few_cases_buy_folds_before_steps(
    brain: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 8 cases: a fold of 400 steps (not 1,000) is long enough, since 3 folds train on 5-6
    # cases each where 2 folds train on 4. A fixed step time keeps a busy machine's timing
    # out of the plan.
    _fixed_step_time(monkeypatch, tmp_path)
    out = tmp_path / "plan.yaml"
    main(["plan", str(brain), "--device", "cpu", "--time-budget", "6m", "-o", str(out)])
    plan = yaml.safe_load(out.read_text())
    steps = (
        plan["train"]["epochs"] * plan["data"]["samples_per_epoch"] // plan["train"]["batch_size"]
    )
    assert plan["data"]["num_folds"] >= 3
    assert 320 <= steps < 1000


def test_missing_labels_are_listed_and_left_out(brain: Path, capsys) -> None:
    (brain / "labelsTr" / "brain_003.nii.gz").unlink()
    main(["plan", str(brain), "--device", "cpu", "--explain"])
    out = capsys.readouterr().out
    assert "brain_003" in out
    assert "no label" in out


def test_one_labelled_case_explains_what_is_possible(brain: Path, capsys) -> None:
    for path in sorted((brain / "labelsTr").glob("*.nii.gz"))[1:]:
        path.unlink()
    main(["plan", str(brain), "--device", "cpu", "--explain", "--time-budget", "5m"])
    out = capsys.readouterr().out
    assert "no cross-validation" in out


def test_dataset_with_bad_geometry_is_refused_before_planning(brain: Path, capsys) -> None:
    label = brain / "labelsTr" / "brain_002.nii.gz"
    img = nib.load(label)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :, :20], img.affine), label)
    code, err = _exit(["plan", str(brain), "--device", "cpu"], capsys)
    assert code == 2
    assert "brain_002" in err
    assert "validate-data" in err


def test_time_budget_with_a_config_file_is_refused(tmp_path: Path, capsys) -> None:
    code, err = _exit(["train", "sample", "--time-budget", "10m"], capsys)
    assert code == 2
    assert "--time-budget plans a dataset" in err


@pytest.mark.slow
def test_train_dataset_with_folds_writes_a_model_folder_predict_uses(
    brain: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "auto"
    main(
        [
            "train",
            str(brain),
            "--folds",
            "all",
            "--time-budget",
            "30m",
            "--device",
            "cpu",
            "-o",
            str(out),
            # keep the test short: the plan's schedule shrunk, its other choices kept
            "--set",
            "train.epochs=1",
            "--set",
            "data.samples_per_epoch=16",
            "--set",
            "data.num_folds=2",
            "--set",
            "train.overlays=0",
            "--set",
            "train.fill_time_limit=false",
        ]
    )
    printed = capsys.readouterr().out
    assert "plan:" in printed
    assert "estimate:" in printed
    assert (out / "model.json").is_file()
    planned = yaml.safe_load((out / "plan.yaml").read_text())
    assert planned["data"]["crop_size"] == list(load_config(out / "plan.yaml").data.crop_size)
    preds = tmp_path / "preds"
    main(
        [
            "predict",
            str(brain / "imagesTr" / "brain_008_0000.nii.gz"),
            "--model",
            str(out),
            "-o",
            str(preds),
        ]
    )
    assert any(preds.glob("*.nii.gz"))
    # planned models predict with the four flips by default, as their out-of-fold figures did
    record = json.loads((out / "model.json").read_text())["record"]
    assert record["tta"] is True
    lines = (preds / "summary.csv").read_text().splitlines()
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    assert [r["tta"] for r in rows] == ["True"]


def test_regions_come_from_an_nnunet_v2_dataset_json(brain: Path, tmp_path: Path) -> None:
    meta_path = brain / "dataset.json"
    meta = json.loads(meta_path.read_text())
    meta["labels"] = {"background": 0, "whole_tumour": [1, 2], "tumour_core": [1]}
    meta["regions_class_order"] = [2, 1]
    meta_path.write_text(json.dumps(meta))
    plan = tmp_path / "plan.yaml"
    main(["plan", str(brain), "--device", "cpu", "-o", str(plan)])
    cfg = load_config(plan)
    assert cfg.data.preprocessing.regions == {"whole_tumour": [1, 2], "tumour_core": [1]}
    assert "nnU-Net v2" in plan.read_text()
