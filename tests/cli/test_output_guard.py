"""The output side from the user's chair: nothing the user owns is overwritten, and every OS
refusal (read-only or full disk, link loops, a folder in the way) is one ``error:`` line.

Full and read-only file systems are real: a small tmpfs mounted for the test (CI runs as
root); without permission to mount, those tests skip and say so.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "inference"))
from infer_factory import blob_volume, run_cli, write_tiny_checkpoint

from medseg.errors import CheckpointError, OutputWriteError, OverwriteError
from medseg.io import read_volume, write_mask, write_volume
from medseg.io.atomic import atomic_group, check_output
from medseg.io.tables import csv_text

PRED = ["--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    """``imagesTr/`` with two small cases, nnU-Net naming (the bundled model is 1-channel)."""
    root = tmp_path_factory.mktemp("nn")
    for n, case in enumerate(("case_a", "case_b")):
        write_volume(blob_volume(seed=n), root / "imagesTr" / f"{case}_0000.nii.gz")
    return root / "imagesTr"


def _mount(where: Path, options: str) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs ({done.stderr.strip() or 'not permitted'}): needs root")
    return where


@pytest.fixture
def small_fs(tmp_path):
    """A 256 KiB tmpfs (fill it to make the disk full)."""
    yield _mount(tmp_path / "small", "size=256k")
    subprocess.run(["umount", "-l", str(tmp_path / "small")], check=False)


@pytest.fixture
def readonly_fs(tmp_path):
    yield _mount(tmp_path / "ro", "size=64k,ro")
    subprocess.run(["umount", "-l", str(tmp_path / "ro")], check=False)


def _fill(folder: Path) -> None:
    """Write zeros into ``folder/filler`` until the disk is full."""

    def write_until_full(handle) -> None:
        while True:
            handle.write(b"\0" * 4096)

    with open(folder / "filler", "wb", buffering=0) as handle, pytest.raises(OSError) as info:
        write_until_full(handle)
    assert info.value.errno == errno.ENOSPC


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error line"
    assert "Traceback" not in "\n".join(err)
    return err[-1]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".partial-" in p.name)


# --------------------------------------------------------------- data destroyed (issue 22)
def test_evaluate_output_over_its_prediction_is_refused(scans, tmp_path, capsys):
    pred = tmp_path / "pred.nii.gz"
    ref = tmp_path / "ref.nii.gz"
    like = read_volume(scans / "case_a_0000.nii.gz")
    write_mask((like.array > 50).astype(np.uint8), like, pred)
    write_mask((like.array > 52).astype(np.uint8), like, ref)
    before = pred.read_bytes()
    link = tmp_path / "link.nii.gz"
    os.link(pred, link)  # a hard link is the same file under another name
    for output in (pred, link, tmp_path / "." / "pred.nii.gz"):
        assert run_cli(["evaluate", pred, ref, "--output", output]) == 2
        line = _error_line(capsys)
        assert str(pred) in line
        assert "--output" in line
        assert "input" in line
    assert pred.read_bytes() == before
    assert read_volume(pred).array.any()


def test_predict_into_labels_keeps_ground_truth(scans, tmp_path, capsys):
    labels = tmp_path / "labelsTr"
    like = read_volume(scans / "case_a_0000.nii.gz")
    write_mask(np.ones(like.shape, np.uint8), like, labels / "case_a.nii.gz")
    truth = (labels / "case_a.nii.gz").read_bytes()

    assert run_cli(["predict", scans, "-o", labels, *PRED]) == 2
    line = _error_line(capsys)
    assert str(labels / "case_a.nii.gz") in line
    assert "--overwrite" in line
    assert (labels / "case_a.nii.gz").read_bytes() == truth
    assert not (labels / "case_b.nii.gz").exists()  # refused before any work

    assert run_cli(["predict", scans, "-o", labels, *PRED, "--overwrite"]) == 0
    assert (labels / "case_a.nii.gz").read_bytes() != truth
    # medseg's own outputs (a report beside them) are resumed without --overwrite
    assert run_cli(["predict", scans, "-o", labels, *PRED]) == 0
    assert "2 already done" in capsys.readouterr().out


# ------------------------------------------------------------------------- the guard itself
def test_guard_refusals_name_paths_and_fix(tmp_path):
    src = tmp_path / "in.nii.gz"
    src.write_bytes(b"x")
    (tmp_path / "sym.nii.gz").symlink_to(src)
    with pytest.raises(OverwriteError, match="would overwrite the input") as info:
        check_output(tmp_path / "sym.nii.gz", overwrite=True, inputs=[src])
    assert str(src) in str(info.value)
    assert "sym.nii.gz" in str(info.value)
    with pytest.raises(OverwriteError, match=r"already exists.*--overwrite"):
        check_output(src)
    (tmp_path / "dangling.json").symlink_to(tmp_path / "nowhere")
    with pytest.raises(OverwriteError, match="symbolic link to"):
        check_output(tmp_path / "dangling.json")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(OverwriteError, match="existing folder"):
        check_output(tmp_path / "dir.csv", overwrite=True)
    with pytest.raises(OverwriteError, match="existing file, but the output is a folder"):
        check_output(src, overwrite=True, folder=True)
    with pytest.raises(OutputWriteError, match="is a file, not a folder"):
        check_output(src / "out.nii.gz")
    assert check_output(tmp_path / "new.nii.gz", inputs=[src]) == tmp_path / "new.nii.gz"


def test_symlinks_in_the_output_path_are_one_error_line(scans, tmp_path, capsys):
    (tmp_path / "loop").symlink_to(tmp_path / "loop")  # points to itself
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    source = scans / "case_a_0000.nii.gz"
    for out in (tmp_path / "loop" / "x.nii.gz", tmp_path / "gone" / "x.nii.gz"):
        assert run_cli(["convert", source, out]) == 2
        line = _error_line(capsys)
        assert line.startswith(f"error: cannot write {out}: ")
        assert "link" in line
        assert ";" in line
    assert run_cli(["predict", scans, "-o", tmp_path / "loop" / "out", *PRED]) == 2
    assert "link loop" in _error_line(capsys)
    like = read_volume(source)
    mask = write_mask((like.array > 50).astype(np.uint8), like, tmp_path / "m.nii.gz")
    for argv in (  # --output naming an existing folder
        ["convert", source, tmp_path],
        ["evaluate", mask, mask, "-o", tmp_path],
        ["export", "-o", tmp_path, "-f", "onnx"],
    ):
        assert run_cli(argv) == 2
        assert f"{tmp_path} is an existing folder" in _error_line(capsys)


# -------------------------------------------------------------- read-only and full disks
def test_read_only_file_system(scans, readonly_fs, tmp_path, capsys):
    ref = scans / "case_a_0000.nii.gz"
    commands = {
        "predict": ["predict", scans, "-o", readonly_fs / "out", *PRED],
        "convert": ["convert", ref, readonly_fs / "c.nii.gz"],
        "export": ["export", "-o", readonly_fs / "m.pt", "-f", "torchscript"],
    }
    mask = tmp_path / "mask.nii.gz"
    like = read_volume(ref)
    write_mask((like.array > 50).astype(np.uint8), like, mask)
    commands["evaluate"] = ["evaluate", mask, mask, "-o", readonly_fs / "m.csv"]
    for name, argv in commands.items():
        assert run_cli(argv) == 2, name
        line = _error_line(capsys)
        assert line.startswith(f"error: cannot write {readonly_fs}"), line
        assert "read-only file system; choose an output folder on a writable disk" in line
    from medseg.cli.main import main

    with pytest.raises(OutputWriteError):  # --debug: the traceback for developers
        main(["--debug", "convert", str(ref), str(readonly_fs / "c.nii.gz")])


def test_disk_full_in_summary_is_one_line_and_leaves_no_partial(
    scans, small_fs, monkeypatch, capsys
):
    from medseg.inference import batch

    merge = batch.merge_summary

    def merge_on_a_full_disk(cases, output_dir, **kwargs):
        _fill(small_fs)
        return merge(cases, output_dir, **kwargs)

    monkeypatch.setattr(batch, "merge_summary", merge_on_a_full_disk)
    out = small_fs / "out"
    assert run_cli(["predict", scans, "-o", out, *PRED]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"error: cannot write {out / 'summary.csv'}: no space left")
    assert not (out / "summary.csv").exists()
    assert _leftovers(small_fs) == []
    assert {p.name for p in out.iterdir()} == {
        f"case_{c}.{e}" for c in "ab" for e in ("nii.gz", "json")
    }


def test_disk_full_after_the_mask_leaves_neither_mask_nor_report(
    scans, small_fs, monkeypatch, capsys
):
    import medseg.io

    original = medseg.io.write_mask

    def write_then_fill(*args, **kwargs):
        path = original(*args, **kwargs)
        _fill(small_fs)  # the report comes next: nowhere to put it
        return path

    monkeypatch.setattr(medseg.io, "write_mask", write_then_fill)
    out = small_fs / "out"
    assert run_cli(["predict", scans, "-o", out, *PRED]) == 2
    assert "no space left" in _error_line(capsys)
    assert sorted(p.name for p in out.iterdir()) == []  # no mask without its report
    assert _leftovers(small_fs) == []


def test_atomic_group_takes_back_renamed_files(tmp_path, monkeypatch):
    targets = [tmp_path / "c.nii.gz", tmp_path / "c.json"]
    real_replace = os.replace

    def fail_on_report(src, dst):
        if str(dst).endswith(".json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_report)
    group = atomic_group(targets)
    tmp = group.__enter__()
    tmp[0].write_text("mask")
    tmp[1].write_text("{}")
    with pytest.raises(OutputWriteError, match="no space left"):
        group.__exit__(None, None, None)  # the commit: the report's rename fails
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------- evaluation reads complete cases only
def test_evaluate_skips_a_mask_without_its_report(scans, tmp_path, caplog):
    out = tmp_path / "pred"
    assert run_cli(["predict", scans, "-o", out, *PRED]) == 0
    (out / "case_b.json").unlink()  # as a full disk used to leave it
    refs = tmp_path / "refs"
    for case in ("case_a", "case_b"):
        write_volume(read_volume(out / "case_a.nii.gz"), refs / f"{case}.nii.gz")
    assert run_cli(["evaluate", out, refs, "-o", tmp_path / "m.csv"]) == 1
    assert "case_b.nii.gz" in caplog.text
    assert "no <case>.json" in caplog.text
    table = pd.read_csv(tmp_path / "m.csv", comment="#")
    assert table.set_index("case")["missing"].to_dict() == {"case_a": False, "case_b": True}


# ------------------------------------------------------------------------ CSV metacharacters
@pytest.mark.parametrize(
    "case_id", ["#7", "=HYPERLINK(1)", "+1+2", "-cmd", "@SUM(A1)", "a#b", "x,y", 'q"t']
)
def test_csv_cells_survive_pandas_and_spreadsheets(case_id, tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(csv_text([{"case": case_id, "dice": -1.5, "note": "-2.5e3"}]))
    row = pd.read_csv(path, comment="#").iloc[0]
    expected = "'" + case_id if case_id[0] in "=+-@" else case_id
    assert row["case"] == expected
    assert row["dice"] == -1.5
    assert row["note"] == -2500.0


def test_predict_summary_with_metacharacter_case_ids(tmp_path):
    inputs = tmp_path / "in"
    for n, name in enumerate(("#first", "=1+1", "@x")):
        write_volume(blob_volume(seed=n, shape=(24, 20, 6)), inputs / f"{name}.nii.gz")
    assert run_cli(["predict", inputs, "-o", tmp_path / "out", *PRED]) == 0
    summary = pd.read_csv(tmp_path / "out" / "summary.csv", comment="#")
    assert sorted(summary["case"]) == sorted(["#first", "'=1+1", "'@x"])
    assert (summary["status"] == "ok").all()


# -------------------------------------------------------------------- model folder hashes
def test_model_folder_fold_hashes(scans, tmp_path, capsys):
    from medseg.checkpoint import file_sha256, load_record
    from medseg.inference.model_folder import read_model_folder, write_model_folder

    folder = tmp_path / "model"
    folds = []
    for k in range(2):
        ckpt = write_tiny_checkpoint(folder / f"fold_{k}" / "best.pt", seed=k)
        folds.append({"fold": k, "checkpoint": f"fold_{k}/best.pt", "sha256": file_sha256(ckpt)})
    write_model_folder(folder, load_record(folder / "fold_0" / "best.pt")[0], folds)
    out = tmp_path / "out"
    assert run_cli(["predict", scans, "-o", out, "--model", folder, *PRED]) == 0
    summary = pd.read_csv(out / "summary.csv", comment="#")
    assert list(summary["fold_1_sha256"].unique()) == [folds[1]["sha256"]]
    assert summary.loc[0, "fold_0_sha256"] != summary.loc[0, "fold_1_sha256"]

    write_tiny_checkpoint(folder / "fold_1" / "best.pt", seed=5)  # replaced after training
    with pytest.raises(CheckpointError, match=r"fold 1 checkpoint .*fold_1.*re-run"):
        read_model_folder(folder)
    assert run_cli(["predict", scans, "-o", out, "--model", folder, *PRED, "--overwrite"]) == 2
    assert "fold 1" in _error_line(capsys)
    assert json.loads((out / "case_a.json").read_text())["status"] == "ok"  # left alone


def test_a_commit_killed_between_renames_is_redone_without_overwrite(scans, tmp_path):
    out = tmp_path / "out"
    assert run_cli(["predict", scans, "-o", out, *PRED]) == 0
    # kill -9 after the mask's rename, before the report's: the group's folder stays behind
    stage = out / ".case_a.nii.gz.partial-killed"
    stage.mkdir()
    (out / "case_a.json").rename(stage / "case_a.json")
    assert run_cli(["predict", scans, "-o", out, *PRED]) == 0
    assert json.loads((out / "case_a.json").read_text())["status"] == "ok"
    assert _leftovers(out) == []


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_csv_round_trip_of_random_metacharacter_cells(tmp_path):
    """Property: any text cell reads back exactly (formula-like ones with their ``'``)."""
    rng = np.random.default_rng(22)
    alphabet = list("ab1.-+=@#,\"' \t\r\n;|%é\u2028")
    cells = ["".join(rng.choice(alphabet, size=rng.integers(0, 9))) for _ in range(400)]
    path = tmp_path / "t.csv"
    path.write_text(csv_text([{"case": c, "n": k} for k, c in enumerate(cells)]), newline="")
    table = pd.read_csv(path, comment="#", dtype={"case": str}, keep_default_na=False)
    assert list(table["n"]) == list(range(len(cells)))  # no row lost or cut short
    for got, cell in zip(table["case"], cells, strict=True):
        formula = cell.startswith(("=", "+", "-", "@", "\t", "\r")) and not _is_number(cell)
        assert got == ("'" + cell if formula else cell), repr(cell)


def test_any_os_error_reaching_main_is_one_line(scans, monkeypatch, capsys):
    import medseg.io.info

    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", "/data/locked.nii.gz")

    monkeypatch.setattr(medseg.io.info, "describe", refuse)
    assert run_cli(["info", scans / "case_a_0000.nii.gz"]) == 2
    assert _error_line(capsys) == (
        "error: cannot access /data/locked.nii.gz: permission denied; fix the permissions or "
        "choose another path"
    )
