"""``medseg predict --engine ray``: the same outputs as local predict on a local Ray
cluster, failed and killed workers, and the errors raised before any case runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from medseg.errors import ClusterError, ConfigError
from medseg.inference.batch import predict_folder
from medseg.inference.parts import write_record
from medseg.io import write_volume
from tests.inference.infer_factory import blob_volume, run_cli

CASES = ["c0", "c1", "c2", "c3"]


@pytest.fixture(scope="module")
def ckpt(checkpoint_factory) -> Path:
    return checkpoint_factory(context=0)


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """Four small MR-like cases (the blobs of the parts tests)."""
    folder = tmp_path_factory.mktemp("scans")
    for seed, case_id in enumerate(CASES):
        path = folder / f"{case_id}.nii.gz"
        write_volume(blob_volume(shape=(24, 20, 4), seed=seed), path)
    return folder


@pytest.fixture(scope="module")
def local_masks(scans, ckpt, tmp_path_factory) -> dict[str, np.ndarray]:
    out = tmp_path_factory.mktemp("local")
    predict_folder(scans, out, model=ckpt, device="cpu", progress=False)
    return _masks(out)


@pytest.fixture(scope="module")
def cluster():
    """One local Ray (2 CPUs, no dashboard) for the module; the engine joins it."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install medseg[cluster]")
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install medseg[cluster]")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)  # fmt: skip
    yield ray
    ray.shutdown()


def _masks(out: Path, cases=CASES) -> dict[str, np.ndarray]:
    return {c: np.asarray(nib.load(out / f"{c}.nii.gz").dataobj) for c in cases}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_ray_is_imported_only_when_the_engine_runs():
    code = ("import sys, medseg.cli.main, medseg.api, medseg.inference.ray_engine; "
            "print('ray' in sys.modules)")  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[2], timeout=120)  # fmt: skip
    assert proc.stdout.strip() == "False", proc.stderr[-2000:]


def test_ray_missing_says_how_to_install(scans, ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "out"
    code = run_cli(["predict", scans, "-o", out, "--model", ckpt, "--engine", "ray", "-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: --engine ray: Ray is not installed")
    assert "pip install medseg[cluster]" in err
    assert not out.exists()


def test_unreachable_cluster_is_one_error_before_any_output(scans, ckpt, tmp_path, capsys):
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install medseg[cluster]")
    out = tmp_path / "out"
    argv = ["predict", scans, "-o", out, "--model", ckpt, "--engine", "ray", "-q",
            "--address", "ray://127.0.0.1:1"]  # fmt: skip
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    assert err.count("error: ") == 1
    assert "--address ray://127.0.0.1:1: no Ray cluster answers at 127.0.0.1:1" in err
    assert not out.exists()


def test_parts_must_agree_on_n(scans, ckpt, tmp_path):
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install medseg[cluster]")
    from medseg.inference.ray_engine import predict_folder_ray

    write_record(tmp_path, 0, 2, model_sha256="x", all_ids=CASES, cases=CASES[::2],
                 done=[], failed=[])  # fmt: skip
    with pytest.raises(ConfigError, match="already holds records of a run split into 2 parts"):
        predict_folder_ray(scans, tmp_path, model=ckpt, num_parts=3, part_id=0)
    assert not list(tmp_path.glob("*.nii.gz"))


@pytest.mark.long
def test_ray_equals_local_and_a_rerun_skips(cluster, scans, ckpt, local_masks, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(["predict", scans, "-o", out, "--model", ckpt, "--engine", "ray", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "4 case(s): 4 predicted, 0 already done" in printed
    assert "per stage (ray):" in printed
    for stage in ("read", "model", "write"):
        assert f"  {stage} " in printed
    assert _same(_masks(out), local_masks)
    summary = pd.read_csv(out / "summary.csv", comment="#")
    assert list(summary["status"]) == ["ok"] * 4
    from medseg.inference.ray_engine import predict_folder_ray

    again = predict_folder_ray(scans, out, model=ckpt, progress=False)
    assert (again.done, again.skipped) == ([], CASES)


@pytest.mark.long
def test_killed_actor_costs_only_its_case(cluster, scans, ckpt, local_masks, tmp_path):
    from medseg.inference.ray_engine import predict_folder_ray

    crashed = tmp_path / "crashed-once"

    def kill_once(case_id: str, attempt: int) -> None:
        if case_id == "c1" and not crashed.exists():
            crashed.write_text("")
            os._exit(1)  # the whole model actor dies with c1 in flight

    out = tmp_path / "out"
    result = predict_folder_ray(scans, out, model=ckpt, progress=False, fault_hook=kill_once)
    assert crashed.exists()
    assert sorted(result.done) == CASES
    assert result.failures == []
    assert _same(_masks(out), local_masks)


@pytest.mark.long
def test_failed_case_is_retried_then_recorded(cluster, scans, ckpt, local_masks, tmp_path):
    import torch

    from medseg.inference.ray_engine import predict_folder_ray

    def faults(case_id: str, attempt: int) -> None:
        if case_id == "c2":
            raise RuntimeError("bad case")
        if case_id == "c3" and attempt == 0:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")

    out = tmp_path / "out"
    result = predict_folder_ray(scans, out, model=ckpt, progress=False, fault_hook=faults)
    assert sorted(result.done) == ["c0", "c1", "c3"]
    assert result.failures == [("c2", "RuntimeError: bad case")]
    summary = pd.read_csv(out / "summary.csv", comment="#").set_index("case")
    assert summary.loc["c2", "status"] == "failed"
    assert summary.loc["c3", "status"] == "ok"
    assert not (out / "c2.nii.gz").exists()
    done = ["c0", "c1", "c3"]
    assert _same(_masks(out, done), {c: local_masks[c] for c in done})


@pytest.mark.long
def test_output_not_visible_from_workers(cluster, scans, ckpt, tmp_path, monkeypatch):
    from medseg.inference import ray_engine

    # the driver's marker never reaches the workers: what another file system looks like
    monkeypatch.setattr(ray_engine, "write_text", lambda path, text: path)
    out = tmp_path / "out"
    with pytest.raises(ClusterError, match="not usable from every Ray worker") as info:
        ray_engine.predict_folder_ray(scans, out, model=ckpt, progress=False)
    assert "not the driver's marker file" in str(info.value)
    assert not list(out.iterdir())
