"""``medseg predict --num-parts N --part-id K`` (job arrays) and ``--merge-parts``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from medseg.inference.parts import part_share, record_path
from medseg.io import write_volume
from tests.inference.infer_factory import blob_volume, run_cli, write_tiny_checkpoint

CASES = ["c0", "c1", "c2", "c3", "c4"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt", context=0)


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scans")
    for n, name in enumerate(CASES):
        write_volume(blob_volume(shape=(24, 20, 4), seed=n), folder / f"{name}.nii.gz")
    return folder


def _part(scans: Path, out: Path, ckpt: Path, k: int, n: int = 2) -> list[str]:
    return ["predict", scans, "-o", out, "--model", ckpt, "--device", "cpu", "-q",
            "--num-parts", n, "--part-id", k]  # fmt: skip


@pytest.fixture(scope="module")
def finished(scans, ckpt, tmp_path_factory) -> Path:
    """Both parts of a 2-part run, part 1 first (the order a job array gives is arbitrary)."""
    out = tmp_path_factory.mktemp("out")
    assert run_cli(_part(scans, out, ckpt, 1)) == 0
    assert not (out / "summary.csv").exists()  # part 0 has not finished
    assert run_cli(_part(scans, out, ckpt, 0)) == 0
    return out


def test_parts_are_round_robin_disjoint_and_complete():
    ids = [f"case_{i:03d}" for i in range(23)][::-1]
    shares = [part_share(ids, k, 4) for k in range(4)]
    assert sorted(c for share in shares for c in share) == sorted(ids)
    assert [len(s) for s in shares] == [6, 6, 6, 5]
    assert shares[1][:2] == ["case_001", "case_005"]


def test_each_part_records_its_share_and_the_last_one_merges(finished, ckpt):
    records = [json.loads(record_path(finished, k, 2).read_text()) for k in (0, 1)]
    assert records[0]["cases"] == ["c0", "c2", "c4"]
    assert records[1]["cases"] == ["c1", "c3"]
    for record in records:
        assert record["done"] == record["cases"]
        assert record["failed"] == []
        assert record["model_sha256"]
        assert record["medseg_version"]
    assert records[0]["model_sha256"] == records[1]["model_sha256"]
    summary = pd.read_csv(finished / "summary.csv", comment="#")
    assert sorted(summary["case"]) == CASES
    assert (summary["status"] == "ok").all()
    for case in CASES:
        assert (finished / f"{case}.nii.gz").is_file()


def test_rerun_of_a_part_skips_its_finished_cases(finished, scans, ckpt, capsys):
    before = (finished / "c0.json").stat().st_mtime_ns
    assert run_cli(_part(scans, finished, ckpt, 0)) == 0
    assert "0 predicted, 3 already done" in capsys.readouterr().out
    assert (finished / "c0.json").stat().st_mtime_ns == before


def test_merge_parts_writes_the_summary(finished, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    (out / "summary.csv").unlink()
    assert run_cli(["predict", "--merge-parts", out]) == 0
    assert sorted(pd.read_csv(out / "summary.csv", comment="#")["case"]) == CASES
    record_path(out, 1, 2).unlink()
    assert run_cli(["predict", "--merge-parts", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "part(s) 1 of 2 have not finished" in err[0]


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_part_id_out_of_range_is_refused(scans, ckpt, tmp_path, capsys):
    assert run_cli(_part(scans, tmp_path / "out", ckpt, 2, 2)) == 2
    assert _error(capsys).startswith("error: --part-id 2: out of range for 2 part(s)")
    assert not (tmp_path / "out" / "parts").exists()


def test_a_different_number_of_parts_is_refused(finished, scans, ckpt, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    assert run_cli(_part(scans, out, ckpt, 0, 3)) == 2
    error = _error(capsys)
    assert error.startswith("error: --num-parts 3:")
    assert "split into 2 parts" in error


def test_a_different_model_is_refused(finished, scans, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    other = write_tiny_checkpoint(tmp_path / "other.pt", context=0, seed=3)
    assert run_cli([*_part(scans, out, other, 0), "--overwrite"]) == 2
    error = _error(capsys)
    assert error.startswith("error: --model: its SHA-256")
    assert "part_0_of_2.json" in error
    recorded = json.loads(record_path(out, 0, 2).read_text())["model_sha256"]
    assert json.loads((out / "c0.json").read_text())["settings"]["checkpoint_sha256"] == recorded


def test_a_different_case_list_is_refused(finished, scans, ckpt, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(finished, out)
    more = tmp_path / "more"
    shutil.copytree(scans, more)
    write_volume(blob_volume(shape=(24, 20, 4), seed=9), more / "c5.nii.gz")
    assert run_cli(_part(more, out, ckpt, 1)) == 2
    error = _error(capsys)
    assert error.startswith("error: INPUTS: the case list differs")
    assert "(5 cases)" in error
    assert not (out / "c5.nii.gz").exists()
