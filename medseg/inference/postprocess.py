"""Mask clean-up after inference: keep the largest component or drop small components.

Works on the label volume on the **source grid**, so the "N mL" thresholds are physical
volumes. Removed voxels become background (0). Components use 26-connectivity (see
:mod:`medseg.inference.readouts`).
"""

from __future__ import annotations

import logging

import numpy as np
import pydantic
from scipy import ndimage

from medseg.metrics import CONNECTIVITY_26

logger = logging.getLogger(__name__)


class PostprocessConfig(pydantic.BaseModel):
    """What to clean up. Default: nothing (the raw argmax is returned).

    Attributes:
        largest_component: keep only the largest 3D connected component of each class
            (for single-organ structures; wrong for multifocal tumours).
        min_component_ml: remove components smaller than this volume in mL.
        classes: class indices to apply to (``None`` = every foreground class).
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    largest_component: bool = False
    min_component_ml: float | None = pydantic.Field(default=None, ge=0)
    classes: list[int] | None = None

    @property
    def active(self) -> bool:
        return self.largest_component or bool(self.min_component_ml)


def postprocess_labels(
    label: np.ndarray, voxel_ml: float, config: PostprocessConfig
) -> tuple[np.ndarray, dict[str, int]]:
    """Apply ``config`` to an integer ``label`` array (I, J, K); returns (new labels, stats).

    ``voxel_ml`` is the volume of one voxel in mL. ``stats`` counts removed components and
    voxels so reports can say what was changed.
    """
    stats = {"removed_components": 0, "removed_voxels": 0}
    if not config.active:
        return label, stats
    out = label.copy()
    classes = config.classes
    if classes is None:
        classes = [int(c) for c in np.unique(label) if c > 0]
    min_voxels = (config.min_component_ml or 0.0) / voxel_ml if voxel_ml > 0 else 0.0
    for cls in classes:
        components, n = ndimage.label(label == cls, structure=CONNECTIVITY_26)
        if n == 0:
            continue
        sizes = np.bincount(components.ravel())[1:]
        drop = np.zeros(n + 1, dtype=bool)
        if config.largest_component and n > 1:
            drop[1:] = True
            drop[int(np.argmax(sizes)) + 1] = False
        if min_voxels > 0:
            drop[1:] |= sizes < min_voxels
        if drop.any():
            removed = drop[components]
            out[removed] = 0
            stats["removed_components"] += int(drop.sum())
            stats["removed_voxels"] += int(removed.sum())
    logger.debug("postprocess removed %s", stats)
    return out, stats
