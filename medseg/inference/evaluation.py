"""``medseg evaluate``: compare predicted masks with reference masks, per case and overall.

Files or folders are paired by case id (file name without its extension, e.g.
``case_001.nii.gz`` -> ``case_001``; nnU-Net's ``_0000`` channel suffix is ignored). Every
pair must share one voxel grid (:class:`~medseg.errors.GeometryMismatchError` otherwise).
Metrics are those of :mod:`medseg.metrics`.

A reference case without a prediction counts, as in challenge evaluations: Dice and IoU 0,
distances NaN, every reference lesion missed, flagged ``missing`` in the per-case table, so
a half-finished batch never scores better than it is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, InputNotFoundError
from medseg.io.atomic import check_output
from medseg.io.cases import IMAGE_SUFFIXES, image_stem, split_channel
from medseg.io.tables import write_csv

logger = logging.getLogger(__name__)

MASK_SUFFIXES = (*IMAGE_SUFFIXES, ".dcm")  # + DICOM-SEG files
SUMMARY_METRICS = ("dice", "iou", "hd95_mm", "assd_mm", "volume_diff_ml", "volume_diff_pct")


def case_id_of(path: Path) -> str | None:
    """Case id of a mask file, or ``None`` if it is not a mask file we read."""
    stem = image_stem(path.name, MASK_SUFFIXES)
    if stem is None or stem.endswith("_probabilities"):
        return None
    if path.name.lower().endswith(".dcm"):
        stem = stem.removesuffix("_seg")
    case_id, channel = split_channel(stem)
    return case_id if channel == 0 else stem


def _index(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        case = case_id_of(path) if path.is_file() else None
        # NIfTI wins over a DICOM-SEG of the same case (both written by `medseg predict`)
        if case is not None and (case not in found or found[case].suffix == ".dcm"):
            found[case] = path
    return found


def _complete_predictions(folder: Path, found: dict[str, Path]) -> dict[str, Path]:
    """``found`` without the masks of a ``medseg predict`` folder that lack their report.

    A folder where any mask has its ``<case>.json`` is a medseg prediction folder; there the
    report is what marks a case complete (it is committed after the mask), so a mask without
    one is an unfinished case (an interrupted or failed write, or a stray file). It is left
    out with a warning naming it, and its reference then counts as missing (Dice 0, exit
    code 1): an incomplete batch never scores better than it is, and one bad case does not
    stop the evaluation of the others. Plain folders of masks (no reports) are used whole.
    """
    reported = {case for case in found if (folder / f"{case}.json").is_file()}
    if not reported:
        return found
    unreported = sorted(set(found) - reported)
    if unreported:
        logger.warning(
            "%s is a medseg prediction folder, but %d mask(s) have no <case>.json report "
            "(unfinished cases; not scored, they count as missing): %s; re-run `medseg "
            "predict` into this folder to finish them",
            folder,
            len(unreported),
            ", ".join(str(found[c].name) for c in unreported[:10]),
        )
    return {case: path for case, path in found.items() if case in reported}


def match_cases(pred: Path, ref: Path) -> list[tuple[str, Path | None, Path]]:
    """``(case_id, prediction, reference)`` pairs from two files or two folders; the
    prediction is ``None`` for a reference case with no prediction (scored as missing)."""
    for p in (pred, ref):
        if not p.exists():
            raise InputNotFoundError(f"{p} does not exist; check the path")
    if pred.is_file() and ref.is_file():
        return [(case_id_of(pred) or pred.stem, pred, ref)]
    if pred.is_dir() and ref.is_dir():
        preds, refs = _complete_predictions(pred, _index(pred)), _index(ref)
        common = sorted(set(preds) & set(refs))
        if not common:
            raise InputNotFoundError(
                f"no case ids in common between {pred} ({len(preds)} masks, e.g. "
                f"{sorted(preds)[:3]}) and {ref} ({len(refs)} masks, e.g. {sorted(refs)[:3]}); "
                "masks are paired by file name without extension"
            )
        extra = set(preds) - set(refs)
        if extra:
            logger.warning(
                "%d prediction(s) have no reference and are not scored: %s",
                len(extra),
                sorted(extra)[:10],
            )
        missing = set(refs) - set(preds)
        if missing:
            logger.warning(
                "%d case(s) have no prediction and count as Dice 0: %s",
                len(missing),
                sorted(missing)[:10],
            )
        return [(c, preds.get(c), refs[c]) for c in sorted(refs)]
    raise InputNotFoundError(
        f"{pred} and {ref}: give two mask files or two folders of masks, not a mix"
    )


def parse_labels(specs: Sequence[str] | None) -> dict[str, list[int]] | None:
    """``["1", "2"]``, ``["1,2,4"]`` (separate classes) or ``["wt=1,2,3,4", "et=4"]`` (regions)."""
    if not specs:
        return None
    classes: dict[str, list[int]] = {}
    for spec in specs:
        for part in [spec] if "=" in spec else spec.split(","):
            name, _, values = part.partition("=") if "=" in part else (part, "", part)
            try:
                ints = [int(v) for v in values.split(",") if v.strip()]
            except ValueError:
                ints = []
            # an empty spec or name ("", "1,,2", "=1") would become a class with no label
            if not ints or not name.strip():
                raise ConfigError(
                    f"--labels {spec!r}: expected label values like 1 or 1,2,4 or a region "
                    "like whole_tumour=1,2,3,4"
                )
            classes[name.strip()] = ints
    return classes


def evaluate_pair(
    pred_path: Path,
    ref_path: Path,
    classes: dict[str, list[int]] | None,
    min_lesion_ml: float = 0.0,
) -> list[dict[str, Any]]:
    """Metric rows (one per class) for one prediction/reference pair of files; reference
    components under ``min_lesion_ml`` are not counted as lesions."""
    from medseg.io import check_same_grid, integer_labels, read_volume
    from medseg.metrics import evaluate_masks

    pred, ref = read_volume(pred_path), read_volume(ref_path)
    check_same_grid(ref, pred, what="prediction")
    pred_arr = integer_labels(pred.array, str(pred_path), "prediction mask", np.int32)
    ref_arr = integer_labels(ref.array, str(ref_path), "reference mask", np.int32)
    if classes is None:
        values = sorted((set(np.unique(pred_arr)) | set(np.unique(ref_arr))) - {0})
        classes = {str(int(v)): [int(v)] for v in values}
    return evaluate_masks(pred_arr, ref_arr, ref.spacing, classes, min_lesion_ml=min_lesion_ml)


def evaluate_missing(
    ref_path: Path, classes: dict[str, list[int]], min_lesion_ml: float = 0.0
) -> list[dict[str, Any]]:
    """Metric rows for a reference with no prediction: Dice/IoU 0, distances NaN, the
    reference's volume and lesions all missed."""
    from medseg.io import integer_labels, read_volume
    from medseg.metrics import evaluate_masks

    ref = read_volume(ref_path)
    ref_arr = integer_labels(ref.array, str(ref_path), "reference mask", np.int32)
    rows = evaluate_masks(
        np.zeros_like(ref_arr), ref_arr, ref.spacing, classes, min_lesion_ml=min_lesion_ml
    )
    for row in rows:
        row.update(dice=0.0, iou=0.0, hd95_mm=math.nan, assd_mm=math.nan)
    return rows


def summarize(per_case):
    """Mean / median / std of each metric per class, and lesion detection totals."""
    import pandas as pd

    rows = []
    for name, group in per_case.groupby("class", sort=False):
        row: dict[str, Any] = {"class": name, "cases": len(group)}
        if "missing" in group:
            row["missing_cases"] = int(group["missing"].sum())
        for metric in SUMMARY_METRICS:
            values = group[metric].astype(float)
            row[f"{metric}_mean"] = values.mean()
            row[f"{metric}_median"] = values.median()
            row[f"{metric}_std"] = values.std(ddof=0)
        row["n_undefined_hd95"] = int(group["hd95_mm"].isna().sum())
        tp, fn, fp = int(group["tp"].sum()), int(group["fn"].sum()), int(group["fp"].sum())
        pred_lesions = int(group["pred_lesions"].sum())
        row.update({"tp": tp, "fn": fn, "fp": fp})
        row["lesion_sensitivity"] = tp / (tp + fn) if tp + fn else math.nan
        row["lesion_precision"] = (pred_lesions - fp) / pred_lesions if pred_lesions else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _reference_classes(ref_path: Path) -> dict[str, list[int]]:
    from medseg.io import integer_labels, read_volume

    ref = integer_labels(read_volume(ref_path).array, str(ref_path), "reference mask", np.int32)
    return {str(int(v)): [int(v)] for v in sorted(set(np.unique(ref)) - {0})}


def evaluate_paths(
    pred: str | Path,
    ref: str | Path,
    labels: dict[str, list[int]] | None = None,
    output: str | Path | None = None,
    *,
    overwrite: bool = False,
    min_lesion_ml: float = 0.0,
):
    """Evaluate every matched case; returns ``(per_case, summary)`` DataFrames.

    Reference components under ``min_lesion_ml`` (mL) are not lesions: neither detected
    nor missed (manual labels carry few-voxel fragments); predicted components of any size
    count as false positives.

    With ``output`` (a ``.csv`` path) the per-case table is written there and the summary
    beside it as ``<name>_summary.csv`` (both atomically; neither may be an input, and an
    existing file is replaced only with ``overwrite``). Reference cases without a
    prediction are rows with ``missing`` True and Dice 0 (see the module docstring).
    """
    import pandas as pd
    from tqdm import tqdm

    pairs = match_cases(Path(pred), Path(ref))
    if output is not None:  # before the slow part; never over a mask being scored
        output = Path(output)
        inputs = [Path(pred), Path(ref), *(path for pair in pairs for path in pair[1:] if path)]
        for path in (output, summary_path_of(output)):
            check_output(path, overwrite=overwrite, inputs=inputs)
    rows = []
    present = [(c, p, r) for c, p, r in pairs if p is not None]
    for case, p, r in tqdm(present, desc="evaluate", unit="case", disable=len(present) < 2):
        for row in evaluate_pair(p, r, labels, min_lesion_ml):
            rows.append({"case": case, "missing": False, **row})
    seen: dict[str, list[int]] = {}
    for row in rows:
        seen.setdefault(str(row["class"]), [int(v) for v in str(row["labels"]).split(",")])
    for case, p, r in pairs:
        if p is None:
            classes = labels or seen or _reference_classes(r)
            rows.extend(
                {"case": case, "missing": True, **row}
                for row in evaluate_missing(r, classes, min_lesion_ml)
            )
    per_case = pd.DataFrame(rows)
    if per_case.empty:
        raise InputNotFoundError(f"{pred}: no labels to evaluate (both masks empty everywhere?)")
    summary = summarize(per_case)
    if output is not None:
        for frame, path in ((per_case, output), (summary, summary_path_of(output))):
            write_csv(frame, path)
    return per_case, summary


def summary_path_of(output: str | Path) -> Path:
    """Where :func:`evaluate_paths` writes the summary of the per-case table ``output``."""
    output = Path(output)
    return output.with_name(output.name.removesuffix(".csv") + "_summary.csv")
