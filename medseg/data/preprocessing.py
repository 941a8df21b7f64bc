"""Deterministic, recorded preprocessing: canonical RAS, in-plane resampling, intensity
normalisation per modality, label mapping, and the exact inverse back to the source grid.

The :class:`PreprocessingParams` object is saved in every checkpoint
(``PreprocessingParams.model_dump(mode="json")``) so inference applies exactly the same steps.

Axis conventions: a source volume is ``(I, J, K)`` in its file's voxel order; the
preprocessed arrays are in canonical RAS voxel order ``(X, Y, Z)`` (0 = R-L, 1 = A-P,
2 = S-I), optionally resampled in the two axes other than ``slice_axis`` (spacing in mm).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, Literal

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medseg.data.intensity import intensity_plan, needs_statistics
from medseg.data.intensity import mr_foreground as mr_foreground  # public here since 0.1
from medseg.data.slicing import plane_axes
from medseg.errors import CorruptFileError, DatasetError, GeometryMismatchError
from medseg.io.volume import Volume, check_same_grid, integer_labels

logger = logging.getLogger(__name__)

CANONICAL = ("R", "A", "S")
# more non-finite voxels than this fraction of a channel: the scan is refused, not repaired
MAX_NONFINITE_FRACTION = 0.01


class PreprocessingParams(BaseModel):
    """Every parameter of preprocessing; saved with checkpoints, re-applied by inference.

    Attributes:
        modality: ``"ct"`` (clip to an HU window, then z-score with dataset statistics or
            scale to [-1, 1]), ``"mr"`` (per-case z-score over the foreground, :func:`mr_foreground`), ``"other"``
            (per-case percentile clip, then z-score over all voxels).
        channel_names: one name per input channel (e.g. ``["flair", "t1c"]``).
        slice_axis: canonical RAS axis the model slices along (0 sagittal, 1 coronal, 2 axial).
        target_spacing: in-plane spacing in mm of the two axes other than ``slice_axis``
            (in increasing axis order); ``None`` keeps the source spacing.
        ct_window: HU ``(low, high)`` clip for CT; ``None`` uses the foreground percentiles
            found by :func:`fit_preprocessing`.
        clip_percentiles: percentiles (0-100) used for CT windows from data and for ``"other"``.
        intensity_stats: per channel ``{"mean", "std", "p_low", "p_high"}`` from
            :func:`fit_preprocessing` (foreground voxels).
        label_map: source label value -> class index; values not listed keep their value
            (map them to 0 explicitly to drop them).
        ignore_label: class index excluded from loss and metrics.
        class_names: name of each class index (0 = background); for region models, the name
            of each label value of the (mapped) label maps, e.g. BraTS's five.
        regions: region-based training (overlapping classes, as nnU-Net does for BraTS):
            region name -> label values it contains, in order from outermost to innermost,
            e.g. ``{whole_tumour: [1, 2, 3, 4], tumour_core: [1, 3, 4], enhancing: [4]}``.
            The network then has one sigmoid output per region; predictions are written back
            as one label map in the same label values (see :attr:`region_labels`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    modality: Literal["ct", "mr", "other"] = "mr"
    channel_names: list[str] = Field(default_factory=lambda: ["image"])
    slice_axis: int = Field(2, ge=0, le=2)
    target_spacing: tuple[float, float] | None = None
    ct_window: tuple[float, float] | None = None
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    intensity_stats: list[dict[str, float]] | None = None
    label_map: dict[int, int] | None = None
    ignore_label: int | None = None
    class_names: list[str] = Field(default_factory=lambda: ["background", "foreground"])
    regions: dict[str, list[int]] | None = None

    @field_validator("target_spacing")
    @classmethod
    def _positive_spacing(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and min(value) <= 0:
            raise ValueError(f"target_spacing must be positive mm values, got {value}")
        return value

    @field_validator("clip_percentiles", "ct_window")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError(f"expected (low, high) with low < high, got {value}")
        return value

    @model_validator(mode="after")
    def _stats_per_channel(self) -> PreprocessingParams:
        if self.intensity_stats is not None and len(self.intensity_stats) != len(
            self.channel_names
        ):
            raise ValueError(
                f"intensity_stats has {len(self.intensity_stats)} entries but there are "
                f"{len(self.channel_names)} channels {self.channel_names}"
            )
        return self

    @model_validator(mode="after")
    def _regions_in_classes(self) -> PreprocessingParams:
        if self.regions is None:
            return self
        if not self.regions:
            raise ValueError("regions is empty; give at least one region or leave it unset")
        for name, values in self.regions.items():
            bad = [v for v in values if not 0 < v < len(self.class_names)]
            if not values or bad:
                raise ValueError(
                    f"region {name!r} {values}: values must be label values 1.."
                    f"{len(self.class_names) - 1} (one class_names entry per label value)"
                )
        if self.ignore_label is not None:
            raise ValueError("regions and ignore_label cannot be combined")
        return self

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_outputs(self) -> int:
        """Network output channels: one per region (sigmoid) or per class (softmax)."""
        return len(self.regions) if self.regions else len(self.class_names)

    @property
    def region_labels(self) -> list[int]:
        """Label value written for each region when decoding (nnU-Net's region class order):
        the smallest value of the region that no later (inner) region contains."""
        assert self.regions is not None
        groups = list(self.regions.values())
        out = []
        for i, values in enumerate(groups):
            inner = set().union(*groups[i + 1 :]) if i + 1 < len(groups) else set()
            own = sorted(set(values) - inner) or sorted(values)
            out.append(own[0])
        return out

    @property
    def inplane_axes(self) -> tuple[int, int]:
        """The two canonical axes resampled by ``target_spacing`` (increasing order)."""
        return plane_axes(self.slice_axis)


@dataclasses.dataclass
class GridInfo:
    """How a preprocessed case relates to its source grid (enough to invert preprocessing).

    Attributes:
        source_shape: ``(I, J, K)`` of the source file.
        source_affine: 4x4 RAS voxel-to-world of the source.
        source_axcodes: orientation of the source axes, e.g. ``("L", "P", "S")``.
        canonical_shape: ``(X, Y, Z)`` after reorientation, before resampling.
        canonical_affine: 4x4 affine of the canonical (not resampled) grid.
        shape: ``(X', Y', Z')`` of the preprocessed arrays (after resampling).
        affine: 4x4 affine of the preprocessed grid (RAS mm).
        nonfinite_replaced: per channel, how many NaN/Inf voxels :func:`check_finite`
            replaced (empty when none was).
    """

    source_shape: tuple[int, int, int]
    source_affine: np.ndarray
    source_axcodes: tuple[str, str, str]
    canonical_shape: tuple[int, int, int]
    canonical_affine: np.ndarray
    shape: tuple[int, int, int]
    affine: np.ndarray
    nonfinite_replaced: list[int] = dataclasses.field(default_factory=list)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm of the preprocessed grid along ``X, Y, Z``."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    @property
    def resampled(self) -> bool:
        return self.shape != self.canonical_shape

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for caches and reports)."""
        return {
            "source_shape": list(self.source_shape),
            "source_affine": self.source_affine.tolist(),
            "source_axcodes": list(self.source_axcodes),
            "canonical_shape": list(self.canonical_shape),
            "canonical_affine": self.canonical_affine.tolist(),
            "shape": list(self.shape),
            "affine": self.affine.tolist(),
            "nonfinite_replaced": list(self.nonfinite_replaced),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridInfo:
        return cls(
            source_shape=tuple(data["source_shape"]),
            source_affine=np.asarray(data["source_affine"], dtype=np.float64),
            source_axcodes=tuple(data["source_axcodes"]),
            canonical_shape=tuple(data["canonical_shape"]),
            canonical_affine=np.asarray(data["canonical_affine"], dtype=np.float64),
            shape=tuple(data["shape"]),
            affine=np.asarray(data["affine"], dtype=np.float64),
            nonfinite_replaced=list(data.get("nonfinite_replaced", [])),
        )


# --------------------------------------------------------------------------- geometry


def _resampled_affine(affine: np.ndarray, old: Sequence[int], new: Sequence[int]) -> np.ndarray:
    # Same convention as F.interpolate(align_corners=False): the new grid covers the same
    # physical extent; new voxel centre x' sits at old index (x' + 0.5) * n/n' - 0.5.
    ratio = np.array([o / n for o, n in zip(old, new, strict=True)])
    scale = np.eye(4)
    scale[:3, :3] = np.diag(ratio)
    scale[:3, 3] = 0.5 * ratio - 0.5
    return affine @ scale


def resample_array(array: np.ndarray, shape: Sequence[int], mode: str) -> np.ndarray:
    """Resample ``(C, X, Y, Z)`` to ``(C, *shape)``; ``mode`` ``"trilinear"`` or ``"nearest-exact"``."""
    if tuple(array.shape[1:]) == tuple(shape):
        return array
    # torch's interpolate is the fastest CPU resampler available here and its
    # align_corners=False convention matches _resampled_affine exactly.
    tensor = torch.from_numpy(np.ascontiguousarray(array))[None]
    kwargs = {"align_corners": False} if mode == "trilinear" else {}
    out = F.interpolate(tensor, size=tuple(int(s) for s in shape), mode=mode, **kwargs)
    return out[0].numpy()


def make_grid(reference: Volume, params: PreprocessingParams) -> GridInfo:
    """The :class:`GridInfo` that :func:`preprocess_image` produces for ``reference``'s grid."""
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(reference.affine), nib.orientations.axcodes2ornt(CANONICAL)
    )
    canon_shape = [0, 0, 0]
    for src_axis, (dst_axis, _flip) in enumerate(ornt):
        canon_shape[int(dst_axis)] = reference.shape[src_axis]
    canon_affine = reference.affine @ nib.orientations.inv_ornt_aff(ornt, reference.shape)
    shape = list(canon_shape)
    if params.target_spacing is not None:
        spacing = np.linalg.norm(canon_affine[:3, :3], axis=0)
        for axis, target in zip(params.inplane_axes, params.target_spacing, strict=True):
            shape[axis] = max(1, round(shape[axis] * spacing[axis] / target))
    return GridInfo(
        source_shape=reference.shape,
        source_affine=reference.affine.copy(),
        source_axcodes=tuple(reference.orientation),  # type: ignore[arg-type]
        canonical_shape=tuple(canon_shape),  # type: ignore[arg-type]
        canonical_affine=canon_affine,
        shape=tuple(shape),  # type: ignore[arg-type]
        affine=_resampled_affine(canon_affine, canon_shape, shape),
    )


def _to_source_order(array: np.ndarray, grid: GridInfo) -> np.ndarray:
    """Canonical ``(..., X, Y, Z)`` -> source voxel order ``(..., I, J, K)`` (flips/permutes)."""
    ornt = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(CANONICAL), nib.orientations.axcodes2ornt(grid.source_axcodes)
    )
    lead = array.ndim - 3
    if lead == 0:
        return np.ascontiguousarray(nib.orientations.apply_orientation(array, ornt))
    return np.stack([_to_source_order(a, grid) for a in array])


# --------------------------------------------------------------------------- intensities


def check_finite(array: np.ndarray, source: str) -> tuple[np.ndarray, int]:
    """The one rule for NaN/Inf voxels, for training and inference alike.

    None: ``array`` is returned unchanged. A few (at most ``MAX_NONFINITE_FRACTION`` = 1 % of
    the voxels): they are replaced, in a copy, by the smallest finite value of the array
    (background for CT and MR), with a warning giving the count. More, or all: the scan is
    refused, since a mask computed from it would look real and mean nothing.

    Returns:
        ``(array, number of voxels replaced)``.

    Raises:
        CorruptFileError: more than 1 % (or all) of the voxels are NaN/Inf; the message gives
            the count and the index of the first one.
    """
    array = np.asarray(array)
    if array.dtype.kind not in "fc" or np.isfinite(np.sum(array, dtype=np.float64)):
        return array, 0  # integers cannot be non-finite; a finite sum means none is
    bad = ~np.isfinite(array)
    count = int(np.count_nonzero(bad))
    if count == 0:
        return array, 0  # the sum overflowed, no voxel is non-finite
    first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), array.shape))
    if count == array.size or count > MAX_NONFINITE_FRACTION * array.size:
        raise CorruptFileError(
            f"{source}: {count:,} of {array.size:,} voxels ({100 * count / array.size:.1f} %) "
            f"are NaN or infinite (first at voxel {first}); more than "
            f"{100 * MAX_NONFINITE_FRACTION:g} % is not a usable scan. Check the conversion that "
            "produced it (a failed reconstruction or a division by zero), or export it again"
        )
    fill = float(np.min(array[~bad]))
    logger.warning(
        "%s: %d NaN/infinite voxel(s) (first at voxel %s) replaced by the minimum finite value "
        "%g before segmenting",
        source,
        count,
        first,
        fill,
    )
    repaired = array.copy()
    repaired[bad] = fill
    return repaired, count


def _normalise_channel(
    data: np.ndarray,
    params: PreprocessingParams,
    stats: dict[str, float] | None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Normalise one canonical channel ``(X, Y, Z)`` into float32 ``out`` and return it.

    Works in place on ``out`` (one float32 volume); MR's constants are fitted over slabs of
    it (:func:`~medseg.data.intensity.mr_plan`, as :mod:`medseg.data.slabs` does), only the
    percentiles of ``other`` need temporaries of the whole size.
    """
    if out is None:
        out = np.empty(data.shape, dtype=np.float32)
    out[...] = data
    np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    plan = intensity_plan(out if needs_statistics(params) else None, params, stats)
    return plan.apply(out)


# --------------------------------------------------------------------------- public API


def check_channels(channels: Sequence[Volume], params: PreprocessingParams) -> None:
    """One case's channels: as many as ``params.channel_names``, all on one grid."""
    if len(channels) != len(params.channel_names):
        raise DatasetError(
            f"{channels[0].metadata.get('source', 'case') if channels else 'case'}: got "
            f"{len(channels)} channel(s), expected {len(params.channel_names)} "
            f"({', '.join(params.channel_names)}); check the dataset's channel list"
        )
    for other in channels[1:]:
        check_same_grid(channels[0], other, what="channel")


def preprocess_image(
    channels: Sequence[Volume], params: PreprocessingParams
) -> tuple[np.ndarray, GridInfo]:
    """Preprocess one case's channels into a float32 array ``(C, X, Y, Z)`` (canonical RAS).

    Steps: check every channel shares one grid; reorient to RAS (lossless); resample the two
    in-plane axes to ``params.target_spacing`` (trilinear); normalise intensities per
    ``params.modality``. Non-finite voxels follow :func:`check_finite` (a few are replaced
    and counted in ``GridInfo.nonfinite_replaced``; more are refused).
    """
    check_channels(channels, params)
    grid = make_grid(channels[0], params)
    out = np.empty((len(channels), *grid.shape), dtype=np.float32)
    checked, replaced = [], []
    for vol in channels:
        array, count = check_finite(vol.array, str(vol.metadata.get("source", "image")))
        checked.append(Volume(array, vol.affine, vol.metadata) if count else vol)
        replaced.append(count)
    if any(replaced):
        grid.nonfinite_replaced = replaced
    for c, vol in enumerate(checked):
        canon = vol.to_canonical().array
        if canon.shape != tuple(grid.shape):  # resampling needs floats; otherwise cast on copy
            canon = resample_array(canon.astype(np.float32)[None], grid.shape, "trilinear")[0]
        stats = params.intensity_stats[c] if params.intensity_stats else None
        _normalise_channel(canon, params, stats, out=out[c])
    return out, grid


def map_labels(array: np.ndarray, params: PreprocessingParams, source: str = "label") -> np.ndarray:
    """Round a label array to integers and apply ``params.label_map``; returns int16."""
    array = np.nan_to_num(np.asarray(array), nan=0.0)
    labels = integer_labels(array, source, "label", np.int16)
    if params.label_map:
        lut_values = np.unique(labels)
        mapped = labels.copy()
        for value in lut_values:
            target = params.label_map.get(int(value))
            if target is not None:
                mapped[labels == value] = target
        labels = mapped
    return labels


def preprocess_label(label: Volume, params: PreprocessingParams, grid: GridInfo) -> np.ndarray:
    """Preprocess a label ``(I, J, K)`` onto ``grid``: int16 ``(X, Y, Z)``, mapped, nearest."""
    source = str(label.metadata.get("source", "label"))
    if label.shape != grid.source_shape or not np.allclose(
        label.affine, grid.source_affine, atol=1e-3
    ):
        raise GeometryMismatchError(
            f"{source}: label grid (shape {label.shape}, orientation {''.join(label.orientation)}, "
            f"origin {np.round(label.origin, 3).tolist()} mm) differs from the image grid (shape "
            f"{grid.source_shape}, orientation {''.join(grid.source_axcodes)}, origin "
            f"{np.round(grid.source_affine[:3, 3], 3).tolist()} mm); image and label must share one "
            "voxel grid: resample the label onto the image or check the pairing"
        )
    labels = map_labels(label.to_canonical().array, params, source)
    if tuple(labels.shape) != grid.shape:
        # nearest on float32 is exact for class indices up to 2**24
        labels = resample_array(labels[None].astype(np.float32), grid.shape, "nearest-exact")[0]
        labels = labels.astype(np.int16)
    return np.ascontiguousarray(labels, dtype=np.int16)


def restore_labels(labels: np.ndarray, grid: GridInfo) -> np.ndarray:
    """Class indices ``(X', Y', Z')`` on the preprocessed grid -> ``(I, J, K)`` source grid (nearest)."""
    labels = np.asarray(labels)
    if tuple(labels.shape) != grid.shape:
        raise GeometryMismatchError(
            f"labels of shape {tuple(labels.shape)} do not match the preprocessed grid {grid.shape}"
        )
    dtype = labels.dtype
    if grid.resampled:
        labels = resample_array(
            labels[None].astype(np.float32), grid.canonical_shape, "nearest-exact"
        )[0]
    return _to_source_order(labels.astype(dtype, copy=False), grid)


def canonical_view(array: np.ndarray, grid: GridInfo) -> np.ndarray:
    """``array`` ``(I, J, K)`` on the source grid seen in canonical order ``(X, Y, Z)``: a view
    (flips and transposes only), so writing into it fills ``array`` in source order. Only for
    grids that are not resampled."""
    if grid.resampled or tuple(array.shape) != tuple(grid.source_shape):
        raise GeometryMismatchError(
            f"array of shape {tuple(array.shape)} cannot be viewed canonically: expected the "
            f"source shape {grid.source_shape} of a grid that is not resampled"
        )
    ornt = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(grid.source_axcodes), nib.orientations.axcodes2ornt(CANONICAL)
    )
    return nib.orientations.apply_orientation(array, ornt)


def restore_probabilities(probs: np.ndarray, grid: GridInfo) -> np.ndarray:
    """Class probabilities ``(K, X', Y', Z')`` -> ``(K, I, J, K_src)`` on the source grid (linear).

    Take ``argmax(axis=0)`` afterwards: resampling probabilities then taking the argmax gives
    smoother boundaries than resampling hard labels.
    """
    probs = np.asarray(probs, dtype=np.float32)
    if probs.ndim != 4 or tuple(probs.shape[1:]) != grid.shape:
        raise GeometryMismatchError(
            f"probabilities of shape {tuple(probs.shape)} do not match (K, *{grid.shape})"
        )
    probs = resample_array(probs, grid.canonical_shape, "trilinear")
    return _to_source_order(probs, grid)


def fit_preprocessing(
    cases: Sequence[Any],
    params: PreprocessingParams,
    max_voxels_per_case: int = 100_000,
    seed: int = 0,
) -> PreprocessingParams:
    """Dataset-level intensity statistics per channel -> a copy of ``params`` with ``intensity_stats``.

    Args:
        cases: :class:`~medseg.data.datasets.CaseSpec` objects, or ``(channels, label)`` pairs
            where ``channels`` is a list of Volumes and ``label`` a Volume or ``None``.
        params: the parameters to complete (modality, channel names, clip percentiles).
        max_voxels_per_case: foreground voxels sampled per case (seeded) to bound memory.

    Statistics are taken over foreground voxels (label > 0) when labels exist, as nnU-Net does
    for CT, otherwise over non-zero voxels. ``p_low``/``p_high`` are ``clip_percentiles``; mean
    and std are of the values clipped to that window (or to ``ct_window`` if given).
    """
    rng = np.random.default_rng(seed)
    samples: list[list[np.ndarray]] = [[] for _ in params.channel_names]
    for case in cases:
        channels, label = load_case(case)
        mask = None
        if label is not None:
            mask = map_labels(label.array, params, str(label.metadata.get("source"))) > 0
            if params.ignore_label is not None:
                mask &= map_labels(label.array, params) != params.ignore_label
        for c, vol in enumerate(channels):
            finite, _ = check_finite(vol.array, str(vol.metadata.get("source", "image")))
            data = finite.astype(np.float32, copy=False)
            sel = data[mask] if mask is not None and mask.any() else data[data != 0]
            if sel.size > max_voxels_per_case:
                sel = rng.choice(sel, max_voxels_per_case, replace=False)
            samples[c].append(sel)
    stats = []
    for c, parts in enumerate(samples):
        values = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        if values.size == 0:
            raise DatasetError(
                f"channel {params.channel_names[c]}: no foreground or non-zero voxels in any case; "
                "cannot fit intensity statistics (check the images are not empty)"
            )
        p_low, p_high = (float(v) for v in np.percentile(values, params.clip_percentiles))
        low, high = params.ct_window if params.ct_window else (p_low, p_high)
        clipped = np.clip(values, low, high)
        stats.append(
            {
                "mean": float(clipped.mean()),
                "std": float(clipped.std()),
                "p_low": p_low,
                "p_high": p_high,
            }
        )
    logger.info("fitted intensity statistics: %s", stats)
    return params.model_copy(update={"intensity_stats": stats})


def load_case(case: Any) -> tuple[list[Volume], Volume | None]:
    """(channel Volumes, label Volume or None) of a :class:`~medseg.data.datasets.CaseSpec`
    (or of an already loaded ``(channels, label)`` pair), on their source grid. A case read
    from files must have its channels and label on one grid (GeometryMismatchError naming
    the case otherwise: the check ``validate-data`` runs)."""
    from medseg.data.validation import check_case_grids
    from medseg.io import read_volume

    if hasattr(case, "images"):
        indices = getattr(case, "channel_indices", None) or [None] * len(case.images)
        channels = [read_volume(p, channel=i) for p, i in zip(case.images, indices, strict=True)]
        label = read_volume(case.label) if getattr(case, "label", None) else None
        check_case_grids(case.case_id, channels, label)
        return channels, label
    channels, label = case
    return list(channels), label
