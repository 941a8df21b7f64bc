"""Output safety: the one output guard, atomic file output, and OS errors made readable.

* :func:`check_output` is the guard every writer calls before writing (masks, JSON, CSV,
  DICOM-SEG, exports, reviewed cases, probability maps, converted files). It refuses to
  replace an existing file unless the caller passes ``overwrite`` (the user's
  ``--overwrite``, or the caller's proof that the file is its own, e.g. a case that
  ``medseg predict`` recorded as done), refuses an output that is one of the command's
  inputs (symbolic and hard links included: same file = same inode), refuses a folder where
  a file belongs, and reports a symbolic-link loop or a file in the middle of the path.
* :func:`atomic_path` (one file) and :func:`atomic_group` (several files that are only
  valid together, e.g. a case's mask and its report) write into a private temporary folder
  beside the target, then rename. Nothing half-written, even under ``kill -9``: the target
  either holds its previous content or the complete new file. A process killed mid-write
  leaves only a hidden folder ``.<name>.partial-XXXX/`` beside the target; its name never
  matches an output pattern such as ``*.nii.gz`` or ``*.json`` (the file inside keeps the
  target's own name, so writers that pick the format from the extension, nibabel and
  SimpleITK, still work). The next run that writes the same target removes such leftovers
  (:func:`remove_partials`).
* An ``OSError`` while writing (read-only or full disk, permissions, ...) becomes an
  :class:`~medseg.errors.OutputWriteError` ``cannot write PATH: <reason>; <fix>``, after the
  temporary files are removed; :func:`os_error_message` words any other ``OSError`` the
  same way for the CLI.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from medseg.errors import OutputWriteError, OverwriteError

logger = logging.getLogger(__name__)

PARTIAL_MARK = ".partial-"

# errno -> (reason, what to do); the reason replaces the C library's capitalised text
_OS_ERRORS = {
    errno.EROFS: ("read-only file system", "choose an output folder on a writable disk"),
    errno.ENOSPC: ("no space left on the disk", "free disk space or write to another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free space in your quota or write elsewhere"),
    errno.EFBIG: ("file too large for this file system", "write to another disk"),
    errno.ELOOP: (
        "a symbolic link in the path points back to itself (link loop)",
        "fix or remove that link, or choose another path",
    ),
    errno.EISDIR: ("it is a folder", "give a file path, not a folder"),
    errno.ENOTDIR: (
        "a part of the path is a file, not a folder",
        "choose a path whose folders are folders",
    ),
    errno.EACCES: ("permission denied", "fix the permissions or choose another path"),
    errno.EPERM: ("operation not permitted", "fix the permissions or choose another path"),
    errno.ENAMETOOLONG: ("the name is too long", "choose a shorter path"),
    errno.ENOENT: ("a folder in the path does not exist", "check the path"),
}
_WRITE_ONLY_ERRNOS = (errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def os_error_message(err: OSError, path: str | os.PathLike | None = None, action: str = "") -> str:
    """``cannot <action> PATH: <reason>; <fix>`` for ``err``. ``action`` defaults to
    ``write`` for errors only writing causes (read-only or full disk) and ``access``
    otherwise (the error alone does not say which side it came from)."""
    where = path if path is not None else (err.filename or "")
    reason, fix = _OS_ERRORS.get(
        err.errno or 0, ((err.strerror or str(err)).lower(), "check the path and try again")
    )
    action = action or ("write" if err.errno in _WRITE_ONLY_ERRNOS else "access")
    return f"cannot {action} {where}: {reason}; {fix}"


def write_error(err: OSError, path: str | os.PathLike) -> OutputWriteError:
    """``err`` (raised while writing ``path``) as the user-facing error; raise it ``from err``
    once the temporary files are gone."""
    message = os_error_message(err, path, "write")
    if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        message += " (the partial file was removed)"
    return OutputWriteError(message, path=str(path), errno=err.errno)


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a link loop (RuntimeError before Python 3.13)
        return Path(os.path.abspath(path))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # hard links and symbolic links included
    except OSError:  # one of them does not exist (yet)
        return _resolved(a) == _resolved(b)


def check_not_input(output: Path, inputs: Sequence[str | os.PathLike]) -> None:
    """Refuse to write ``output`` over any of ``inputs`` (inputs are never modified): the same
    path, a link to it (same inode), or a ``.dcm`` file inside an input DICOM folder."""
    out = _resolved(Path(output))
    for raw in inputs:
        src = Path(raw)
        inside = src.is_dir() and _resolved(src) in out.parents and out.suffix == ".dcm"
        if inside or _same_file(Path(output), src):
            how = "a file inside that folder" if inside else "the same file"
            raise OverwriteError(
                f"output {output} would overwrite the input {src} ({how}); inputs are never "
                "overwritten: choose another output path",
                param="output",
            )


def _check_path_walkable(path: Path) -> None:
    """Raise :class:`OutputWriteError` for a link loop, a file used as a folder or a dangling
    link among ``path``'s folders (the OS would report these later, less clearly)."""
    try:
        os.stat(path)
        return
    except FileNotFoundError:
        pass
    except OSError as err:
        raise write_error(err, path) from err
    for folder in path.parents:  # the nearest entry that exists decides
        if os.path.lexists(folder):
            if folder.is_symlink() and not folder.exists():
                raise OutputWriteError(
                    f"cannot write {path}: the folder {folder} is a symbolic link to "
                    f"{os.readlink(folder)}, which does not exist; create the target or fix "
                    "the link",
                    path=str(path),
                    errno=errno.ENOENT,
                )
            if not folder.is_dir():
                err = OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
                raise write_error(err, path)
            return


def check_output(
    path: str | os.PathLike,
    *,
    overwrite: bool = False,
    inputs: Sequence[str | os.PathLike] = (),
    folder: bool = False,
) -> Path:
    """The one output guard: call it before any work that ends in writing ``path``.

    Args:
        path: the output file (or folder with ``folder=True``).
        overwrite: replace an existing ``path``: the user asked (``--overwrite``), or the
            caller knows this run (or a recorded earlier run of the same command) wrote it.
        inputs: every input of the command; ``path`` must be none of them (links included).
        folder: ``path`` is a folder output (a DICOM series); an existing file there is an
            error, an existing folder needs ``overwrite``.

    Raises:
        OverwriteError: ``path`` is an input, exists without ``overwrite`` (a dangling
            symbolic link counts: it is the user's), or is a folder where a file belongs
            (or the reverse).
        OutputWriteError: a link loop or a file among ``path``'s folders.
    """
    path = Path(path)
    _check_path_walkable(path)
    check_not_input(path, inputs)
    for src in inputs if folder else ():  # replacing the folder would delete the input
        if _resolved(path) in _resolved(Path(src)).parents:
            raise OverwriteError(
                f"output folder {path} holds the input {src}; inputs are never overwritten: "
                "choose another output folder",
                param="output",
            )
    if folder and path.exists() and not path.is_dir():
        raise OverwriteError(
            f"output {path} is an existing file, but the output is a folder; choose a new "
            "folder path",
            param="output",
        )
    if not folder and path.is_dir():
        raise OverwriteError(
            f"output {path} is an existing folder, but the output is a file; give a file "
            f"path such as {path / ('out' + ''.join(path.suffixes))}",
            param="output",
        )
    if os.path.lexists(path) and not overwrite:
        link = f" (a symbolic link to {os.readlink(path)})" if path.is_symlink() else ""
        raise OverwriteError(
            f"output {path}{link} already exists and this run did not write it; pass "
            "--overwrite (overwrite=True) to replace it, or choose another path",
            param="output",
        )
    return path


def make_output_dir(path: str | os.PathLike) -> Path:
    """Create the output folder ``path`` (and parents) and prove it is writable before any
    slow work; OS refusals become :class:`OutputWriteError`."""
    path = Path(path)
    _check_path_walkable(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=f".medseg{PARTIAL_MARK}"):
            pass
    except FileExistsError as err:  # mkdir met a file or a dangling link
        raise OverwriteError(
            f"output {path}: {err.filename} exists and is not a folder; choose another "
            "output folder",
            param="output",
        ) from err
    except OSError as err:
        raise write_error(err, path) from err
    return path


def _is_about(err: OSError, folder: Path, target: Path) -> bool:
    """Whether ``err`` came from writing (no file named, or the temporary/target file)."""
    if err.filename is None:
        return True
    name = os.fspath(err.filename)
    return name.startswith(str(folder)) or Path(name) in (target, target.parent)


def _new_partial_folder(target: Path) -> Path:
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{target.name}{PARTIAL_MARK}", dir=target.parent))
    except OSError as err:
        raise write_error(err, target) from err


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path to write; it is renamed onto ``target`` on success.

    The temporary file has the target's own name inside a hidden folder
    ``.<name>.partial-XXXX/`` in the target's folder (same file system, so the rename is
    atomic). On any exception the folder is removed and ``target`` is left untouched; an
    ``OSError`` of the write itself (full disk, read-only file system, ...) is re-raised as
    :class:`~medseg.errors.OutputWriteError` naming ``target``. ``suffix`` is ignored: the
    temporary file always keeps the target's extension (the argument is accepted so that
    older callers keep working).
    """
    del suffix
    target = Path(target)
    folder = _new_partial_folder(target)
    tmp = folder / target.name
    try:
        try:
            yield tmp  # the writer creates it: ordinary permissions (the umask's), unlike mkstemp
            os.replace(tmp, target)
        except OSError as err:
            if _is_about(err, folder, target):
                raise write_error(err, target) from err
            raise
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


@contextlib.contextmanager
def atomic_group(targets: Sequence[str | os.PathLike]) -> Iterator[list[Path]]:
    """Temporary paths for files that are only valid together (a case's mask, DICOM-SEG,
    probabilities and, last, its report); all are renamed into place after the block, the
    last one (the marker of a complete set) last.

    Every file is fully written before the first rename, so a full disk or any exception
    leaves none of the targets new; a rename that fails removes those already renamed. A
    temporary path the block did not write is skipped (an optional output); the marker is
    required. The temporary folder is ``.<first name>.partial-XXXX/`` (all targets share
    one folder; named after the main file, as :func:`atomic_path` would name it); a
    ``kill -9`` between renames leaves it behind, which tells the next run that the targets
    beside it are its own.
    """
    paths = [Path(t) for t in targets]
    if len({p.parent for p in paths}) != 1:
        raise ValueError("atomic_group: all targets must be in one folder")
    folder = _new_partial_folder(paths[0])
    tmps = [folder / p.name for p in paths]
    try:
        try:
            yield tmps
            if not tmps[-1].exists():
                raise ValueError(f"atomic_group: {paths[-1].name} (the marker) was not written")
            moved: list[Path] = []
            try:
                for tmp, target in zip(tmps, paths, strict=True):
                    if tmp.exists():
                        os.replace(tmp, target)
                        moved.append(target)
            except BaseException:
                for target in moved:
                    target.unlink(missing_ok=True)
                raise
        except OSError as err:
            if any(_is_about(err, folder, p) for p in paths):
                raise write_error(
                    err, paths[-1].parent / Path(err.filename or paths[-1]).name
                ) from err
            raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``text`` (UTF-8) written to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


def _json_default(value: Any) -> Any:
    import numpy as np  # only for values that need it

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (tuple, set, frozenset)):
        return sorted(value) if isinstance(value, (set, frozenset)) else list(value)
    if hasattr(value, "isoformat"):  # datetime, date
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """``data`` as indented JSON (numpy scalars/arrays, paths and dates converted) written to
    ``path`` atomically, newline-terminated. The one JSON writer for medseg's outputs."""
    return write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")
