"""On-disk cache of preprocessed cases as uncompressed ``.npy`` files opened with memory mapping.

Layout: ``<cache_dir>/<case_id>-<key>/{image.npy, label.npy, meta.json}`` where ``key`` is a
hash of the source files (resolved path, size, modification time) and of the preprocessing
parameters, so editing a scan or a parameter invalidates the entry. An entry is built in a
temporary folder and renamed into place (atomic), under a per-case file lock so two processes
(DDP ranks, two training runs) building the cache at once do the work once and never see a
half-written entry. After the first epoch a sample costs a memory-mapped slice read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from medseg.data.datasets import CaseSpec
from medseg.data.preprocessing import (
    GridInfo,
    PreprocessingParams,
    load_case,
    preprocess_image,
    preprocess_label,
)
from medseg.data.slicing import slices_with_foreground
from medseg.errors import DatasetError

try:  # POSIX; on other systems the atomic rename alone keeps entries consistent
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when the on-disk format or preprocessing code changes meaning


@dataclasses.dataclass
class CachedCase:
    """A preprocessed case backed by memory-mapped ``.npy`` files.

    Attributes:
        case_id: the case id.
        image: float32 ``(C, X, Y, Z)`` canonical RAS (read-only memmap).
        label: int16 ``(X, Y, Z)`` class indices (read-only memmap).
        grid: how to go back to the source grid.
        foreground: axis (0, 1, 2) -> sorted indices of slices containing foreground.
        path: the cache entry folder.
        class_values: label values present in the case (after ``label_map``).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray
    grid: GridInfo
    foreground: dict[int, np.ndarray]
    path: Path
    class_values: tuple[int, ...] = ()

    @property
    def num_channels(self) -> int:
        return int(self.image.shape[0])


def cache_key(case: CaseSpec, params: PreprocessingParams) -> str:
    """Hash of the source files' identity (path, size, mtime) and the parameters (hex, 16 chars)."""
    digest = hashlib.sha256()
    digest.update(f"v{CACHE_VERSION}".encode())
    files = [*case.images, *([case.label] if case.label else [])]
    for path in files:
        path = Path(path).resolve()
        # a DICOM series folder: its own mtime misses a slice rewritten in place
        members = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for member in members:
            stat = member.stat()
            digest.update(f"{member}|{stat.st_size}|{stat.st_mtime_ns};".encode())
    digest.update(json.dumps(case.channel_indices).encode())
    digest.update(params.model_dump_json().encode())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _open_entry(entry: Path) -> CachedCase:
    meta = json.loads((entry / "meta.json").read_text())
    return CachedCase(
        case_id=meta["case_id"],
        image=np.load(entry / "image.npy", mmap_mode="r"),
        label=np.load(entry / "label.npy", mmap_mode="r"),
        grid=GridInfo.from_dict(meta["grid"]),
        foreground={int(k): np.asarray(v, dtype=np.int64) for k, v in meta["foreground"].items()},
        path=entry,
        class_values=tuple(sorted(int(v) for v in meta.get("class_voxels", {}))),
    )


def _build_entry(case: CaseSpec, params: PreprocessingParams, entry: Path, key: str) -> None:
    channels, source_label = load_case(case)  # checks the case's grids, as validate-data does
    image, grid = preprocess_image(channels, params)
    label = preprocess_label(source_label, params, grid)  # type: ignore[arg-type]
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        np.save(tmp / "image.npy", image)
        np.save(tmp / "label.npy", label)
        meta = {
            "case_id": case.case_id,
            "key": key,
            "sources": [str(p) for p in case.images] + [str(case.label)],
            "grid": grid.to_dict(),
            "foreground": {
                str(a): slices_with_foreground(label, a, params.ignore_label).tolist()
                for a in range(3)
            },
            "class_voxels": {
                str(int(v)): int(n)
                for v, n in zip(*np.unique(label, return_counts=True), strict=True)
            },
            "preprocessing": params.model_dump(mode="json"),
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        os.replace(tmp, entry)  # atomic for a folder when the target does not exist
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def prepare_case(case: CaseSpec, params: PreprocessingParams, cache_dir: str | Path) -> CachedCase:
    """Return the cached entry for ``case``, building it first when absent or stale."""
    if case.label is None:
        raise DatasetError(
            f"case {case.case_id}: has no label; training needs a mask per case "
            "(run `medseg validate-data` to list every problem)"
        )
    cache_dir = Path(cache_dir)
    key = cache_key(case, params)
    entry = cache_dir / f"{case.case_id}-{key}"
    if (entry / "meta.json").is_file():
        return _open_entry(entry)
    with _locked(cache_dir / f".{case.case_id}.lock"):
        if not (entry / "meta.json").is_file():  # another process may have built it meanwhile
            logger.debug("caching %s -> %s", case.case_id, entry)
            # Entries of other keys stay: another run (other parameters, or a DDP rank) may be
            # reading them right now. Delete the cache folder to reclaim space.
            _build_entry(case, params, entry, key)
    return _open_entry(entry)


def prepare_cases(
    specs: Sequence[CaseSpec],
    params: PreprocessingParams,
    cache_dir: str | Path,
    progress: bool = True,
) -> list[CachedCase]:
    """Preprocess (or reuse from ``cache_dir``) every case; see the module docstring.

    Raises :class:`DatasetError` when a label holds a class value the parameters do not
    name (the loss would fail on the first such batch and Dice would silently drop it).
    """
    cached = [
        prepare_case(case, params, cache_dir)
        for case in tqdm(specs, desc="caching", unit="case", disable=not progress)
    ]
    check_class_range(cached, params)
    return cached


def check_class_range(cases: Sequence[CachedCase], params: PreprocessingParams) -> None:
    """Every label value must be a class index below ``len(params.class_names)``."""
    num_classes = len(params.class_names)
    bad = {
        c.case_id: [v for v in c.class_values if v >= num_classes and v != params.ignore_label]
        for c in cases
    }
    bad = {case_id: values for case_id, values in bad.items() if values}
    if bad:
        listing = "; ".join(f"{k}: {v}" for k, v in list(bad.items())[:5])
        raise DatasetError(
            f"labels hold class values beyond the {num_classes} classes {params.class_names} "
            f"({listing}{' ...' if len(bad) > 5 else ''}); name every class with "
            "preprocessing.class_names (or declare labels in dataset.json), or merge values "
            "with preprocessing.label_map (e.g. {1: 1, 2: 1, 3: 1, 4: 1} for a whole tumour)"
        )
