"""Which files `medseg predict DIR` reads as cases (medseg.inference.batch.discover_cases)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medseg.errors import DatasetError
from medseg.inference.batch import discover_cases


def _touch(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")


def test_masks_beside_the_scans_are_not_cases(tmp_path: Path) -> None:
    _touch(
        tmp_path, "a_0000.nii.gz", "a_0001.nii.gz", "a_seg.nii.gz", "brainmask.nii.gz", "b.nii.gz"
    )
    cases = {c.case_id: [p.name for p in c.inputs] for c in discover_cases([tmp_path])}
    assert cases == {"a": ["a_0000.nii.gz", "a_0001.nii.gz"], "b": ["b.nii.gz"]}


def test_duplicate_and_missing_channels_are_refused(tmp_path: Path) -> None:
    _touch(tmp_path / "dup", "scan.nii.gz", "scan_0000.nii.gz")
    with pytest.raises(DatasetError, match=r"scan\.nii\.gz and .*scan_0000\.nii\.gz"):
        discover_cases([tmp_path / "dup"])
    _touch(tmp_path / "gap", "pat_0001.nii.gz")
    with pytest.raises(DatasetError, match=r"pat_0000\.nii\.gz"):
        discover_cases([tmp_path / "gap"])
