"""Synthetic brain MR (FLAIR-like) with a glioma-like tumour: core (label 1) + oedema (label 2).

The head is built in world millimetres (RAS+) around a head centre, then sampled on an
oblique grid stored like a DICOM axial series (``i`` -> L, ``j`` -> P, ``k`` -> S, tilted by
a few degrees). Intensities imitate a raw 1.5 T FLAIR magnitude image (0..~1500): CSF is
suppressed (dark), grey matter is a little brighter than white matter, oedema is bright, the
tumour core is heterogeneous with a darker necrotic centre. A smooth multiplicative bias
field and Rician noise finish the scanner look.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from medseg.io.volume import Volume
from medseg.synthetic import fields

logger = logging.getLogger(__name__)

BRAIN_LABELS = {"background": 0, "tumour_core": 1, "oedema": 2}

# Approximate FLAIR signal per tissue (arbitrary scanner units, like a 1.5 T magnitude image).
_FLAIR = {"scalp": 720.0, "skull": 70.0, "csf": 130.0, "gm": 600.0, "wm": 470.0, "deep_gm": 550.0}


@dataclasses.dataclass(frozen=True)
class BrainParams:
    """Per-case anatomy and tumour parameters, drawn from the case's Generator."""

    head_scale: float
    head_shift: np.ndarray  # mm, RAS
    tilt_deg: tuple[float, float]  # oblique acquisition: rotation about LR, then AP axis
    ventricle_scale: float
    core_radius: float  # mm
    core_lobes: int
    necrosis: float  # fraction of the core radius that is necrotic (0 = solid)
    oedema_margin: float  # mm beyond the core
    oedema_ratio: float  # oedema signal / white-matter signal
    core_signal: float
    noise_sigma: float
    bias_strength: float

    @classmethod
    def draw(cls, rng: np.random.Generator) -> BrainParams:
        return cls(
            head_scale=float(rng.uniform(0.92, 1.05)),
            head_shift=rng.uniform(-6.0, 6.0, 3) * np.array([1.0, 1.0, 0.5]),
            tilt_deg=(float(rng.uniform(-8.0, 8.0)), float(rng.uniform(-3.0, 3.0))),
            ventricle_scale=float(rng.uniform(0.8, 1.35)),
            core_radius=float(rng.uniform(8.5, 16.0)),
            core_lobes=int(rng.integers(2, 5)),
            necrosis=float(rng.choice([0.0, rng.uniform(0.3, 0.65)])),
            oedema_margin=float(rng.uniform(6.0, 18.0)),
            oedema_ratio=float(rng.uniform(1.55, 2.1)),
            core_signal=float(rng.uniform(640.0, 820.0)),
            noise_sigma=float(rng.uniform(10.0, 22.0)),
            bias_strength=float(rng.uniform(0.08, 0.2)),
        )


def make_brain_mr(
    seed: int | np.random.Generator = 0,
    shape: tuple[int, int, int] = (96, 112, 30),
    spacing: tuple[float, float, float] = (2.0, 2.0, 4.0),
) -> tuple[Volume, Volume]:
    """One synthetic FLAIR-like brain MR and its tumour mask.

    Args:
        seed: integer seed (or a Generator) - the same seed gives identical arrays.
        shape: grid size ``(I, J, K)``; axes point to L, P, S (LPS storage, slightly oblique).
        spacing: voxel size in mm along ``i, j, k`` (anisotropic: thick axial slices).

    Returns:
        ``(image, label)``: image ``int16`` (FLAIR-like units, 0..~1500), label ``uint8``
        (0 background, 1 tumour core, 2 oedema), both on the same RAS+ affine.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    p = BrainParams.draw(rng)
    head_centre = np.array([0.0, 10.0, 15.0]) + p.head_shift
    tilt = fields.rotation_matrix(p.tilt_deg[0], p.tilt_deg[1], 0.0)
    # FOV from the temporal lobes to the vertex: centre the slab 20 mm above the head centre.
    grid_centre = head_centre + tilt @ np.array([0.0, 0.0, 20.0])
    affine = fields.lps_grid_affine(shape, spacing, grid_centre, rotation_lps=tilt)
    # Head-centred world mm: the anatomy is axis-aligned in RAS, the acquisition grid is oblique.
    points = fields.world_coordinates(shape, affine) - head_centre.astype(np.float32)

    tissue = _head_tissues(rng, points, shape, spacing, p)
    core, necrotic, oedema = _tumour(rng, points, tissue, shape, spacing, p)

    image = _flair_signal(rng, tissue, core, necrotic, oedema, shape, spacing, p)
    label = np.zeros(shape, np.uint8)
    label[oedema] = BRAIN_LABELS["oedema"]
    label[core] = BRAIN_LABELS["tumour_core"]
    meta = {
        "modality": "MR",
        "series_description": "Synthetic FLAIR (medseg phantom)",
        "synthetic": True,
    }
    logger.debug("brain phantom: core %d voxels, oedema %d voxels", core.sum(), oedema.sum())
    return (
        Volume(image, affine, dict(meta)),
        Volume(label, affine.copy(), {"modality": "SEG", "synthetic": True}),
    )


def _head_tissues(
    rng: np.random.Generator,
    points: np.ndarray,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    p: BrainParams,
) -> dict[str, np.ndarray]:
    """Boolean masks of scalp, skull, CSF, grey/white/deep grey matter (head-centred mm)."""
    s = p.head_scale
    semi = np.array([70.0, 88.0, 76.0]) * s
    outline = fields.smooth_noise(rng, shape, spacing, 18.0)
    r_head = fields.ellipsoid_radius(points, np.zeros(3), tuple(semi)) + 0.025 * outline
    depth = (1.0 - r_head) * float(np.mean(semi))  # approx. mm below the skin
    head = depth > 0
    scalp = head & (depth < 5.0)
    skull = head & (depth >= 5.0) & (depth < 11.0)
    brain = depth >= 13.0
    csf = head & (depth >= 11.0) & ~brain

    # Cortex: a 3-5 mm ribbon with gyri (band-pass noise moves the grey/white border) and
    # sulci (thin CSF clefts where another band-pass field peaks).
    gyri = fields.smooth_noise(rng, shape, spacing, 3.0) - 0.5 * fields.smooth_noise(
        rng, shape, spacing, 8.0
    )
    sulci_field = fields.smooth_noise(rng, shape, spacing, 2.2)
    wm_border = 13.0 + 4.5 + 2.5 * gyri
    grey = brain & (depth < wm_border)
    sulci = brain & (depth < 13.0 + 9.0) & (sulci_field > 1.15)
    # Interhemispheric fissure: midline CSF except where the corpus callosum joins the halves.
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    fissure = brain & (np.abs(x) < 1.5) & ((z > 32.0 * s) | (np.abs(y) > 38.0 * s) | (z < -20.0))
    deep = np.zeros(shape, bool)
    for side in (-1.0, 1.0):
        thal = fields.ellipsoid_radius(
            points, np.array([side * 10.0, -10.0, 2.0]) * s, (9.0, 14.0, 9.0)
        )
        lent = fields.ellipsoid_radius(
            points, np.array([side * 23.0, 6.0, 4.0]) * s, (6.0, 16.0, 11.0)
        )
        deep |= brain & ((thal < 1.0) | (lent < 1.0))
    ventricles = _ventricles(points, s * p.ventricle_scale) & brain
    csf = csf | sulci | fissure | ventricles
    white = brain & ~grey & ~deep & ~csf
    return {
        "scalp": scalp,
        "skull": skull,
        "csf": csf,
        "gm": grey & ~csf & ~deep,
        "deep_gm": deep & ~csf,
        "wm": white,
        "brain": brain,
        "depth": depth,
    }


def _ventricles(points: np.ndarray, scale: float) -> np.ndarray:
    """Lateral ventricles (two curved, outward-splayed lobes) and the third ventricle."""
    mask = np.zeros(points.shape[:-1], bool)
    for side in (-1.0, 1.0):
        yaw = fields.rotation_matrix(0.0, 0.0, side * 12.0)
        body = fields.ellipsoid_radius(
            points, np.array([side * 8.0, 2.0, 16.0]) * scale, (4.5 * scale, 26.0, 7.0), yaw
        )
        horn = fields.ellipsoid_radius(
            points, np.array([side * 10.0, -24.0, 6.0]) * scale, (4.0 * scale, 9.0, 12.0)
        )
        mask |= (body < 1.0) | (horn < 1.0)
    third = fields.ellipsoid_radius(points, np.array([0.0, -4.0, 0.0]), (1.8 * scale, 11.0, 8.0))
    return mask | (third < 1.0)


def _tumour(
    rng: np.random.Generator,
    points: np.ndarray,
    tissue: dict[str, np.ndarray],
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    p: BrainParams,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Masks ``(core, necrotic, oedema)``; core and oedema are disjoint, necrotic within core."""
    # Centre: any parenchyma voxel deep enough that the core stays inside the brain and whose
    # slab keeps a margin of two slices (so the whole core is visible in the volume).
    k = np.arange(shape[2])[None, None, :]
    parenchyma = tissue["wm"] | tissue["gm"]
    candidates = (
        parenchyma & (tissue["depth"] > 22.0 + p.core_radius) & (k >= 3) & (k < shape[2] - 3)
    )
    idx = np.flatnonzero(candidates)
    if idx.size == 0:  # very small custom grids: fall back to any parenchyma voxel
        idx = np.flatnonzero(parenchyma)
    centre = points.reshape(-1, 3)[idx[rng.integers(idx.size)]]
    r_core = fields.random_blob_radius(rng, points, centre, p.core_radius, p.core_lobes)
    r_core = r_core + 0.18 * fields.smooth_noise(rng, shape, spacing, 4.0)
    inside_brain = tissue["brain"] & ~tissue["csf"]
    core = (r_core < 1.0) & tissue["brain"]
    necrotic = core & (r_core < p.necrosis)
    # Oedema spreads along white matter (finger-like), less into cortex, never into CSF/bone.
    spread = r_core * p.core_radius - p.core_radius  # ~mm outside the core surface
    spread = spread + 4.0 * fields.smooth_noise(rng, shape, spacing, 5.0)
    spread = spread + np.where(tissue["gm"] | tissue["deep_gm"], 0.45 * p.oedema_margin, 0.0)
    oedema = inside_brain & (spread < p.oedema_margin) & ~core
    return core, necrotic, oedema


def _flair_signal(
    rng: np.random.Generator,
    tissue: dict[str, np.ndarray],
    core: np.ndarray,
    necrotic: np.ndarray,
    oedema: np.ndarray,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    p: BrainParams,
) -> np.ndarray:
    """FLAIR-like magnitude image (int16) from the tissue masks."""
    image = np.zeros(shape, np.float32)
    texture = 1.0 + 0.05 * fields.smooth_noise(rng, shape, spacing, 2.0)
    for name, value in _FLAIR.items():
        image[tissue[name]] = value
    image *= texture
    wm = _FLAIR["wm"]
    oedema_texture = 1.0 + 0.08 * fields.smooth_noise(rng, shape, spacing, 3.0)
    image[oedema] = (wm * p.oedema_ratio * oedema_texture)[oedema]
    core_texture = 1.0 + 0.14 * fields.smooth_noise(rng, shape, spacing, 1.8)
    image[core] = (p.core_signal * core_texture)[core]
    image[necrotic] = (0.5 * p.core_signal * core_texture)[necrotic]
    image = fields.partial_volume(image, spacing, fwhm_mm=2.5)
    bias = np.exp(p.bias_strength * fields.smooth_noise(rng, shape, spacing, 60.0))
    image = fields.rician_noise(rng, image * bias, p.noise_sigma)
    return np.clip(np.rint(image), 0, 32767).astype(np.int16)
