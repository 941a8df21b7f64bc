"""Summaries of a volume for ``medseg info``: geometry, intensities, labels (no identifiers)."""

from __future__ import annotations

from typing import Any

import numpy as np

from medseg.io.volume import Volume

MAX_MASK_LABELS = 64  # an integer volume with more distinct values is treated as an image
PERCENTILES = (0.5, 1, 50, 99, 99.5)


def value_counts(array: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Distinct values and their voxel counts of an integer-valued array, or None if float.

    ``np.bincount`` on the shifted values is an order of magnitude faster than
    ``np.unique`` on large scans, so it is used when the value range is modest.
    """
    if array.dtype.kind == "b":
        array = array.astype(np.uint8)
    if array.dtype.kind not in "iu" or array.size == 0:
        return None
    lo, hi = int(array.min()), int(array.max())
    if hi - lo <= 1 << 22:
        counts = np.bincount(array.ravel().astype(np.int64) - lo)
        values = np.flatnonzero(counts)
        return values + lo, counts[values]
    return np.unique(array, return_counts=True)


def percentiles_from_counts(
    values: np.ndarray, counts: np.ndarray, qs: tuple[float, ...]
) -> list[float]:
    """Exactly ``np.percentile(data, qs)`` (linear method) from a histogram of ``data``.

    Integer scans are summarised from their value counts in one pass instead of sorting
    tens of millions of voxels (a 512x512x120 MR: ~0.1 s instead of ~2 s).
    """
    cum = np.cumsum(counts)
    n = int(cum[-1])

    def order_stat(rank: int) -> float:  # the rank-th smallest value, 0-based
        return float(values[np.searchsorted(cum, rank, side="right")])

    out = []
    for q in qs:
        pos = q / 100 * (n - 1)
        lo, frac = int(np.floor(pos)), pos - np.floor(pos)
        a = order_stat(lo)
        b = order_stat(min(lo + 1, n - 1)) if frac else a
        out.append(a + (b - a) * frac)
    return out


def _intensity_stats(
    array: np.ndarray, counts: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, Any] | None:
    if counts is not None:
        values, freq = counts
        total = int(freq.sum())
        mean = float((values.astype(np.float64) * freq).sum() / total)
        lo, hi, pct = (
            float(values[0]),
            float(values[-1]),
            percentiles_from_counts(values, freq, PERCENTILES),
        )
    else:
        finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array.ravel()
        if not finite.size:
            return None
        mean, lo, hi = float(finite.mean()), float(finite.min()), float(finite.max())
        pct = np.percentile(finite, PERCENTILES).tolist()
    return {
        "min": lo,
        "max": hi,
        "mean": round(mean, 4),
        "percentiles": {
            f"p{p:g}": round(float(v), 4) for p, v in zip(PERCENTILES, pct, strict=True)
        },
    }


def _label_names(volume: Volume) -> dict[int, str]:
    return {int(s["number"]): s.get("label", "") for s in volume.metadata.get("segments", [])}


def describe(volume: Volume, show_identifiers: bool = False) -> dict[str, Any]:
    """Everything ``medseg info`` reports, JSON-friendly.

    Keys: source, format, modality, shape, spacing_mm, orientation, origin_mm, affine,
    field_of_view_mm, dtype, intensity (min/max/mean/percentiles) and, for masks
    (integer-valued with at most 64 distinct values), labels with voxel counts and mL.
    """
    meta = volume.metadata
    info: dict[str, Any] = {
        "source": meta.get("source", ""),
        "format": meta.get("format", ""),
        "modality": meta.get("modality", "unknown"),
        "shape": list(volume.shape),
        "spacing_mm": [round(s, 6) for s in volume.spacing],
        "orientation": "".join(volume.orientation),
        "origin_mm": [round(float(v), 4) + 0.0 for v in volume.origin],  # + 0.0: no "-0.0"
        "affine": np.round(volume.affine, 6).tolist(),
        "field_of_view_mm": [
            round(n * s, 2) for n, s in zip(volume.shape, volume.spacing, strict=True)
        ],
        "dtype": str(volume.array.dtype),
    }
    for key in ("series_description", "series_uid", "manufacturer", "units", "rescale"):
        if meta.get(key):
            info[key] = meta[key]
    if meta.get("dicom_files"):
        info["n_files"] = len(meta["dicom_files"])
    array = np.asarray(volume.array)
    counts = value_counts(array)
    stats = _intensity_stats(array, counts)
    if stats:
        info["intensity"] = stats
    is_mask = counts is not None and len(counts[0]) <= MAX_MASK_LABELS
    info["is_mask"] = bool(is_mask)
    if is_mask:
        names = _label_names(volume)
        ml = volume.voxel_volume_ml
        info["labels"] = [
            {
                "value": int(v),
                "name": names.get(int(v), ""),
                "voxels": int(c),
                "volume_ml": round(float(c) * ml, 3),
            }
            for v, c in zip(*counts, strict=True)
        ]
    if meta.get("segments"):
        info["segments"] = meta["segments"]
    if show_identifiers:
        info["identifiers"] = dict(volume.identifiers)
    return info


def format_info(info: dict[str, Any]) -> str:
    """Human-readable text of :func:`describe`'s dict."""
    fmt = lambda xs: " x ".join(f"{x:g}" for x in xs)  # noqa: E731
    lines = [
        f"source:       {info['source']}",
        f"format:       {info['format']}   modality: {info['modality']}",
    ]
    if info.get("series_description") or info.get("series_uid"):
        uid = info.get("series_uid") or "(none)"
        lines.append(f"series:       '{info.get('series_description', '')}'  uid {uid}")
    lines += [
        f"shape:        {fmt(info['shape'])}  (i, j, k)",
        f"spacing:      {fmt(info['spacing_mm'])} mm",
        f"orientation:  {info['orientation']}  (RAS+ world; axis codes of i, j, k)",
        f"origin:       {', '.join(f'{v:.3f}' for v in info['origin_mm'])} mm (RAS, centre of voxel 0,0,0)",
        f"extent:       {fmt(info['field_of_view_mm'])} mm",
        f"dtype:        {info['dtype']}",
    ]
    if "intensity" in info:
        it = info["intensity"]
        unit = f" {info['units']}" if info.get("units") else ""
        pct = "  ".join(f"{k} {v:g}" for k, v in it["percentiles"].items())
        lines.append(
            f"intensity:    min {it['min']:g}  max {it['max']:g}  mean {it['mean']:g}{unit}"
        )
        lines.append(f"percentiles:  {pct}")
    if info.get("is_mask"):
        lines.append("labels:       value  voxels  volume_mL  name")
        for lab in info["labels"]:
            lines.append(
                f"              {lab['value']:>5}  {lab['voxels']:>6}  {lab['volume_ml']:>9.3f}  {lab['name']}"
            )
    if info.get("identifiers") is not None:
        ids = info["identifiers"] or {"(none)": ""}
        lines.append("identifiers:  " + "; ".join(f"{k}={v}" for k, v in ids.items()))
    return "\n".join(lines)


def describe_mask_on_image(image: Volume, mask: Volume) -> list[dict[str, Any]]:
    """Per-label voxel count, volume (mL) and image intensity (mean, median, p5, p95).

    ``mask`` must already lie on ``image``'s grid (see :func:`medseg.io.check_same_grid`
    and :func:`medseg.io.align_to_grid`).
    """
    counts = value_counts(np.asarray(mask.array))
    if counts is None:
        return []
    img = np.asarray(image.array)
    labels = np.asarray(mask.array)
    names = _label_names(mask)
    out = []
    for value, count in zip(*counts, strict=True):
        inside = img[labels == value]
        p5, p50, p95 = np.percentile(inside, (5, 50, 95))
        out.append(
            {
                "value": int(value),
                "name": names.get(int(value), ""),
                "voxels": int(count),
                "volume_ml": round(float(count) * image.voxel_volume_ml, 3),
                "mean": round(float(inside.mean()), 3),
                "median": round(float(p50), 3),
                "p5": round(float(p5), 3),
                "p95": round(float(p95), 3),
            }
        )
    return out


def format_mask_stats(stats: list[dict[str, Any]], units: str = "") -> str:
    """Text table of :func:`describe_mask_on_image`."""
    unit = f" ({units})" if units else ""
    lines = [f"mask labels:  value  voxels  volume_mL  median{unit}  mean  p5..p95  name"]
    for s in stats:
        lines.append(
            f"              {s['value']:>5}  {s['voxels']:>6}  {s['volume_ml']:>9.3f}  "
            f"{s['median']:>8g}  {s['mean']:>8g}  {s['p5']:g}..{s['p95']:g}  {s['name']}"
        )
    return "\n".join(lines)
