"""``medseg predict / evaluate / export`` from the user's side: files, exit codes, messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medseg import RESEARCH_USE_NOTICE
from medseg.io import read_volume, write_volume
from tests.inference.infer_factory import blob_volume, run_cli, write_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt1") / "m.pt")


@pytest.fixture(scope="module")
def two_channel_ckpt(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ckpt2")
    return write_tiny_checkpoint(folder / "m.pt", channel_names=("flair", "t1c"), context=0)


def _cases(folder: Path, names: list[str], channels: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for n, name in enumerate(names):
        for c in range(channels):
            write_volume(blob_volume(seed=10 * n + c), folder / f"{name}_{c:04d}.nii.gz")
    return folder


def test_predict_folder_of_cases_with_a_bad_case(two_channel_ckpt, tmp_path, capsys):
    inputs = _cases(tmp_path / "in", ["case_a", "case_b"])
    (inputs / "case_bad_0000.nii.gz").write_bytes(b"truncated")
    write_volume(blob_volume(), inputs / "case_bad_0001.nii.gz")
    out = tmp_path / "out"
    args = ["predict", inputs, "-o", out, "--model", two_channel_ckpt, "--device", "cpu", "-q"]
    assert run_cli(args) == 1
    captured = capsys.readouterr()
    assert "failed: case_bad" in captured.err
    assert "2 predicted" in captured.out
    for case in ("case_a", "case_b"):
        mask = read_volume(out / f"{case}.nii.gz")
        assert mask.same_grid(read_volume(inputs / f"{case}_0000.nii.gz"))
        report = json.loads((out / f"{case}.json").read_text())
        assert report["settings"]["checkpoint_sha256"]
        assert report["settings"]["tta"] is False
        assert report["settings"]["preprocessing"]["channel_names"] == ["flair", "t1c"]
        assert "research use" in report["notice"].lower()
        assert report["inputs"][1].endswith(
            "case_a_0001.nii.gz" if case == "case_a" else "case_b_0001.nii.gz"
        )
    for name in ("summary.csv", "lesions.csv"):
        first = (out / name).read_text().splitlines()[0]
        assert first == f"# {RESEARCH_USE_NOTICE}"
    summary = pd.read_csv(out / "summary.csv", comment="#")
    assert list(summary["case"]) == ["case_a", "case_b", "case_bad"]
    assert list(summary["status"]) == ["ok", "ok", "failed"]
    assert summary.loc[0, "lesion_volume_ml"] > 0
    lesions = pd.read_csv(out / "lesions.csv", comment="#")
    assert set(lesions["case"]) == {"case_a", "case_b"}
    assert (lesions["longest_axial_diameter_mm"] > 0).all()

    # re-run: done cases are skipped, the bad one is tried (and reported) again
    stamp = (out / "case_a.nii.gz").stat().st_mtime_ns
    assert run_cli(args) == 1
    assert "2 already done" in capsys.readouterr().out
    assert (out / "case_a.nii.gz").stat().st_mtime_ns == stamp
    (inputs / "case_bad_0000.nii.gz").unlink()
    write_volume(blob_volume(seed=7), inputs / "case_bad_0000.nii.gz")
    assert run_cli([*args, "--overwrite"]) == 0
    assert "3 predicted" in capsys.readouterr().out
    assert not (out / "case_bad.failed.json").exists()
    assert list(pd.read_csv(out / "summary.csv", comment="#")["status"]) == ["ok"] * 3


def test_predict_options_tta_axes_probabilities_postprocess(tmp_path):
    all_axes = write_tiny_checkpoint(tmp_path / "all_axes.pt", axes=(2, 0, 1))
    src = tmp_path / "scan.nii.gz"
    write_volume(blob_volume(shape=(30, 26, 10)), src)
    out = tmp_path / "out"
    args = ["predict", src, "-o", out, "--model", all_axes, "--device", "cpu", "-q",
            "--tta", "--axes", "0,2", "--save-probabilities", "--largest-component"]  # fmt: skip
    assert run_cli(args) == 0
    probs = nib.load(str(out / "scan_probabilities.nii.gz"))
    assert probs.shape == (30, 26, 10, 2)
    np.testing.assert_allclose(probs.affine, read_volume(src).affine, atol=1e-4)
    np.testing.assert_allclose(np.asarray(probs.dataobj).sum(-1), 1.0, atol=1e-3)
    report = json.loads((out / "scan.json").read_text())
    assert report["settings"]["axes"] == [0, 2]
    assert report["settings"]["tta"] is True
    assert report["settings"]["postprocess"]["largest_component"] is True
    assert report["readouts"]["classes"]["lesion"]["lesions"] <= 1


def test_predict_argument_errors(tiny_checkpoint, tmp_path, capsys):
    src = tmp_path / "scan.nii.gz"
    write_volume(blob_volume(), src)
    base = ["predict", src, "-o", tmp_path / "o", "--device", "cpu"]
    assert run_cli([*base, "--model", tiny_checkpoint, "--axes", "0,5"]) == 2
    assert "error: --axes" in capsys.readouterr().err
    # an axial-only model asked for a multi-view ensemble: refused, trained axes named
    assert run_cli([*base, "--model", tiny_checkpoint, "--axes", "0,1,2"]) == 2
    err = capsys.readouterr().err
    assert "trained on axis 2 (axial) only" in err
    assert not (tmp_path / "o" / "scan.nii.gz").exists()
    assert run_cli([*base, "--model", tmp_path / "nope.pt"]) == 2
    assert "nope.pt does not exist" in capsys.readouterr().err
    assert (
        run_cli(["predict", tmp_path / "missing", "-o", tmp_path / "o", "--model", tiny_checkpoint])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def _mask(shape, boxes, affine=None) -> np.ndarray:
    arr = np.zeros(shape, np.uint8)
    for value, (lo, hi) in boxes:
        arr[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = value
    return arr


def test_evaluate_folders(tmp_path, capsys):
    from medseg.io.volume import Volume

    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    ref = _mask((20, 20, 10), [(1, ((2, 2, 2), (6, 6, 6))), (2, ((10, 10, 2), (14, 14, 4)))])
    pred = _mask((20, 20, 10), [(1, ((3, 2, 2), (7, 6, 6)))])
    for name in ("c1", "c2"):
        write_volume(Volume(pred, affine), pred_dir / f"{name}.nii.gz")
        write_volume(Volume(ref, affine), gt_dir / f"{name}.nii.gz")
    csv = tmp_path / "metrics.csv"
    assert run_cli(["evaluate", pred_dir, gt_dir, "--output", csv]) == 0
    printed = capsys.readouterr().out
    assert "dice" in printed
    assert "summary" in printed
    for path in (csv, tmp_path / "metrics_summary.csv"):
        assert path.read_text().splitlines()[0] == f"# {RESEARCH_USE_NOTICE}"
    table = pd.read_csv(csv, comment="#")
    assert len(table) == 4  # 2 cases x classes 1, 2
    row1 = table[(table["case"] == "c1") & (table["class"] == 1)].iloc[0]
    assert row1["dice"] == pytest.approx(0.75)
    assert row1["volume_diff_ml"] == pytest.approx(0.0)
    row2 = table[(table["case"] == "c1") & (table["class"] == 2)].iloc[0]
    assert (row2["dice"], row2["fn"], row2["tp"]) == (0.0, 1, 0)
    summary = pd.read_csv(tmp_path / "metrics_summary.csv", comment="#")
    assert summary.loc[summary["class"] == 1, "dice_mean"].item() == pytest.approx(0.75)
    assert (
        run_cli(["evaluate", pred_dir / "c1.nii.gz", gt_dir / "c1.nii.gz", "--labels", "wt=1,2"])
        == 0
    )
    assert "wt" in capsys.readouterr().out
    # the missed class-2 component is 0.064 mL: under --min-lesion-ml 0.1 it is no lesion
    small = tmp_path / "small.csv"
    assert run_cli(["evaluate", pred_dir, gt_dir, "-o", small, "--min-lesion-ml", "0.1"]) == 0
    table = pd.read_csv(small, comment="#")
    row2 = table[(table["case"] == "c1") & (table["class"] == 2)].iloc[0]
    assert (row2["dice"], row2["fn"], row2["tp"], row2["ref_lesions"]) == (0.0, 0, 0, 0)
    row1 = table[(table["case"] == "c1") & (table["class"] == 1)].iloc[0]
    assert (row1["tp"], row1["fn"]) == (1, 0)


def test_evaluate_geometry_mismatch(tmp_path, capsys):
    from medseg.io.volume import Volume

    arr = _mask((8, 8, 8), [(1, ((2, 2, 2), (5, 5, 5)))])
    write_volume(Volume(arr, np.eye(4)), tmp_path / "p.nii.gz")
    write_volume(Volume(arr, np.diag([1.0, 1.0, 3.0, 1.0])), tmp_path / "g.nii.gz")
    assert run_cli(["evaluate", tmp_path / "p.nii.gz", tmp_path / "g.nii.gz"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:")
    assert "spacing" in err


def test_default_model_missing_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import importlib.resources

    # an install without the bundled model: the package's resource folder has no assets
    monkeypatch.setattr(importlib.resources, "files", lambda package: tmp_path / "pkg")
    write_volume(blob_volume(), tmp_path / "s.nii.gz")
    assert run_cli(["predict", tmp_path / "s.nii.gz", "-o", tmp_path / "o"]) == 2
    err = capsys.readouterr().err
    assert "default model" in err
    assert "--model" in err  # says how to fix it
    assert not (tmp_path / "o" / "s.nii.gz").exists()


def test_predict_without_model_uses_the_bundled_demo_model(sample_data, tmp_path):
    from medseg.inference import default_model_path
    from medseg.io import read_volume

    if not default_model_path().is_file():
        pytest.skip("this install has no bundled model")
    image = sample_data / "brain_mr" / "imagesTr" / "brain_008_0000.nii.gz"
    assert run_cli(["predict", image, "-o", tmp_path / "o", "-q"]) == 0
    mask = read_volume(tmp_path / "o" / "brain_008.nii.gz")
    truth = read_volume(sample_data / "brain_mr" / "labelsTr" / "brain_008.nii.gz")
    assert mask.same_grid(truth)
    report = json.loads((tmp_path / "o" / "brain_008.json").read_text())
    assert report["settings"]["model"]["name"] == "unet"
    assert report["settings"]["model_file"].endswith("default_model.pt")
    # the demo model finds the held-out case's tumour (whole-tumour overlap, not a clinical claim)
    pred, gt = mask.array > 0, truth.array > 0
    assert 2 * (pred & gt).sum() / (pred.sum() + gt.sum()) > 0.8


@pytest.mark.slow
def test_torchrun_two_processes_shard_and_merge(tiny_checkpoint, tmp_path):
    inputs = _cases(tmp_path / "in", [f"c{i}" for i in range(4)], channels=1)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_port=29517", "-m", "medseg", "predict", str(inputs), "-o", str(out),
           "--model", str(tiny_checkpoint), "--device", "cpu", "-q"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = pd.read_csv(out / "summary.csv", comment="#")
    assert list(summary["case"]) == ["c0", "c1", "c2", "c3"]
    assert list(summary["status"]) == ["ok"] * 4
    assert proc.stdout.count("summary:") == 1  # only rank 0 reports
    ranks = {json.loads((out / f"c{i}.json").read_text())["worker"]["rank"] for i in range(4)}
    assert ranks == {0, 1}  # the case list was sharded


@pytest.mark.parametrize("device", ["gpu", "cuda", "cuda:7"], ids=["unknown", "cuda", "index"])
def test_predict_unusable_device_is_one_error_line(device, tiny_checkpoint, tmp_path, capsys):
    import torch

    available = {
        "gpu": False,
        "cuda": torch.cuda.is_available(),
        "cuda:7": torch.cuda.device_count() > 7,
    }
    if available[device]:
        pytest.skip("this machine has the requested GPU")
    src = tmp_path / "scan.nii.gz"
    write_volume(blob_volume(shape=(16, 16, 4)), src)
    args = ["predict", src, "-o", tmp_path / "o", "--model", tiny_checkpoint, "--device", device]
    assert run_cli(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --device")
    assert len(err.strip().splitlines()) == 1  # no traceback
    assert "auto|cpu|cuda|cuda:N" in err or "CUDA GPU" in err
    if device == "cuda" and not torch.cuda.is_available():
        assert "no CUDA GPU is available" in err
        assert "auto|cpu|cuda|cuda:N" in err


def test_predict_output_that_is_a_file_is_refused(tiny_checkpoint, tmp_path, capsys):
    src = tmp_path / "scan.nii.gz"
    write_volume(blob_volume(shape=(16, 16, 4)), src)
    existing = tmp_path / "existing.txt"
    existing.write_text("keep me")
    for output in (existing, existing / "sub"):
        args = ["predict", src, "-o", output, "--model", tiny_checkpoint, "--device", "cpu"]
        assert run_cli(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --output")
        assert "must be a folder" in err
        assert len(err.strip().splitlines()) == 1
    assert existing.read_text() == "keep me"


def test_evaluate_refuses_soft_reference_masks(tmp_path, capsys):
    from medseg.io.volume import Volume

    hard = _mask((8, 8, 8), [(1, ((2, 2, 2), (5, 5, 5)))])
    soft = hard.astype(np.float32) * 0.5  # a probability map: rounding would empty it
    write_volume(Volume(hard, np.eye(4)), tmp_path / "p.nii.gz")
    write_volume(Volume(soft, np.eye(4)), tmp_path / "g.nii.gz")
    assert run_cli(["evaluate", tmp_path / "p.nii.gz", tmp_path / "g.nii.gz"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:")
    assert "g.nii.gz" in err
    assert "threshold soft masks first" in err
    # integer labels stored as floats (within 1e-3) are still accepted
    write_volume(Volume(hard.astype(np.float32) + 1e-4, np.eye(4)), tmp_path / "g2.nii.gz")
    assert run_cli(["evaluate", tmp_path / "p.nii.gz", tmp_path / "g2.nii.gz"]) == 0
    assert "1.0000" in capsys.readouterr().out  # dice of identical masks


def test_overwrite_that_fails_does_not_keep_the_old_report(tiny_checkpoint, tmp_path, capsys):
    """``<case>.json`` marks a complete case; a redo (``--overwrite``) removes it before the
    case's outputs are replaced, so a failed or killed redo is never counted as done."""
    scan = tmp_path / "in" / "case_a.nii.gz"
    write_volume(blob_volume(), scan)
    out = tmp_path / "out"
    args = ["predict", scan, "-o", out, "--model", tiny_checkpoint, "--device", "cpu", "-q"]
    assert run_cli(args) == 0
    assert (out / "case_a.json").is_file()
    scan.write_bytes(b"truncated")
    assert run_cli([*args, "--overwrite"]) == 1
    assert "failed: case_a" in capsys.readouterr().err
    assert not (out / "case_a.json").exists()
    summary = pd.read_csv(out / "summary.csv", comment="#")
    assert list(summary["status"]) == ["failed"]
