"""Format detection and case naming, in one place for training datasets, batch prediction,
evaluation and the viewer.

* :data:`IMAGE_SUFFIXES`, :func:`image_stem`, :func:`is_image_file`: the volume files medseg
  reads by suffix (NIfTI, NRRD, MetaImage); DICOM is recognised by content.
* :func:`is_dicom_folder`: a folder holding a DICOM series (``DICOMDIR``, ``*.dcm`` files or
  files with the ``DICM`` marker, see :func:`medseg.io.dicom_series.is_dicom_file`).
* :func:`split_channel`: nnU-Net channel naming, ``CASE_0000`` -> ``("CASE", 0)``.
* :func:`is_label_file`: the one rule for files that are masks, never image channels.
* :func:`group_channels`: image files -> cases with their channel files in order (duplicates,
  gaps and missing channels refused, every missing file listed); :func:`case_folder`: one
  case from a folder (nnU-Net ``_000N`` files, or named sequences such as BraTS
  ``flair``/``t1c`` with a ``seg`` file).
* :func:`read_dataset_json`, :func:`channel_names_of`, :func:`labels_of`,
  :func:`class_names_of`: an nnU-Net v2 / MSD ``dataset.json`` (channel names; labels as
  ``{value: name}`` whichever way round the file writes them, nnU-Net regions included).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from medseg.errors import DatasetError
from medseg.io.dicom_series import is_dicom_file

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")

#: Words (between ``-``, ``_``, ``.`` or spaces) naming a label file; ``mask`` anywhere does too.
LABEL_WORDS = frozenset(
    {"seg", "segmentation", "label", "labels", "gt", "truth", "groundtruth", "annotation"}
)

__all__ = [
    "CHANNEL_RE",
    "IMAGE_SUFFIXES",
    "LABEL_WORDS",
    "CaseFiles",
    "CaseLayoutError",
    "case_folder",
    "channel_names_of",
    "class_names_of",
    "group_channels",
    "image_stem",
    "is_dicom_file",
    "is_dicom_folder",
    "is_image_file",
    "is_label_file",
    "labels_of",
    "paired_label",
    "pick_label",
    "read_dataset_json",
    "split_channel",
]


def image_stem(name: str | Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> str | None:
    """``name`` without its image suffix (case-insensitive), ``None`` when it has none of
    ``suffixes``: ``"ct_001.nii.gz"`` -> ``"ct_001"``."""
    name = Path(name).name
    lower = name.lower()
    for suffix in suffixes:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def is_image_file(path: Path) -> bool:
    """An existing file with one of :data:`IMAGE_SUFFIXES`."""
    return path.is_file() and image_stem(path.name) is not None


def is_dicom_folder(path: Path) -> bool:
    """True for a folder with a ``DICOMDIR``, a ``*.dcm`` file or a file carrying the DICOM
    ``DICM`` marker (extension-less exports)."""
    if not path.is_dir():
        return False
    if (path / "DICOMDIR").exists():
        return True
    files = [p for p in sorted(path.iterdir()) if p.is_file()]
    if any(p.suffix.lower() == ".dcm" for p in files):
        return True
    return any(is_dicom_file(p) for p in files if image_stem(p.name) is None)


def split_channel(stem: str) -> tuple[str, int | None]:
    """nnU-Net channel naming: ``"BRATS_001_0002"`` -> ``("BRATS_001", 2)``; a stem without a
    four-digit channel suffix -> ``(stem, None)``."""
    match = CHANNEL_RE.match(stem)
    return (match["case"], int(match["channel"])) if match else (stem, None)


class CaseLayoutError(DatasetError):
    """Image files that do not make complete cases: a channel given twice, or missing."""

    def __init__(self, message: str, bad_cases: Iterable[str] = ()) -> None:
        super().__init__(message)
        #: ids of the cases at fault (a listing may skip them and show the rest)
        self.bad_cases = tuple(sorted(bad_cases))


@dataclasses.dataclass(frozen=True)
class CaseFiles:
    """One case's files: ``images`` one per channel, in channel order; optional ``label``.

    ``channel_names`` are the file stems; ``named`` is True for named sequences (``flair``,
    ``BraTS-001-t1c``), which are matched to a model's channels by name.
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None
    channel_names: tuple[str, ...] = ()
    named: bool = False


def _label_rank(name: str | Path) -> int | None:
    """0: the stem is a label word (``seg``); 1: it holds one (``BraTS-001-seg``); 2: the
    word ``mask`` (``ct_001_mask``); 3: ``mask`` inside a word (``brainmask``); None: image."""
    stem = (image_stem(name) or Path(name).name).lower()
    words = [w for w in re.split(r"[-_. ]+", stem) if w]
    if stem in LABEL_WORDS:
        return 0
    if any(w in LABEL_WORDS for w in words):
        return 1
    if "mask" in words or "masks" in words:
        return 2
    return 3 if "mask" in stem else None


def is_label_file(name: str | Path) -> bool:
    """True for a file named like a mask, which is never an image channel: ``mask`` anywhere
    in the stem (``brainmask``, ``tumour_mask``) or a word of :data:`LABEL_WORDS` (``seg``,
    ``BraTS-001-seg``, ``ct_001_label``, ``segmentation``, ``gt``).

    nnU-Net ``imagesTr/`` files are channels by layout and are not tested with this rule."""
    return _label_rank(name) is not None


def pick_label(files: Iterable[Path]) -> Path | None:
    """The ground truth among ``files``: the best-named label (``seg`` before
    ``BraTS-001-seg`` before ``tumour_mask``); None when there is none or two tie. A mask
    inside a word (``brainmask``) is never the ground truth."""
    ranked = sorted((rank, p) for p in files if (rank := _label_rank(p.name)) is not None)
    ranked = [(rank, p) for rank, p in ranked if rank < 3]
    if not ranked:
        return None
    best = [p for rank, p in ranked if rank == ranked[0][0]]
    return best[0] if len(best) == 1 else None


def paired_label(stem: str, labels: dict[str, Path]) -> Path | None:
    """The label file for image ``stem`` among ``labels`` (by stem): ``<stem>_label``,
    ``<stem>-seg``, ``<stem>_mask``..."""
    for word in (*sorted(LABEL_WORDS), "mask"):
        for sep in ("_", "-"):
            if stem + sep + word in labels:
                return labels[stem + sep + word]
    return None


def _case_channel(file: Path, ending: str | None, unnumbered: bool) -> tuple[str, int] | None:
    """``(case id, channel)`` of an image file by nnU-Net naming (see :func:`group_channels`)."""
    if ending is not None:
        stem = file.name[: -len(ending)] if file.name.endswith(ending) else None
    else:
        stem = image_stem(file.name) or (file.stem if unnumbered else None)
    if stem is None:
        return None
    case_id, channel = split_channel(stem)
    if channel is None:
        return (case_id, 0) if unnumbered else None
    return case_id, channel


def group_channels(
    files: Iterable[Path],
    *,
    n_channels: int | None = None,
    ending: str | None = None,
    unnumbered: bool = False,
    where: Path | str | None = None,
) -> dict[str, list[Path]]:
    """Image ``files`` grouped into cases by nnU-Net naming: ``{case_id: [channel 0, 1, ...]}``
    sorted by case id (``CASE_0000.nii.gz`` is channel 0 of ``CASE``).

    ``ending``: only files ending so are read (else any of :data:`IMAGE_SUFFIXES`).
    ``unnumbered``: a file without ``_NNNN`` is channel 0 of the case named by its stem
    (prediction inputs such as ``scan.nii.gz``); otherwise it is skipped.
    Refused with one :class:`CaseLayoutError` naming ``where`` and listing every problem:
    two files for one channel of a case (both named), and missing channels, a gap
    (``_0000``, ``_0002``) or fewer than ``n_channels``, each by its expected file name.
    """
    groups: dict[str, dict[int, Path]] = {}
    problems: list[str] = []
    bad: set[str] = set()
    for file in map(Path, files):
        found = _case_channel(file, ending, unnumbered)
        if found is None:
            continue
        case_id, channel = found
        seen = groups.setdefault(case_id, {})
        if channel in seen:
            problems.append(
                f"two files for channel {channel} of case {case_id!r} ({seen[channel]} and {file})"
            )
            bad.add(case_id)
            continue
        seen[channel] = file
    for case_id, channels in sorted(groups.items()):
        count = max(n_channels or 0, max(channels) + 1)
        any_file = next(iter(channels.values())).name
        suffix = ending or any_file[len(image_stem(any_file) or any_file) :]
        missing = [f"{case_id}_{c:04d}{suffix}" for c in range(count) if c not in channels]
        if missing:
            problems.append(f"case {case_id!r} misses {', '.join(missing)}")
            bad.add(case_id)
    if problems:
        shown = "; ".join(problems[:10]) + (
            f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
        )
        place = where if where is not None else "the inputs"
        raise CaseLayoutError(
            f"{place}: {shown}. Expected one file per channel, numbered _0000, _0001, ... "
            "without gaps; rename, add or remove files so every case is complete",
            bad,
        )
    return {case_id: [ch[c] for c in sorted(ch)] for case_id, ch in sorted(groups.items())}


def case_folder(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> CaseFiles:
    """One case from ``folder``. Label-named files (:func:`is_label_file`) are never
    channels; the ground truth is :func:`pick_label` of them. The other image files are the
    channels: nnU-Net ``_000N`` files of one case in channel order, or else named sequences
    sorted by name (``flair``, ``t1c``; ``named=True``)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and image_stem(p.name, suffixes))
    labels = [p for p in files if is_label_file(p.name)]
    images = [p for p in files if p not in labels]
    stems = tuple(image_stem(p.name, suffixes) or p.name for p in images)
    if not images:
        return CaseFiles(folder.name, (), pick_label(labels))
    if all(split_channel(stem)[1] is not None for stem in stems):
        groups = group_channels(images, where=folder)
        if len(groups) > 1:
            raise CaseLayoutError(
                f"{folder}: holds the channels of several cases ({', '.join(groups)}); pass "
                f"one case: its files, or the prefix {folder / next(iter(groups))}",
                groups,
            )
        (paths,) = groups.values()
        names = tuple(image_stem(p.name, suffixes) or p.name for p in paths)
        return CaseFiles(folder.name, tuple(paths), pick_label(labels), names)
    return CaseFiles(folder.name, tuple(images), pick_label(labels), stems, named=True)


def read_dataset_json(path: Path) -> dict[str, Any]:
    """The mapping in an nnU-Net / MSD ``dataset.json`` (``DatasetError`` when it is not one)."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: not valid JSON ({err}); fix or regenerate it") from err
    except OSError as err:
        raise DatasetError(f"{path}: cannot be read ({err}); check its permissions") from err
    if not isinstance(meta, dict):
        raise DatasetError(f"{path}: holds a JSON {type(meta).__name__}, expected an object")
    return meta


def channel_names_of(meta: dict[str, Any], default: tuple[str, ...] = ("image",)) -> list[str]:
    """Channel names in channel order from ``channel_names`` (v2) or ``modality`` (MSD)."""
    channels = meta.get("channel_names") or meta.get("modality") or {}
    if not channels:
        return list(default)
    return [str(channels[k]) for k in sorted(channels, key=int)]


def labels_of(raw: dict[Any, Any] | None, source: Path | str) -> dict[int, str]:
    """Labels as ``{value: name}``, sorted, from ``{value: name}`` (MSD, manifests) or
    ``{name: value}`` / ``{name: [values]}`` (nnU-Net v2, regions)."""
    labels: dict[int, str] = {}
    for key, value in (raw or {}).items():
        try:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                labels[int(value)] = str(key)
            elif isinstance(value, list):  # nnU-Net region labels: name -> [values]
                for v in value:
                    labels.setdefault(int(v), str(key))
            else:
                labels[int(key)] = str(value)
        except (TypeError, ValueError) as err:
            raise DatasetError(
                f"{source}: label entry {key!r}: {value!r} is not 'value: name' or 'name: value'"
            ) from err
    return dict(sorted(labels.items()))


def class_names_of(labels: dict[int, str]) -> tuple[str, ...]:
    """``{value: name}`` as names by value from 0 to the largest (``label N`` for gaps)."""
    top = max(labels, default=-1)
    return tuple(labels.get(i, f"label {i}") for i in range(top + 1))
