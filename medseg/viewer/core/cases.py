"""Cases named on the command line, and matching a case's channels to a model's.

``medseg view`` accepts a case in four shapes (:func:`command_line_case`):

* several image files: the channels, in the order given;
* one ``NAME_0000.nii.gz`` file: it and its ``NAME_0001``... siblings (nnU-Net naming);
* a folder (or a path prefix ``DIR/NAME``) of nnU-Net ``_000N`` files, or a BraTS-style folder
  of named sequences (``flair.nii.gz``, ``BraTS-...-t1c.nii.gz``) plus an optional
  ``seg``/``label``/``mask`` file (:func:`medseg.io.cases.case_folder`);
* a dataset folder or manifest with ``--case ID`` (:func:`medseg.data.datasets.load_dataset`).

Files named like a mask (:func:`medseg.io.cases.is_label_file`: ``seg``, ``label``, ``gt``,
``*mask*``...) are never image channels. Channels are matched to the model's channel names
by name whenever the names match, whatever order the files were given in
(:func:`match_channels`), so the same folder works with any model whose channels it holds.
Ground-truth label names come from ``NAME=VALUE,...`` (:func:`parse_labels`), the case's
``dataset.json`` or the checkpoint (:func:`truth_class_names`); :func:`label_scheme_warning`
says when the ground truth and the model name their labels differently, and ``--gt-map
1=2,4=3`` (:func:`parse_label_map`, :func:`map_labels`) maps the ground truth onto the
model's values.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.errors import InputNotFoundError, MedsegError
from medseg.io.cases import (
    IMAGE_SUFFIXES,
    case_folder,
    class_names_of,
    group_channels,
    image_stem,
    is_image_file,
    is_label_file,
    pick_label,
    split_channel,
)
from medseg.viewer.core.loading import CaseRef, dataset_json_names

logger = logging.getLogger(__name__)


def _strip_suffix(name: str) -> str:
    """``name`` without its image suffix (``.nii.gz``, ``.nrrd``...)."""
    return image_stem(name) or name


class ChannelMatchError(MedsegError):
    """The model's input channels cannot be found among a case's image files."""


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_image_file(p))


def _numbered(folder: Path, case_id: str) -> tuple[Path, ...]:
    """``folder``'s ``<case_id>_000N`` channel files in channel order (gaps refused)."""
    files = [p for p in _images_in(folder) if split_channel(_strip_suffix(p.name))[0] == case_id]
    return tuple(group_channels(files, where=folder).get(case_id, ()))


def _stems(paths: Sequence[Path]) -> tuple[str, ...]:
    return tuple(_strip_suffix(p.name) for p in paths)


def _folder_class_names(folder: Path) -> tuple[str, ...]:
    """Label names from a ``dataset.json`` in ``folder`` or its parent (a dataset of
    per-patient folders); empty when there is none."""
    for candidate in (folder, folder.parent):
        _, names = dataset_json_names(candidate)
        if names:
            return names
    return ()


def folder_case(folder: Path, label: Path | None = None) -> CaseRef:
    """One case from a folder of nnU-Net ``_000N`` files or of named sequences
    (:func:`medseg.io.cases.case_folder`: mask-named files are never channels)."""
    found = case_folder(folder)
    if not found.images:
        raise InputNotFoundError(
            f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) found; pass the folder "
            "holding the case's channels, or the files themselves"
        )
    return CaseRef(
        found.case_id,
        found.images,
        label if label is not None else found.label,
        found.channel_names,
        _folder_class_names(folder),
        named_channels=found.named,
    )


def prefix_case(prefix: Path, label: Path | None = None) -> CaseRef | None:
    """``DIR/NAME`` -> ``DIR/NAME_0000.*``, ``DIR/NAME_0001.*``...; None when none exist."""
    if not prefix.parent.is_dir():
        return None
    group = _numbered(prefix.parent, prefix.name)
    if not group:
        return None
    return CaseRef(prefix.name, group, label, _stems(group))


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
    return CaseRef(
        case_id,
        tuple(case.images),
        label if label is not None else case.label,
        tuple(spec.channel_names),
        class_names_of(spec.labels),
    )


def _files_case(paths: list[Path], label: Path | None) -> CaseRef:
    """Several files: the channels in the order given; one mask-named file among them is
    the ground truth (mask-named files are never channels)."""
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise InputNotFoundError(f"channel file(s) {', '.join(missing)} do not exist")
    masks = [p for p in paths if is_label_file(p.name)]
    images = [p for p in paths if p not in masks]
    truth = label if label is not None else pick_label(masks)
    if not images:
        raise MedsegError(
            f"{', '.join(p.name for p in masks)}: all named like a mask, none is an image "
            "channel; pass the scan's channels as files and the ground truth with --gt MASK"
        )
    if truth is None and any(pick_label([m]) for m in masks):
        raise MedsegError(
            f"{', '.join(p.name for p in masks)}: named like a mask, so not an image channel, "
            "and which one is the ground truth is unclear; pass the image channels as files "
            "and the ground truth with --gt MASK"
        )
    if [m for m in masks if m != truth]:
        logger.info("not image channels (named like a mask): %s", [m.name for m in masks])
    name = _strip_suffix(images[0].name)
    return CaseRef(split_channel(name)[0], tuple(images), truth, _stems(images))


def command_line_case(
    paths: Sequence[Path],
    case_id: str | None = None,
    label: Path | None = None,
    *,
    labels: str | None = None,
) -> CaseRef:
    """The :class:`CaseRef` for ``medseg view PATH... [--case ID] [--gt MASK]`` (module doc);
    ``labels`` (``NAME=VALUE,...``, :func:`parse_labels`) names the ground truth's labels
    instead of the case's ``dataset.json``."""
    ref = _command_line_case([Path(p) for p in paths], case_id, label)
    return dataclasses.replace(ref, class_names=parse_labels(labels)) if labels else ref


def _command_line_case(paths: list[Path], case_id: str | None, label: Path | None) -> CaseRef:
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
        return _files_case(paths, label)
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
    case, channel = split_channel(_strip_suffix(first.name))
    if channel == 0 and first.is_file():
        group = _numbered(first.parent, case)
        return CaseRef(case, group, label, _stems(group))
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

    Channels are matched by name whenever every model channel names exactly one of the
    case's channels, case-insensitively (``BraTS-001-t1c`` matches ``t1c``), in whatever
    order the files were given. Otherwise positional cases (nnU-Net ``_000N`` files, files
    given in order) are used in their order when the counts agree; named cases (a folder of
    sequences, ``named``) must match by name. Else :class:`ChannelMatchError` names the
    model's channels and the files found.
    """
    model_channels = list(model_channels)
    picks = []
    for channel in model_channels:
        hits = [i for i, name in enumerate(ref_names) if _name_matches(name, channel)]
        picks.append(hits[0] if len(hits) == 1 else None)
    if None not in picks and len(set(picks)) == len(picks):
        return picks  # type: ignore[return-value]
    if not named and len(ref_names) == len(model_channels):
        return list(range(len(ref_names)))
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


def model_first(ref: CaseRef, model_channels: Sequence[str]) -> CaseRef:
    """``ref`` with its channels reordered so the model's channels come first, in the
    model's order (the first image shown is the model's first channel); unchanged when the
    channels do not match the model (:func:`match_channels`)."""
    try:
        picks = match_channels(ref.channel_names, ref.named_channels, model_channels)
    except ChannelMatchError:
        return ref
    order = [*picks, *(i for i in range(len(ref.images)) if i not in picks)]
    names = tuple(ref.channel_names[i] for i in order) if ref.channel_names else ()
    images = tuple(ref.images[i] for i in order)
    return dataclasses.replace(ref, images=images, channel_names=names)


def parse_labels(text: str) -> tuple[str, ...]:
    """``--labels NAME=VALUE,...`` (``necrosis=1,oedema=2``) as names by value, background
    and gaps filled in: ``("background", "necrosis", "oedema")``."""
    labels: dict[int, str] = {0: "background"}
    for item in (part.strip() for part in text.split(",")):
        name, sep, value = item.rpartition("=")
        if not sep or not name.strip() or not value.strip().isdigit():
            raise MedsegError(
                f"--labels {text!r}: entry {item!r} is not NAME=VALUE; expected e.g. "
                "--labels necrosis=1,oedema=2,enhancing=4"
            )
        labels[int(value)] = name.strip()
    return class_names_of(labels)


def truth_class_names(
    case_names: Sequence[str], labels: str | None, model_names: Sequence[str]
) -> tuple[str, ...]:
    """The ground truth's label names: ``--labels`` first, then the case's ``dataset.json``
    (``case_names``), then the checkpoint's classes (``model_names``)."""
    if labels:
        return parse_labels(labels)
    return tuple(case_names) or tuple(model_names)


def label_scheme_warning(
    truth_names: Sequence[str], model_names: Sequence[str], present: Sequence[int] = ()
) -> str | None:
    """A warning when the ground truth and the model name their labels differently (label
    values compared one to one would then compare different structures); None when they
    agree or one side has no names. ``present``: label values found in the masks."""
    if not truth_names or not model_names:
        return None
    top = max([len(truth_names) - 1, len(model_names) - 1, *present])

    def name(names: Sequence[str], value: int) -> str:
        return names[value] if value < len(names) else f"label {value}"

    differ = [v for v in range(1, top + 1) if name(truth_names, v) != name(model_names, v)]
    if not differ:
        return None
    pairs = ", ".join(f"{v}: {name(truth_names, v)} vs {name(model_names, v)}" for v in differ[:6])
    return (
        f"the ground truth and the model use different label schemes ({pairs}); per-label "
        "comparisons pair different structures. Name the ground truth's labels (a "
        "dataset.json beside the case) or compare a model trained on the same labels"
    )


def parse_label_map(text: str) -> dict[int, int]:
    """``--gt-map FROM=TO,...`` (``1=2,4=3``): ground-truth label values -> the model's."""
    mapping: dict[int, int] = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        source, sep, target = (s.strip() for s in item.partition("="))
        if not sep or not source.isdigit() or not target.isdigit() or int(source) in mapping:
            raise MedsegError(
                f"--gt-map {text!r}: entry {item!r} is not FROM=TO (each ground-truth value "
                "once); expected e.g. --gt-map 1=2,4=3 (ground-truth value = model value)"
            )
        mapping[int(source)] = int(target)
    return mapping


def map_labels(labels: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """``labels`` with each value of ``mapping`` replaced at once (``1=2,2=1`` swaps); values
    not in ``mapping`` stay. Non-negative integer labels (the readers' mask check)."""
    if not mapping:
        return labels
    top = max(int(labels.max(initial=0)), *mapping)
    table = np.arange(top + 1, dtype=np.int64)
    for source, target in mapping.items():
        table[source] = target
    dtype = labels.dtype if int(table.max()) <= np.iinfo(labels.dtype).max else np.int32
    return table[labels].astype(dtype)
