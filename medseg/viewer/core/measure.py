"""Measurements on a scan: ruler distance, ROI statistics, intensity at a voxel (pure numpy).

The viewer page (PNG path) and the NiiVue canvas call these same functions. Points are voxel
indices of one volume; distances go through its affine, so anisotropic and oblique voxel
grids measure true millimetres. ROIs are drawn on one 2D plane (rows, columns) whose pixel
size in mm is given (:func:`medseg.viewer.core.render.pixel_spacing`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from medseg.errors import MedsegError

ROI_SHAPES = ("rectangle", "ellipse")
#: Intensity units: CT voxels are Hounsfield units; MR (and anything else) has no absolute
#: scale, so values are arbitrary units.
CT_UNIT = "HU"
ARBITRARY_UNIT = "a.u."


class MeasureError(MedsegError):
    """A measurement asked for outside the image or with an unknown shape."""


def distance_mm(a: Sequence[float], b: Sequence[float], affine: np.ndarray) -> float:
    """Distance in mm between voxel points ``a`` and ``b`` (``(i, j, k)``, fractional allowed)
    of a volume whose ``affine`` maps voxel indices to world mm."""
    step = np.asarray(b, float) - np.asarray(a, float)
    if step.shape != (3,):
        raise MeasureError(f"ruler points must be (i, j, k) voxel indices, got {a} and {b}")
    return float(np.linalg.norm(np.asarray(affine, float)[:3, :3] @ step))


@dataclasses.dataclass(frozen=True)
class RoiStats:
    """Statistics of the pixels inside an ROI: ``sd`` is the sample standard deviation
    (``n - 1``; 0 for one pixel), ``area_mm2`` the pixels' count times one pixel's area."""

    shape: str
    pixels: int
    mean: float
    sd: float
    area_mm2: float
    unit: str = ARBITRARY_UNIT

    def text(self) -> str:
        return (
            f"{self.shape} ROI: mean {self.mean:.4g} {self.unit}, SD {self.sd:.3g} {self.unit}, "
            f"area {self.area_mm2:.4g} mm² ({self.pixels} pixels)"
        )


def roi_mask(
    plane_shape: tuple[int, int], box: tuple[int, int, int, int], shape: str = "rectangle"
) -> np.ndarray:
    """Boolean ``plane_shape`` mask of an ROI inside ``box`` = ``(row, col, height, width)``
    in pixels: the whole box (``rectangle``) or the ellipse inscribed in it (``ellipse``,
    pixels whose centres lie inside). Parts outside the plane are cut off."""
    if shape not in ROI_SHAPES:
        raise MeasureError(f"unknown ROI shape {shape!r}; expected one of {ROI_SHAPES}")
    row, col, height, width = (int(v) for v in box)
    rows, cols = plane_shape
    if (
        height < 1
        or width < 1
        or row >= rows
        or col >= cols
        or row + height <= 0
        or col + width <= 0
    ):
        raise MeasureError(
            f"ROI (row {row}, col {col}, {height} x {width} pixels) has no pixel on the "
            f"{rows} x {cols} slice; choose a box inside it"
        )
    mask = np.zeros(plane_shape, bool)
    if shape == "rectangle":
        mask[max(row, 0) : row + height, max(col, 0) : col + width] = True
        return mask
    rr, cc = np.ogrid[:rows, :cols]
    centre_r, centre_c = row + height / 2, col + width / 2
    inside = ((rr + 0.5 - centre_r) / (height / 2)) ** 2 + (
        (cc + 0.5 - centre_c) / (width / 2)
    ) ** 2 <= 1.0
    return inside


def roi_stats(
    plane: np.ndarray,
    box: tuple[int, int, int, int],
    pixel_mm: tuple[float, float],
    shape: str = "rectangle",
    unit: str = ARBITRARY_UNIT,
) -> RoiStats:
    """Mean, SD and area (mm^2) of ``plane`` inside the ROI ``box`` (see :func:`roi_mask`);
    ``pixel_mm`` is one pixel's (row height, column width) in mm."""
    mask = roi_mask(plane.shape, box, shape)
    values = np.asarray(plane, np.float64)[mask]
    count = int(values.size)
    if count == 0:  # an ellipse too thin to cover a pixel centre
        raise MeasureError(f"the {shape} ROI {box} covers no pixel centre; make it larger")
    sd = float(values.std(ddof=1)) if count > 1 else 0.0
    area = count * float(pixel_mm[0]) * float(pixel_mm[1])
    return RoiStats(shape, count, float(values.mean()), sd, area, unit)


def intensity_unit(is_ct: bool) -> str:
    """``HU`` for CT, ``a.u.`` (arbitrary units) for MR and anything else."""
    return CT_UNIT if is_ct else ARBITRARY_UNIT


def intensity_at(volume: np.ndarray, point: Sequence[int], is_ct: bool) -> tuple[float, str]:
    """The voxel value of ``volume`` at ``point`` (integer ``(i, j, k)``) and its unit."""
    index = tuple(int(v) for v in point)
    if len(index) != volume.ndim or any(
        not 0 <= v < n for v, n in zip(index, volume.shape, strict=True)
    ):
        raise MeasureError(f"voxel {index} is outside the volume of shape {volume.shape}")
    return float(volume[index]), intensity_unit(is_ct)
