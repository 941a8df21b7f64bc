"""Nothing lost, nothing half-written under ``kill -9``: ``medseg predict`` and ``medseg train``
run as child processes and are SIGKILLed while they work, then checked and rerun.

Kills come from outside (after the first output appears, after a random delay) and from
inside a write (the child's writer truncates its temporary file and SIGKILLs itself), so the
mid-write case is tested on every run, not only when a random kill happens to land there.
Assertions never depend on where a kill landed: whatever state it left must be consistent.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from medseg.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "sample_data" / "brain_mr"
OUTPUT_GLOBS = ("*.nii.gz", "*.json", "*.csv", "*.dcm", "*.pt", "*.yaml", "*.png")
CASES = 6

pytestmark = [
    pytest.mark.slow,
    pytest.mark.long,
    pytest.mark.skipif(not SAMPLE.is_dir(), reason=f"{SAMPLE} missing (medseg sample-data)"),
    pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL"),
]

# Runs medseg's CLI in the child; PATCH (optional) makes one writer die mid-write.
DRIVER = """
import os, signal, sys
{patch}
from medseg.cli.main import main
main(sys.argv[1:])
"""
# nibabel writes the 2nd mask, keeps half of it and the process dies (inside atomic_path)
DIE_IN_MASK_WRITE = """
import nibabel
_save, _calls = nibabel.save, []
def _dying_save(img, filename, *args, **kwargs):
    _save(img, filename, *args, **kwargs)
    _calls.append(filename)
    if len(_calls) == 2:
        with open(filename, "r+b") as handle:
            handle.truncate(os.path.getsize(filename) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
nibabel.save = _dying_save
"""
# torch writes the next last.pt, keeps half of it and the process dies (inside atomic_path)
DIE_IN_CHECKPOINT_WRITE = """
import torch
_save = torch.save
def _dying_save(obj, f, *args, **kwargs):
    _save(obj, f, *args, **kwargs)
    if os.path.basename(str(f)) == "last.pt":
        with open(f, "r+b") as handle:
            handle.truncate(os.path.getsize(f) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
torch.save = _dying_save
"""


def _command(argv: list[str], patch: str = "") -> list[str]:
    return [sys.executable, "-c", DRIVER.format(patch=patch), *argv]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _run(argv: list[str], cwd: Path, patch: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        _command(argv, patch), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300
    )


def _kill_when(
    argv: list[str], cwd: Path, ready, timeout: float = 240.0
) -> tuple[int | None, float]:
    """Start the CLI; SIGKILL it as soon as ``ready()`` is true. Returns (exit code if it
    ended by itself, seconds until the kill)."""
    start = time.monotonic()
    log = (cwd / f"{argv[0]}.log").open("a")  # a pipe nobody reads would block the child
    child = subprocess.Popen(
        _command(argv), cwd=cwd, env=_env(), stdout=log, stderr=subprocess.STDOUT
    )
    try:
        while time.monotonic() - start < timeout:
            if child.poll() is not None:
                return child.returncode, time.monotonic() - start
            if ready(time.monotonic() - start):
                child.send_signal(signal.SIGKILL)
                child.wait(timeout=30)
                return None, time.monotonic() - start
            time.sleep(0.02)
        raise TimeoutError(f"{argv[0]} neither finished nor reached the kill point")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        log.close()


def _check_no_partial_output(folder: Path) -> None:
    """Everything in ``folder`` that looks like an output is a complete, readable file."""
    for pattern in OUTPUT_GLOBS:
        for path in folder.glob(pattern):  # pathlib globs match hidden names too
            assert path.is_file(), f"{path} matches {pattern} but is a temporary folder"
            if pattern == "*.nii.gz":
                np.asarray(nib.load(path).dataobj)  # a truncated gzip stream raises here
            elif pattern == "*.json":
                json.loads(path.read_text())
            elif pattern == "*.csv":
                pd.read_csv(path, comment="#")
            elif pattern == "*.pt":
                load_checkpoint(path)


# ----------------------------------------------------------------------------- predict
def _small_cases(folder: Path) -> dict[str, nib.Nifti1Image]:
    """CASES crops of the sample brains (a few seconds of CPU inference in all)."""
    folder.mkdir()
    sources = {}
    for n in range(1, CASES + 1):
        img = nib.load(SAMPLE / "imagesTr" / f"brain_{n:03d}_0000.nii.gz").slicer[8:88, 8:104, 9:21]
        nib.save(img, folder / f"brain_{n:03d}_0000.nii.gz")
        sources[f"brain_{n:03d}"] = img
    return sources


def _done_cases(out: Path, sources: dict[str, nib.Nifti1Image]) -> dict[str, int]:
    """Cases with a report; each one's mask re-reads on its source grid. ``{case: mtime_ns}``."""
    _check_no_partial_output(out)
    done = {}
    for case, src in sources.items():
        report = out / f"{case}.json"
        if not report.is_file():
            continue
        assert json.loads(report.read_text())["status"] == "ok"
        mask = nib.load(out / f"{case}.nii.gz")
        assert mask.shape == src.shape
        np.testing.assert_allclose(mask.affine, src.affine, atol=1e-4)
        assert set(np.unique(np.asarray(mask.dataobj))) <= {0, 1, 2}
        done[case] = (out / f"{case}.nii.gz").stat().st_mtime_ns
    return done


def test_predict_survives_kill9_and_a_rerun_finishes_the_rest(tmp_path: Path) -> None:
    sources = _small_cases(tmp_path / "cases")
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "cases"), "--output", str(out), "--device", "cpu", "-q"]

    # 1. killed inside the 2nd mask write: the half-written file stays a hidden temporary
    result = _run(argv, tmp_path, patch=DIE_IN_MASK_WRITE)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    assert [p.name.split(".partial-")[0] for p in out.glob(".*.partial-*")] == [".brain_002.nii.gz"]
    done = _done_cases(out, sources)
    assert list(done) == ["brain_001"]
    history = [len(done)]

    # 2. killed from outside as soon as one more case is complete
    def one_more(_: float) -> bool:
        return len(list(out.glob("brain_*[0-9].json"))) > len(done)

    _, seconds = _kill_when(argv, tmp_path, one_more)
    after = _done_cases(out, sources)
    assert {c: after[c] for c in done} == done  # finished cases are never redone
    done = after
    history.append(len(done))

    # 3. killed after a random delay (seeded; anywhere from start-up to past the next case)
    delay = random.Random(11).uniform(0.0, 1.5 * seconds)
    _kill_when(argv, tmp_path, lambda t: t >= delay)
    after = _done_cases(out, sources)
    assert {c: after[c] for c in done} == done
    done = after
    history.append(len(done))

    # 4. the rerun finishes the rest, cleans the temporaries and keeps the finished cases
    result = _run(argv, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    final = _done_cases(out, sources)
    assert set(final) == set(sources)
    assert {c: final[c] for c in done} == done
    assert f"{len(done)} already done" in result.stdout
    assert not list(out.rglob("*.partial-*"))
    summary = pd.read_csv(out / "summary.csv", comment="#")
    assert sorted(summary["case"]) == sorted(sources)
    assert set(summary["status"]) == {"ok"}
    print(
        f"predict: cases complete after each kill {history} of {CASES}; 2nd kill at "
        f"{seconds:.1f} s, 3rd at {delay:.1f} s"
    )


# ----------------------------------------------------------------------------- train
TRAIN_SET = [
    "data.crop_size=[48,48]", "data.samples_per_epoch=24", "data.val_cases=[brain_008]",
    "data.num_workers=0", "train.num_workers=0", "train.batch_size=8", "train.epochs=3",
    "train.overlays=1", "train.early_stopping_patience=null",
    "model.options={depth: 2, base_channels: 4, norm: batch}",
]  # fmt: skip


def _train_argv(run: Path, cache: Path, *extra: str) -> list[str]:
    sets = [*TRAIN_SET, f"data.dataset={SAMPLE}", f"data.cache_dir={cache}"]
    argv = ["train", str(REPO / "configs" / "sample.yaml"), "--output", str(run), "--device", "cpu"]
    return [*argv, *(a for s in sets for a in ("--set", s)), *extra]


def _metrics(run: Path) -> pd.DataFrame:
    timing = ["epoch_seconds", "slices_per_second"]
    return pd.read_csv(run / "metrics.csv").drop(columns=timing)


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_checkpoint(a)["state_dict"], load_checkpoint(b)["state_dict"]
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=f"{a.name}: {key}")


def test_train_resume_after_kill9_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    # the uninterrupted run, alongside (1 thread each; the two share the data cache)
    uninterrupted = subprocess.Popen(
        _command(_train_argv(straight, cache)), cwd=tmp_path, env=_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    # 1. SIGKILL as soon as the first completed epoch's checkpoint is there
    last = killed / "checkpoints" / "last.pt"
    code, _ = _kill_when(_train_argv(killed, cache), tmp_path, lambda _: last.is_file())
    _check_no_partial_output(killed)
    _check_no_partial_output(killed / "checkpoints")
    first = load_checkpoint(last)
    assert first["trainer"]["epoch_complete"]

    # 2. resumed, and killed again inside the next last.pt write (a truncated temporary)
    if first["epoch"] < 3:
        result = _run(_train_argv(killed, cache, "--resume"), tmp_path, DIE_IN_CHECKPOINT_WRITE)
        assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
        assert list((killed / "checkpoints").glob(".last.pt.partial-*"))
        _check_no_partial_output(killed / "checkpoints")
        assert load_checkpoint(last)["epoch"] == first["epoch"]  # the old one, whole

    # 3. resumed to the end: the same weights and metrics as the uninterrupted run
    result = _run(_train_argv(killed, cache, "--resume"), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _, errors = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, errors[-3000:]
    assert f"resumed from {last} after epoch {first['epoch']}" in result.stderr
    assert not list(killed.rglob("*.partial-*"))
    for name in ("last.pt", "best.pt"):
        _assert_same_weights(straight / "checkpoints" / name, killed / "checkpoints" / name)
    pd.testing.assert_frame_equal(_metrics(straight), _metrics(killed), check_exact=True)
    assert load_checkpoint(last)["epoch"] == 3
    print(f"train: killed after epoch {first['epoch']} (exit {code}), resumed to 3: identical")
