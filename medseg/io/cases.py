"""Format detection and case naming, in one place for training datasets, batch prediction,
evaluation and the viewer.

* :data:`IMAGE_SUFFIXES`, :func:`image_stem`, :func:`is_image_file`: the volume files medseg
  reads by suffix (NIfTI, NRRD, MetaImage); DICOM is recognised by content.
* :func:`is_dicom_folder`: a folder holding a DICOM series (``DICOMDIR``, ``*.dcm`` files or
  files with the ``DICM`` marker, see :func:`medseg.io.dicom_series.is_dicom_file`).
* :func:`split_channel`: nnU-Net channel naming, ``CASE_0000`` -> ``("CASE", 0)``.
* :func:`read_dataset_json`, :func:`channel_names_of`, :func:`labels_of`: an nnU-Net v2 /
  MSD ``dataset.json`` (channel names; labels as ``{value: name}`` whichever way round the
  file writes them).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from medseg.errors import DatasetError
from medseg.io.dicom_series import is_dicom_file

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
CHANNEL_RE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")

__all__ = [
    "CHANNEL_RE",
    "IMAGE_SUFFIXES",
    "channel_names_of",
    "image_stem",
    "is_dicom_file",
    "is_dicom_folder",
    "is_image_file",
    "labels_of",
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
