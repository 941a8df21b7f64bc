"""Mask clean-up after inference: keep the largest component or drop small components.

Works on the label volume on the **source grid**, so the "N mL" thresholds are physical
volumes. Components use 26-connectivity (see :mod:`medseg.inference.readouts`).

A *structure* is a set of label values scored together: one class of a softmax model, or
one region of a region model (e.g. whole tumour = labels 1-4). Removing a component of a
structure gives its voxels the structure's ``fill`` value: background for a class or the
outermost region, the enclosing region's label for an inner region (a dropped tumour-core
speck stays whole tumour). Rules are chosen per structure on out-of-fold predictions by
:mod:`medseg.engine.crossval_join` (:func:`candidate_rules` lists what it tries) and stored
in the model record.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pydantic

from medseg.inference.components import ComponentStats, ComponentSweep

logger = logging.getLogger(__name__)


class Structure(pydantic.BaseModel):
    """Label values scored and cleaned up together, and the value removed voxels get."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    name: str
    values: tuple[int, ...]
    fill: int = 0


class ComponentRule(pydantic.BaseModel):
    """One structure's clean-up: ``largest`` component only, or drop components < ``min_ml``."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    structure: Structure
    rule: Literal["largest", "min_ml"]
    min_ml: float | None = pydantic.Field(default=None, gt=0)

    @pydantic.model_validator(mode="after")
    def _threshold_given(self) -> ComponentRule:
        if self.rule == "min_ml" and self.min_ml is None:
            raise ValueError("rule 'min_ml' needs min_ml (mL)")
        return self

    def describe(self) -> str:
        what = "largest component" if self.rule == "largest" else f"drop < {self.min_ml:g} mL"
        return f"{self.structure.name}: {what}"


class PostprocessConfig(pydantic.BaseModel):
    """What to clean up. Default: nothing (the raw decoded labels are returned).

    Attributes:
        largest_component: keep only the largest 3D connected component of each structure
            (for single-organ structures; wrong for multifocal tumours).
        min_component_ml: remove components smaller than this volume in mL.
        classes: label values the two options above apply to (``None`` = every structure).
        rules: per-structure rules (what cross-validation chose), applied after the above.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    largest_component: bool = False
    min_component_ml: float | None = pydantic.Field(default=None, ge=0)
    classes: list[int] | None = None
    rules: tuple[ComponentRule, ...] = ()

    @property
    def active(self) -> bool:
        return self.largest_component or bool(self.min_component_ml) or bool(self.rules)


def class_structures(class_names: Sequence[str]) -> list[Structure]:
    """One structure per foreground class of a softmax model."""
    return [Structure(name=n, values=(i,)) for i, n in enumerate(class_names) if i > 0]


def region_structures(
    regions: dict[str, list[int]], region_labels: Sequence[int]
) -> list[Structure]:
    """One structure per region; an inner region's removed voxels keep the enclosing region."""
    fills = [0, *region_labels[:-1]]
    return [
        Structure(name=name, values=tuple(values), fill=fill)
        for (name, values), fill in zip(regions.items(), fills, strict=True)
    ]


def structures_of(params, class_names: Sequence[str]) -> list[Structure]:
    """The structures of a model: its regions (``params.regions``) or its foreground classes."""
    if params.regions:
        return region_structures(params.regions, params.region_labels)
    return class_structures(class_names)


#: name of the structure of every foreground class together (see postprocessing_structures)
ALL_CLASSES = "all classes"


def postprocessing_structures(params, class_names: Sequence[str]) -> list[Structure]:
    """The structures cross-validation chooses clean-up rules for, outermost first: those of
    :func:`structures_of`, preceded for a softmax model of two or more foreground classes by
    every foreground label together. A speck is often a mixture of classes (a few voxels of
    necrosis beside a few of enhancing tumour): only the union removes it whole, and only
    the union's components are the lesions a reader counts."""
    structures = structures_of(params, class_names)
    if params.regions or len(structures) < 2:
        return structures
    union = tuple(v for s in structures for v in s.values)
    return [Structure(name=ALL_CLASSES, values=union), *structures]


#: where the data-driven size thresholds sit in the false-positive component volumes
FP_SIZE_QUANTILES = (0.5, 0.9, 1.0)


def candidate_rules(
    structure: Structure,
    fixed_ml: Sequence[float] = (),
    fp_ml: Sequence[float] = (),
    tp_ml: Sequence[float] = (),
    largest: bool = True,
) -> list[ComponentRule]:
    """The clean-up rules cross-validation tries for ``structure``, least destructive first
    (the first of equally good rules wins): drop components under each of ``fixed_ml`` and
    the lesion-safe thresholds of :func:`fp_size_thresholds` (from the volumes in mL of the
    out-of-fold false-positive components ``fp_ml`` and of the components detecting a
    reference lesion ``tp_ml``), ascending; then, if ``largest``, keep the largest
    component."""
    thresholds = sorted({float(m) for m in fixed_ml} | set(fp_size_thresholds(fp_ml, tp_ml)))
    out = [ComponentRule(structure=structure, rule="min_ml", min_ml=m) for m in thresholds]
    if largest:
        out.append(ComponentRule(structure=structure, rule="largest"))
    return out


def fp_size_thresholds(
    fp_ml: Sequence[float], tp_ml: Sequence[float], quantiles: Sequence[float] = FP_SIZE_QUANTILES
) -> list[float]:
    """Volume thresholds (mL) just above the false-positive component volumes at
    ``quantiles`` (rounded up to 2 significant digits, so a component of exactly that volume
    is dropped), keeping only those that drop no component touching a reference lesion
    (threshold <= the smallest of ``tp_ml``): on the out-of-fold cases they remove specks
    and never a detected lesion."""
    fp = np.asarray(fp_ml, dtype=np.float64)
    fp = fp[fp > 0]
    if fp.size == 0:
        return []
    safe = float(np.min(tp_ml)) if len(tp_ml) else math.inf
    out = set()
    for v in np.quantile(fp, list(quantiles), method="inverted_cdf"):
        t = _round_up(float(v) * (1 + 1e-6), 2)
        if t <= safe:
            out.add(t)
    return sorted(out)


def _round_up(x: float, digits: int) -> float:
    scale = 10.0 ** (digits - 1 - math.floor(math.log10(x)))
    return math.ceil(x * scale) / scale


def remove_components(
    label: np.ndarray,
    structure: Structure,
    voxel_ml: float,
    largest: bool = False,
    min_ml: float | None = None,
) -> tuple[np.ndarray, int, int]:
    """``label`` with ``structure``'s components removed (in place on a copy the caller
    owns); returns (labels, removed components, removed voxels).

    Components are found slab by slab (:class:`~medseg.inference.components.ComponentSweep`):
    no whole-volume component map, whatever the number of components. Of equal largest
    components the first in raster order is kept.
    """
    sweep = ComponentSweep(label, structure.values)
    found: list[ComponentStats] = []
    sweep.run(found.append)
    if not found:
        return label, 0, 0
    stats = ComponentStats.concat(found)
    drop = np.zeros(len(stats), dtype=bool)
    if largest and len(stats) > 1:
        drop[:] = True
        drop[np.lexsort((stats.first, -stats.voxels))[0]] = False
    min_voxels = (min_ml or 0.0) / voxel_ml if voxel_ml > 0 else 0.0
    if min_voxels > 0:
        drop |= stats.voxels < min_voxels
    if not drop.any():
        return label, 0, 0
    dropped = np.sort(stats.root[drop])
    removed = 0
    for slab, local, roots in sweep.relabel():
        pos = np.searchsorted(dropped, roots).clip(max=len(dropped) - 1)
        gone = dropped[pos] == roots
        gone[0] = False
        hit = gone[local]  # slab voxels to clear, sweep axis first
        np.moveaxis(label[slab], sweep.axis, 0)[hit] = structure.fill
        removed += int(np.count_nonzero(hit))
    return label, int(drop.sum()), removed


def postprocess_labels(
    label: np.ndarray,
    voxel_ml: float,
    config: PostprocessConfig,
    structures: Sequence[Structure] | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Apply ``config`` to an integer ``label`` array (I, J, K); returns (new labels, stats).

    ``voxel_ml`` is the volume of one voxel in mL; ``structures`` are what the uniform options
    apply to (default: each label value present). ``stats`` counts removed components and
    voxels so reports can say what was changed.
    """
    stats = {"removed_components": 0, "removed_voxels": 0}
    if not config.active:
        return label, stats
    out = label.copy()
    if config.largest_component or config.min_component_ml:
        if structures is None:
            structures = [
                Structure(name=str(v), values=(int(v),)) for v in np.unique(label) if v > 0
            ]
        if config.classes is not None:
            structures = [s for s in structures if set(s.values) & set(config.classes)]
        for structure in structures:
            out, comps, voxels = remove_components(
                out, structure, voxel_ml, config.largest_component, config.min_component_ml
            )
            stats["removed_components"] += comps
            stats["removed_voxels"] += voxels
    for rule in config.rules:
        out, comps, voxels = remove_components(
            out,
            rule.structure,
            voxel_ml,
            largest=rule.rule == "largest",
            min_ml=rule.min_ml if rule.rule == "min_ml" else None,
        )
        stats["removed_components"] += comps
        stats["removed_voxels"] += voxels
    logger.debug("postprocess removed %s", stats)
    return out, stats
