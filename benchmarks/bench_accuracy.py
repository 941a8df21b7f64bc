"""Accuracy on unseen patients: medseg's shipped BraTS recipe vs a MONAI-tutorial peer.

Both pipelines, in one run, on the same cases and folds with the same wall-time budget:

* medseg: ``medseg train configs/brats_2d.yaml --folds all`` on the four cases of
  ``../shared/data/brats2015`` (out-of-fold figures: each case predicted by the fold that never
  saw it), then the ensemble of the folds on the external TCGA case
  ``../shared/data/tcga_du_7294`` (its labels are an automatic model fusion, not manual);
* peer (``monai_peer.py``): per fold, trained for as long as medseg's fold trained, on the same
  training cases; out-of-fold prediction, then the average of its folds on the TCGA case.

Reports per case whole-tumour and tumour-core Dice, HD95 (mm) and false-positive lesions, and
the wall times; one table with both rows, written to ``--output`` as JSON and markdown.

    python benchmarks/bench_accuracy.py --output runs/bench_accuracy
    python benchmarks/bench_accuracy.py --quick        # 1 epoch: checks the script, not accuracy

BraTS 2015 labels: 1 necrosis, 2 oedema, 3 non-enhancing, 4 enhancing (whole tumour 1-4, core
1,3,4); the TCGA fusion uses the later BraTS convention (1 necrotic/non-enhancing core,
2 oedema, 4 enhancing: whole tumour 1,2,4, core 1,4). Research use only.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
SHARED = ROOT.parent / "shared" / "data"
TCGA = SHARED / "tcga_du_7294"
PRED_REGIONS = {"whole_tumour": [1, 2, 3, 4], "tumour_core": [1, 3, 4]}
TCGA_REGIONS = {"whole_tumour": [1, 2, 4], "tumour_core": [1, 4]}


def score(pred: np.ndarray, truth: np.ndarray, spacing, truth_regions=PRED_REGIONS) -> dict:
    """Dice, HD95 and false-positive lesions per region; ``truth_regions`` maps the same
    region names to the reference's own label values."""
    from medseg.metrics import dice, lesion_detection, surface_distances

    out = {}
    for name, values in PRED_REGIONS.items():
        p, t = np.isin(pred, values), np.isin(truth, truth_regions[name])
        out[f"{name}_dice"] = dice(p, t)
        out[f"{name}_hd95"] = surface_distances(p, t, spacing)[0]
        out[f"{name}_fp"] = lesion_detection(p, t)["fp"]
    return out


def run_medseg(args, cfg, plan_folds: list[int]) -> dict:
    from medseg.engine.crossval import FOLD_DONE, cross_validate

    out = Path(args.output) / "medseg"
    for fold in plan_folds:
        cross_validate(cfg, out, folds=[fold], device="cpu", progress=not args.quiet)
        done = json.loads((out / f"fold_{fold}" / FOLD_DONE).read_text())
        yield fold, done["wall_seconds"], out


def medseg_tcga(model_dir: Path) -> tuple[dict, float]:
    from medseg.inference import Predictor
    from medseg.io import read_volume

    start = time.perf_counter()
    predictor = Predictor.load(model_dir, device="cpu")
    channels = [read_volume(TCGA / "flair.nii.gz"), read_volume(TCGA / "t1c.nii.gz")]
    pred = predictor.predict(channels).label
    truth = np.rint(read_volume(TCGA / "seg_model_fusion.nii.gz").array)
    return score(
        np.asarray(pred.array), truth, pred.spacing, TCGA_REGIONS
    ), time.perf_counter() - start


def medseg_oof(model_dir: Path) -> dict[str, dict]:
    """Per case out-of-fold figures (postprocessed, as predict applies) from the OOF masks."""
    from medseg.io import read_volume

    plan = json.loads((model_dir / "splits.json").read_text())
    rules = json.loads((model_dir / "model.json").read_text())["record"]["postprocessing"]
    from medseg.inference.postprocess import ComponentRule, PostprocessConfig, postprocess_labels

    config = PostprocessConfig(rules=tuple(ComponentRule.model_validate(r) for r in rules))
    out = {}
    for fold in plan["folds"]:
        for case in fold["val"]:
            pred = read_volume(model_dir / "oof" / f"{case}.nii.gz")
            labels, _ = postprocess_labels(
                np.asarray(pred.array).astype(np.uint8), pred.voxel_volume_ml, config
            )
            truth = np.rint(read_volume(SHARED / "brats2015" / case / "seg.nii.gz").array)
            out[case] = score(labels, truth, pred.spacing)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "brats_2d.yaml"))
    parser.add_argument("--output", default=str(ROOT / "runs" / "bench_accuracy"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--quick", action="store_true", help="1 short epoch per fold")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not (SHARED / "brats2015").is_dir() or not TCGA.is_dir():
        print(f"skipped: {SHARED} with brats2015/ and tcga_du_7294/ is needed")
        return 0
    import monai_peer

    from medseg.data.datasets import load_dataset
    from medseg.engine.config import load_config

    overrides = list(args.overrides)
    if args.quick:
        overrides += ["train.epochs=1", "data.samples_per_epoch=32"]
    cfg = load_config(args.config, overrides)
    spec = load_dataset(cfg.data.dataset)
    total_start = time.perf_counter()
    rows: dict[str, dict] = {"medseg": {}, "monai_peer": {}}
    peer_models, peer_oof, peer_seconds = [], {}, 0.0
    med_seconds = 0.0
    num_folds = min(cfg.data.num_folds, len(spec.cases))
    model_dir = Path(args.output) / "medseg"
    peer_cache: dict[str, dict] = {}
    for fold, seconds, model_dir in run_medseg(args, cfg, list(range(num_folds))):
        med_seconds += seconds
        if args.no_peer:
            continue
        plan = json.loads((model_dir / "splits.json").read_text())
        val = plan["folds"][fold]["val"]
        train_ids = [c.case_id for c in spec.cases if c.case_id not in val]
        for cid in [*train_ids, *val]:
            if cid not in peer_cache:
                case = spec.case(cid)
                peer_cache[cid] = monai_peer.load_case(case.images, case.label)
        model, stats = monai_peer.train_peer([peer_cache[c] for c in train_ids], seconds, seed=0)
        peer_seconds += stats["seconds"]
        logging.info("peer fold %d: %s", fold, stats)
        peer_models.append(model)
        for cid in val:
            pred = monai_peer.predict_peer([model], peer_cache[cid]["image"])
            from medseg.io import read_volume

            ref = read_volume(spec.case(cid).label)
            peer_oof[cid] = score(pred, np.rint(ref.array), ref.spacing)
        # written after every fold: a run stopped early still leaves its figures
        partial = {
            "fold": fold,
            "medseg_fold_seconds": seconds,
            "peer": stats,
            "peer_oof": peer_oof,
        }
        Path(args.output).mkdir(parents=True, exist_ok=True)
        (Path(args.output) / f"peer_fold_{fold}.json").write_text(
            json.dumps(partial, indent=2, default=float)
        )
    oof = medseg_oof(model_dir)
    tcga, tcga_s = medseg_tcga(model_dir)
    rows["medseg"] = {
        "oof": oof,
        "tcga": tcga,
        "train_seconds": med_seconds,
        "tcga_seconds": tcga_s,
    }
    if not args.no_peer:
        from medseg.io import read_volume

        start = time.perf_counter()
        image = monai_peer.load_case([TCGA / "flair.nii.gz", TCGA / "t1c.nii.gz"])["image"]
        pred = monai_peer.predict_peer(peer_models, image)
        ref = read_volume(TCGA / "seg_model_fusion.nii.gz")
        rows["monai_peer"] = {
            "oof": peer_oof,
            "tcga": score(pred, np.rint(ref.array), ref.spacing, TCGA_REGIONS),
            "train_seconds": peer_seconds,
            "tcga_seconds": time.perf_counter() - start,
        }
    else:
        rows.pop("monai_peer")
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "config": args.config,
        "overrides": overrides,
        "wall_seconds": time.perf_counter() - total_start,
        "rows": rows,
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_accuracy.json").write_text(json.dumps(report, indent=2, default=float))
    table = markdown(rows)
    (out / "bench_accuracy.md").write_text(table)
    print(table)
    return 0


def _fmt(v: float, digits: int = 3) -> str:
    return "nan" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def markdown(rows: dict[str, dict]) -> str:
    lines = [
        "| pipeline | case | WT Dice | TC Dice | WT HD95 mm | WT FP lesions | TC FP lesions |",
        "|---|---|---|---|---|---|---|",
    ]
    summary = [
        "",
        "| pipeline | OOF WT Dice (mean) | OOF TC Dice | OOF WT HD95 | OOF FP/case (WT) | TCGA WT Dice | TCGA TC Dice | TCGA WT HD95 | TCGA FP (WT) | train wall min |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        cases = {**row["oof"], "TCGA (external, automatic labels)": row["tcga"]}
        for case, s in cases.items():
            lines.append(
                f"| {name} | {case} | {_fmt(s['whole_tumour_dice'])} | {_fmt(s['tumour_core_dice'])} "
                f"| {_fmt(s['whole_tumour_hd95'], 1)} | {s['whole_tumour_fp']} | {s['tumour_core_fp']} |"
            )
        oof = list(row["oof"].values())

        def mean(key: str, oof: list = oof) -> float:
            values = [s[key] for s in oof if s[key] is not None and np.isfinite(s[key])]
            return float(np.mean(values)) if values else float("nan")

        t = row["tcga"]
        summary.append(
            f"| {name} | {_fmt(mean('whole_tumour_dice'))} | {_fmt(mean('tumour_core_dice'))} "
            f"| {_fmt(mean('whole_tumour_hd95'), 1)} | {_fmt(mean('whole_tumour_fp'), 2)} "
            f"| {_fmt(t['whole_tumour_dice'])} | {_fmt(t['tumour_core_dice'])} "
            f"| {_fmt(t['whole_tumour_hd95'], 1)} | {t['whole_tumour_fp']} | {row['train_seconds'] / 60:.1f} |"
        )
    return "\n".join(lines + summary) + "\n\nFor research use only. Not for diagnostic use.\n"


if __name__ == "__main__":
    raise SystemExit(main())
