"""The user's store of installed model packages (:mod:`medseg.inference.package`).

``$MEDSEG_MODELS`` when set, else ``~/.local/share/medseg/models``; one folder per model
``NAME/`` (the unpacked package plus ``installed.json``). ``--model NAME`` anywhere a model
path is accepted resolves through :func:`resolve_model`: an existing path always wins, so a
name never hides a file.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from medseg import __version__
from medseg.errors import (
    CheckpointError,
    ConfigError,
    CorruptFileError,
    InputNotFoundError,
    OverwriteError,
    first_line,
)
from medseg.io.atomic import write_error, write_json

logger = logging.getLogger(__name__)

FORMAT = "medseg-model-package"
MANIFEST = "medseg_package.json"
CHECKSUMS = "checksums.sha256"
INSTALLED = "installed.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def models_dir(root: str | Path | None = None) -> Path:
    """The model store: ``root``, else ``$MEDSEG_MODELS``, else ``~/.local/share/medseg/models``."""
    if root is not None:
        return Path(root)
    env = os.environ.get("MEDSEG_MODELS")
    return Path(env) if env else Path.home() / ".local" / "share" / "medseg" / "models"


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise ConfigError(
            f"name {name!r}: not usable as an installed model's name; expected letters, "
            "digits, '.', '_' or '-' (up to 100, no '/'), e.g. brats_cv",
            param="name",
        )
    return name


def resolve_model(model: str | Path | None, root: str | Path | None = None) -> Path | None:
    """The path of ``model``: itself when it exists (or is no valid name), else the model of
    the installed package called ``model``. ``None`` stays ``None`` (the bundled model)."""
    if model is None:
        return None
    path = Path(model)
    text = str(model)
    if path.exists() or not _NAME.fullmatch(text):
        return path
    entry = models_dir(root) / text
    manifest = entry / MANIFEST
    if not manifest.is_file():
        return path  # the caller's "does not exist" names it
    return entry / _installed_manifest(entry)["model_path"]


def _installed_manifest(folder: Path) -> dict[str, Any]:
    fix = (
        f"install the package again: medseg models install PACKAGE --name {folder.name} --overwrite"
    )
    try:
        raw = (folder / MANIFEST).read_bytes()
    except OSError as err:
        raise CheckpointError(f"{folder / MANIFEST}: cannot be read ({err}); {fix}") from err
    return parse_manifest(raw, folder / MANIFEST, fix)


def read_manifest(zf: zipfile.ZipFile, source: Path) -> dict[str, Any]:
    """The package manifest in an open zip (``CheckpointError`` when it is not a package)."""
    try:
        raw = zf.read(MANIFEST)
    except KeyError:
        raw = b"{}"  # reported below as a missing format
    fix = "expected a zip written by `medseg export --model DIR --format package -o model.zip`"
    return parse_manifest(raw, source, fix)


def parse_manifest(raw: bytes, source: Path, fix: str) -> dict[str, Any]:
    """A package manifest's JSON, checked for what installing and resolving need."""
    try:
        manifest = json.loads(raw)
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format is {manifest.get('format')!r}, expected {FORMAT!r}")
        str(manifest["model_path"])
        str(manifest["requires_medseg"])
    except (KeyError, ValueError, TypeError, AttributeError) as err:
        raise CheckpointError(
            f"{source}: not a valid medseg model package manifest ({type(err).__name__}: "
            f"{first_line(err, 160)}); {fix}"
        ) from err
    return manifest


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text.split("+")[0])[:3])


def _check_members(zf: zipfile.ZipFile, package: Path) -> list[zipfile.ZipInfo]:
    """The zip's files; refuses absolute paths, ``..``, links and drive letters (zip-slip)."""
    files = []
    for info in zf.infolist():
        parts = PurePosixPath(info.filename).parts
        unsafe = (
            info.filename.startswith("/")
            or "\\" in info.filename
            or ".." in parts
            or (parts and ":" in parts[0])
            or stat.S_ISLNK(info.external_attr >> 16)
        )
        if unsafe:
            raise CorruptFileError(
                f"{package}: member {info.filename!r} would be written outside the install "
                "folder (an absolute path, '..' or a link); refusing the whole package: ask "
                "its author for one written by `medseg export --format package`"
            )
        if not info.is_dir():
            files.append(info)
    return files


def _verify_checksums(zf: zipfile.ZipFile, files: list[zipfile.ZipInfo], package: Path) -> None:
    try:
        listed = {}
        for line in zf.read(CHECKSUMS).decode().splitlines():
            digest, _, name = line.partition("  ")
            listed[name] = digest
    except KeyError as err:
        raise CorruptFileError(
            f"{package}: has no {CHECKSUMS}; expected a package written by `medseg export "
            "--format package` (it lists the SHA-256 of every file)"
        ) from err
    names = {f.filename for f in files} - {CHECKSUMS}
    for name in sorted(names | set(listed)):
        if name not in listed or name not in names:
            where = "is not listed in" if name not in listed else "is listed in"
            raise CorruptFileError(
                f"{package}: {name} {where} {CHECKSUMS}"
                f"{'' if name not in listed else ' but missing from the zip'}; the package was "
                "changed after export: get an intact copy or export it again"
            )
        digest = hashlib.sha256()
        with zf.open(name) as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        if digest.hexdigest() != listed[name]:
            raise CorruptFileError(
                f"{package}: {name} has SHA-256 {digest.hexdigest()[:16]}..., but {CHECKSUMS} "
                f"records {listed[name][:16]}... (damaged or altered); download or copy the "
                "package again, or export it again"
            )


def install_package(
    package: str | Path,
    name: str | None = None,
    *,
    overwrite: bool = False,
    root: str | Path | None = None,
) -> dict[str, Any]:
    """Verify ``package`` (zip-slip, checksums, required medseg version) and unpack it as
    ``STORE/NAME`` in one rename; ``name`` defaults to the package's own. Returns the entry
    :func:`list_installed` shows for it."""
    package = Path(package)
    if not package.is_file():
        raise InputNotFoundError(f"package {package} does not exist; pass a model.zip path")
    try:
        zf = zipfile.ZipFile(package)
    except (zipfile.BadZipFile, OSError) as err:
        raise CorruptFileError(
            f"{package}: not a readable zip ({err}); expected a package written by "
            "`medseg export --format package`"
        ) from err
    with zf:
        files = _check_members(zf, package)
        manifest = read_manifest(zf, package)
        _verify_checksums(zf, files, package)
        needed = str(manifest["requires_medseg"])
        if _version(needed) > _version(__version__):
            raise CheckpointError(
                f"{package}: needs medseg {needed} or newer, this is medseg {__version__}; "
                "upgrade medseg (pip install -U medseg) and install it again"
            )
        name = check_name(name or str(manifest.get("name") or package.stem))
        store = models_dir(root)
        target = store / name
        if target.exists() and not overwrite:
            raise OverwriteError(
                f"name {name!r}: {target} is already installed; pass --overwrite to replace "
                "it, or --name to install this package under another name",
                param="name",
            )
        try:
            store.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{name}.partial-", dir=store))
        except OSError as err:
            raise write_error(err, store) from err
        try:
            zf.extractall(staging, members=files)
            installed = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            write_json(
                staging / INSTALLED, {"name": name, "installed": installed, "source": package.name}
            )
            _swap_into_place(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    logger.info("installed %s as %s", package, target)
    return _entry(target)


def _swap_into_place(staging: Path, target: Path) -> None:
    """Rename ``staging`` onto ``target``; an existing ``target`` is moved aside first and
    put back if the rename fails, so it is never left half-replaced."""
    old = None
    try:
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(staging, target)
    except OSError as err:
        if old is not None and not target.exists():
            os.replace(old / target.name, target)
        raise write_error(err, target) from err
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def _entry(folder: Path) -> dict[str, Any]:
    manifest = _installed_manifest(folder)
    installed = folder / INSTALLED
    info = json.loads(installed.read_text(encoding="utf-8")) if installed.is_file() else {}
    return {
        "name": folder.name,
        "classes": manifest.get("class_names", [])[1:],
        "channels": manifest.get("channel_names", []),
        "version": manifest.get("version"),
        "medseg_version": manifest.get("medseg_version"),
        "installed": info.get("installed"),
        "path": str(folder / manifest["model_path"]),
    }


def list_installed(root: str | Path | None = None) -> list[dict[str, Any]]:
    """Installed models, by name: name, classes (background left out), channels, package
    version, the medseg version that wrote it, install date and model path."""
    store = models_dir(root)
    if not store.is_dir():
        return []
    folders = sorted(p for p in store.iterdir() if p.is_dir() and not p.name.startswith("."))
    return [_entry(p) for p in folders if (p / MANIFEST).is_file()]
