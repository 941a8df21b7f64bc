"""Finding and loading cases for the viewer: sample data, a confined data root, uploads.

A *case* is one or more image channels on one voxel grid (e.g. FLAIR + T1c) plus an optional
ground-truth mask. Recognised layouts inside a folder:

* nnU-Net: ``imagesTr/<case>_0000.nii.gz`` (``_0001``... more channels) with
  ``labelsTr/<case>.nii.gz``; ``imagesTs/`` without labels; ``dataset.json`` names channels
  and labels.
* flat files: ``<case>.nii.gz`` (or ``.nii``, ``.nrrd``, ``.mha``, ``.mhd``) with an optional
  ``<case>_label``/``_seg``/``_mask`` file beside it.
* per-patient folders of named sequences (BraTS: ``flair``, ``t1c``, ``seg``, ``brainmask``):
  one multi-channel case; mask-named files are never channels
  (:func:`medseg.io.cases.is_label_file`).
* DICOM series folders (any folder holding ``*.dcm`` files or a ``DICOMDIR``).

Browsing a server-side data root never leaves that folder (:func:`resolve_in_root`), and
uploads are size-limited, zip entries are checked against path traversal, links and zip
bombs, and temporary files are removed before the function returns.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import re
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import DatasetError, InputNotFoundError, MedsegError, first_line
from medseg.io import Volume, check_same_grid, integer_labels, read_dicom_seg, read_volume
from medseg.io.cases import (
    CaseLayoutError,
    case_folder,
    channel_names_of,
    class_names_of,
    group_channels,
    image_stem,
    is_dicom_folder,
    is_image_file,
    is_label_file,
    labels_of,
    paired_label,
    pick_label,
    read_dataset_json,
    split_channel,
)

logger = logging.getLogger(__name__)

MAX_UPLOAD_MB = 512
MAX_ZIP_ENTRIES = 5000
MAX_UNZIPPED_MB = 2048


class UploadError(MedsegError):
    """An uploaded file is too large, unsafe (zip traversal) or not a readable scan."""


class DataRootError(MedsegError):
    """A path chosen in the viewer lies outside the data root given at launch."""


@dataclasses.dataclass(frozen=True)
class CaseRef:
    """Where a case's files are: image channels (one path each) and optional label."""

    name: str
    images: tuple[Path, ...]
    label: Path | None = None
    channel_names: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()
    #: True for a folder of named sequences: channels are matched to a model by name.
    named_channels: bool = False


@dataclasses.dataclass(eq=False)
class Case:
    """A loaded case: channels on one grid (source orientation), optional ground truth."""

    name: str
    channels: list[Volume]
    channel_names: list[str]
    truth: Volume | None = None
    class_names: list[str] = dataclasses.field(default_factory=list)
    named_channels: bool = False

    @property
    def digest(self) -> str:
        """Content hash of the channels and their geometry (inference cache key)."""
        return volume_digest(self.channels)


def volume_digest(volumes: list[Volume]) -> str:
    """SHA-1 over arrays, dtypes and affines: identical scans give identical keys.

    The voxels are hashed in memory order (``ravel(order="K")``, a view for C- or
    Fortran-ordered arrays as readers return them): a C-order copy of a 512 x 512 x 120 CT
    cost ~0.6 s before the first image. The memory order is part of the key, so the same
    scan held in the other order only misses the cache.
    """
    digest = hashlib.sha1()
    for vol in volumes:
        array = np.asarray(vol.array)
        order = "F" if array.flags.f_contiguous and not array.flags.c_contiguous else "C"
        digest.update(str((array.dtype.str, vol.shape, order)).encode())
        digest.update(np.ascontiguousarray(vol.affine).tobytes())
        digest.update(array.ravel(order="K").data)
    return digest.hexdigest()


def dataset_json_names(folder: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Channel and class names from an nnU-Net / MSD ``dataset.json`` in ``folder`` (either
    label direction, regions too; empty when absent or unreadable: the viewer still shows
    the scans, with default names)."""
    path = folder / "dataset.json"
    if not path.is_file():
        return (), ()
    try:
        meta = read_dataset_json(path)
        labels = labels_of(meta.get("labels"), path)
    except DatasetError as err:
        logger.warning("%s; using default names", err)
        return (), ()
    return tuple(channel_names_of(meta, default=())), class_names_of(labels)


def _nnunet_cases(folder: Path) -> list[CaseRef]:
    channel_names, class_names = dataset_json_names(folder)
    cases = []
    for images_dir, labels_dir in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        files = sorted((folder / images_dir).glob("*"))
        where, count = folder / images_dir, len(channel_names) or None
        try:
            grouped = group_channels(files, n_channels=count, where=where)
        except CaseLayoutError as err:  # a listing shows the complete cases
            logger.warning("%s; those cases are not listed", err)
            bad = set(err.bad_cases)
            files = [p for p in files if split_channel(image_stem(p.name) or "")[0] not in bad]
            grouped = group_channels(files, n_channels=count, where=where)
        for name, images in grouped.items():
            labels = [p for p in (folder / labels_dir).glob(f"{name}.*") if is_image_file(p)]
            cases.append(
                CaseRef(
                    name, tuple(images), labels[0] if labels else None, channel_names, class_names
                )
            )
    return cases


def _flat_cases(folder: Path) -> list[CaseRef]:
    """One case per image file (``<case>_label``/``-seg``/``_mask`` beside it is its ground
    truth) and per DICOM folder; or, for a per-patient folder of named sequences with one
    unpaired ``seg``/``label`` file (BraTS: ``flair``, ``t1c``, ``seg``), one case named ""
    holding them all (:func:`medseg.io.cases.case_folder`)."""
    entries = sorted(folder.iterdir())
    files = {image_stem(p.name): p for p in entries if is_image_file(p)}
    labels = {stem: path for stem, path in files.items() if is_label_file(path.name)}
    images = {stem: path for stem, path in files.items() if stem not in labels}
    paired = {stem: paired_label(stem, labels) for stem in images}
    unpaired = set(labels.values()) - set(paired.values())
    named = not any(split_channel(stem)[1] is not None for stem in images)
    if images and named and pick_label(unpaired) is not None:
        found = case_folder(folder)
        names = dataset_json_names(folder.parent)[1]
        return [CaseRef("", found.images, found.label, found.channel_names, names, found.named)]
    cases = [CaseRef(stem, (path,), paired[stem]) for stem, path in images.items()]
    for path in entries:
        if is_dicom_folder(path):
            stem = path.name.removesuffix("_dicom")
            cases.append(CaseRef(path.name, (path,), paired_label(stem, labels)))
    return cases


def _inside(root: Path, path: Path, members: bool = False) -> bool:
    """True when ``path`` (symlinks followed) exists inside ``root``; see :func:`resolve_in_root`."""
    try:
        resolve_in_root(root, path, members=members)
    except (DataRootError, InputNotFoundError):
        return False
    return True


def _case_inside(root: Path, ref: CaseRef) -> bool:
    paths = [*ref.images, *([ref.label] if ref.label is not None else [])]
    if all(_inside(root, p, members=True) for p in paths):
        return True
    logger.warning("%s: skipped; a file of it resolves outside the data root %s", ref.name, root)
    return False


def discover_cases(folder: Path, max_depth: int = 2, *, confine: bool = True) -> list[CaseRef]:
    """All cases under ``folder`` (nnU-Net datasets, flat files, DICOM folders), sorted.

    Case names are prefixed with their sub-folder relative to ``folder``. With ``confine``
    (the ``--data-root`` listing) cases whose image or label resolves outside ``folder``
    (symlinks pointing elsewhere) are skipped, matching :func:`resolve_in_root`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found: list[CaseRef] = []
    queue = [(folder, 0)]
    while queue:
        current, depth = queue.pop(0)
        prefix = "" if current == folder else f"{current.relative_to(folder).as_posix()}/"
        if (current / "imagesTr").is_dir() or (current / "imagesTs").is_dir():
            refs = _nnunet_cases(current)
        else:
            refs = _flat_cases(current)
            if depth < max_depth:
                queue.extend(
                    (sub, depth + 1)
                    for sub in sorted(current.iterdir())
                    if sub.is_dir()
                    and not is_dicom_folder(sub)
                    and not sub.name.startswith(".")
                    and (not confine or _inside(folder, sub))
                )
        if confine:
            refs = [ref for ref in refs if _case_inside(folder, ref)]
        # a per-patient folder is one case named by its path (``pat0001``)
        found.extend(
            dataclasses.replace(ref, name=(prefix + ref.name).rstrip("/") or folder.name)
            for ref in refs
        )
    return found


def default_case(cases: list[CaseRef]) -> CaseRef | None:
    """The case opened at start-up: the last brain case with a label, else any labelled one."""
    labelled = [c for c in cases if c.label is not None]
    brain = [c for c in labelled if "brain" in c.name.lower()]
    for pool in (brain, labelled, cases):
        if pool:
            return pool[-1]
    return None


def attach_truth(image: Volume, truth: Volume) -> Volume:
    """``truth`` as an int16 label map checked to lie on ``image``'s grid (soft masks refused)."""
    check_same_grid(image, truth, what="ground-truth mask")
    source = str(truth.metadata.get("source", "ground truth"))
    return truth.with_array(integer_labels(truth.array, source, "ground-truth mask"))


def load_case(ref: CaseRef) -> Case:
    """Read every channel (and the label) of ``ref``; channels must share one grid."""
    channels = [read_volume(path) for path in ref.images]
    for path, vol in zip(ref.images[1:], channels[1:], strict=True):
        check_same_grid(channels[0], vol, what=f"channel {path.name}")
    truth = None
    if ref.label is not None:
        label = read_volume(ref.label)
        if label.metadata.get("format") == "dicom-seg":  # its frames may cover part of the series
            label = read_dicom_seg(ref.label, reference=channels[0])[0]
        truth = attach_truth(channels[0], label)
    names = list(ref.channel_names) or [f"channel {i}" for i in range(len(channels))]
    if len(names) != len(channels):
        names = [f"channel {i}" for i in range(len(channels))]
    return Case(ref.name, channels, names, truth, list(ref.class_names), ref.named_channels)


def _files_read_for(path: Path) -> list[Path]:
    """Every entry a reader of ``path`` may open: the file (and an ``.mhd``'s data file), or
    everything under a folder (the DICOM reader scans it recursively)."""
    if path.is_dir():
        return sorted(path.rglob("*"))
    found = [path]
    if path.suffix.lower() == ".mhd":
        with contextlib.suppress(OSError, UnicodeDecodeError):
            for line in path.read_text(encoding="latin-1").splitlines():
                key, _, value = line.partition("=")
                data = value.strip()
                if key.strip() == "ElementDataFile" and data not in ("LOCAL", "LIST", ""):
                    # a file name, or a printf pattern followed by its numbers
                    whole = path.parent / data
                    found.append(whole if whole.exists() else path.parent / data.split()[0])
    return found


def _check_members(root: Path, path: Path, relative: str | Path) -> None:
    for member in _files_read_for(path):
        real = Path(os.path.realpath(member))
        if real != root and root not in real.parents:
            shown = member.relative_to(path) if path in member.parents else member.name
            raise DataRootError(
                f"{relative}: reads {shown}, which resolves to {real}, outside the data root "
                f"{root}; every file read must lie inside the folder given with --data-root. "
                "Replace the link with a copy of the file, or open the case from its own path "
                "(medseg view PATH)"
            )


def resolve_in_root(root: Path, relative: str | Path, *, members: bool = True) -> Path:
    """``root / relative`` resolved (symlinks followed), refused if it leaves ``root``.

    With ``members`` every file a reader would open for it must resolve inside ``root`` too:
    each entry under a folder (a DICOM series of links to files elsewhere) and an ``.mhd``
    header's data file. Raises :class:`DataRootError` for ``..`` escapes, absolute paths
    elsewhere and symlinks pointing outside, and :class:`InputNotFoundError` when the path
    does not exist.
    """
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if candidate != root and root not in candidate.parents:
        raise DataRootError(
            f"{relative}: resolves to {candidate}, outside the data root {root}; only files "
            "inside the folder given with --data-root can be opened"
        )
    if not candidate.exists():
        raise InputNotFoundError(f"{relative}: not found inside the data root {root}")
    if members:
        _check_members(root, candidate, relative)
    return candidate


def _check_zip_member(info: zipfile.ZipInfo, upload_name: str) -> None:
    name = info.filename.replace("\\", "/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise UploadError(
            f"{upload_name}: zip entry {info.filename!r} points outside the archive (absolute "
            "path or '..'); refusing to extract it. Re-create the zip from the series folder"
        )
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UploadError(f"{upload_name}: zip entry {info.filename!r} is a symbolic link; refused")


_ZIP_ERRORS = (
    zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError,
    ValueError, OverflowError,
)  # fmt: skip


def safe_extract(archive: Path, target: Path, upload_name: str) -> None:
    """Extract ``archive`` into ``target`` after checking every entry (see module doc)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > MAX_ZIP_ENTRIES:
                raise UploadError(
                    f"{upload_name}: {len(infos)} entries, more than {MAX_ZIP_ENTRIES}; upload one series"
                )
            total = sum(i.file_size for i in infos)
            if total > MAX_UNZIPPED_MB * 2**20:
                raise _too_big(
                    upload_name, f"its entries unpack to {total / 2**20:,.0f} MB", MAX_UNZIPPED_MB
                )
            for info in infos:
                _check_zip_member(info, upload_name)
            for info in infos:
                zf.extract(info, target)
    except _ZIP_ERRORS as err:
        # damaged deflate data (zlib.error), unknown compression methods or encryption
        # (NotImplementedError, RuntimeError), names the file system refuses (OSError)
        raise UploadError(
            f"{upload_name}: not a valid zip archive ({type(err).__name__}: {first_line(err)}); "
            "zip the DICOM series folder again (no encryption, deflate or no compression)"
        ) from err


def _series_folder(root: Path, upload_name: str) -> Path:
    """The one folder under ``root`` that holds files (a zip may wrap the series in folders)."""
    holders = sorted({p.parent for p in root.rglob("*") if p.is_file()})
    if not holders:
        raise UploadError(f"{upload_name}: the zip archive is empty; expected a DICOM series")
    if len(holders) > 1:
        listing = ", ".join(str(h.relative_to(root)) for h in holders[:5])
        raise UploadError(
            f"{upload_name}: the zip holds files in {len(holders)} folders ({listing}); zip "
            "one DICOM series folder"
        )
    return holders[0]


def _dicom_headers(files: list[str]) -> list[Any]:
    """The header (no pixel data) of each file of a DICOM series, read into memory."""
    import pydicom

    return [pydicom.dcmread(str(f), stop_before_pixels=True) for f in files]


def _too_big(name: str, found: str, cap_mb: float) -> UploadError:
    return UploadError(
        f"{name}: {found}, more than the viewer's {cap_mb:,.0f} MB limit for an unpacked "
        "upload; open the scan from its path instead (medseg view SCAN, or a file under "
        "--data-root), which has no upload limit"
    )


def _declared_nifti_bytes(head: bytes) -> int | None:
    """Bytes a NIfTI-1/2 header says the file holds (voxel offset + voxels x bytes per
    voxel), or None when ``head`` is no NIfTI header (the reader then names the fault)."""
    import nibabel as nib

    classes = {348: nib.Nifti1Header, 540: nib.Nifti2Header}
    sizes = {int.from_bytes(head[:4], order) for order in ("little", "big")}
    header_class = next((classes[s] for s in sizes if s in classes), None)
    if header_class is None:
        return None
    try:
        header = header_class.from_fileobj(io.BytesIO(head), check=False)
        shape = header.get_data_shape()
        itemsize = header.get_data_dtype().itemsize
    except (nib.spatialimages.HeaderDataError, ValueError, TypeError, KeyError):
        return None
    voxels = int(np.prod([max(int(s), 0) for s in shape], dtype=object))
    return int(header.get_data_offset()) + voxels * itemsize


def _gunzip_chunks(data: bytes, size: int = 1 << 20):
    """The decompressed bytes of the gzip ``data`` (every member), ``size`` bytes at most per
    chunk: a bomb never gets to fill memory. A truncated stream just ends early."""
    pending = data
    while pending[:2] == b"\x1f\x8b":
        stream = zlib.decompressobj(wbits=31)  # gzip framing
        tail = pending
        while tail and not stream.eof:
            chunk = stream.decompress(tail, size)
            tail = stream.unconsumed_tail
            if chunk:
                yield chunk
        pending = stream.unused_data


def gunzip_capped(name: str, data: bytes, target: Path, cap_mb: float) -> None:
    """Decompress the gzip ``data`` of a ``.nii.gz`` upload into ``target``, refusing it when
    its NIfTI header declares more than ``cap_mb`` (checked before the body is unpacked) or
    when the stream itself unpacks past ``cap_mb`` (a header that lies)."""
    cap = int(cap_mb * 2**20)
    head, written = b"", 0
    try:
        with target.open("wb") as out:
            for chunk in _gunzip_chunks(data):
                if len(head) < 540:  # NIfTI-2's header size; NIfTI-1 needs 348
                    head += chunk[: 540 - len(head)]
                    declared = _declared_nifti_bytes(head) if len(head) == 540 else None
                    if declared is not None and declared > cap:
                        raise _too_big(
                            name,
                            f"its header declares {declared / 2**20:,.0f} MB of voxel data",
                            cap_mb,
                        )
                written += len(chunk)
                if written > cap:
                    raise _too_big(
                        name, f"its gzip stream unpacked past {written / 2**20:,.0f} MB", cap_mb
                    )
                out.write(chunk)
    except zlib.error as err:
        raise UploadError(
            f"{name}: not valid gzip data (zlib.error: {first_line(err)}); upload the "
            ".nii.gz file again, or the uncompressed .nii"
        ) from err


def read_upload(
    name: str,
    data: bytes,
    max_mb: float = MAX_UPLOAD_MB,
    max_unpacked_mb: float = MAX_UNZIPPED_MB,
) -> Volume:
    """A Volume from uploaded bytes: a NIfTI file or a zipped DICOM series.

    The bytes go to a private temporary folder that is deleted before returning (the arrays
    are read fully into memory first). A ``.nii.gz`` may unpack to at most
    ``max_unpacked_mb`` MB (zips: :data:`MAX_UNZIPPED_MB`). Errors are :class:`MedsegError`
    subclasses with a message fit for the page.
    """
    size_mb = len(data) / 2**20
    if size_mb > max_mb:
        raise UploadError(f"{name}: {size_mb:.0f} MB is over the {max_mb:.0f} MB upload limit")
    lower = name.lower()
    is_zip = lower.endswith(".zip")
    if not is_zip and not lower.endswith((".nii", ".nii.gz", ".nrrd", ".mha")):
        raise UploadError(
            f"{name}: unsupported upload; expected a .nii/.nii.gz (or .nrrd/.mha) file or a "
            ".zip of one DICOM series folder"
        )
    safe_name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name).name) or "upload"
    with tempfile.TemporaryDirectory(prefix="medseg-upload-") as tmp:
        path = Path(tmp) / safe_name
        source: Path = path
        if lower.endswith(".nii.gz") and data[:2] == b"\x1f\x8b":
            # unpacked here, under the cap, rather than by the reader without one
            source = path.with_name(safe_name[: -len(".gz")])
            gunzip_capped(name, data, source, max_unpacked_mb)
        else:
            path.write_bytes(data)
        if is_zip:
            safe_extract(path, Path(tmp) / "series", name)
            path.unlink()
            source = _series_folder(Path(tmp) / "series", name)
        try:
            volume = read_volume(source)
        except MedsegError as err:
            # The reader names the temporary copy; the user knows the file by its own name.
            message = str(err).replace(str(source), name).replace(str(path), name)
            raise UploadError(message if name in message else f"{name}: {message}") from err
        # Materialise in memory: the temporary folder disappears on return.
        volume.array = np.array(volume.array)
        if volume.metadata.get("dicom_files"):
            # a reviewed mask's DICOM-SEG must reference the series: keep its headers
            volume.metadata["dicom_headers"] = _dicom_headers(volume.metadata["dicom_files"])
    volume.metadata["source"] = f"upload:{name}"
    return volume
