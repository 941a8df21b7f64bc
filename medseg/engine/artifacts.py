"""The run folder: resolved config, metrics CSV, TensorBoard events, curves and overlays.

Layout (all written by rank 0 only, each file atomically)::

    RUN_DIR/
      config.yaml              resolved config (defaults filled in)
      metrics.csv              one row per epoch (train loss, lr, throughput, validation Dice)
      tensorboard/             TensorBoard event files (``tensorboard --logdir RUN_DIR``)
      checkpoints/last.pt      written every epoch and on Ctrl-C / SIGTERM
      checkpoints/best.pt      highest mean foreground validation Dice
      curves.png               loss and Dice per epoch
      overlays/epoch_XXX.png   validation slices: truth (green) vs prediction (other colours)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg import RESEARCH_USE_NOTICE
from medseg.io.atomic import atomic_path
from medseg.io.atomic import write_text as write_text  # the trainer writes its texts here
from medseg.io.tables import write_csv

logger = logging.getLogger(__name__)

PRED_COLOURS = ("red", "orange", "deepskyblue", "magenta", "yellow", "blueviolet")


def write_metrics_csv(path: Path, history: Sequence[dict[str, Any]]) -> None:
    """Rewrite the whole CSV from the history (the column set can grow after validation).
    A plain log (no notice line): tools and ``pandas.read_csv`` read it without options."""
    write_csv(history, path, notice=False)


def new_figure(ncols: int, width: float, height: float):
    """A headless figure ``width`` x ``height`` inches with one row of ``ncols`` axes."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, axes


def save_figure(fig, path: Path) -> None:
    """Write ``fig`` to ``path`` as PNG, atomically, with the research-use notice on it."""
    fig.text(0.5, 0.005, RESEARCH_USE_NOTICE, ha="center", va="bottom", fontsize=7, color="0.3")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", metadata={"Disclaimer": RESEARCH_USE_NOTICE})


def plot_curves(path: Path, history: Sequence[dict[str, Any]], class_names: Sequence[str]) -> None:
    """``curves.png``: training loss (left) and validation Dice per class + mean (right)."""
    fig, (ax_loss, ax_dice) = new_figure(2, 10, 4)
    epochs = [row["epoch"] for row in history]
    ax_loss.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("Dice + CE loss")
    ax_loss.legend()
    val = [row for row in history if "val_mean_dice" in row and row["val_mean_dice"] != ""]
    for name in class_names[1:]:
        key = f"val_dice_{name}"
        ax_dice.plot([r["epoch"] for r in val], [r.get(key, np.nan) for r in val], label=name)
    ax_dice.plot([r["epoch"] for r in val], [r["val_mean_dice"] for r in val], "k--", label="mean")
    ax_dice.set_ylim(0, 1)
    ax_dice.set_xlabel("epoch")
    ax_dice.set_ylabel("validation Dice (per volume, 3D)")
    ax_dice.legend()
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    save_figure(fig, path)


def plot_overlays(
    path: Path, samples: Sequence[dict[str, Any]], class_names: Sequence[str], epoch: int
) -> None:
    """Validation slices with truth contours (green) and prediction contours (one colour per
    class); shows the slice with the most ground-truth foreground of each case."""
    if not samples:
        return
    fig, axes = new_figure(len(samples), 4 * len(samples), 4.6)
    for ax, sample in zip(axes, samples, strict=False):
        # transpose so the first in-plane axis (R-L for axial) runs horizontally
        ax.imshow(sample["image"].T, cmap="gray", origin="lower")
        for cls in range(1, len(class_names)):
            colour = PRED_COLOURS[(cls - 1) % len(PRED_COLOURS)]
            if (sample["label"] == cls).any():
                ax.contour((sample["label"] == cls).T, levels=[0.5], colors="#00ff00", linewidths=1)
            if (sample["pred"] == cls).any():
                ax.contour((sample["pred"] == cls).T, levels=[0.5], colors=colour, linewidths=1)
        ax.set_title(f"{sample['case_id']} slice {sample['index']}", fontsize=9)
        ax.axis("off")
    legend = ", ".join(
        f"{name}: {PRED_COLOURS[(i - 1) % len(PRED_COLOURS)]}"
        for i, name in enumerate(class_names)
        if i > 0
    )
    fig.suptitle(f"epoch {epoch}: truth green; prediction {legend}", fontsize=9)
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    save_figure(fig, path)


class TensorBoardLogger:
    """Thin wrapper so a missing/broken tensorboard install only disables event files."""

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(log_dir))
        except Exception as err:  # tensorboard is optional at runtime
            logger.warning("TensorBoard logging disabled: %s", err)
            self._writer = None

    def scalars(self, values: dict[str, float], step: int, prefix: str = "") -> None:
        if self._writer is None:
            return
        for key, value in values.items():
            if isinstance(value, int | float) and np.isfinite(value):
                self._writer.add_scalar(f"{prefix}{key}", value, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
