"""Dataset fingerprint: the figures a training plan is derived from (nnU-Net's idea).

One pass over the labelled cases reads every image and label on its source grid, reorients it
to canonical RAS (the training space) and records:

* per case: shape and spacing (canonical axes, mm), source orientation;
* per channel: intensity percentiles, mean and std of foreground voxels (label > 0; non-zero
  voxels for unlabelled cases), the value range, and a modality guess;
* per class: voxel fraction, connected objects per case, object volume (mL) and extent (mm per
  canonical axis); plus the extent of all foreground per case.

The result is a plain JSON-able dict, cached as ``fingerprint.json`` in the preprocessing cache
folder under a key of the source files (paths, sizes, modification times), so a second plan of
an unchanged dataset reads no image.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from medseg.data.datasets import CaseSpec, DatasetSpec
from medseg.data.preprocessing import load_case
from medseg.data.slicing import plane_axes
from medseg.io.atomic import write_json
from medseg.metrics import CONNECTIVITY_26

logger = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"
FINGERPRINT_VERSION = 4
# foreground voxels sampled per case and channel (nnU-Net samples 10,000 as well)
SAMPLES_PER_CASE = 10_000
# a channel whose low percentile reaches below this is CT in Hounsfield units (air is -1000)
CT_AIR_HU = -500.0


def source_key(spec: DatasetSpec) -> str:
    """A digest of every source file's path, size and modification time (no data read)."""
    digest = hashlib.sha256(str(FINGERPRINT_VERSION).encode())
    for case in spec.cases:
        paths = [*case.images, *([case.label] if case.label else [])]
        digest.update(case.case_id.encode())
        for path in paths:
            stat = Path(path).stat()
            digest.update(f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode())
        digest.update(json.dumps(case.channel_indices).encode())
    return digest.hexdigest()[:20]


def case_fingerprint(case: CaseSpec, label_values: Sequence[int], seed: int = 0) -> dict[str, Any]:
    """The figures of one case (see the module docstring); ``label_values``: the foreground
    label values to describe (objects are 26-connected, as lesion counting in metrics)."""
    channels, label = load_case(case)
    canonical = [v.to_canonical() for v in channels]
    ref = canonical[0]
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {
        "case_id": case.case_id,
        "shape": list(ref.shape),
        "spacing": [round(float(s), 5) for s in ref.spacing],
        "orientation": "".join(channels[0].orientation),
        "labelled": label is not None,
    }
    mask = None
    if label is not None:
        lab = np.asarray(label.to_canonical().array)
        mask = lab > 0
        out["classes"] = _class_figures(lab, ref.spacing, label_values)
        out["foreground_extent_mm"] = _extent_mm(mask, ref.spacing)
        out["foreground_fraction"] = float(mask.mean())
    out["channels"] = [_channel_figures(v.array, mask, rng) for v in canonical]
    body = _body(ref.array, out["channels"][0])
    out["body_extent_mm"] = _extent_mm(body, ref.spacing) or [
        float(n * s) for n, s in zip(ref.shape, ref.spacing, strict=True)
    ]
    return out


def _extent_mm(mask: np.ndarray, spacing: Sequence[float]) -> list[float] | None:
    if not mask.any():
        return None
    extent = []
    for axis in range(3):
        hit = np.flatnonzero(mask.any(axis=plane_axes(axis)))
        extent.append(float((hit[-1] - hit[0] + 1) * spacing[axis]))
    return extent


def _body(array: np.ndarray, figures: dict[str, Any]) -> np.ndarray:
    """Voxels above the background: a tenth of the way from the minimum (air in CT, the zero
    fill of skull-stripped MR) to the 99th percentile (``figures``: the channel's
    :func:`_channel_figures`)."""
    low, high = figures["min"], figures["p99"]
    return np.asarray(array) > low + 0.1 * (high - low)


def _class_figures(
    lab: np.ndarray, spacing: Sequence[float], values: Sequence[int]
) -> dict[str, Any]:
    voxel_ml = float(np.prod(spacing)) / 1000.0
    figures: dict[str, Any] = {}
    for value in values:
        mask = lab == value
        count = int(mask.sum())
        entry: dict[str, Any] = {"voxels": count, "fraction": count / mask.size, "objects": []}
        if count:
            components, n = ndimage.label(mask, structure=CONNECTIVITY_26)
            sizes = np.bincount(components.ravel(), minlength=n + 1)[1:]
            for index, box in enumerate(ndimage.find_objects(components)):
                if box is None:
                    continue
                extent = [float((sl.stop - sl.start) * spacing[a]) for a, sl in enumerate(box)]
                entry["objects"].append(
                    {"volume_ml": float(sizes[index]) * voxel_ml, "extent_mm": extent}
                )
        figures[str(value)] = entry
    return figures


def _channel_figures(
    array: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator
) -> dict[str, Any]:
    data = np.asarray(array)
    finite = np.isfinite(data)
    sel = data[mask & finite] if mask is not None and mask.any() else data[(data != 0) & finite]
    if sel.size > SAMPLES_PER_CASE:
        sel = rng.choice(sel, SAMPLES_PER_CASE, replace=False)
    whole = data[finite]
    p01, p99 = (float(v) for v in np.percentile(whole, [1, 99])) if whole.size else (0.0, 0.0)
    return {
        "samples": sel.astype(np.float32).tolist(),
        "min": float(whole.min()) if whole.size else 0.0,
        "max": float(whole.max()) if whole.size else 0.0,
        "p01": p01,
        "p99": p99,
        "integer": bool(whole.size and np.all(np.mod(whole[:1000], 1) == 0)),
    }


def guess_modality(channel_name: str, declared: str, figures: dict[str, Any]) -> tuple[str, str]:
    """``(modality, why)`` of one channel: from its name, the dataset's declaration, or its
    value range (CT is stored in HU, with air near -1000)."""
    name = channel_name.lower()
    if name in ("ct", "cta", "cect", "ncct") or name.startswith("ct_"):
        return "ct", f"channel named {channel_name!r}"
    if declared == "ct":
        return "ct", "dataset declares CT"
    if figures["p01"] <= CT_AIR_HU and figures["integer"]:
        return "ct", f"integer values down to {figures['p01']:.0f} (Hounsfield units)"
    if declared in ("mr", "other") and not _is_default_name(name):
        return declared, f"dataset declares {declared.upper()}"
    return "mr", "non-negative intensities, not CT-like"


def _is_default_name(name: str) -> bool:
    return name in ("image", "")


def summarise(cases: list[dict[str, Any]], spec: DatasetSpec) -> dict[str, Any]:
    """Dataset-level figures from the per-case ones (medians, percentiles, counts)."""
    spacings = np.array([c["spacing"] for c in cases])
    shapes = np.array([c["shape"] for c in cases])
    median_spacing = np.median(spacings, axis=0)
    labelled = [c for c in cases if c["labelled"]]
    channels = []
    for index, name in enumerate(spec.channel_names):
        figures = [c["channels"][index] for c in cases]
        values = np.concatenate([np.asarray(f["samples"], np.float32) for f in figures])
        pooled = {
            "p01": float(np.min([f["p01"] for f in figures])),
            "integer": all(f["integer"] for f in figures),
        }
        modality, why = guess_modality(name, spec.modality, pooled)
        pct = np.percentile(values, [0.5, 50, 99.5]) if values.size else np.zeros(3)
        channels.append(
            {
                "name": name,
                "modality": modality,
                "modality_reason": why,
                "foreground_p00_5": float(pct[0]),
                "foreground_median": float(pct[1]),
                "foreground_p99_5": float(pct[2]),
                "foreground_mean": float(values.mean()) if values.size else 0.0,
                "foreground_std": float(values.std()) if values.size else 0.0,
                "min": float(np.min([f["min"] for f in figures])),
                "max": float(np.max([f["max"] for f in figures])),
            }
        )
    classes = [_summarise_class(value, name, labelled) for value, name in _foreground(spec)]
    fg_extents = [c["foreground_extent_mm"] for c in labelled if c.get("foreground_extent_mm")]
    body = np.array([c["body_extent_mm"] for c in cases])
    orientations: dict[str, int] = {}
    for c in cases:
        orientations[c["orientation"]] = orientations.get(c["orientation"], 0) + 1
    return {
        "version": FINGERPRINT_VERSION,
        "dataset": spec.name,
        "num_cases": len(spec.cases),
        "num_labelled": len(labelled),
        "unlabelled_cases": [c.case_id for c in spec.cases if c.label is None],
        "median_spacing": median_spacing.round(4).tolist(),
        "min_spacing": spacings.min(axis=0).round(4).tolist(),
        "max_spacing": spacings.max(axis=0).round(4).tolist(),
        "median_shape": np.median(shapes, axis=0).tolist(),
        "max_shape": shapes.max(axis=0).tolist(),
        "anisotropy": float(median_spacing.max() / median_spacing.min()),
        "orientations": orientations,
        "channels": channels,
        "classes": classes,
        "foreground_extent_mm": {
            "median": np.median(fg_extents, axis=0).tolist() if fg_extents else None,
            "p95": np.percentile(fg_extents, 95, axis=0).tolist() if fg_extents else None,
        },
        "slices_per_axis": np.sum(shapes, axis=0).tolist(),
        "body_extent_mm": {
            "median": np.median(body, axis=0).round(2).tolist(),
            "p95": np.percentile(body, 95, axis=0).round(2).tolist(),
        },
    }


def _foreground(spec: DatasetSpec) -> list[tuple[int, str]]:
    return [(v, n) for v, n in sorted(spec.labels.items()) if v > 0]


def _summarise_class(value: int, name: str, cases: list[dict[str, Any]]) -> dict[str, Any]:
    entries = [c["classes"][str(value)] for c in cases]
    objects = [o for e in entries for o in e["objects"]]
    present = sum(1 for e in entries if e["voxels"] > 0)
    volumes = np.array([o["volume_ml"] for o in objects]) if objects else np.zeros(0)
    extents = np.array([o["extent_mm"] for o in objects]) if objects else np.zeros((0, 3))
    # the structure a reader cares about is the largest object of each case, not the specks
    main = [
        max(e["objects"], key=lambda o: o["volume_ml"])["extent_mm"]
        for e in entries
        if e["objects"]
    ]

    def pct(data: np.ndarray, q: float) -> Any:
        return np.percentile(data, q, axis=0).round(4).tolist() if len(data) else None

    return {
        "value": value,
        "name": name,
        "cases_present": present,
        "voxel_fraction": float(np.mean([e["fraction"] for e in entries])) if entries else 0.0,
        "objects_per_case_median": float(np.median([len(e["objects"]) for e in entries]))
        if entries
        else 0.0,
        "objects_per_case_max": max((len(e["objects"]) for e in entries), default=0),
        "object_volume_ml": {
            "p5": pct(volumes, 5),
            "median": pct(volumes, 50),
            "p95": pct(volumes, 95),
        },
        "object_extent_mm": {"median": pct(extents, 50), "p95": pct(extents, 95)},
        "largest_object_extent_mm": pct(np.array(main), 50) if main else None,
    }


def cached_fingerprint(spec: DatasetSpec, cache_dir: str | Path) -> dict[str, Any] | None:
    """The fingerprint in ``cache_dir`` when it was made from the same source files (paths,
    sizes, modification times), else ``None``; reads no image."""
    path = Path(cache_dir) / FINGERPRINT_FILE
    if not path.is_file():
        return None
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if cached.get("source_key") != source_key(spec):
        return None
    logger.info("fingerprint: %s (cached)", path)
    return cached


def compute_fingerprint(
    spec: DatasetSpec, cache_dir: str | Path | None = None, progress: bool = False
) -> dict[str, Any]:
    """The dataset's fingerprint, read from ``cache_dir/fingerprint.json`` when the sources are
    unchanged, else computed (one read of every case) and written there atomically."""
    if cache_dir is not None:
        cached = cached_fingerprint(spec, cache_dir)
        if cached is not None:
            return cached
    key = source_key(spec)
    path = Path(cache_dir) / FINGERPRINT_FILE if cache_dir is not None else None
    values = [v for v, _ in _foreground(spec)]
    start = time.perf_counter()
    cases = [
        case_fingerprint(case, values, seed=i)
        for i, case in enumerate(
            tqdm(spec.cases, desc="fingerprint", unit="case", disable=not progress)
        )
    ]
    result = {
        **summarise(cases, spec),
        "seconds": round(time.perf_counter() - start, 2),
        "source_key": key,
        "cases": _compact(cases),
    }
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, result)
        logger.info("fingerprint: wrote %s", path)
    return result


def _compact(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-case entries without the raw intensity samples (they only feed the summary)."""
    keep = (
        "case_id",
        "shape",
        "spacing",
        "orientation",
        "labelled",
        "foreground_fraction",
        "body_extent_mm",
    )
    return [{k: c[k] for k in keep if k in c} for c in cases]
