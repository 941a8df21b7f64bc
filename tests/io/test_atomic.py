"""Atomic outputs: renamed into place only on success, with ordinary file permissions."""

from __future__ import annotations

import os
import stat

import pytest

from medseg.io.atomic import atomic_path


def test_success_renames_and_uses_umask_permissions(tmp_path):
    target = tmp_path / "out" / "mask.nii.gz"
    old = os.umask(0o022)
    try:
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent
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
