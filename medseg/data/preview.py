"""A PNG grid of (augmented) training samples with mask contours, to check augmentation by eye."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg import RESEARCH_USE_NOTICE
from medseg.data.config import DataConfig
from medseg.io.atomic import atomic_path

logger = logging.getLogger(__name__)

CONTOUR_COLOURS = ["#ff3b30", "#34c759", "#0a84ff", "#ffd60a", "#bf5af2", "#64d2ff", "#ff9f0a"]


def render_preview(
    samples: Sequence[dict[str, Any]],
    output: str | Path,
    class_names: Sequence[str],
    context: int = 0,
    title: str = "",
) -> Path:
    """Draw each sample's first channel (centre plane of its 2.5D stack) in grey with one
    contour colour per class; writes ``output`` (PNG) atomically and returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    n = len(samples)
    cols = min(4, n) or 1
    rows = math.ceil(n / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows + 0.8), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    # one grey scale for every tile (per-tile autoscaling turns an empty slice into noise)
    planes = [np.asarray(s["image"])[context] for s in samples]
    vmin, vmax = np.percentile(np.concatenate([p.ravel() for p in planes]), (0.5, 99.5))
    for ax, sample, image in zip(axes.flat, samples, planes, strict=False):
        label = np.asarray(sample["label"])
        # rows of the plane are the first in-plane axis; transpose so it runs left-right
        ax.imshow(
            image.T, cmap="gray", origin="lower", interpolation="nearest", vmin=vmin, vmax=vmax
        )
        for value in range(1, len(class_names)):
            if (label == value).any():
                ax.contour(
                    (label == value).T.astype(float),
                    levels=[0.5],
                    origin="lower",
                    colors=[CONTOUR_COLOURS[(value - 1) % len(CONTOUR_COLOURS)]],
                    linewidths=1.0,
                )
        tag = " fg" if sample.get("foreground") else ""
        ax.set_title(f"{sample.get('case_id', '')} #{sample.get('index', '')}{tag}", fontsize=8)
    handles = [
        Line2D([0], [0], color=CONTOUR_COLOURS[(i - 1) % len(CONTOUR_COLOURS)], label=name)
        for i, name in enumerate(class_names)
        if i > 0
    ]
    if handles:
        fig.legend(handles=handles, loc="upper right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.text(0.5, 0.01, RESEARCH_USE_NOTICE, ha="center", fontsize=7, color="#666666")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    output = Path(output)
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    logger.info("wrote %s", output)
    return output


def preview_dataset(
    cfg: DataConfig, output: str | Path, n: int = 16, seed: int = 0, batch_size: int = 16
) -> Path:
    """Cache the dataset if needed and render the first ``n`` samples training draws with
    ``seed`` and ``batch_size`` (:func:`medseg.data.pipeline.training_samples`: same crops,
    same augmentation)."""
    from medseg.data.pipeline import (
        choose_pipeline,
        prepare_data,
        resolved_augmentation,
        training_samples,
    )

    data = prepare_data(cfg)
    samples = training_samples(data, cfg, n, seed, batch_size)
    pipeline, _ = choose_pipeline(data, cfg, "cpu")
    aug = resolved_augmentation(cfg.augmentation, pipeline)
    mode = f"{pipeline} data, " + (
        f"augmentation: {aug.backend}" if aug.enabled else "augmentation: off"
    )
    name = data.spec.name if data.spec is not None else str(cfg.dataset)
    title = (
        f"{name}: {n} training samples (seed {seed}, batch {batch_size}), axis "
        f"{data.params.slice_axis}, context {cfg.context}, {mode}"
    )
    return render_preview(samples, output, data.params.class_names, cfg.context, title)
