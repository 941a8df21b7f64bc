"""Dataset discovery: nnU-Net v2 / MSD folders, CSV/YAML manifests, plain folders -> :class:`DatasetSpec`.

Layouts (see ``docs/data.md`` for examples):

* **nnU-Net v2 / MSD**: ``dataset.json`` + ``imagesTr/CASE_0000.nii.gz`` (one file per
  channel, suffix ``_XXXX``) + ``labelsTr/CASE.nii.gz``. An MSD (v1) ``dataset.json`` with a
  ``training`` list is read too; its 4D images become one channel per 4th-axis index.
* **YAML manifest** (``.yaml``/``.yml``): ``name``, ``modality``, ``channel_names``,
  ``labels`` (value -> name), optional ``root``, and either ``cases`` (a list of
  ``{id, images, label, split}``) or ``pattern`` (``{images: [...], label: ...}`` with
  ``{case}`` placeholders, cases = sub-folders of ``root``).
* **CSV manifest**: columns ``case_id``, ``image`` or ``image_<channel>`` (one per channel),
  ``label`` (optional) and ``split`` (optional). Relative paths are resolved against the
  manifest's folder.
* **Plain folder**: either ``images/`` + ``labels/`` (or ``masks/``) holding files with the
  same names, or one sub-folder per case (:func:`medseg.io.cases.case_folder`): files named
  like a mask (``seg``, ``label``, ``segmentation``, ``gt``, ``*mask*``; see
  :func:`medseg.io.cases.is_label_file`) are never channels, the best-named one is the label,
  and the other NIfTI files are the channels (sorted by name, same names in every case).

Case discovery itself (nnU-Net channel grouping, label-file rule) lives in
:mod:`medseg.io.cases`, shared with batch prediction and the viewer.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path
from typing import Any

from medseg.config_base import read_yaml_mapping
from medseg.errors import DatasetError, InputNotFoundError
from medseg.io.cases import (
    case_folder,
    channel_names_of,
    group_channels,
    image_stem,
    labels_of,
    read_dataset_json,
)

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")  # training layouts read NIfTI; see medseg.io.cases


@dataclasses.dataclass(frozen=True)
class CaseSpec:
    """One patient/case. ``images`` has one path per channel (a 4D file may appear several
    times with ``channel_indices`` naming the 4th-axis index of each)."""

    case_id: str
    images: list[Path]
    label: Path | None = None
    split: str | None = None
    channel_indices: list[int | None] | None = None


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset: its cases, channel names, label names (value -> name) and modality."""

    name: str
    cases: list[CaseSpec]
    channel_names: list[str]
    labels: dict[int, str]
    modality: str = "mr"
    root: Path | None = None

    def case(self, case_id: str) -> CaseSpec:
        for case in self.cases:
            if case.case_id == case_id:
                return case
        raise DatasetError(f"dataset {self.name}: no case '{case_id}'")


def load_dataset(path: str | Path) -> DatasetSpec:
    """Describe the dataset at ``path`` (folder or manifest file); never reads image data."""
    path = Path(path)
    if not path.exists():
        raise InputNotFoundError(
            f"dataset {path} does not exist; pass an nnU-Net folder, a .csv/.yaml manifest or a folder"
        )
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".yaml", ".yml"):
            spec = _load_yaml_manifest(path)
        elif suffix == ".csv":
            spec = _load_csv_manifest(path)
        elif path.name == "dataset.json":
            spec = _load_nnunet(path.parent)
        else:
            raise DatasetError(
                f"{path}: unsupported dataset file (suffix {suffix!r}); expected a .csv or "
                ".yaml manifest, a dataset.json, or a folder"
            )
    elif (path / "dataset.json").is_file():
        spec = _load_nnunet(path)
    else:
        spec = _load_plain_folder(path)
    if not spec.cases:
        raise DatasetError(f"{path}: found no cases; see docs/data.md for the supported layouts")
    ids = [c.case_id for c in spec.cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DatasetError(f"{path}: duplicate case ids {duplicates}; every case id must be unique")
    # case ids name cache entries and output files: no path separators or parent references
    unsafe = [i for i in ids if not i or "/" in i or "\\" in i or i in (".", "..")]
    if unsafe:
        raise DatasetError(
            f"{path}: case ids {unsafe[:5]} contain path separators or are empty; use ids such as "
            "'site1_pat001' (letters, digits, '_', '-', '.')"
        )
    logger.info("dataset %s: %d cases, channels %s", spec.name, len(spec.cases), spec.channel_names)
    return spec


def _load_nnunet(root: Path) -> DatasetSpec:
    meta_path = root / "dataset.json"
    meta = read_dataset_json(meta_path)
    channel_names = channel_names_of(meta)
    labels = labels_of(meta.get("labels", {}), meta_path)
    modality = "ct" if any(n.lower() == "ct" for n in channel_names) else "mr"
    has_v2_files = (root / "imagesTr").is_dir() and any((root / "imagesTr").glob("*_0000.*"))
    if "training" in meta and not has_v2_files:
        cases = _msd_cases(root, meta, len(channel_names))
    else:
        cases = _nnunet_cases(root, meta.get("file_ending", ".nii.gz"), len(channel_names))
    return DatasetSpec(meta.get("name", root.name), cases, channel_names, labels, modality, root)


def _nnunet_cases(root: Path, ending: str, n_channels: int) -> list[CaseSpec]:
    images_dir = root / "imagesTr"
    if not images_dir.is_dir():
        raise DatasetError(f"{root}: has dataset.json but no imagesTr/ folder (nnU-Net v2 layout)")
    groups = group_channels(
        sorted(images_dir.iterdir()), n_channels=n_channels, ending=ending, where=images_dir
    )
    return [
        CaseSpec(case_id, images, root / "labelsTr" / f"{case_id}{ending}")
        for case_id, images in groups.items()
    ]


def _msd_cases(root: Path, meta: dict[str, Any], n_channels: int) -> list[CaseSpec]:
    cases = []
    for entry in meta["training"]:
        image = (root / entry["image"]).resolve()
        case_id = image_stem(image.name, NIFTI_SUFFIXES) or image.name
        indices: list[int | None] = list(range(n_channels)) if n_channels > 1 else [None]
        label = (root / entry["label"]).resolve() if entry.get("label") else None
        cases.append(CaseSpec(case_id, [image] * len(indices), label, None, indices))
    return cases


def _resolve(base: Path, value: str | None) -> Path | None:
    if value in (None, ""):
        return None
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


def _load_yaml_manifest(path: Path) -> DatasetSpec:
    meta = read_yaml_mapping(path, DatasetError, layout="docs/data.md (YAML manifest)")
    known = {"name", "modality", "channel_names", "labels", "root", "cases", "pattern"}
    unknown = sorted(set(meta) - known)
    if unknown:
        raise DatasetError(f"{path}: unknown manifest keys {unknown}; valid keys: {sorted(known)}")
    root = _resolve(path.parent, meta.get("root")) or path.parent
    cases: list[CaseSpec] = []
    if "pattern" in meta:
        cases = _pattern_cases(root, meta["pattern"], path)
    for i, entry in enumerate(meta.get("cases") or []):
        if not isinstance(entry, dict) or "id" not in entry or "images" not in entry:
            raise DatasetError(
                f"{path}: case #{i} must be a mapping with 'id' and 'images' (and 'label'), got {entry!r}"
            )
        images = entry["images"] if isinstance(entry["images"], list) else [entry["images"]]
        cases.append(
            CaseSpec(
                str(entry["id"]),
                [_resolve(root, p) for p in images],  # type: ignore[misc]
                _resolve(root, entry.get("label")),
                entry.get("split"),
            )
        )
    n_channels = len(cases[0].images) if cases else 1
    channel_names = [
        str(c) for c in meta.get("channel_names") or [f"image{i}" for i in range(n_channels)]
    ]
    labels = labels_of(meta.get("labels") or {}, path)
    return DatasetSpec(
        str(meta.get("name", path.stem)),
        cases,
        channel_names,
        labels,
        str(meta.get("modality", "mr")),
        root,
    )


def _pattern_cases(root: Path, pattern: dict[str, Any], source: Path) -> list[CaseSpec]:
    images = pattern.get("images")
    if not images:
        raise DatasetError(f"{source}: 'pattern' needs 'images': a list of paths with '{{case}}'")
    images = images if isinstance(images, list) else [images]
    first = images[0]
    cases = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        case_id = folder.name
        if not (root / first.format(case=case_id)).exists():
            continue
        label = pattern.get("label")
        cases.append(
            CaseSpec(
                case_id,
                [root / p.format(case=case_id) for p in images],
                root / label.format(case=case_id) if label else None,
            )
        )
    return cases


def _load_csv_manifest(path: Path) -> DatasetSpec:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise DatasetError(f"{path}: CSV manifest has no rows")
    columns = list(rows[0].keys())
    image_cols = [c for c in columns if c == "image" or c.startswith("image_")]
    if "case_id" not in columns or not image_cols:
        raise DatasetError(
            f"{path}: CSV columns {columns}; expected 'case_id', 'image' or 'image_<channel>' "
            "columns, and optionally 'label' and 'split'"
        )
    names = [c.removeprefix("image_") if c != "image" else "image" for c in image_cols]
    cases = [
        CaseSpec(
            row["case_id"],
            [_resolve(path.parent, row[c]) for c in image_cols],  # type: ignore[misc]
            _resolve(path.parent, row.get("label")),
            row.get("split") or None,
        )
        for row in rows
    ]
    return DatasetSpec(path.stem, cases, names, {}, "mr", path.parent)


def _load_plain_folder(root: Path) -> DatasetSpec:
    images_dir = root / "images"
    labels_dir = next((root / n for n in ("labels", "masks") if (root / n).is_dir()), None)
    if images_dir.is_dir():
        cases = []
        for file in sorted(f for f in images_dir.iterdir() if image_stem(f.name, NIFTI_SUFFIXES)):
            label = labels_dir / file.name if labels_dir else None
            cases.append(CaseSpec(image_stem(file.name, NIFTI_SUFFIXES), [file], label))
        return DatasetSpec(root.name, cases, ["image"], {}, "mr", root)
    cases = []
    channel_names: list[str] | None = None
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found = case_folder(folder, NIFTI_SUFFIXES)
        if not found.images:
            continue
        channels, label, names = list(found.images), found.label, list(found.channel_names)
        if channel_names is None:
            channel_names = names
        elif names != channel_names:
            raise DatasetError(
                f"{folder}: channel files {names} differ from the first case's {channel_names}; "
                "every case folder must hold the same image file names"
            )
        cases.append(CaseSpec(folder.name, channels, label))
    if not cases:
        raise DatasetError(
            f"{root}: no dataset.json, no images/ folder and no case sub-folders with NIfTI files; "
            "see docs/data.md for the supported layouts or write a manifest"
        )
    return DatasetSpec(root.name, cases, channel_names or ["image"], {}, "mr", root)
