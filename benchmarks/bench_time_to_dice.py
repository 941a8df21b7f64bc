"""Time to Dice: medseg's BraTS recipe vs the MONAI-tutorial peer, same cases, same run.

Both train on the same three shared BraTS cases and are scored on the same held-out case
(``--val``, default pat0003) after every medseg epoch / every ``samples_per_epoch`` peer
slices: whole-tumour Dice of a full-volume prediction on the case's own 1 mm grid (medseg
through ``Predictor`` from the epoch's ``last.pt``, the peer through ``SliceInferer``), with
the same scoring function. The clock counts training only (data, augmentation, steps);
scoring is paused out of both clocks. medseg runs the recipe's own schedule (its own
per-epoch validation only at the end: the curve is this script's scoring); the peer then gets
``--peer-budget`` seconds of training, by default 3x medseg's training time, so that the
peer's best is not cut short by medseg's speed. Reported: each side's best Dice, the time the peer needed
to reach its best, the time medseg needed to reach the peer's best, and their ratio (the
target is <= 0.5), with both curves in one PNG.

    python benchmarks/bench_time_to_dice.py --output runs/time_to_dice
    python benchmarks/bench_time_to_dice.py --set data.pipeline=workers   # the worker pipeline
    python benchmarks/bench_time_to_dice.py --quick                       # checks the script

Research use only: figures on a few shared cases, not a clinical validation.
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
BRATS = SHARED / "brats2015"


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    """First time on ``curve`` ((seconds, dice), in time order) with Dice >= ``target``."""
    return next((t for t, d in curve if d >= target - 1e-9), None)


def run_medseg(cfg, val: str, out: Path, device: str) -> list[tuple[float, float]]:
    import torch
    from bench_accuracy import score

    from medseg.engine.trainer import Trainer
    from medseg.inference import Predictor
    from medseg.io import read_volume

    case = BRATS / val
    channels = [read_volume(case / f"{c}.nii.gz") for c in ("flair", "t1c")]
    truth = np.rint(read_volume(case / "seg.nii.gz").array)
    trainer = Trainer(cfg, out, torch.device(device), progress=False)
    curve, clock = [], [0.0]

    def score_epoch(tr, row):
        clock[0] += float(row["epoch_seconds"])
        pred = Predictor.load(out / "checkpoints" / "last.pt", device=device).predict(channels)
        dice = score(np.asarray(pred.label.array), truth, pred.label.spacing)["whole_tumour_dice"]
        curve.append((clock[0], dice))
        logging.info("medseg epoch %d: %.0f s training, WT Dice %.3f", row["epoch"], clock[0], dice)

    trainer.epoch_end_hooks.append(score_epoch)
    trainer.fit()
    return curve


def run_peer(cases, val_case, truth, spacing, budget_s: float, every: int, seed: int = 0):
    """The peer trained for ``budget_s`` seconds of training, scored every ``every`` slices."""
    import monai_peer
    from bench_accuracy import score

    curve = []

    def evaluate(model, seconds):
        pred = monai_peer.predict_peer([model], val_case["image"])
        dice = score(pred, truth, spacing)["whole_tumour_dice"]
        curve.append((seconds, dice))
        logging.info("peer: %.0f s training, WT Dice %.3f", seconds, dice)

    _, stats = monai_peer.train_peer(
        cases, budget_s, seed=seed, evaluate=evaluate, evaluate_every=every
    )
    return curve, stats


def subset_manifest(val: str, n_train: int, out: Path) -> Path:
    """A manifest of the held-out case and the first ``n_train`` other shared BraTS cases."""
    import yaml

    others = sorted(p.name for p in BRATS.iterdir() if p.is_dir() and p.name != val)[:n_train]
    cases = [
        {"id": c, "images": [f"{c}/flair.nii.gz", f"{c}/t1c.nii.gz"], "label": f"{c}/seg.nii.gz"}
        for c in [*others, val]
    ]
    manifest = {
        "name": f"brats2015_{len(cases)}cases",
        "modality": "mr",
        "channel_names": ["flair", "t1c"],
        "labels": {0: "background", 1: "necrosis", 2: "oedema", 3: "non_enhancing", 4: "enhancing"},
        "root": str(BRATS),
        "cases": cases,
    }
    path = out / "manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return path


def plot(curves: dict[str, list[tuple[float, float]]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, curve in curves.items():
        if curve:
            t, d = zip(*curve, strict=True)
            ax.plot(np.array(t) / 60, d, marker="o", label=name)
    ax.set_xlabel("training wall time (min; scoring excluded)")
    ax.set_ylabel("whole-tumour Dice, held-out case")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.text(0.01, 0.01, "Research use only. Not for diagnostic use.", fontsize=7, alpha=0.7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "brats_2d.yaml"))
    parser.add_argument("--output", default=str(ROOT / "runs" / "time_to_dice"))
    parser.add_argument("--val", default="pat0003", help="held-out shared BraTS case")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="one tiny epoch: checks the script")
    parser.add_argument("--train-cases", type=int, help="train on the first N other cases only")
    parser.add_argument(
        "--peer-budget", type=float, help="peer training seconds (default 3x medseg's)"
    )
    parser.add_argument("--json", help="where to write the figures (default OUTPUT/result.json)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not BRATS.is_dir():
        print(f"skipped: {BRATS} is needed (the shared BraTS cases)")
        return 0
    import monai_peer

    from medseg.data.datasets import load_dataset
    from medseg.engine.config import load_config

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    overrides = [*args.overrides, f"data.val_cases=[{args.val}]", "train.overlays=0"]
    if args.quick:  # one training case at 3 mm: checks the script in well under a minute
        args.train_cases = 1
        overrides += [
            "train.epochs=2", "data.samples_per_epoch=16", "data.crop_size=[32,32]",
            "data.preprocessing.target_spacing=[3.0,3.0]", f"data.cache_dir={out / 'cache'}",
        ]  # fmt: skip
    if args.train_cases:
        overrides.append(f"data.dataset={subset_manifest(args.val, args.train_cases, out)}")
    cfg = load_config(args.config, overrides)
    # the whole schedule, the trainer's own validation once at the end (the curve is scored here)
    train = {"early_stopping_patience": None, "val_every": cfg.train.epochs}
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update=train)})
    run_dir = out / f"medseg_{time.strftime('%Y%m%d_%H%M%S')}"
    start = time.perf_counter()
    med_curve = run_medseg(cfg, args.val, run_dir, args.device)
    med_seconds = med_curve[-1][0]

    spec = load_dataset(cfg.data.dataset)
    train_ids = [c.case_id for c in spec.cases if c.case_id != args.val]
    cases = [monai_peer.load_case(spec.case(c).images, spec.case(c).label) for c in train_ids]
    val_case = monai_peer.load_case(spec.case(args.val).images)
    from medseg.io import read_volume

    ref = read_volume(spec.case(args.val).label)
    budget = args.peer_budget or 3 * med_seconds
    logging.info("peer budget %.0f s of training (medseg trained %.0f s)", budget, med_seconds)
    peer_curve, peer_stats = run_peer(
        cases, val_case, np.rint(ref.array), ref.spacing, budget,
        every=cfg.data.samples_per_epoch or 400,
    )  # fmt: skip
    peer_best = max(d for _, d in peer_curve)
    peer_time = time_to(peer_curve, peer_best)
    med_best = max(d for _, d in med_curve)
    med_time = time_to(med_curve, peer_best)
    ratio = med_time / peer_time if med_time is not None and peer_time else None
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "device": args.device,
        "config": args.config,
        "overrides": overrides,
        "val_case": args.val,
        "train_cases": train_ids,
        "pipeline": cfg.data.pipeline,
        "medseg": {"curve": med_curve, "best_dice": med_best, "train_seconds": med_seconds},
        "peer": {"curve": peer_curve, "best_dice": peer_best, **peer_stats},
        "peer_time_to_its_best_s": peer_time,
        "medseg_time_to_peer_best_s": med_time,
        "ratio": ratio,
        "wall_seconds": time.perf_counter() - start,
    }
    path = Path(args.json) if args.json else out / "result.json"
    path.write_text(json.dumps(result, indent=2))
    plot(
        {"medseg (brats_2d recipe)": med_curve, "MONAI tutorial peer": peer_curve},
        out / "time_to_dice.png",
        f"held-out {args.val}, trained on {', '.join(train_ids)}, {args.device}",
    )
    fmt = lambda v: "never" if v is None else f"{v:.0f} s"  # noqa: E731
    print(
        "\n| pipeline | best WT Dice | time to the peer's best | training s |\n|---|---|---|---|\n"
        f"| medseg | {med_best:.3f} | {fmt(med_time)} | {med_seconds:.0f} |\n"
        f"| MONAI peer | {peer_best:.3f} | {fmt(peer_time)} | {peer_stats['seconds']:.0f} |\n"
    )
    print(
        f"medseg reaches the peer's best Dice ({peer_best:.3f}) in "
        + (f"{ratio:.2f}x the peer's time" if ratio is not None else "never within its schedule")
        + f"; curves in {out / 'time_to_dice.png'}. For research use only. Not for diagnostic use."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
