"""Building blocks for the synthetic phantoms: world grids, smooth random fields, blobs, noise.

Everything here is evaluated on a stored voxel grid (array order ``[i, j, k]``) from its RAS+
affine, so the anatomy is placed in physical millimetres and lands in the right anatomical
direction whatever the storage orientation. All randomness comes from the caller's
``numpy.random.Generator`` so a seed reproduces every array bit for bit.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medseg.io.volume import LPS_TO_RAS


def rotation_matrix(rx_deg: float = 0.0, ry_deg: float = 0.0, rz_deg: float = 0.0) -> np.ndarray:
    """3x3 rotation about x, then y, then z (degrees, right-handed)."""
    ax, ay, az = np.deg2rad([rx_deg, ry_deg, rz_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def lps_grid_affine(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    centre_ras: np.ndarray,
    rotation_lps: np.ndarray | None = None,
) -> np.ndarray:
    """RAS+ affine of a grid stored like a DICOM axial series (``i`` -> L, ``j`` -> P, ``k`` -> S).

    Args:
        shape: grid size ``(I, J, K)``.
        spacing: voxel size in mm along ``i, j, k``.
        centre_ras: world position (RAS mm) of the grid centre.
        rotation_lps: optional 3x3 rotation applied to the LPS axes (an oblique acquisition).
    """
    direction = np.eye(3) if rotation_lps is None else np.asarray(rotation_lps, float)
    lps = np.eye(4)
    lps[:3, :3] = direction * np.asarray(spacing, float)[None, :]
    centre_lps = LPS_TO_RAS[:3, :3] @ np.asarray(centre_ras, float)
    lps[:3, 3] = centre_lps - lps[:3, :3] @ ((np.asarray(shape, float) - 1) / 2)
    return LPS_TO_RAS @ lps


def world_coordinates(shape: tuple[int, int, int], affine: np.ndarray) -> np.ndarray:
    """World (RAS mm) position of every voxel centre, shape ``(I, J, K, 3)`` float32."""
    idx = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = affine[:3, :3].astype(np.float32) @ idx + affine[:3, 3:4].astype(np.float32)
    return np.moveaxis(world.reshape(3, *shape), 0, -1)


def smooth_noise(
    rng: np.random.Generator,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    sigma_mm: float,
) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to zero mean, unit std; float32 ``shape``.

    The smoothing width is given in mm and converted per axis, so the texture is isotropic
    in the patient even on anisotropic grids.
    """
    white = rng.standard_normal(shape, dtype=np.float32)
    sigma = [sigma_mm / s for s in spacing]
    field = ndimage.gaussian_filter(white, sigma=sigma, mode="reflect")
    field -= field.mean()
    std = float(field.std())
    return field / std if std > 0 else field


def ellipsoid_radius(
    points: np.ndarray,
    centre: np.ndarray,
    semi_axes: tuple[float, float, float],
    rotation: np.ndarray | None = None,
) -> np.ndarray:
    """Normalised ellipsoid radius at ``points`` (..., 3): < 1 inside, 1 on the surface."""
    q = points - np.asarray(centre, np.float32)
    if rotation is not None:
        q = q @ np.asarray(rotation, np.float32)  # world -> ellipsoid frame (R^T q per point)
    q = q / np.asarray(semi_axes, np.float32)
    return np.sqrt(np.sum(q * q, axis=-1))


def random_blob_radius(
    rng: np.random.Generator,
    points: np.ndarray,
    centre: np.ndarray,
    radius_mm: float,
    n_lobes: int,
) -> np.ndarray:
    """Normalised radius of an irregular blob: the union (minimum) of ``n_lobes`` ellipsoids.

    Lobes are offset from ``centre`` by up to half the radius with random axes and
    rotations; callers add a smooth noise field to this radius to roughen the outline.
    """
    radius = np.full(points.shape[:-1], np.inf, dtype=np.float32)
    for lobe in range(n_lobes):
        offset = rng.normal(0.0, 0.35 * radius_mm, 3) if lobe else np.zeros(3)
        axes = radius_mm * rng.uniform(0.6, 1.0, 3)
        rot = rotation_matrix(*rng.uniform(-180, 180, 3))
        lobe_r = ellipsoid_radius(points, np.asarray(centre) + offset, tuple(axes), rot)
        np.minimum(radius, lobe_r, out=radius)
    return radius


def rician_noise(rng: np.random.Generator, signal: np.ndarray, sigma: float) -> np.ndarray:
    """Magnitude of a complex signal with Gaussian noise in both channels (MR magnitude images)."""
    real = signal + rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    imag = rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    return np.sqrt(real * real + imag * imag)


def partial_volume(
    image: np.ndarray, spacing: tuple[float, float, float], fwhm_mm: float
) -> np.ndarray:
    """Blur a piecewise-constant image with a Gaussian PSF of ``fwhm_mm`` (scanner resolution)."""
    sigma = [fwhm_mm / 2.355 / s for s in spacing]
    return ndimage.gaussian_filter(image.astype(np.float32), sigma=sigma, mode="nearest")
