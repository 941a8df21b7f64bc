"""Check a whole dataset up front and report every problem in one run.

``validate_dataset`` reads every image and label once and collects :class:`Problem` records
(it never stops at the first one), so a user fixes everything before training starts
instead of crashing on the 500th case.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from medseg.data.datasets import CaseSpec, DatasetSpec
from medseg.errors import GeometryMismatchError, MedsegError
from medseg.io import Volume, read_volume

if TYPE_CHECKING:  # annotations only: preprocessing.load_case imports this module
    from medseg.data.preprocessing import PreprocessingParams

logger = logging.getLogger(__name__)

KINDS = (
    "missing-file",
    "unreadable",
    "missing-label",
    "channel-count",
    "geometry",
    "non-finite",
    "label-values",
    "empty-label",
)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem found in a dataset.

    Attributes:
        case_id: the case it belongs to.
        kind: one of :data:`KINDS`.
        path: the offending file (or the case's first image).
        message: what was found, what was expected and the fix.
    """

    case_id: str
    kind: str
    path: str
    message: str


def validate_dataset(
    spec: DatasetSpec, params: PreprocessingParams | None = None, progress: bool = False
) -> list[Problem]:
    """Every problem of ``spec``'s cases: missing/unreadable files, channel or label grids that
    differ, NaN/Inf voxels, label values not declared (in ``spec.labels`` or mapped by
    ``params.label_map``), non-integer labels and labels without foreground."""
    allowed = _allowed_label_values(spec, params)
    problems: list[Problem] = []
    for case in tqdm(spec.cases, desc="validating", unit="case", disable=not progress):
        problems.extend(validate_case(case, len(spec.channel_names), allowed))
    logger.info("validated %d cases: %d problem(s)", len(spec.cases), len(problems))
    return problems


def _allowed_label_values(spec: DatasetSpec, params: PreprocessingParams | None) -> set[int] | None:
    if params is not None and params.label_map:
        values = set(params.label_map)
        return values | {0} | set(spec.labels)
    return set(spec.labels) | {0} if spec.labels else None


def _read(case: CaseSpec, path: Path, index: int | None, problems: list[Problem]) -> Volume | None:
    if not path.exists():
        problems.append(
            Problem(
                case.case_id,
                "missing-file",
                str(path),
                "file does not exist; fix the path or add it",
            )
        )
        return None
    try:
        return read_volume(path, channel=index)
    except MedsegError as err:
        problems.append(Problem(case.case_id, "unreadable", str(path), str(err)))
    except Exception as err:  # a broken file must become a report line, not a crash
        problems.append(
            Problem(case.case_id, "unreadable", str(path), f"{type(err).__name__}: {err}")
        )
    return None


def validate_case(
    case: CaseSpec, num_channels: int, allowed_labels: Iterable[int] | None = None
) -> list[Problem]:
    """All problems of one case (see :func:`validate_dataset`)."""
    problems: list[Problem] = []
    first = str(case.images[0]) if case.images else case.case_id
    if len(case.images) != num_channels:
        problems.append(
            Problem(
                case.case_id,
                "channel-count",
                first,
                f"{len(case.images)} image file(s), expected {num_channels} (one per channel)",
            )
        )
    indices = case.channel_indices or [None] * len(case.images)
    channels = [
        _read(case, Path(p), i, problems) for p, i in zip(case.images, indices, strict=True)
    ]
    reference = next((c for c in channels if c is not None), None)
    for path, vol in zip(case.images, channels, strict=True):
        if vol is None:
            continue
        if vol is not reference and reference is not None:
            problems.extend(_grid_problem(case.case_id, reference, vol, "channel"))
        n_bad = int(np.size(vol.array) - np.count_nonzero(np.isfinite(vol.array)))
        if n_bad:
            problems.append(
                Problem(
                    case.case_id,
                    "non-finite",
                    str(path),
                    f"{n_bad} NaN/Inf voxel(s); expected finite intensities (they are set to 0 "
                    "by preprocessing, but usually mean a broken conversion: re-export the scan)",
                )
            )
    if case.label is None or not Path(case.label).exists():
        problems.append(
            Problem(
                case.case_id,
                "missing-label",
                str(case.label or first),
                "no label file for this case; add the mask or remove the case from the dataset",
            )
        )
        return problems
    label = _read(case, Path(case.label), None, problems)
    if label is None:
        return problems
    if reference is not None:
        problems.extend(_grid_problem(case.case_id, reference, label, "label"))
    problems.extend(_label_value_problems(case, label, allowed_labels))
    return problems


def check_case_grids(case_id: str, channels: Sequence[Volume], label: Volume | None) -> None:
    """Raise unless every channel and the label lie on the first channel's voxel grid.

    The geometry check of :func:`validate_case`, for code that reads a case to train on it
    (:func:`medseg.data.preprocessing.load_case`): one error naming the case and both grids.

    Raises:
        GeometryMismatchError: a channel or the label is on another grid.
    """
    others = [(vol, "channel") for vol in channels[1:]]
    if label is not None:
        others.append((label, "label"))
    for vol, what in others:
        for problem in _grid_problem(case_id, channels[0], vol, what):
            raise GeometryMismatchError(
                f"case {case_id}: {problem.path}: {problem.message} (`medseg validate-data "
                "DATASET` lists every problem of a dataset)"
            )


def _grid_problem(case_id: str, reference: Volume, other: Volume, what: str) -> list[Problem]:
    if reference.same_grid(other):
        return []
    src = other.metadata.get("source", what)
    return [
        Problem(
            case_id,
            "geometry",
            str(src),
            f"{what} grid (shape {other.shape}, spacing {np.round(other.spacing, 3).tolist()} mm, "
            f"orientation {''.join(other.orientation)}, origin {np.round(other.origin, 2).tolist()}) "
            f"differs from {reference.metadata.get('source', 'the first image')} (shape "
            f"{reference.shape}, spacing {np.round(reference.spacing, 3).tolist()}, orientation "
            f"{''.join(reference.orientation)}, origin {np.round(reference.origin, 2).tolist()}); "
            f"resample the {what} onto the image grid or fix the pairing",
        )
    ]


def _label_value_problems(
    case: CaseSpec, label: Volume, allowed: Iterable[int] | None
) -> list[Problem]:
    data = label.array
    path = str(case.label)
    if not np.all(np.isfinite(data)):
        return [Problem(case.case_id, "non-finite", path, "label has NaN/Inf voxels; re-export it")]
    values = np.unique(data)
    problems = []
    if np.issubdtype(values.dtype, np.floating) and np.any(np.abs(values - np.rint(values)) > 1e-3):
        return [
            Problem(
                case.case_id,
                "label-values",
                path,
                f"non-integer label values (e.g. {values[np.abs(values - np.rint(values)) > 1e-3][:3].tolist()}); "
                "expected class indices; threshold the soft mask first",
            )
        ]
    ints = {int(v) for v in np.rint(values)}
    if allowed is not None:
        unexpected = sorted(ints - set(allowed))
        if unexpected:
            problems.append(
                Problem(
                    case.case_id,
                    "label-values",
                    path,
                    f"unexpected label value(s) {unexpected}; expected {sorted(set(allowed))} "
                    "(declared in dataset.json/manifest 'labels' or the label_map); fix the mask "
                    "or declare the class",
                )
            )
    if ints <= {0}:
        problems.append(
            Problem(
                case.case_id,
                "empty-label",
                path,
                "label has no foreground voxels; check it is the right file (an empty mask is "
                "allowed only for truly negative cases)",
            )
        )
    return problems


def format_problems(problems: list[Problem], width: int = 60) -> str:
    """A plain-text table: case, kind, file, message (one row per problem)."""
    if not problems:
        return "no problems found"
    rows = [("case", "problem", "file", "details")]
    rows += [(p.case_id, p.kind, _shorten(p.path, width), p.message) for p in problems]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = []
    for i, row in enumerate(rows):
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3]
        )
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 7)
    return "\n".join(lines)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3) :]
