"""A PNG montage of sample cases: one axial slice per case with the label contours.

Used for ``docs/sample_data.md`` and to eyeball that the phantoms look like scans. Slices are
shown in radiological convention (patient right on the image left, anterior at the top)
after reorienting to RAS, at the physical aspect ratio.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg import RESEARCH_USE_NOTICE
from medseg.io.atomic import atomic_path
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)

# Contour colours per label value (1 core / lesion, 2 oedema / liver): the viewer's palette.
_COLOURS = {1: "#ee3377", 2: "#ffc828", 3: "#33bbee"}


def axial_slice_index(label: Volume) -> int:
    """Axial index (canonical RAS axis 2) with the most foreground voxels of label 1 (or any)."""
    canon = label.to_canonical().array
    core = canon == 1
    counts = (core if core.any() else canon > 0).sum(axis=(0, 1))
    return int(np.argmax(counts)) if counts.any() else canon.shape[2] // 2


def radiological_axial(volume: Volume, index: int) -> np.ndarray:
    """Axial plane ``(rows A->P, cols R->L)`` of ``volume`` at canonical index ``index``."""
    plane = volume.to_canonical().array[:, :, index]  # (x: L->R, y: P->A)
    return plane.T[::-1, ::-1]


def window_for(image: Volume) -> tuple[float, float]:
    """Display window: soft-tissue W400/L40 for CT, 0.5-99.5 percentiles otherwise."""
    if image.metadata.get("modality") == "CT":
        return -160.0, 240.0
    low, high = np.percentile(image.array, [0.5, 99.5])
    return float(low), float(high)


def save_montage(
    cases: Sequence[tuple[str, Volume, Volume]], path: str | Path, *, columns: int = 5
) -> Path:
    """Write a PNG with one tile per ``(title, image, label)`` case, atomically.

    Each tile is the axial slice through the largest label-1 cross-section, windowed per
    modality, with label contours (1 red, 2 yellow). Returns the written path.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless: the CLI and tests never open a window
    import matplotlib.pyplot as plt

    rows = int(np.ceil(len(cases) / columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(2.4 * columns, 2.5 * rows + 0.3), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, image, label) in zip(axes.ravel(), cases, strict=False):
        k = axial_slice_index(label)
        plane = radiological_axial(image, k)
        mask = radiological_axial(label, k)
        sx, sy = image.to_canonical().spacing[:2]
        extent = (0, plane.shape[1] * sx, plane.shape[0] * sy, 0)  # mm: physical aspect
        low, high = window_for(image)
        ax.imshow(plane, cmap="gray", vmin=low, vmax=high, extent=extent, interpolation="bilinear")
        # Higher labels first: a ring label (oedema around core) also outlines its hole, so the
        # inner label is drawn last to stay visible.
        for value in sorted((int(v) for v in np.unique(mask) if v > 0), reverse=True):
            ax.contour(
                (mask == value).astype(float),
                levels=[0.5],
                colors=_COLOURS.get(value, "#30ff30"),
                linewidths=1.0,
                extent=extent,
                origin="upper",
            )
        ax.set_title(title, fontsize=8)
    fig.suptitle(f"Synthetic phantoms (not patients). {RESEARCH_USE_NOTICE}", fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    logger.info("montage written to %s", path)
    return Path(path)
