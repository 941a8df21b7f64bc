"""Bring your own dataset: medseg's auto plan vs nnU-Net v2 ``2d`` at equal wall time.

For each dataset, on the same machine, the same training cases and the same held-out cases:

* **medseg**: ``medseg train DATASET --folds all --time-budget B -o DIR`` (plans, trains every
  fold, joins), then ``medseg predict --model DIR`` on the held-out images;
* **nnU-Net 2d** (registry package ``nnunetv2``, never a medseg dependency; run from the Python
  given by ``--nnunet-python``): ``nnUNetv2_plan_and_preprocess -c 2d``, then one model on
  all training cases (fold ``all``) trained by a short-schedule trainer written by this script
  into nnU-Net's trainer folder: it sets its epoch count from the first epoch's duration so
  planning, preprocessing and training together take ``B``; then ``nnUNetv2_predict`` (its
  default mirroring test-time augmentation on).

Both are scored by ``medseg evaluate`` (Dice and HD95 per class, false-positive components per
case, lesion sensitivity over reference components of >= 0.02 mL; BraTS also as whole tumour /
tumour core / enhancing regions). One markdown table and a JSON file go to ``--output``.

Datasets: synthetic stress sets (``medseg.synthetic.stress``: hippocampus-sized structures,
5 mm axial and sagittal slices, CT in HU with four classes) and, when ``../shared/data`` is
there, BraTS (3 training cases, pat0003 held out). ``--curve`` adds a data-size curve
(5, 10, 20, 40 training cases) on the tiny-structure set, medseg only.

    python benchmarks/bench_autoplan.py --budget 10m --datasets tiny --output runs/autoplan
    python benchmarks/bench_autoplan.py --budget 10m --datasets tiny aniso sagittal ct brats \\
        --nnunet-python /path/to/venv/bin/python
    python benchmarks/bench_autoplan.py --budget 4m --datasets tiny --curve --no-peer

Research use only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
TRAINER = "nnUNetTrainer_medsegBudget"

# nnU-Net trainer subclass: the epoch count follows from the time left after the first epoch
TRAINER_SOURCE = '''
import os, time

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainer_medsegBudget(nnUNetTrainer):
    """Trains until MEDSEG_BUDGET_DEADLINE (epoch seconds): after each epoch the epoch count
    is re-sized to the time left, and the poly schedule with it, so the learning rate still
    reaches its end when the time does."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        # nnU-Net sets one thread per core of the machine; a benchmark pinned to fewer cores
        # (taskset) gets as many threads as it may use, as medseg does with OMP_NUM_THREADS
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", len(os.sched_getaffinity(0)))))
        self.num_iterations_per_epoch = 50
        self.num_val_iterations_per_epoch = 10
        self.num_epochs = 1000
        self._deadline = float(os.environ["MEDSEG_BUDGET_DEADLINE"])
        self._epoch_started = None

    def on_train_epoch_start(self):
        self._epoch_started = time.time()
        super().on_train_epoch_start()

    def on_epoch_end(self):
        took = time.time() - self._epoch_started
        left = self._deadline - time.time()
        self.num_epochs = min(self.num_epochs, self.current_epoch + 1 + max(0, int(left // took)))
        self.lr_scheduler.max_steps = self.num_epochs
        super().on_epoch_end()

    def run_training(self):
        # the parent loops over a range fixed at the start; this one re-reads num_epochs
        self.on_train_start()
        while self.current_epoch < self.num_epochs:
            self.on_epoch_start()
            self.on_train_epoch_start()
            # the deadline also holds inside an epoch: on a slow CPU one 50-iteration epoch of
            # a large plan (BraTS) takes longer than the whole budget
            outputs = []
            for _ in range(self.num_iterations_per_epoch):
                outputs.append(self.train_step(next(self.dataloader_train)))
                if time.time() > self._deadline:
                    self.num_epochs = self.current_epoch + 1
                    break
            self.on_train_epoch_end(outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                outputs = [self.validation_step(next(self.dataloader_val))
                           for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(outputs)
            self.on_epoch_end()
        self.on_train_end()
'''


def make_dataset(name: str, root: Path, n_train: int) -> tuple[Path, Path]:
    """(training dataset folder, held-out folder with imagesTr/labelsTr) for ``name``."""
    from medseg.synthetic import stress

    train, test = root / f"{name}_train", root / f"{name}_test"
    if train.is_dir() and test.is_dir():
        return train, test
    writers = {
        "tiny": (lambda p, n, s: stress.write_tiny_structures(p, n, s), 40, 20),
        "aniso": (lambda p, n, s: stress.write_anisotropic(p, n, s, thick_axis=2), 20, 8),
        "sagittal": (lambda p, n, s: stress.write_anisotropic(p, n, s, thick_axis=0), 20, 8),
        "ct": (lambda p, n, s: stress.write_ct_organs(p, n, s), 16, 6),
    }
    if name == "brats":
        return _brats(root)
    writer, default_n, n_test = writers[name]
    writer(train, n_train or default_n, 0)
    writer(test, n_test, 1)
    return train, test


def _brats(root: Path) -> tuple[Path, Path]:
    import nibabel as nib

    train, test = root / "brats_train", root / "brats_test"
    for folder, cases in ((train, ["pat0001", "pat0002", "pat0004"]), (test, ["pat0003"])):
        (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
        (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
        for case in cases:
            src = SHARED / "brats2015" / case
            for c, channel in enumerate(("flair", "t1c")):
                os.symlink(
                    src / f"{channel}.nii.gz", folder / "imagesTr" / f"{case}_{c:04d}.nii.gz"
                )
            img = nib.load(src / "seg.nii.gz")
            nib.save(img, folder / "labelsTr" / f"{case}.nii.gz")
        meta = {
            "name": "BraTS2015",
            "channel_names": {"0": "FLAIR", "1": "T1c"},
            "labels": {
                "background": 0,
                "necrosis": 1,
                "oedema": 2,
                "non_enhancing": 3,
                "enhancing": 4,
            },
            "numTraining": len(cases),
            "file_ending": ".nii.gz",
        }
        (folder / "dataset.json").write_text(json.dumps(meta, indent=2))
    return train, test


def run(cmd: list[str], env: dict | None = None, log: Path | None = None) -> float:
    start = time.perf_counter()
    with open(log or os.devnull, "a") as out:
        subprocess.run(cmd, check=True, env=env, stdout=out, stderr=subprocess.STDOUT)
    return time.perf_counter() - start


#: BraTS 2015 labels scored as the challenge's regions (whole tumour, tumour core, enhancing)
BRATS_REGIONS = ["whole_tumour=1,2,3,4", "tumour_core=1,3,4", "enhancing=4"]
#: lesions for the lesion counts: reference components of at least this volume (mL), as the
#: postprocessing choice counts them (manual labels carry few-voxel fragments)
MIN_LESION_ML = 0.02


def evaluate(preds: Path, test: Path, out: Path, labels: list[str] | None = None) -> dict:
    """Mean Dice / HD95 over classes (or ``labels``: --labels specs) and cases, FP components
    per case, lesion sensitivity."""
    import pandas as pd

    stem = "regions" if labels else "metrics"
    csv = out / f"{stem}.csv"
    csv.unlink(missing_ok=True)
    (out / f"{stem}_summary.csv").unlink(missing_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "medseg",
            "evaluate",
            str(preds),
            str(test / "labelsTr"),
            "-o",
            str(csv),
            "--min-lesion-ml",
            str(MIN_LESION_ML),
            *(arg for spec in labels or [] for arg in ("--labels", spec)),
        ],
        check=False,  # exit 1 flags missing predictions; they are scored as Dice 0
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows = pd.read_csv(csv, comment="#")
    per_case = rows.groupby("case")
    tp, fn = rows["tp"].sum(), rows["fn"].sum()
    by_class = rows.groupby("class")
    return {
        "cases": int(rows["case"].nunique()),
        "dice": float(rows["dice"].mean()),
        "dice_per_class": by_class["dice"].mean().round(3).to_dict(),
        "hd95_mm": float(rows["hd95_mm"].mean()),
        "fp_components": float(per_case["fp"].sum().mean()),
        "fp_per_class": (by_class["fp"].sum() / rows["case"].nunique()).round(2).to_dict(),
        "lesion_sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "lesion_sensitivity_per_class": {
            k: round(float(g["tp"].sum() / (g["tp"].sum() + g["fn"].sum())), 3)
            for k, g in by_class
            if g["tp"].sum() + g["fn"].sum()
        },
    }


def scores(name: str, preds: Path, test: Path, out: Path) -> dict:
    """The per-class figures, and for BraTS also its regions (``regions``)."""
    result = evaluate(preds, test, out)
    if name == "brats":
        result["regions"] = evaluate(preds, test, out, BRATS_REGIONS)
    return result


def run_medseg(
    name: str, train: Path, test: Path, budget_s: float, out: Path, overrides: tuple[str, ...] = ()
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    model = out / "model"
    log = out / "medseg.log"
    wall = run(
        [
            sys.executable,
            "-m",
            "medseg",
            "train",
            str(train),
            "--folds",
            "all",
            "--time-budget",
            f"{budget_s / 60:.2f}m",
            "-o",
            str(model),
            *(arg for item in overrides for arg in ("--set", item)),
        ],
        log=log,
    )
    preds = out / "preds"
    run(
        [
            sys.executable,
            "-m",
            "medseg",
            "predict",
            str(test / "imagesTr"),
            "--model",
            str(model),
            "-o",
            str(preds),
            "--overwrite",
        ],
        log=log,
    )
    return {
        "contender": "medseg auto plan" + "".join(f" --set {o}" for o in overrides),
        "dataset": name,
        "wall_s": wall,
        **scores(name, preds, test, out),
    }


def run_nnunet(
    name: str, train: Path, test: Path, budget_s: float, out: Path, python: str, ident: int
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ}
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        env[var] = str(out / var)
        Path(env[var]).mkdir(parents=True, exist_ok=True)
    ds = f"Dataset{ident:03d}_{name}"
    raw = Path(env["nnUNet_raw"]) / ds
    if not raw.exists():
        shutil.copytree(train, raw, symlinks=False)
    trainer_dir = subprocess.run(
        [
            python,
            "-c",
            "import nnunetv2.training.nnUNetTrainer as m, os; print(os.path.dirname(m.__file__))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    Path(trainer_dir, f"{TRAINER}.py").write_text(TRAINER_SOURCE)
    bindir = Path(python).parent
    log = out / "nnunet.log"
    start = time.time()
    env["MEDSEG_BUDGET_DEADLINE"] = str(start + budget_s)
    env.setdefault("nnUNet_n_proc_DA", str(len(os.sched_getaffinity(0))))
    run(
        [str(bindir / "nnUNetv2_plan_and_preprocess"), "-d", str(ident), "-c", "2d", "-np", "2"],
        env,
        log,
    )
    run(
        [str(bindir / "nnUNetv2_train"), str(ident), "2d", "all", "-tr", TRAINER, "-device", "cpu"],
        env,
        log,
    )
    wall = time.time() - start
    preds = out / "preds"
    run(
        [
            str(bindir / "nnUNetv2_predict"),
            "-i",
            str(test / "imagesTr"),
            "-o",
            str(preds),
            "-d",
            str(ident),
            "-c",
            "2d",
            "-f",
            "all",
            "-tr",
            TRAINER,
            "-device",
            "cpu",
            "-npp",
            "1",
            "-nps",
            "1",
        ],
        env,
        log,
    )
    return {
        "contender": "nnU-Net v2 2d",
        "dataset": name,
        "wall_s": wall,
        **scores(name, preds, test, out),
    }


def table(rows: list[dict]) -> str:
    lines = [
        "| dataset | contender | train cases | wall (min) | mean Dice | per class | HD95 (mm) | FP comp./case |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['contender']} | {r.get('train_cases', '')} | {r['wall_s'] / 60:.1f} | "
            f"{r.get('dice', float('nan')):.3f} | {r.get('dice_per_class', {})} | "
            f"{r.get('hd95_mm', float('nan')):.1f} | {r.get('fp_components', float('nan')):.2f} |"
        )
        if "regions" in r:
            g = r["regions"]
            lines.append(
                f"| {r['dataset']} regions | {r['contender']} | | | {g['dice']:.3f} | "
                f"{g['dice_per_class']}; FP/case {g['fp_per_class']}; lesion sensitivity "
                f"{g['lesion_sensitivity_per_class']} | {g['hd95_mm']:.1f} | "
                f"{g['fp_components']:.2f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", default="10m", help="wall time per contender and dataset")
    parser.add_argument(
        "--datasets",
        nargs="*",
        default=["tiny"],
        help="(none with --curve: the curve alone)",
        choices=["tiny", "aniso", "sagittal", "ct", "brats"],
    )
    parser.add_argument("--output", type=Path, default=Path("runs/bench_autoplan"))
    parser.add_argument("--nnunet-python", default=None, help="Python with nnunetv2 installed")
    parser.add_argument("--no-peer", action="store_true", help="medseg only")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a planned value of medseg's run (medseg train --set), repeatable",
    )
    parser.add_argument(
        "--curve", action="store_true", help="data-size curve on 'tiny' (5/10/20/40 cases)"
    )
    args = parser.parse_args()
    from medseg.engine.planner import parse_duration

    budget = parse_duration(args.budget)
    args.output.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for index, name in enumerate(args.datasets):
        train, test = make_dataset(name, args.output / "data", 0)
        n_train = len(list((train / "labelsTr").glob("*.nii.gz")))
        rows.append(
            {
                **run_medseg(
                    name, train, test, budget, args.output / "medseg" / name, tuple(args.set)
                ),
                "train_cases": n_train,
            }
        )
        print(table(rows[-1:]), flush=True)
        if not args.no_peer and args.nnunet_python:
            rows.append(
                {
                    **run_nnunet(
                        name,
                        train,
                        test,
                        budget,
                        args.output / "nnunet" / name,
                        args.nnunet_python,
                        500 + index,
                    ),
                    "train_cases": n_train,
                }
            )
            print(table(rows[-1:]), flush=True)
    if args.curve:
        for n in (5, 10, 20, 40):
            train, test = make_dataset("tiny", args.output / "data" / f"curve_{n}", n)
            test = make_dataset("tiny", args.output / "data", 0)[1]  # one held-out set for all
            rows.append(
                {
                    **run_medseg(
                        f"tiny ({n} cases)", train, test, budget, args.output / "curve" / str(n)
                    ),
                    "train_cases": n,
                }
            )
            print(table(rows[-1:]), flush=True)
    (args.output / "results.json").write_text(json.dumps(rows, indent=2))
    (args.output / "results.md").write_text(table(rows) + "\n")
    print(table(rows))
    print("Research use only. Not for diagnostic use or treatment decisions.")


if __name__ == "__main__":
    main()
