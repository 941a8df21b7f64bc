"""Atomic file output: write into a private temporary folder beside the target, then rename.

Nothing half-written, even under ``kill -9``: the target either holds its previous content
or the complete new file. A process killed mid-write leaves only a hidden folder
``.<name>.partial-XXXX/`` beside the target; its name never matches an output pattern such
as ``*.nii.gz`` or ``*.json`` (the file inside keeps the target's own name, so writers that
pick the format from the extension, nibabel and SimpleITK, still work). The next run that
writes the same target removes such leftovers (:func:`remove_partials`).
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from medseg.errors import OverwriteError

logger = logging.getLogger(__name__)

PARTIAL_MARK = ".partial-"


def check_not_input(output: Path, inputs: list[Path] | tuple[Path, ...]) -> None:
    """Refuse to write ``output`` over any of ``inputs`` (inputs are never modified)."""
    out = Path(output).resolve()
    for src in inputs:
        src = Path(src).resolve()
        if out == src or (src.is_dir() and src in out.parents and out.suffix == ".dcm"):
            raise OverwriteError(
                f"output {output} would overwrite the input {src}; choose another output path"
            )


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; it is renamed onto ``target`` on success.

    The temporary file has the target's own name inside a hidden folder
    ``.<name>.partial-XXXX/`` in the target's folder (same file system, so the rename is
    atomic). On any exception the folder is removed and ``target`` is left untouched.
    ``suffix`` is ignored: the temporary file always keeps the target's extension (the
    argument is accepted so that older callers keep working).
    """
    del suffix
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}{PARTIAL_MARK}", dir=target.parent))
    tmp = folder / target.name
    try:
        yield tmp  # the writer creates it: ordinary permissions (the umask's), unlike mkstemp
        os.replace(tmp, target)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def partial_leftovers(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """The temporary folders of interrupted :func:`atomic_path` writes in ``folder`` (only
    those of the output ``name`` when given)."""
    pattern = f".{glob.escape(name) if name else '*'}{PARTIAL_MARK}*"
    return sorted(p for p in Path(folder).glob(pattern) if p.is_dir())


def remove_partials(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Delete what interrupted writes left in ``folder`` (for ``name`` only, when given).

    Call it only where no other process may be writing the same outputs at the same time
    (one owner per output: a case of ``medseg predict``, the run folder of ``medseg train``).
    """
    removed = partial_leftovers(folder, name)
    for path in removed:
        shutil.rmtree(path, ignore_errors=True)
        logger.info("removed %s, left by an interrupted write", path)
    return removed
