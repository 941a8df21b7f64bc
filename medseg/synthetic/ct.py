"""Synthetic non-contrast abdominal CT in HU with a hypodense liver lesion (lesion 1, liver 2).

An upper-abdomen slab (lung bases at the top, kidneys at the bottom) built in world mm (RAS+,
origin near the body centre) and sampled on an axial grid stored like a DICOM series
(``i`` -> L, ``j`` -> P, ``k`` -> S). Tissue values follow textbook non-contrast HU: air
-1000, lung -850, fat -100, muscle 50, liver 60, spleen 48, kidney 32, blood 40, bone
cortex 900 / trabecular 250, lesion 20-35. Scanner blur and correlated noise (sigma
10-18 HU) finish the look.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
from scipy import ndimage

from medseg.io.volume import Volume
from medseg.synthetic import fields

logger = logging.getLogger(__name__)

CT_LABELS = {"background": 0, "lesion": 1, "liver": 2}

_HU = {
    "air": -1000.0,
    "lung": -850.0,
    "fat": -100.0,
    "muscle": 50.0,
    "liver": 60.0,
    "spleen": 48.0,
    "kidney": 32.0,
    "blood": 40.0,
    "fluid": 8.0,
    "cortical": 900.0,
    "trabecular": 250.0,
}


@dataclasses.dataclass(frozen=True)
class CtParams:
    """Per-case body and lesion parameters, drawn from the case's Generator."""

    body_scale: float
    fat_mm: float
    liver_scale: float
    lesion_radius: float  # mm
    lesion_hu: float
    noise_hu: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> CtParams:
        return cls(
            body_scale=float(rng.uniform(0.92, 1.06)),
            fat_mm=float(rng.uniform(10.0, 24.0)),
            liver_scale=float(rng.uniform(0.92, 1.08)),
            lesion_radius=float(rng.uniform(15.0, 22.0)),
            lesion_hu=float(rng.uniform(18.0, 32.0)),
            noise_hu=float(rng.uniform(10.0, 16.0)),
        )


def make_ct_abdomen(
    seed: int | np.random.Generator = 0,
    shape: tuple[int, int, int] = (144, 112, 32),
    spacing: tuple[float, float, float] = (2.6, 2.6, 5.0),
) -> tuple[Volume, Volume]:
    """One synthetic abdominal CT (HU) and its label map.

    Args:
        seed: integer seed (or a Generator) - the same seed gives identical arrays.
        shape: grid size ``(I, J, K)``; axes point to L, P, S (LPS storage like DICOM).
        spacing: voxel size in mm along ``i, j, k`` (anisotropic: thick axial slices).

    Returns:
        ``(image, label)``: image ``int16`` HU, label ``uint8`` (0 background, 1 lesion,
        2 liver without the lesion), both on the same RAS+ affine.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    p = CtParams.draw(rng)
    affine = fields.lps_grid_affine(shape, spacing, np.array([0.0, -15.0, 0.0]))
    points = fields.world_coordinates(shape, affine)
    tissue = _body(rng, points, shape, spacing, p)
    liver, lesion = _liver(rng, points, tissue, shape, spacing, p)
    tissue["liver"] = liver & ~lesion

    hu = np.full(shape, _HU["air"], np.float32)
    for name in ("fat", "muscle", "lung", "blood", "spleen", "kidney", "fluid", "liver"):
        hu[tissue[name]] = _HU[name]
    hu[tissue["bowel_air"]] = _HU["air"]
    hu[tissue["trabecular"]] = _HU["trabecular"]
    hu[tissue["cortical"]] = _HU["cortical"]
    hu[lesion] = p.lesion_hu
    texture = 6.0 * fields.smooth_noise(rng, shape, spacing, 3.0)
    soft = tissue["liver"] | tissue["spleen"] | tissue["muscle"] | lesion
    hu[soft] += texture[soft]
    hu = fields.partial_volume(hu, spacing, fwhm_mm=2.0)
    # CT noise is spatially correlated (reconstruction kernel): smooth white noise, rescale.
    hu += p.noise_hu * fields.smooth_noise(rng, shape, spacing, 0.8)
    image = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    label = np.zeros(shape, np.uint8)
    label[tissue["liver"]] = CT_LABELS["liver"]
    label[lesion] = CT_LABELS["lesion"]
    meta = {"modality": "CT", "series_description": "Synthetic abdomen CT (medseg phantom)"}
    logger.debug("ct phantom: lesion %d voxels, liver %d voxels", lesion.sum(), liver.sum())
    return (
        Volume(image, affine, {**meta, "synthetic": True}),
        Volume(label, affine.copy(), {"modality": "SEG", "synthetic": True}),
    )


def _cylinders(points: np.ndarray, scale: float):
    """``ell(cx, cy, ax, ay, cz, az)``: mask of an ellipsoid (an axial cylinder by default).

    In-plane centre and semi-axes (mm) are multiplied by ``scale`` (the body size).
    """

    def ell(
        cx: float, cy: float, ax: float, ay: float, cz: float = 0.0, az: float = 1e6
    ) -> np.ndarray:
        centre = [cx * scale, cy * scale, cz]
        return fields.ellipsoid_radius(points, centre, (ax * scale, ay * scale, az)) < 1.0

    return ell


def _bones(ell, z: np.ndarray) -> dict[str, np.ndarray]:
    """Vertebra (cortical rim + trabecular body), spinal canal and rib cross-sections."""
    vert = ell(0, -62, 20, 17)
    canal = ell(0, -88, 8, 8)
    posterior = (ell(0, -100, 7, 18) | ell(-16, -90, 12, 5) | ell(16, -90, 12, 5)) & ~canal
    bone = vert | posterior
    cortical = bone & ~(ell(0, -62, 16.5, 13.5) | ell(0, -100, 3.5, 14))
    # Ribs: cross-sections along the body wall, only on the upper (thoracic) slices.
    ribs = np.zeros(z.shape, bool)
    for angle in np.deg2rad([-150, -125, -100, -65, -40, -25, 25, 40, 65, 100, 125, 150]):
        cx, cy = 128 * np.cos(angle), 92 * np.sin(angle)
        ribs |= ell(cx, cy, 7, 5) & (z > -20 + 10 * np.sin(3 * angle))
    rib_cortex = ribs & ~erode_xy(ribs)
    return {
        "bone": bone | ribs,
        "canal": canal,
        "trabecular": (bone & ~cortical) | (ribs & ~rib_cortex),
        "cortical": cortical | rib_cortex,
    }


def _body(
    rng: np.random.Generator,
    points: np.ndarray,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    p: CtParams,
) -> dict[str, np.ndarray]:
    """Boolean masks of the body wall, bones, vessels and organs other than the liver."""
    y, z = points[..., 1], points[..., 2]
    s = p.body_scale
    outline = 0.015 * fields.smooth_noise(rng, shape, spacing, 25.0)
    # Body: wider than deep, flatter at the back (y < 0 is posterior).
    q = points.copy()
    q[..., 1] *= np.where(y < 0, 1.12, 1.0)
    q[..., 2] = 0.0  # a cylinder: the abdomen barely changes over a 16 cm slab
    r_body = fields.ellipsoid_radius(q, np.zeros(3), (160 * s, 118 * s, 1.0)) + outline
    body = r_body < 1.0
    depth = (1.0 - r_body) * 135.0 * s  # ~mm below the skin
    wall = body & (depth >= p.fat_mm) & (depth < p.fat_mm + 11.0)
    inside = body & (depth >= p.fat_mm + 11.0)
    ell = _cylinders(points, s)
    bones = _bones(ell, z)
    bone = bones["bone"]
    paraspinal = (ell(-38, -95, 22, 20) | ell(38, -95, 22, 20)) & inside & ~bone & ~bones["canal"]
    lungs = (ell(-75, -40, 55, 55, 95, 70) | ell(75, -40, 55, 55, 95, 70)) & inside
    aorta = ell(-18, -35, 11, 11)
    ivc = ell(22, -30, 12, 9)
    kidneys = (ell(-62, -58, 28, 22, -45, 40) | ell(62, -62, 28, 22, -55, 40)) & inside
    spleen = ell(-85, -45, 30, 40, 25, 45) & inside & ~lungs
    stomach = ell(-55, 30, 42, 32, 15, 45) & inside
    bowel_noise = fields.smooth_noise(rng, shape, spacing, 6.0)
    bowel_region = inside & ell(0, 40, 120, 60, -40, 60) & ~stomach
    # Gas rises: the anterior part of the stomach holds air, the rest fluid.
    bowel_air = (bowel_region & (bowel_noise > 1.4)) | (stomach & (y > 30 * s + 12))
    fluid = (bowel_region & (bowel_noise < -0.6)) | bones["canal"] | (stomach & ~bowel_air)
    organs = lungs | kidneys | spleen | stomach | aorta | ivc
    return {
        "fat": (body & ~wall & ~inside) | (inside & ~organs & ~bone & ~paraspinal & ~bowel_region),
        "muscle": ((wall | paraspinal) & ~bone) | (bowel_region & ~bowel_air & ~fluid),
        "lung": lungs & ~bone,
        "blood": (aorta | ivc) & ~bone,
        "spleen": spleen & ~kidneys,
        "kidney": kidneys & ~bone,
        "fluid": fluid & ~bone,
        "bowel_air": bowel_air & ~bone,
        "trabecular": bones["trabecular"],
        "cortical": bones["cortical"],
        "inside": inside & ~bone & ~lungs & ~organs,
    }


def erode_xy(mask: np.ndarray) -> np.ndarray:
    """One-voxel in-plane erosion (the rib cortex is the rim this removes)."""
    return ndimage.binary_erosion(mask, structure=np.ones((3, 3, 1), bool))


def _liver(
    rng: np.random.Generator,
    points: np.ndarray,
    tissue: dict[str, np.ndarray],
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    p: CtParams,
) -> tuple[np.ndarray, np.ndarray]:
    """``(liver incl. lesion, lesion)``: a right-upper-quadrant organ and a blob inside it."""
    s = p.liver_scale
    r_liver = np.minimum(
        fields.ellipsoid_radius(points, [55 * s, -5 * s, 15], (80 * s, 70 * s, 85)),
        fields.ellipsoid_radius(points, [5 * s, 25 * s, 35], (45 * s, 35 * s, 45)),
    )
    r_liver = r_liver + 0.06 * fields.smooth_noise(rng, shape, spacing, 15.0)
    liver = (r_liver < 1.0) & tissue["inside"]
    # Lesion centre: liver voxel at least a radius + 5 mm from its surface, 2 slices from the ends.
    k = np.arange(shape[2])[None, None, :]
    depth = (1.0 - r_liver) * 70.0 * s
    candidates = liver & (depth > p.lesion_radius + 5.0) & (k >= 2) & (k < shape[2] - 2)
    idx = np.flatnonzero(candidates)
    if idx.size == 0:  # small custom grids: any liver voxel
        idx = np.flatnonzero(liver)
    centre = points.reshape(-1, 3)[idx[rng.integers(idx.size)]]
    r_lesion = fields.random_blob_radius(rng, points, centre, p.lesion_radius, 2)
    r_lesion = r_lesion + 0.12 * fields.smooth_noise(rng, shape, spacing, 4.0)
    lesion = (r_lesion < 1.0) & liver
    return liver, lesion
