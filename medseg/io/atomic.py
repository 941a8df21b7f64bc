"""Atomic file output: write to a temporary file beside the target, then rename into place."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medseg.errors import OverwriteError


def check_not_input(output: Path, inputs: list[Path] | tuple[Path, ...]) -> None:
    """Refuse to write ``output`` over any of ``inputs`` (inputs are never modified)."""
    out = Path(output).resolve()
    for src in inputs:
        src = Path(src).resolve()
        if out == src or (src.is_dir() and src in out.parents and out.suffix == ".dcm"):
            raise OverwriteError(
                f"output {output} would overwrite the input {src}; choose another output path"
            )


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto ``target`` on success.

    On any exception the temporary file is removed and ``target`` is left untouched, so a
    crash never leaves a half-written output. ``suffix`` keeps the extension that writers
    such as nibabel use to pick the format (``.nii.gz``).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(target.suffixes) or ".tmp"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; outputs are shared with colleagues, so honour the umask instead
    os.chmod(tmp, 0o666 & ~_current_umask())
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
