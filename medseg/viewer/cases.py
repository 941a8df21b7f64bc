"""Cases named on the command line, and matching a case's channels to a model's.

``medseg view`` accepts a case in four shapes (:func:`command_line_case`):

* several image files: the channels, in the order given;
* one ``NAME_0000.nii.gz`` file: it and its ``NAME_0001``... siblings (nnU-Net naming);
* a folder (or a path prefix ``DIR/NAME``) of nnU-Net ``_000N`` files, or a BraTS-style folder
  of named sequences (``flair.nii.gz``, ``BraTS-...-t1c.nii.gz``) plus an optional
  ``seg``/``label``/``mask`` file;
* a dataset folder or manifest with ``--case ID`` (:func:`medseg.data.datasets.load_dataset`).

Named sequences are matched to the model's channel names when inference runs
(:func:`match_channels`), so the same folder works with any model whose channels it holds.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from medseg.errors import InputNotFoundError, MedsegError
from medseg.io.cases import IMAGE_SUFFIXES, image_stem
from medseg.viewer.loading import LABEL_TAGS, CaseRef


def _strip_suffix(name: str) -> str:
    """``name`` without its image suffix (``.nii.gz``, ``.nrrd``...)."""
    return image_stem(name) or name


NNUNET_CHANNEL = re.compile(r"(.+)_(\d{4})")
LABEL_STEMS = ("seg", "label", "labels", "mask", "gt")


class ChannelMatchError(MedsegError):
    """The model's input channels cannot be found among a case's image files."""


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)
    )


def _is_label_file(stem: str) -> bool:
    lower = stem.lower()
    return lower in LABEL_STEMS or any(
        lower.endswith(tag) or lower.endswith("-" + tag.lstrip("_")) for tag in LABEL_TAGS
    )


def _nnunet_group(files: list[Path], name: str | None = None) -> list[Path]:
    """``files`` that are ``<name>_000N`` channels (any name if None), sorted by N."""
    found = []
    for path in files:
        match = NNUNET_CHANNEL.fullmatch(_strip_suffix(path.name))
        if match and (name is None or match.group(1) == name):
            found.append((int(match.group(2)), match.group(1), path))
    names = {n for _, n, _ in found}
    if len(names) > 1:
        raise MedsegError(
            f"{files[0].parent}: holds channels of several cases ({', '.join(sorted(names))}); "
            f"pass one case as a prefix, e.g. medseg view {files[0].parent / sorted(names)[0]}"
        )
    return [p for _, _, p in sorted(found)]


def _check_contiguous(paths: list[Path]) -> None:
    numbers = [int(NNUNET_CHANNEL.fullmatch(_strip_suffix(p.name)).group(2)) for p in paths]
    if numbers != list(range(len(numbers))):
        raise MedsegError(
            f"{paths[0].parent}: channel files numbered {numbers}; expected _0000, _0001, ... "
            "without gaps. Rename the files or pass them in order on the command line"
        )


def folder_case(folder: Path, label: Path | None = None) -> CaseRef:
    """One case from a folder of nnU-Net ``_000N`` files or of named sequences."""
    files = _images_in(folder)
    labels = [p for p in files if _is_label_file(_strip_suffix(p.name))]
    images = [p for p in files if p not in labels]
    if not images:
        raise InputNotFoundError(
            f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) found; pass the folder "
            "holding the case's channels, or the files themselves"
        )
    label = label if label is not None else (labels[0] if len(labels) == 1 else None)
    numbered = _nnunet_group(images)
    if numbered and len(numbered) == len(images):
        _check_contiguous(numbered)
        stems = tuple(_strip_suffix(p.name) for p in numbered)
        return CaseRef(folder.name, tuple(numbered), label, stems)
    # Named sequences: the names are matched to the model's channel names at inference.
    names = tuple(_strip_suffix(p.name) for p in images)
    return CaseRef(folder.name, tuple(images), label, channel_names=names, named_channels=True)


def prefix_case(prefix: Path, label: Path | None = None) -> CaseRef | None:
    """``DIR/NAME`` -> ``DIR/NAME_0000.*``, ``DIR/NAME_0001.*``...; None when none exist."""
    if not prefix.parent.is_dir():
        return None
    group = _nnunet_group(_images_in(prefix.parent), prefix.name)
    if not group:
        return None
    _check_contiguous(group)
    return CaseRef(prefix.name, tuple(group), label, tuple(_strip_suffix(p.name) for p in group))


def dataset_case(dataset: Path, case_id: str, label: Path | None = None) -> CaseRef:
    """Case ``case_id`` of the dataset at ``dataset`` (folder or manifest)."""
    from medseg.data.datasets import load_dataset

    spec = load_dataset(dataset)
    case = spec.case(case_id)
    if case.channel_indices and any(i is not None for i in case.channel_indices):
        raise MedsegError(
            f"{dataset}: case {case_id} stores its channels in one 4D file; the viewer opens "
            "one 3D file per channel. Split it (e.g. nnU-Net's conversion) and open the files"
        )
    top = max(spec.labels, default=0)
    class_names = tuple(spec.labels.get(i, f"label {i}") for i in range(top + 1))
    return CaseRef(
        case_id,
        tuple(case.images),
        label if label is not None else case.label,
        tuple(spec.channel_names),
        class_names,
    )


def command_line_case(
    paths: Sequence[Path], case_id: str | None = None, label: Path | None = None
) -> CaseRef:
    """The :class:`CaseRef` for ``medseg view PATH... [--case ID] [--gt MASK]`` (module doc)."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise MedsegError("no case given; pass image files, a case folder or a dataset")
    first = paths[0]
    if case_id is not None:
        if len(paths) > 1:
            raise MedsegError(
                f"--case {case_id} takes one dataset folder or manifest, got {len(paths)} paths"
            )
        return dataset_case(first, case_id, label)
    if len(paths) > 1:
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise InputNotFoundError(f"channel file(s) {', '.join(missing)} do not exist")
        name = _strip_suffix(first.name)
        match = NNUNET_CHANNEL.fullmatch(name)
        stems = tuple(_strip_suffix(p.name) for p in paths)
        return CaseRef(match.group(1) if match else name, tuple(paths), label, stems)
    if first.is_dir() and not _looks_like_series(first):
        if (first / "imagesTr").is_dir() or (first / "dataset.json").is_file():
            raise MedsegError(
                f"{first} is a dataset; choose a case with --case ID "
                f"(e.g. medseg view {first} --case CASE_ID)"
            )
        return folder_case(first, label)
    if not first.exists():
        ref = prefix_case(first, label)
        if ref is None:
            raise InputNotFoundError(
                f"{first} does not exist (no file, folder, or {first.name}_0000.* channel files)"
            )
        return ref
    match = NNUNET_CHANNEL.fullmatch(_strip_suffix(first.name))
    if match and match.group(2) == "0000" and first.is_file():
        group = _nnunet_group(_images_in(first.parent), match.group(1))
        _check_contiguous(group)
        stems = tuple(_strip_suffix(p.name) for p in group)
        return CaseRef(match.group(1), tuple(group), label, stems)
    return CaseRef(first.name, (first,), label)


def _looks_like_series(folder: Path) -> bool:
    from medseg.io.cases import is_dicom_folder

    return is_dicom_folder(folder)


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _name_matches(file_name: str, channel: str) -> bool:
    """``flair`` matches ``FLAIR``, ``flair``, ``BraTS-001-flair`` and ``pat_FLAIR``."""
    stem, want = file_name.lower(), channel.lower()
    if _normalise(stem) == _normalise(want):
        return True
    return bool(re.search(rf"(^|[-_. ]){re.escape(want)}$", stem))


def match_channels(
    ref_names: Sequence[str], named: bool, model_channels: Sequence[str]
) -> list[int]:
    """Indices of the case's channels to feed a model expecting ``model_channels``, in order.

    Positional cases (nnU-Net ``_000N`` files, files given in order) are used in their order
    when the counts agree. Named cases (``named``: a folder of sequences) are matched by name,
    case-insensitively (file stems like ``BraTS-001-t1c`` match ``t1c``). Otherwise
    :class:`ChannelMatchError` names the model's channels and the files found.
    """
    model_channels = list(model_channels)
    if not named and len(ref_names) == len(model_channels):
        return list(range(len(ref_names)))
    picks = []
    for channel in model_channels:
        hits = [i for i, name in enumerate(ref_names) if _name_matches(name, channel)]
        picks.append(hits[0] if len(hits) == 1 else None)
    if named and None not in picks and len(set(picks)) == len(picks):
        return picks  # type: ignore[return-value]
    missing = [c for c, p in zip(model_channels, picks, strict=True) if p is None]
    how = (
        f"no file named like {', '.join(missing)}"
        if named
        else f"{len(ref_names)} channel(s) given in order"
    )
    raise ChannelMatchError(
        f"the model expects {len(model_channels)} channel(s) ({', '.join(model_channels)}) "
        f"but the case has {len(ref_names)} ({', '.join(ref_names)}): {how}. Fix: name the "
        f"files after the model's channels (e.g. {model_channels[0]}.nii.gz), or pass them "
        "in the model's order: medseg view "
        + " ".join(f"{c.upper()}.nii.gz" for c in model_channels)
    )
