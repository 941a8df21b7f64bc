"""Joining a finished cross-validation: out-of-fold predictions, the postprocessing decision,
``cv_summary.csv`` / ``cv_summary_intervals.csv`` / ``cv_summary.png`` and the model folder's
``model.json``.

Out-of-fold means each case is predicted only by the fold that held it out (checked: a
case in a fold's training set raises). Predictions go through the same
:class:`~medseg.inference.Predictor` as ``medseg predict`` (raw, postprocessing off) and are
scored on the source grid against the label mapped by the recorded preprocessing.

Every summary figure comes with a percentile bootstrap interval over cases
(:mod:`medseg.engine.cv_stats`) and, under 10 cases, a plain warning that it cannot be
trusted to carry over to new patients.

Postprocessing decision (per structure, outermost first, each decision made on the labels the
previous ones produced), see :func:`choose_postprocessing`: a candidate may not lower the
out-of-fold lesion sensitivity, and the kept one raises mean Dice + 0.5 x lesion F1.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medseg.engine.cv_layout import (
    CASES_CSV,
    FIGURES,
    FOLD_DONE,
    INTERVALS_CSV,
    MIN_ML_CANDIDATES,
    OOF_DIR,
    PLOT_FILE,
    RAW,
    CrossValSetup,
    fold_dir,
)
from medseg.engine.cv_stats import (
    CONFIDENCE,
    MIN_TRUSTED_CASES,
    RESAMPLES,
    SEED,
    Interval,
    bootstrap_interval,
    few_cases_warning,
    pooled_ratio,
)
from medseg.errors import DatasetError
from medseg.io.tables import write_csv

logger = logging.getLogger(__name__)

#: a candidate may lower the pooled out-of-fold lesion sensitivity by at most this much
LESION_SENSITIVITY_TOLERANCE = 0.02
#: weight of the pooled lesion F1 in a candidate's score (mean Dice + weight x lesion F1)
LESION_F1_WEIGHT = 0.5
#: the best candidate must beat "none" by more than this score to be kept, or tie with it
#: (within this) and leave fewer false-positive lesions
MIN_SCORE_GAIN = 1e-4
#: reference components under this volume (20 mm3, a sphere of 3.4 mm) are not lesions to
#: protect or detect: manual labels carry 1-16 voxel fragments beside a tumour (BraTS 2015).
#: Lesion-wise BraTS 2023 ignores < 50 voxels for gliomas, < 2 for metastases.
MIN_REFERENCE_LESION_ML = 0.02
#: "keep the largest component" is tried only with this many out-of-fold cases: with fewer,
#: a structure that is one object in every case (an organ) cannot be told from a tumour that
#: was unifocal in these few cases and will have satellites in the next patient
MIN_CASES_FOR_LARGEST = MIN_TRUSTED_CASES


def _min_ref_voxels(spacing: Any) -> int:
    from medseg.metrics import min_lesion_voxels

    return min_lesion_voxels(MIN_REFERENCE_LESION_ML, spacing)


def join_folds(
    output: Path, setup: CrossValSetup, device: str = "auto", progress: bool = True
) -> dict[str, Any]:
    """Predict, decide, write; returns the summary written into ``model.json``."""
    from medseg.checkpoint import file_sha256, load_record
    from medseg.data.preprocessing import load_case, map_labels
    from medseg.inference import PostprocessConfig, Predictor
    from medseg.inference.model_folder import write_model_folder
    from medseg.inference.postprocess import postprocessing_structures, structures_of
    from medseg.io import write_mask

    plan = setup.plan
    folds, cases = [], []
    record = None
    for fold_plan in plan["folds"]:
        k = fold_plan["fold"]
        ckpt = output / fold_dir(k) / "checkpoints" / "best.pt"
        fold_record, payload = load_record(ckpt)
        record = record or fold_record
        trained_on = _training_cases(payload, setup.spec)
        leaked = sorted(set(fold_plan["val"]) & trained_on)
        if leaked:
            raise DatasetError(
                f"{ckpt}: fold {k} trained on its own held-out case(s) {leaked}; the fold "
                "folders do not match splits.json (train them again into a new --output)"
            )
        predictor = Predictor.load(ckpt, device=device, postprocess=PostprocessConfig())
        for case_id in fold_plan["val"]:
            channels, label = load_case(setup.spec.case(case_id))
            pred = predictor.predict(channels).label
            write_mask(pred.array, pred, output / OOF_DIR / f"{case_id}.nii.gz", overwrite=True)
            truth = map_labels(label.array, record.preprocessing, case_id)
            cases.append(
                {
                    "case_id": case_id,
                    "fold": k,
                    "pred": np.asarray(pred.array),
                    "truth": truth,
                    "spacing": pred.spacing,
                }
            )
            if progress:
                logger.info("out-of-fold prediction of %s by fold %d done", case_id, k)
        done = json.loads((output / fold_dir(k) / FOLD_DONE).read_text())
        folds.append(
            {
                "fold": k,
                "checkpoint": f"{fold_dir(k)}/checkpoints/best.pt",
                "sha256": file_sha256(ckpt),
                "val_cases": list(fold_plan["val"]),
                "train_cases": sorted(trained_on),
                "best_epoch": done.get("best_epoch"),
                "best_smoothed_val_dice": done.get("best_smoothed_val_dice"),
            }
        )
    assert record is not None
    structures = structures_of(record.preprocessing, record.class_names)
    rules, decision = choose_postprocessing(
        cases, postprocessing_structures(record.preprocessing, record.class_names)
    )
    rows = score_cases(cases, structures, rules)
    summary = _summary(rows, structures)
    record = record.model_copy(
        update={"postprocessing": [r.model_dump(mode="json") for r in rules]}
    )
    _write_rows(output / CASES_CSV, rows)
    write_intervals(output / INTERVALS_CSV, summary)
    plot_summary(output / PLOT_FILE, rows, structures, summary)
    write_model_folder(
        output,
        record,
        folds,
        postprocessing_decision=decision,
        cross_validation={"splits": plan, "summary": summary},
    )
    logger.info("cross-validation joined: %s", json.dumps(summary))
    if summary["warning"]:
        logger.warning("out-of-fold figures: %s", summary["warning"])
    return summary


def _training_cases(payload: dict[str, Any], spec: Any) -> set[str]:
    """The case ids a checkpoint's run trained on: its recorded split, else re-derived from
    its resolved config and the dataset (checkpoints written before splits were recorded)."""
    from medseg.data.splits import split_from_spec

    if payload.get("data_split"):
        return set(payload["data_split"]["train"])
    data = payload["config"]["data"]
    train_ids, _ = split_from_spec(
        spec.cases,
        data["val_fraction"],
        data["fold"],
        data["num_folds"],
        data["split_seed"],
        data["val_cases"],
    )
    return set(train_ids)


def _apply(pred: np.ndarray, spacing: Any, rules: list[Any]) -> np.ndarray:
    from medseg.inference.postprocess import PostprocessConfig, postprocess_labels

    if not rules:
        return pred
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return postprocess_labels(pred, voxel_ml, PostprocessConfig(rules=tuple(rules)))[0]


def _references(cases: list[dict[str, Any]], values: list[int]) -> list[tuple[Any, ...]]:
    """Per case, the structure's reference mask and its lesions
    (:func:`medseg.metrics.reference_lesions`, >= MIN_REFERENCE_LESION_ML): the same for
    every candidate, so labelled once per structure."""
    from medseg.metrics import reference_lesions

    out = []
    for case in cases:
        tm = np.isin(case["truth"], values)
        out.append((tm, reference_lesions(tm, _min_ref_voxels(case["spacing"]))))
    return out


def _candidate_figures(
    refs: list[tuple[Any, ...]], preds: list[np.ndarray], values: list[int]
) -> dict[str, float]:
    """Mean Dice and FP lesions per case, pooled lesion sensitivity and F1, and the score
    (mean Dice + LESION_F1_WEIGHT x lesion F1; F1 of no lesion anywhere counts as 1)."""
    from medseg.metrics import dice, lesion_detection, lesion_f1, lesion_sensitivity

    d, tp, fn, fp = [], 0, 0, []
    for (tm, lesions), p in zip(refs, preds, strict=True):
        pm = np.isin(p, values)
        d.append(dice(pm, tm))
        det = lesion_detection(pm, tm, lesions=lesions)
        tp, fn = tp + det["tp"], fn + det["fn"]
        fp.append(det["fp"])
    f1 = lesion_f1(tp, fn, sum(fp))
    mean_dice = float(np.mean(d))
    return {
        "mean_dice": mean_dice,
        "mean_fp_lesions": float(np.mean(fp)),
        "lesion_sensitivity": lesion_sensitivity(tp, fn),
        "lesion_f1": f1,
        "score": mean_dice + LESION_F1_WEIGHT * (1.0 if np.isnan(f1) else f1),
    }


def _component_volumes(
    cases: list[dict[str, Any]],
    refs: list[tuple[Any, ...]],
    preds: list[np.ndarray],
    values: list[int],
) -> tuple[list[float], list[float]]:
    """Volumes (mL) of the predicted components: false positives, and those detecting a
    reference lesion (>= MIN_REFERENCE_LESION_ML), over every out-of-fold case."""
    from medseg.metrics import predicted_components

    fp_ml: list[float] = []
    tp_ml: list[float] = []
    for case, (tm, lesions), p in zip(cases, refs, preds, strict=True):
        sizes, touches, detects = predicted_components(np.isin(p, values), tm, lesions=lesions)
        voxel_ml = float(np.prod(case["spacing"])) / 1000.0
        fp_ml += (sizes[~touches] * voxel_ml).tolist()
        tp_ml += (sizes[detects] * voxel_ml).tolist()
    return fp_ml, tp_ml


def keeps_lesions(candidate: dict[str, float], none: dict[str, float]) -> bool:
    """A candidate's pooled lesion sensitivity is at most LESION_SENSITIVITY_TOLERANCE below
    no postprocessing's (always true when no case has a reference lesion)."""
    base, sens = none["lesion_sensitivity"], candidate["lesion_sensitivity"]
    if np.isnan(base):
        return True
    return bool(sens >= base - LESION_SENSITIVITY_TOLERANCE - 1e-12)


DECISION_RULE = (
    f"lesions are reference components of >= {MIN_REFERENCE_LESION_ML} mL; 'largest "
    f"component' is tried with >= {MIN_CASES_FOR_LARGEST} cases only; candidates that "
    f"lower the pooled out-of-fold lesion sensitivity by more than "
    f"{LESION_SENSITIVITY_TOLERANCE} are refused; of the rest, the one with the highest "
    f"score = mean Dice + {LESION_F1_WEIGHT} x pooled lesion F1 (on a tie, the fewest "
    f"false-positive lesions) is kept when its score beats no postprocessing by more than "
    f"{MIN_SCORE_GAIN}, or ties with it and leaves fewer false-positive lesions"
)


def choose_postprocessing(
    cases: list[dict[str, Any]], structures: list[Any]
) -> tuple[list[Any], dict[str, Any]]:
    """The rules kept and, per structure, every candidate's out-of-fold figures.

    Per structure (outermost first, on the labels the previous structures' rules produced),
    with lesions as 26-connected components (:func:`medseg.metrics.lesion_detection`) pooled
    over the out-of-fold cases; reference components under ``MIN_REFERENCE_LESION_ML`` are
    not lesions (neither protected nor counted missed), predicted components of any size are:

    1. candidates (:func:`medseg.inference.postprocess.candidate_rules`), least destructive
       first: drop components under each of ``MIN_ML_CANDIDATES`` mL and under thresholds
       just above the 50th/90th/100th percentile of the false-positive component volumes,
       when no component detecting a reference lesion is that small; then keep the largest
       component, only with ``MIN_CASES_FOR_LARGEST`` (10) or more cases;
    2. a candidate is *refused* when its lesion sensitivity (detected / reference lesions)
       is more than ``LESION_SENSITIVITY_TOLERANCE`` (0.02) below no postprocessing's, so a
       rule that deletes true satellite lesions cannot win by removing specks elsewhere;
    3. the others are ranked by ``score = mean Dice + LESION_F1_WEIGHT (0.5) x lesion F1``
       (lesion F1 = 2 TP / (2 TP + FP + FN); 1 when there is no lesion at all);
    4. the best is kept only when its score beats no postprocessing's by more than
       ``MIN_SCORE_GAIN`` (1e-4), or equals it and leaves fewer false-positive lesions (a
       class never detected out of fold scores the same under every rule); otherwise
       nothing is applied to that structure.

    For a softmax model with several classes, ``structures`` starts with all of them
    together (:func:`medseg.inference.postprocess.postprocessing_structures`).
    """
    from medseg.inference.postprocess import candidate_rules

    chosen: list[Any] = []
    decision: dict[str, Any] = {}
    current = [c["pred"] for c in cases]
    for structure in structures:
        values = list(structure.values)
        refs = _references(cases, values)
        base = _candidate_figures(refs, current, values)
        table = {"none": {**base, "keeps_lesions": True}}
        best_rule, best, best_preds = None, base, current
        fp_ml, tp_ml = _component_volumes(cases, refs, current, values)
        largest = len(cases) >= MIN_CASES_FOR_LARGEST
        for rule in candidate_rules(structure, MIN_ML_CANDIDATES, fp_ml, tp_ml, largest):
            preds = [_apply(p, c["spacing"], [rule]) for p, c in zip(current, cases, strict=True)]
            fig = _candidate_figures(refs, preds, values)
            fig["keeps_lesions"] = keeps_lesions(fig, base)
            table[_rule_name(rule)] = fig
            if fig["keeps_lesions"] and _beats(fig, best):
                best_rule, best, best_preds = rule, fig, preds
        if best_rule is not None:
            chosen.append(best_rule)
            current = best_preds
        decision[structure.name] = {
            "chosen": _rule_name(best_rule) if best_rule else "none",
            "candidates": table,
            "cases": len(cases),
            "rule": DECISION_RULE,
        }
    return chosen, decision


def _beats(candidate: dict[str, float], best: dict[str, float]) -> bool:
    """A higher score by more than MIN_SCORE_GAIN, or the same score (within it) with fewer
    false-positive lesions: when no reference lesion is ever detected (a class the model
    has not learnt) every candidate scores the same and the one removing its specks wins."""
    gain = candidate["score"] - best["score"]
    if gain > MIN_SCORE_GAIN:
        return True
    return abs(gain) <= MIN_SCORE_GAIN and candidate["mean_fp_lesions"] < best["mean_fp_lesions"]


def _rule_name(rule: Any) -> str:
    return rule.describe().split(": ", 1)[1]


def score_cases(
    cases: list[dict[str, Any]], structures: list[Any], rules: list[Any]
) -> list[dict[str, Any]]:
    """Per case and structure: Dice, HD95, lesion counts, lesion sensitivity and F1,
    postprocessed and raw (``*_raw``)."""
    from medseg.metrics import evaluate_masks

    rows = []
    for case in cases:
        post = _apply(case["pred"], case["spacing"], rules)
        groups = {s.name: list(s.values) for s in structures}
        raw_rows = evaluate_masks(
            case["pred"], case["truth"], case["spacing"], groups,
            min_lesion_ml=MIN_REFERENCE_LESION_ML,
        )  # fmt: skip
        post_rows = evaluate_masks(
            post, case["truth"], case["spacing"], groups, min_lesion_ml=MIN_REFERENCE_LESION_ML
        )
        for raw, pp in zip(raw_rows, post_rows, strict=True):
            rows.append(
                {
                    "case": case["case_id"],
                    "fold": case["fold"],
                    "structure": raw["class"],
                    **_case_figures(pp, ""),
                    "ref_lesions": pp["ref_lesions"],
                    "ref_ml": pp["ref_ml"],
                    "pred_ml": pp["pred_ml"],
                    **_case_figures(raw, RAW),
                }
            )
    return rows


def _case_figures(row: dict[str, Any], suffix: str) -> dict[str, Any]:
    from medseg.metrics import lesion_f1, lesion_sensitivity

    return {
        f"dice{suffix}": row["dice"],
        f"hd95_mm{suffix}": row["hd95_mm"],
        f"fp_lesions{suffix}": row["fp"],
        f"fn_lesions{suffix}": row["fn"],
        f"tp_lesions{suffix}": row["tp"],
        f"lesion_sensitivity{suffix}": lesion_sensitivity(row["tp"], row["fn"]),
        f"lesion_f1{suffix}": lesion_f1(row["tp"], row["fn"], row["fp"]),
    }


#: decimals of each figure's printed value (its interval bounds get one fewer, at least 1)
_DIGITS = {"dice": 3, "hd95_mm": 1, "fp_lesions": 2, "lesion_sensitivity": 2, "lesion_f1": 2}


def _figure_interval(sel: list[dict[str, Any]], figure: str, suffix: str) -> Interval:
    """Bootstrap over the cases of ``sel``: a mean of per-case values, or for the lesion
    rates a pooled ratio of counts (a case with no lesion still counts as a case)."""
    if figure in ("lesion_sensitivity", "lesion_f1"):
        tp = np.array([r[f"tp_lesions{suffix}"] for r in sel], dtype=np.float64)
        fn = np.array([r[f"fn_lesions{suffix}"] for r in sel], dtype=np.float64)
        fp = np.array([r[f"fp_lesions{suffix}"] for r in sel], dtype=np.float64)
        if figure == "lesion_sensitivity":
            counts = np.stack([tp, tp + fn], axis=1)
        else:
            counts = np.stack([2 * tp, 2 * tp + fp + fn], axis=1)
        return bootstrap_interval(counts, statistic=pooled_ratio)
    values = [np.nan if r[figure + suffix] is None else r[figure + suffix] for r in sel]
    return bootstrap_interval(np.asarray(values, dtype=np.float64))


def _summary(rows: list[dict[str, Any]], structures: list[Any]) -> dict[str, Any]:
    """``{"cases", "warning", "bootstrap", "structures": {name: {figure: interval}}}``;
    an interval is :meth:`Interval.as_dict` (``value``, ``low``, ``high``, ``cases``,
    ``text``), figures as :data:`~medseg.engine.cv_layout.FIGURES` and their ``_raw``."""
    n_cases = len({r["case"] for r in rows})
    out: dict[str, Any] = {
        "cases": n_cases,
        "warning": few_cases_warning(n_cases),
        "bootstrap": {
            "unit": "case",
            "method": "percentile",
            "resamples": RESAMPLES,
            "confidence": CONFIDENCE,
            "seed": SEED,
        },
        "structures": {},
    }
    for s in structures:
        sel = [r for r in rows if r["structure"] == s.name]
        out["structures"][s.name] = {
            figure + suffix: _figure_interval(sel, figure, suffix).as_dict(_DIGITS[figure])
            for suffix in ("", RAW)
            for figure in FIGURES
        }
    return out


def write_intervals(path: Path, summary: dict[str, Any]) -> None:
    """One row per structure and figure: value, interval bounds, cases, the printed text
    and the few-cases warning (empty from 10 cases on)."""
    from medseg.io.tables import write_csv

    rows = [
        {
            "structure": name,
            "figure": figure,
            "value": _round(fig["value"]),
            "ci_low": _round(fig["low"]),
            "ci_high": _round(fig["high"]),
            "cases": fig["cases"],
            "confidence": fig["confidence"],
            "text": fig["text"],
            "warning": summary["warning"] or "",
        }
        for name, figures in summary["structures"].items()
        for figure, fig in figures.items()
    ]
    write_csv(rows, path)


def _round(x: float | None) -> float | str:
    return "" if x is None else round(x, 4)


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    write_csv(
        [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows],
        path,
        list(rows[0]),
        note="Out-of-fold figures, postprocessing as chosen (*_raw: before postprocessing)",
    )


def plot_summary(
    path: Path,
    rows: list[dict[str, Any]],
    structures: list[Any],
    summary: dict[str, Any] | None = None,
) -> None:
    """Out-of-fold Dice and false-positive lesions per case and structure, raw vs
    postprocessed (one PNG); with ``summary``, each structure's mean Dice and interval in the
    legend and the few-cases warning on top."""
    from medseg.engine.artifacts import new_figure, save_figure

    cases = list(dict.fromkeys(r["case"] for r in rows))
    fig, axes = new_figure(2, 6.0, 3.6)
    width = 0.8 / max(len(structures), 1)
    x = np.arange(len(cases))
    for i, s in enumerate(structures):
        sel = {r["case"]: r for r in rows if r["structure"] == s.name}
        raw = [sel[c]["dice_raw"] for c in cases]
        post = [sel[c]["dice"] for c in cases]
        pos = x + (i - (len(structures) - 1) / 2) * width
        label = s.name
        if summary is not None:
            label += f": {summary['structures'][s.name]['dice']['text']}"
        axes[0].bar(pos, post, width * 0.9, label=label)
        axes[0].scatter(pos, raw, color="black", marker="_", s=80, zorder=3)
        axes[1].bar(pos, [sel[c]["fp_lesions"] for c in cases], width * 0.9, label=s.name)
        axes[1].scatter(
            pos,
            [sel[c]["fp_lesions_raw"] for c in cases],
            color="black",
            marker="_",
            s=80,
            zorder=3,
        )
    for ax, title in zip(axes, ("out-of-fold Dice", "false-positive lesions"), strict=True):
        ax.set_xticks(
            x,
            [f"{c}\n(fold {next(r['fold'] for r in rows if r['case'] == c)})" for c in cases],
            fontsize=7,
        )
        ax.set_title(f"{title} (bars: postprocessed, -: raw)", fontsize=9)
    axes[0].set_ylim(0, 1)
    axes[0].legend(fontsize=7)
    if summary is not None and summary["warning"]:
        fig.suptitle(f"warning: {summary['warning']}", fontsize=8, color="darkred", wrap=True)
    save_figure(fig, path)
