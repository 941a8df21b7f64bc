"""Augmentation: image/mask alignment (CPU and batched), reproducibility, CPU vs batched statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.data.augmentation import BatchAugmenter, build_augmentation
from medseg.data.config import AugmentationConfig

OFF = {
    name: {"prob": 0.0}
    for name in (
        "elastic",
        "rotation",
        "scaling",
        "gamma",
        "noise",
        "blur",
        "brightness",
        "contrast",
        "lowres",
    )
}
OFF["flips"] = {"prob": [0.0, 0.0]}
OFF["gamma"] = {"prob": 0.0, "invert_prob": 0.0}


def only(**changes) -> AugmentationConfig:
    """Config with every transform off except ``changes``."""
    return AugmentationConfig.model_validate({**OFF, **changes})


def blob_image(size=96, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth image ``(1, H, W)`` and its mask = threshold of the image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    img = np.zeros((size, size), np.float32)
    for _ in range(6):
        cy, cx = rng.uniform(0.2 * size, 0.8 * size, 2)
        img += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * (size / 12) ** 2))
    image = torch.from_numpy(img)[None]
    return image, (image[0] > 0.5).long()


def assert_aligned(image: torch.Tensor, label: torch.Tensor) -> None:
    """``label`` ``[B, H, W]`` equals threshold(``image`` ``[B, H, W]``) except within 2 pixels
    of the mask boundary (nearest vs bilinear sampling may differ by one pixel there)."""
    pool = torch.nn.functional.max_pool2d
    lab = label[:, None].float()
    band = (pool(lab, 5, 1, 2) != -pool(-lab, 5, 1, 2))[:, 0]
    wrong = (image > 0.5).long() != label
    agree = 1 - wrong.float().mean(dim=(1, 2))
    assert torch.all(agree > 0.98), agree
    assert int((wrong & ~band).sum()) == 0, "mask and image disagree away from the boundary"


ELASTIC = {"prob": 1.0, "magnitude": [3.0, 6.0], "spacing": 24}


def test_cpu_elastic_keeps_mask_aligned_with_image():
    image, mask = blob_image()
    aug = build_augmentation(only(elastic=ELASTIC), seed=0)
    for seed in range(4):
        out = aug.set_random_state(seed)({"image": image, "label": mask})
        assert out["label"].dtype == torch.int64
        assert out["image"].shape == image.shape
        moved = (out["label"] != mask).float().mean()
        assert moved > 0.01  # it really deformed ...
        assert_aligned(out["image"], out["label"][None])  # ... and the mask still matches


def test_batched_elastic_and_affine_keep_mask_aligned():
    image, mask = blob_image()
    cfg = only(
        elastic=ELASTIC,
        rotation={"prob": 1.0, "degrees": 30},
        scaling={"prob": 1.0, "range": [0.8, 1.2]},
        flips={"prob": [0.5, 0.5]},
    )
    img, lab = BatchAugmenter(cfg, seed=0)(
        image[None].repeat(8, 1, 1, 1), mask[None].repeat(8, 1, 1)
    )
    assert img.shape == (8, 1, 96, 96)
    assert lab.shape == (8, 96, 96)
    assert lab.dtype == torch.int64
    assert set(lab.unique().tolist()) <= {0, 1}
    moved = (lab != mask).float().mean(dim=(1, 2))
    assert torch.all(moved > 0.01), moved
    assert_aligned(img[:, 0], lab)
    assert len({x.numpy().tobytes() for x in lab}) == 8  # one field per sample


def test_reproducible_with_seed_and_label_values_preserved():
    image, mask = blob_image()
    mask = mask * 3  # class 3 stays class 3 (nearest), never blended
    cfg = AugmentationConfig()  # defaults: everything on
    a = build_augmentation(cfg, seed=7).set_random_state(11)({"image": image, "label": mask})
    b = build_augmentation(cfg, seed=1).set_random_state(11)({"image": image, "label": mask})
    assert torch.equal(a["image"], b["image"])
    assert torch.equal(a["label"], b["label"])
    assert set(a["label"].unique().tolist()) <= {0, 3}
    x1 = BatchAugmenter(cfg, seed=3)(image[None].repeat(4, 1, 1, 1), mask[None].repeat(4, 1, 1))
    x2 = BatchAugmenter(cfg, seed=3)(image[None].repeat(4, 1, 1, 1), mask[None].repeat(4, 1, 1))
    assert torch.equal(x1[0], x2[0])
    assert torch.equal(x1[1], x2[1])
    assert set(x1[1].unique().tolist()) <= {0, 3}
    assert build_augmentation(cfg.model_copy(update={"backend": "batched"})) is None
    assert build_augmentation(cfg.model_copy(update={"enabled": False})) is None


def _coordinate_image(size=96) -> torch.Tensor:
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32),
        torch.arange(size, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([yy, xx])  # bilinear sampling of a linear ramp returns the source coordinate


def _displacements_cpu(cfg, n, size=96):
    coords = _coordinate_image(size)
    aug = build_augmentation(cfg, seed=0)
    out = []
    for seed in range(n):
        res = aug.set_random_state(seed)(
            {"image": coords, "label": torch.zeros(size, size, dtype=torch.long)}
        )
        out.append(res["image"] - coords)
    return torch.stack(out)


def _displacements_batched(cfg, n, size=96):
    coords = _coordinate_image(size)
    img, _ = BatchAugmenter(cfg, seed=0)(
        coords[None].repeat(n, 1, 1, 1), torch.zeros(n, size, size, dtype=torch.long)
    )
    return img - coords


@pytest.mark.parametrize(
    "changes",
    [
        {"elastic": ELASTIC},
        {"rotation": {"prob": 1.0, "degrees": 20}},
        {"scaling": {"prob": 1.0, "range": [0.8, 1.25]}},
        {"flips": {"prob": [0.5, 0.0]}},
    ],
    ids=["elastic", "rotation", "scaling", "flip"],
)
def test_batched_path_is_statistically_equivalent_to_cpu(changes):
    cfg, n = only(**changes), 48
    inner = (slice(None), slice(None), slice(24, 72), slice(24, 72))  # away from padded borders
    cpu = _displacements_cpu(cfg, n)[inner].norm(dim=1).mean(dim=(1, 2))
    gpu = _displacements_batched(cfg, n)[inner].norm(dim=1).mean(dim=(1, 2))
    # mean displacement (pixels) per sample: same distribution within sampling error
    # (two-sample z-test on the means at 4 standard errors; spreads within a factor 1.6)
    assert cpu.mean() > 0.5
    stderr = float((cpu.var() / n + gpu.var() / n).sqrt())
    assert abs(float(cpu.mean() - gpu.mean())) < 4 * stderr + 0.05, (cpu.mean(), gpu.mean(), stderr)
    assert 1 / 1.6 < float(gpu.std() / cpu.std()) < 1.6, (cpu.std(), gpu.std())


def test_batched_intensity_transforms_change_image_not_label():
    image, mask = blob_image()
    cfg = only(
        gamma={"prob": 1.0},
        noise={"prob": 1.0, "std": 0.1},
        blur={"prob": 1.0},
        brightness={"prob": 1.0},
        contrast={"prob": 1.0},
    )
    img, lab = BatchAugmenter(cfg, seed=0)(
        image[None].repeat(4, 1, 1, 1), mask[None].repeat(4, 1, 1)
    )
    assert torch.equal(lab, mask[None].repeat(4, 1, 1))
    assert not torch.allclose(img, image[None].repeat(4, 1, 1, 1), atol=1e-3)
    assert torch.isfinite(img).all()
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        BatchAugmenter(cfg)(image, mask)


def test_zoom_direction_matches_between_paths():
    cfg = only(scaling={"prob": 1.0, "range": [1.25, 1.25]})  # > 1 enlarges the anatomy
    cpu = _displacements_cpu(cfg, 1)[0, :, 24:72, 24:72]
    batched = _displacements_batched(cfg, 1)[0, :, 24:72, 24:72]
    torch.testing.assert_close(batched, cpu, atol=0.05, rtol=0)
    # enlarging: the output pixel right of centre samples the source nearer the centre
    assert float(cpu[1, 24, 40]) < 0


def test_reseeding_one_pipeline_replays_every_draw():
    """The dataset re-seeds one shared pipeline per item: the same seed must replay the same
    augmentation however many samples were drawn in between (resume and DataLoader workers
    depend on it; MONAI dictionary transforms draw from their wrapped array transform)."""
    image, mask = blob_image()
    aug = build_augmentation(AugmentationConfig(), seed=0)
    first = aug.set_random_state(11)({"image": image, "label": mask})
    for seed in (1, 2, 3):
        aug.set_random_state(seed)({"image": image, "label": mask})
    again = aug.set_random_state(11)({"image": image, "label": mask})
    assert torch.equal(first["image"], again["image"])
    assert torch.equal(first["label"], again["label"])
    other = aug.set_random_state(12)({"image": image, "label": mask})
    assert not torch.equal(first["image"], other["image"])


@pytest.mark.parametrize("backend", ["cpu", "batched"])
def test_inverted_gamma_keeps_mean_and_std_and_lowres_blurs_detail(backend):
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.normal(0, 1, (1, 64, 64)).astype(np.float32))
    label = torch.zeros(64, 64, dtype=torch.long)
    inverted = only(gamma={"prob": 0.0, "invert_prob": 1.0, "range": [1.5, 1.5]})
    lowres = only(lowres={"prob": 1.0, "range": [0.5, 0.5]})
    outs = []
    for cfg in (inverted, lowres):
        if backend == "cpu":
            outs.append(build_augmentation(cfg, seed=0)({"image": image, "label": label})["image"])
        else:
            outs.append(BatchAugmenter(cfg, seed=0)(image[None], label[None])[0][0])
    inv, low = (torch.as_tensor(o).float() for o in outs)
    assert not torch.allclose(inv, image)
    assert float(inv.mean()) == pytest.approx(float(image.mean()), abs=1e-3)
    assert float(inv.std()) == pytest.approx(float(image.std()), rel=1e-2)
    # gamma > 1 on the negated image stretches the dark end: a tail to low values (skew < 0),
    # the mirror of plain gamma; both backends must agree on the direction
    skew = lambda x: float(((x - x.mean()) ** 3).mean())  # noqa: E731
    assert skew(inv) < skew(image) - 0.1

    # nearest down by 2 then bilinear up: neighbouring pixels become correlated
    def corr(x):
        return float(
            torch.corrcoef(torch.stack([x[0, :, :-1].flatten(), x[0, :, 1:].flatten()]))[0, 1]
        )

    assert corr(low.reshape(1, 64, 64)) > corr(image) + 0.3


def test_batched_gamma_and_noise_match_their_reference_formulas():
    """The fast forms (exp-log gamma, two-pass std, noise only on drawn samples) give what the
    plain formulas give, sample by sample."""
    torch.manual_seed(0)
    image = torch.randn(8, 3, 32, 32) * 2 + 1
    low, high = 0.7, 1.5
    for invert in (False, True):
        aug = BatchAugmenter(only(gamma={"prob": 0.5, "invert_prob": 0.5, "range": [low, high]}), 3)
        out = image.clone()
        aug._gamma(out, 0.5, invert=invert)  # in place
        draws = torch.Generator().manual_seed(3)
        on = torch.rand(8, generator=draws) < 0.5
        gamma = low + (high - low) * torch.rand(8, generator=draws)
        assert 0 < int(on.sum()) < 8
        for i in range(8):
            x = -image[i] if invert else image[i]
            lo, span = x.min(), x.max() - x.min()
            ref = ((x - lo) / span).pow(gamma[i]) * span + lo
            if invert:
                ref = -((ref - ref.mean()) / ref.std() * x.std() + x.mean())
            torch.testing.assert_close(out[i], ref if on[i] else image[i], rtol=1e-4, atol=1e-4)
    noisy = BatchAugmenter(only(noise={"prob": 0.5, "std": 0.5}), seed=1).intensity(image)
    changed = (noisy != image).flatten(1).any(1)
    assert 0 < int(changed.sum()) < 8  # drawn samples only, the rest untouched
    assert float((noisy - image)[changed].std()) > 0.01


@pytest.mark.parametrize(("size", "spacing"), [(8, 24.0), (11, 32.0), (7, 12.5)])
def test_elastic_upsampling_matrix_equals_bicubic_interpolate(size, spacing):
    from medseg.data.augmentation import bicubic_upsampling

    coarse = torch.randn(3, 2, size, size + 2)
    expected = torch.nn.functional.interpolate(
        coarse, scale_factor=spacing, mode="bicubic", align_corners=False,
        recompute_scale_factor=True,
    )  # fmt: skip
    rows, cols = bicubic_upsampling(size, spacing), bicubic_upsampling(size + 2, spacing)
    torch.testing.assert_close(rows @ coarse @ cols.T, expected, rtol=0, atol=1e-5)
