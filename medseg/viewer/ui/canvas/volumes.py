"""Pure helpers of the NiiVue canvas: the canvas's voxel order, NIfTI bytes and colour tables.

The viewer's display arrays are ``(X, Y, Z)`` in (L, P, S) order (:mod:`medseg.viewer.core.render`).
NiiVue indexes voxels (crosshair, drawing bitmap) in RAS order, so the canvas gets each
volume flipped along X and Y: then NiiVue's voxel order is the array's own and the mapping
back is two flips, with no resampling. Flat indices are NIfTI order (X fastest).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import nibabel as nib
import numpy as np

from medseg.viewer.core import render

#: display (L, P, S) voxel -> canvas (R, A, S) voxel: x' = X-1-x, y' = Y-1-y, z' = z
FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])
#: largest in-plane size of the first image sent for a case (see :func:`preview_bytes`)
PREVIEW_SIZE = 256


def canvas_affine(display_affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Voxel -> RAS mm affine of the canvas array (the display array flipped along X and Y)."""
    flip = FLIP.copy()
    flip[0, 3] = shape[0] - 1
    flip[1, 3] = shape[1] - 1
    return np.asarray(display_affine, dtype=np.float64) @ flip


def display_to_canvas(ijk: Sequence[int], shape: Sequence[int]) -> list[int]:
    """A display voxel ``(i, j, k)`` as the canvas's RAS voxel (its own inverse)."""
    return [int(shape[0]) - 1 - int(ijk[0]), int(shape[1]) - 1 - int(ijk[1]), int(ijk[2])]


canvas_to_display = display_to_canvas


def flat_to_display(flat: Iterable[int], shape: Sequence[int]) -> np.ndarray:
    """Canvas flat voxel indices (NIfTI order, X fastest) -> ``(N, 3)`` display voxels."""
    index = np.asarray(list(flat), dtype=np.int64)
    x, y, z = np.unravel_index(index, tuple(int(s) for s in shape), order="F")
    return np.stack([shape[0] - 1 - x, shape[1] - 1 - y, z], axis=1).astype(np.int64)


def roi_box(
    start: Sequence[int], end: Sequence[int], view: str, shape: Sequence[int]
) -> tuple[int, int, int, int]:
    """A box dragged in the canvas (opposite corners, canvas voxels) as ``(row, col, height,
    width)`` on the ``view`` plane of the display array (:func:`render.extract_slice`)."""
    display_shape = tuple(int(s) for s in shape)
    corners = [
        render.volume_to_plane(view, tuple(canvas_to_display(p, display_shape)), display_shape)
        for p in (start, end)
    ]
    (r0, c0), (r1, c1) = corners
    return min(r0, r1), min(c0, c1), abs(r1 - r0) + 1, abs(c1 - c0) + 1


def _compact(array: np.ndarray) -> np.ndarray:
    """The smallest voxel type that keeps the values (less to send to the browser and to
    upload: a float CT of whole HU values goes as int16, half the bytes)."""
    if array.dtype in (np.uint8, np.int16, np.uint16):
        return array
    if array.dtype.kind == "f" and array.size:
        lo, hi = float(np.min(array)), float(np.max(array))
        whole = np.isfinite(lo) and np.isfinite(hi) and lo >= -32768 and hi <= 32767
        if whole and np.array_equal(array, np.round(array)):
            return array.astype(np.uint8 if lo >= 0 and hi <= 255 else np.int16)
        return array.astype(np.float32, copy=False)
    if array.dtype.kind in "iub" and array.size:
        lo, hi = int(array.min()), int(array.max())
        if lo >= 0 and hi <= 255:
            return array.astype(np.uint8)
        if lo >= -32768 and hi <= 32767:
            return array.astype(np.int16)
    return array.astype(np.float32)


def nifti_bytes(display: np.ndarray, display_affine: np.ndarray) -> bytes:
    """Uncompressed NIfTI-1 of a display array, flipped to the canvas's RAS voxel order.

    Uncompressed on purpose: on the local link gzip costs more time than it saves.
    """
    array = _compact(np.asarray(display))[::-1, ::-1, :]
    return _nifti(array, canvas_affine(display_affine, array.shape))


def _nifti(array: np.ndarray, affine: np.ndarray) -> bytes:
    """Uncompressed NIfTI-1 bytes, the affine in both the qform and the sform."""
    image = nib.Nifti1Image(np.asfortranarray(array), affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    return image.to_bytes()


def preview_step(shape: Sequence[int], size: int = PREVIEW_SIZE) -> int:
    """In-plane voxel step of the preview: 1 (no preview needed) up to ``size`` voxels."""
    return max(1, -(-max(int(shape[0]), int(shape[1])) // size))


def preview_bytes(
    display: np.ndarray, display_affine: np.ndarray, window: render.Window
) -> bytes | None:
    """A small first image of a large volume: every ``preview_step``-th voxel in-plane (all
    slices, so paging works at once), windowed to ``uint8`` grey levels
    (:func:`render.apply_window`). None when the volume is small enough to send as it is.

    Its affine puts each preview voxel where its source voxel is, so the crosshair's mm
    position carries over when the full volume replaces it.
    """
    step = preview_step(display.shape)
    if step == 1:
        return None
    canvas = np.asarray(display)[::-1, ::-1, :][::step, ::step, :]
    affine = canvas_affine(display_affine, display.shape) @ np.diag([step, step, 1.0, 1.0])
    return _nifti(render.apply_window(canvas, window), affine)


def label_lut(
    num_labels: int, visible: Iterable[int], names: Sequence[str] = (), colour=None
) -> dict[str, list]:
    """NiiVue label colour table: label v in ``render.label_colour(v)`` (or ``colour``),
    transparent when v is 0 or not in ``visible``."""
    shown = set(int(v) for v in visible)
    table: dict[str, list] = {"R": [], "G": [], "B": [], "A": [], "I": [], "labels": []}
    for value in range(max(num_labels, 2)):
        rgb = colour or render.label_colour(value)
        table["R"].append(int(rgb[0]))
        table["G"].append(int(rgb[1]))
        table["B"].append(int(rgb[2]))
        table["A"].append(255 if value in shown and value > 0 else 0)
        table["I"].append(value)
        table["labels"].append(names[value] if value < len(names) else str(value))
    return table


def comparison_volume(prediction: np.ndarray, truth: np.ndarray, visible: Iterable[int]):
    """``uint8`` volume: 1 true positive, 2 false positive, 3 false negative (see
    :func:`medseg.viewer.core.render.comparison_planes`; a label swap shows as false positive)."""
    planes = render.comparison_planes(prediction, truth, tuple(visible))
    out = np.zeros(prediction.shape, np.uint8)
    out[planes["false negative"]] = 3
    out[planes["false positive"]] = 2
    out[planes["true positive"]] = 1
    return out


def comparison_lut() -> dict[str, list]:
    names = ["none", *render.COMPARISON_COLOURS]
    colours = [(0, 0, 0), *render.COMPARISON_COLOURS.values()]
    return {
        "R": [c[0] for c in colours],
        "G": [c[1] for c in colours],
        "B": [c[2] for c in colours],
        "A": [0, 255, 255, 255],
        "I": [0, 1, 2, 3],
        "labels": names,
    }


def heat_lut(stops: int = 16) -> dict[str, list]:
    """The viewer's uncertainty colours (``render.HEAT_LUT``) as a NiiVue colour map over the
    byte values 0..255 the map is sent in (alpha grows like the PNG path's blend)."""
    index = np.linspace(0, 255, stops).astype(int)
    rgb = render.HEAT_LUT[index]
    alpha = (255 * np.sqrt(index / 255.0)).astype(int)
    return {
        "R": rgb[:, 0].tolist(),
        "G": rgb[:, 1].tolist(),
        "B": rgb[:, 2].tolist(),
        "A": alpha.tolist(),
        "I": index.tolist(),
    }


def heat_bytes(values: np.ndarray) -> np.ndarray:
    """A 0..1 map as ``uint8`` 0..255 (NaN -> 0), a quarter of float32's bytes."""
    v = np.nan_to_num(np.asarray(values, np.float32), nan=0.0)
    return (np.clip(v, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def pen_size(radius_mm: float, spacing: Sequence[float]) -> int:
    """NiiVue pen width (voxels, odd) for a brush of ``radius_mm`` on the finest in-plane axis."""
    width = max(1, round(2 * radius_mm / max(min(spacing), 1e-6)))
    return width if width % 2 else width + 1
