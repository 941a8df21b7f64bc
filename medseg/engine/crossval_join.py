"""Joining a finished cross-validation: out-of-fold predictions, the postprocessing decision,
``cv_summary.csv`` / ``cv_summary.png`` and the model folder's ``model.json``.

Out-of-fold means each case is predicted only by the fold that held it out (checked: a
case in a fold's training set raises). Predictions go through the same
:class:`~medseg.inference.Predictor` as ``medseg predict`` (raw, postprocessing off) and are
scored on the source grid against the label mapped by the recorded preprocessing.

Postprocessing decision (nnU-Net's rule, per structure, outermost first, each decision made
on the labels the previous ones produced): candidates are *none*, *keep the largest
component* and *drop components under N mL* for N in
:data:`~medseg.engine.crossval.MIN_ML_CANDIDATES`; the best candidate is kept only when it
raises the mean out-of-fold Dice of that structure (by more than 1e-4).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from medseg.engine.crossval import FOLD_DONE, MIN_ML_CANDIDATES, CrossValSetup
from medseg.errors import DatasetError
from medseg.io.tables import write_csv

logger = logging.getLogger(__name__)

OOF_DIR = "oof"


def join_folds(
    output: Path, setup: CrossValSetup, device: str = "auto", progress: bool = True
) -> dict[str, Any]:
    """Predict, decide, write; returns the summary written into ``model.json``."""
    from medseg.checkpoint import file_sha256, load_record
    from medseg.data.preprocessing import load_case, map_labels
    from medseg.inference import PostprocessConfig, Predictor
    from medseg.inference.model_folder import write_model_folder
    from medseg.inference.postprocess import structures_of
    from medseg.io import write_mask

    plan = setup.plan
    folds, cases = [], []
    record = None
    for fold_plan in plan["folds"]:
        k = fold_plan["fold"]
        ckpt = output / f"fold_{k}" / "checkpoints" / "best.pt"
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
        done = json.loads((output / f"fold_{k}" / FOLD_DONE).read_text())
        folds.append(
            {
                "fold": k,
                "checkpoint": f"fold_{k}/checkpoints/best.pt",
                "sha256": file_sha256(ckpt),
                "val_cases": list(fold_plan["val"]),
                "train_cases": sorted(trained_on),
                "best_epoch": done.get("best_epoch"),
                "best_smoothed_val_dice": done.get("best_smoothed_val_dice"),
            }
        )
    assert record is not None
    structures = structures_of(record.preprocessing, record.class_names)
    rules, decision = choose_postprocessing(cases, structures)
    rows = score_cases(cases, structures, rules)
    summary = _summary(rows, structures)
    record = record.model_copy(
        update={"postprocessing": [r.model_dump(mode="json") for r in rules]}
    )
    _write_rows(output / "cv_summary.csv", rows)
    plot_summary(output / "cv_summary.png", rows, structures)
    write_model_folder(
        output,
        record,
        folds,
        postprocessing_decision=decision,
        cross_validation={"splits": plan, "summary": summary},
    )
    logger.info("cross-validation joined: %s", json.dumps(summary))
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


def _candidates(structure: Any) -> list[Any]:
    from medseg.inference.postprocess import ComponentRule

    out = [ComponentRule(structure=structure, rule="largest")]
    out += [ComponentRule(structure=structure, rule="min_ml", min_ml=m) for m in MIN_ML_CANDIDATES]
    return out


def _apply(pred: np.ndarray, spacing: Any, rules: list[Any]) -> np.ndarray:
    from medseg.inference.postprocess import PostprocessConfig, postprocess_labels

    if not rules:
        return pred
    voxel_ml = float(np.prod(spacing)) / 1000.0
    return postprocess_labels(pred, voxel_ml, PostprocessConfig(rules=tuple(rules)))[0]


def choose_postprocessing(
    cases: list[dict[str, Any]], structures: list[Any]
) -> tuple[list[Any], dict[str, Any]]:
    """The rules kept (see the module docstring) and, per structure, every candidate's mean
    Dice and false-positive lesions over the out-of-fold cases."""
    from medseg.metrics import dice, lesion_detection

    chosen: list[Any] = []
    decision: dict[str, Any] = {}
    current = [c["pred"] for c in cases]
    for structure in structures:
        values = list(structure.values)

        def figures(preds: list[np.ndarray], values: list[int] = values) -> dict[str, float]:
            d, fp = [], []
            for case, p in zip(cases, preds, strict=True):
                pm, tm = np.isin(p, values), np.isin(case["truth"], values)
                d.append(dice(pm, tm))
                fp.append(lesion_detection(pm, tm)["fp"])
            return {"mean_dice": float(np.mean(d)), "mean_fp_lesions": float(np.mean(fp))}

        base = figures(current)
        table = {"none": base}
        best_rule, best = None, base["mean_dice"] + 1e-4
        best_preds = current
        for rule in _candidates(structure):
            preds = [_apply(p, c["spacing"], [rule]) for p, c in zip(current, cases, strict=True)]
            fig = figures(preds)
            table[rule.describe().split(": ", 1)[1]] = fig
            if fig["mean_dice"] > best:
                best_rule, best, best_preds = rule, fig["mean_dice"], preds
        if best_rule is not None:
            chosen.append(best_rule)
            current = best_preds
        decision[structure.name] = {
            "chosen": best_rule.describe().split(": ", 1)[1] if best_rule else "none",
            "candidates": table,
            "cases": len(cases),
            "rule": "kept only when the mean out-of-fold Dice rises by more than 1e-4",
        }
    return chosen, decision


def score_cases(
    cases: list[dict[str, Any]], structures: list[Any], rules: list[Any]
) -> list[dict[str, Any]]:
    """Per case and structure: Dice, HD95 and FP lesions, raw and postprocessed."""
    from medseg.metrics import evaluate_masks

    rows = []
    for case in cases:
        post = _apply(case["pred"], case["spacing"], rules)
        groups = {s.name: list(s.values) for s in structures}
        raw_rows = evaluate_masks(case["pred"], case["truth"], case["spacing"], groups)
        post_rows = evaluate_masks(post, case["truth"], case["spacing"], groups)
        for raw, pp in zip(raw_rows, post_rows, strict=True):
            rows.append(
                {
                    "case": case["case_id"],
                    "fold": case["fold"],
                    "structure": raw["class"],
                    "dice": pp["dice"],
                    "hd95_mm": pp["hd95_mm"],
                    "fp_lesions": pp["fp"],
                    "fn_lesions": pp["fn"],
                    "ref_ml": pp["ref_ml"],
                    "pred_ml": pp["pred_ml"],
                    "dice_raw": raw["dice"],
                    "hd95_mm_raw": raw["hd95_mm"],
                    "fp_lesions_raw": raw["fp"],
                }
            )
    return rows


def _summary(rows: list[dict[str, Any]], structures: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in structures:
        sel = [r for r in rows if r["structure"] == s.name]
        out[s.name] = {
            key: _mean([r[key] for r in sel])
            for key in (
                "dice",
                "hd95_mm",
                "fp_lesions",
                "dice_raw",
                "hd95_mm_raw",
                "fp_lesions_raw",
            )
        }
    return out


def _mean(values: list[float]) -> float:
    """Mean of the defined values (HD95 is undefined when a mask is empty); NaN if none."""
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    write_csv(
        [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()} for row in rows],
        path,
        list(rows[0]),
        note="Out-of-fold figures, postprocessing as chosen (*_raw: before postprocessing)",
    )


def plot_summary(path: Path, rows: list[dict[str, Any]], structures: list[Any]) -> None:
    """Out-of-fold Dice and false-positive lesions per case and structure, raw vs
    postprocessed (one PNG)."""
    from medseg.engine.artifacts import _figure, _save_figure

    cases = list(dict.fromkeys(r["case"] for r in rows))
    fig, axes = _figure(2, 6.0, 3.6)
    width = 0.8 / max(len(structures), 1)
    x = np.arange(len(cases))
    for i, s in enumerate(structures):
        sel = {r["case"]: r for r in rows if r["structure"] == s.name}
        raw = [sel[c]["dice_raw"] for c in cases]
        post = [sel[c]["dice"] for c in cases]
        pos = x + (i - (len(structures) - 1) / 2) * width
        axes[0].bar(pos, post, width * 0.9, label=f"{s.name}")
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
    _save_figure(fig, path)
