"""Atomic outputs: renamed into place only on success, with ordinary file permissions; a
process killed mid-write leaves only a hidden temporary folder, which the next run removes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from medseg.io.atomic import atomic_path, partial_leftovers, remove_partials


def test_success_renames_and_uses_umask_permissions(tmp_path):
    target = tmp_path / "out" / "mask.nii.gz"
    old = os.umask(0o022)
    try:
        with atomic_path(target) as tmp:
            assert tmp.parent.parent == target.parent  # same file system: atomic rename
            assert tmp.name == target.name  # writers pick the format from the extension
            assert tmp != target
            tmp.write_bytes(b"data")
    finally:
        os.umask(old)
    assert target.read_bytes() == b"data"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["mask.nii.gz"]


def test_failure_leaves_nothing_and_keeps_existing_file(tmp_path):
    target = tmp_path / "report.json"
    target.write_text("old")

    def crash_while_writing() -> None:
        with atomic_path(target) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        crash_while_writing()
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


KILLED_MID_WRITE = """
import os, signal, sys
from medseg.io.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_text('{"half": ')
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kill9_mid_write_leaves_the_target_and_no_output_lookalike(tmp_path):
    target = tmp_path / "case.json"
    target.write_text('{"old": true}')
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", KILLED_MID_WRITE, str(target)],
        env={**os.environ, "PYTHONPATH": str(repo)}, timeout=60,
    )  # fmt: skip
    assert result.returncode == -signal.SIGKILL
    assert target.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.glob("*.json")] == ["case.json"]  # pathlib: hidden too
    (left,) = partial_leftovers(tmp_path)
    assert left.name.startswith(".case.json.partial-")
    assert left.is_dir()
    assert remove_partials(tmp_path, "case.json") == [left]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.json"]


def test_remove_partials_only_touches_the_named_output(tmp_path):
    (tmp_path / ".a.nii.gz.partial-x1").mkdir()
    (tmp_path / ".a.nii.gz.partial-x1" / "a.nii.gz").write_bytes(b"half")
    (tmp_path / ".b.nii.gz.partial-y2").mkdir()
    (tmp_path / ".a.nii.gz.partial-file").write_text("not ours: a file")
    (tmp_path / "a.nii.gz").write_bytes(b"done")
    assert [p.name for p in remove_partials(tmp_path, "a.nii.gz")] == [".a.nii.gz.partial-x1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".a.nii.gz.partial-file", ".b.nii.gz.partial-y2", "a.nii.gz",
    ]  # fmt: skip
    assert [p.name for p in remove_partials(tmp_path)] == [".b.nii.gz.partial-y2"]
