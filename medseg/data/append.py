"""Adding a reviewed case to an nnU-Net v2 dataset folder (``imagesTr/``, ``labelsTr/``,
``dataset.json``), so the next training run learns from it.

:func:`append_case` writes ``imagesTr/<case>_000N<ending>`` (one per channel),
``labelsTr/<case><ending>``, the review record ``reviews/<case>.json`` and recounts
``dataset.json``'s ``numTraining``. An existing case id is refused, every file goes through a
temporary file renamed into place, and when a later file fails the ones already written for
the case are removed again (:func:`undo_on_error`). The viewer's "save as training case"
calls it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from medseg.errors import DatasetError, InputNotFoundError, OverwriteError
from medseg.io import Volume, check_same_grid, write_mask, write_volume
from medseg.io.atomic import write_json
from medseg.io.cases import labels_of, read_dataset_json

__all__ = ["AppendedCase", "append_case", "dataset_meta", "refuse_existing", "undo_on_error"]


@dataclasses.dataclass(frozen=True)
class AppendedCase:
    """Files written by :func:`append_case` (``attachment`` only when one was asked for)."""

    label: Path
    review: Path
    images: tuple[Path, ...]
    dataset_json: Path
    attachment: Path | None = None


def refuse_existing(paths: Sequence[Path], what: str) -> None:
    """:class:`~medseg.errors.OverwriteError` naming every path of ``paths`` that exists."""
    taken = [str(p) for p in paths if p.exists()]
    if taken:
        raise OverwriteError(
            f"{what}: {', '.join(taken)} already exists; saving never overwrites. Choose "
            "another case id or output folder"
        )


@contextlib.contextmanager
def undo_on_error(paths: Sequence[Path]) -> Iterator[None]:
    """Remove ``paths`` written so far when the block fails (they did not exist before)."""
    try:
        yield
    except BaseException:
        for path in paths:
            path.unlink(missing_ok=True)
        raise


def dataset_meta(meta_path: Path, n_channels: int, mask: Volume) -> dict[str, Any]:
    """``dataset.json`` checked to accept a case of ``n_channels`` channels labelled by
    ``mask`` (NIfTI ending, channel count, label values it defines, either label direction)."""
    if not meta_path.is_file():
        raise InputNotFoundError(
            f"{meta_path.parent} has no dataset.json; pick an nnU-Net dataset folder (with "
            "imagesTr/, labelsTr/, dataset.json) or save into a plain output folder"
        )
    meta = read_dataset_json(meta_path)
    ending = str(meta.get("file_ending", ".nii.gz"))
    if ending not in (".nii.gz", ".nii"):
        raise DatasetError(f"{meta_path}: file_ending {ending!r}; medseg writes .nii.gz/.nii")
    expected = len(meta.get("channel_names") or meta.get("modality") or {})
    if n_channels == 0 or (expected and n_channels != expected):
        raise DatasetError(
            f"{meta_path}: the dataset has {expected} channel(s), the reviewed case {n_channels}; "
            "add the case to a dataset made for the same model inputs"
        )
    labels = labels_of(meta.get("labels"), meta_path)
    top = int(mask.array.max(initial=0))
    if labels and top > max(labels):
        raise DatasetError(
            f"{meta_path}: the mask holds label {top}, the dataset defines labels up to "
            f"{max(labels)}; add the class to dataset.json first"
        )
    return meta


def append_case(
    destination: Path,
    case_id: str,
    channels: Sequence[Volume],
    mask: Volume,
    record: dict[str, Any],
    *,
    attachment: tuple[str, Callable[[Path], None]] | None = None,
) -> AppendedCase:
    """Add case ``case_id`` (``channels`` and its label ``mask``, on one grid) with its review
    ``record`` to the nnU-Net dataset at ``destination`` (module doc). ``attachment``:
    ``(file name, writer)`` for one more file in ``reviews/`` (e.g. a DICOM-SEG), written by
    ``writer(path)`` and named in the record under ``dicom_seg``."""
    destination = Path(destination)
    meta_path = destination / "dataset.json"
    meta = dataset_meta(meta_path, len(channels), mask)
    ending = str(meta.get("file_ending", ".nii.gz"))
    images = [destination / "imagesTr" / f"{case_id}_{i:04d}{ending}" for i in range(len(channels))]
    label = destination / "labelsTr" / f"{case_id}{ending}"
    review = destination / "reviews" / f"{case_id}.json"
    extra = destination / "reviews" / attachment[0] if attachment else None
    outputs = [*images, label, review, *([extra] if extra else [])]
    existing = sorted((destination / "imagesTr").glob(f"{case_id}_[0-9][0-9][0-9][0-9].*"))
    refuse_existing([*existing, *outputs], f"dataset {destination}: case {case_id}")
    with undo_on_error(outputs):
        for volume, path in zip(channels, images, strict=True):
            check_same_grid(mask, volume, what=f"channel {path.name}")
            write_volume(volume, path)
        write_mask(mask.array, mask, label)
        named = {}
        if attachment is not None and extra is not None:
            attachment[1](extra)
            named = {"dicom_seg": str(extra.relative_to(destination))}
        write_json(review, {**record, "mask": str(label.relative_to(destination)), **named})
        meta["numTraining"] = sum(
            1 for p in (destination / "labelsTr").iterdir() if p.name.endswith(ending)
        )
        write_json(meta_path, meta)
    return AppendedCase(label, review, tuple(images), meta_path, extra)
