"""Training augmentation: a CPU path of MONAI dictionary transforms and a batched path on the device.

Both take ``image`` ``(C, H, W)`` float32 (batched: ``[B, C, H, W]``) and ``label`` ``(H, W)``
int64 (batched: ``[B, H, W]``). Spatial transforms move image and label with one shared
sampling grid (image bilinear, label nearest), so they stay aligned. Both paths draw the same
parameters from the same distributions (:class:`~medseg.data.config.AugmentationConfig`):
rotation, zoom, elastic (a coarse grid of ``N(0, 1) * magnitude`` pixel offsets every
``spacing`` pixels, bicubic-upsampled as in MONAI ``Rand2DElasticd``), flips, then Gaussian
noise, blur, brightness, contrast, low-resolution simulation, gamma and inverted gamma on the
image only (nnU-Net's set of augmentations).

Use the CPU path in DataLoader workers; on a GPU the per-sample CPU elastic deformation is
the bottleneck (~8 ms per 256x256 slice per core), so select ``backend: batched`` and apply
:class:`BatchAugmenter` to whole batches on the device.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medseg.data.config import AugmentationConfig


class Augmentation:
    """A seeded MONAI ``Compose`` over ``{"image": (C, H, W), "label": (H, W)}`` samples."""

    def __init__(self, cfg: AugmentationConfig, seed: int = 0) -> None:
        from monai.transforms import Compose, Randomizable

        self.cfg = cfg
        self.compose = Compose(_monai_transforms(cfg))
        self._randomizable = [
            t
            for t in _flatten(self.compose.transforms)
            if isinstance(t, (Randomizable, _Sometimes))
        ]
        for t in self._randomizable:
            if isinstance(t, Randomizable):
                # One RandomState object per transform, shared with the array transforms a
                # dictionary transform wraps (Rand2DElasticd draws from its inner
                # Rand2DElastic), so re-seeding ``t.R`` below re-seeds every draw.
                t.set_random_state(state=np.random.RandomState(0))
        self.set_random_state(seed)

    def set_random_state(self, seed: int) -> Augmentation:
        """Re-seed every random transform (the dataset does this per item).

        Re-seeds the transforms' existing ``RandomState`` objects: creating new ones (what
        ``Compose.set_random_state`` does) costs ~0.2 ms each, per sample.
        """
        seeds = np.random.default_rng(seed).integers(0, 2**31, len(self._randomizable))
        for transform, s in zip(self._randomizable, seeds, strict=True):
            transform.R.seed(int(s))
        return self

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        image = torch.as_tensor(sample["image"], dtype=torch.float32)
        label = torch.as_tensor(sample["label"])
        out = self.compose({"image": image, "label": label[None].float()})
        result = dict(sample)
        result["image"] = _plain(out["image"]).float().contiguous()
        result["label"] = _plain(out["label"])[0].round().long().contiguous()
        return result


def _flatten(transforms: Any) -> list[Any]:
    out = []
    for t in transforms:
        out.append(t)
        if isinstance(t, _Sometimes):
            out.append(t.transform)
    return out


class _Sometimes:
    """Apply ``transform`` with probability ``prob``, else pass the data through untouched.

    MONAI's ``Rand2DElasticd`` resamples image and label with an identity grid even when its
    own coin says "no" (~10 ms per sample); deciding here skips that work.
    """

    def __init__(self, transform: Any, prob: float) -> None:
        self.transform, self.prob = transform, prob
        self.R = np.random.RandomState()

    def __call__(self, data: dict[str, Any]) -> dict[str, Any]:
        if self.prob <= 0 or self.R.random_sample() >= self.prob:
            return data
        return self.transform(data)


def _plain(value: Any) -> torch.Tensor:
    tensor = torch.as_tensor(value)
    return tensor.as_tensor() if hasattr(tensor, "as_tensor") else tensor  # MetaTensor -> Tensor


def _monai_transforms(cfg: AugmentationConfig) -> list[Any]:
    from monai import transforms as mt

    keys, modes = ["image", "label"], ("bilinear", "nearest")
    spatial: list[Any] = [
        mt.RandRotated(
            keys,
            range_x=math.radians(cfg.rotation.degrees),
            prob=cfg.rotation.prob,
            mode=modes,
            padding_mode="zeros",
            keep_size=True,
        ),
        mt.RandZoomd(
            keys,
            prob=cfg.scaling.prob,
            min_zoom=cfg.scaling.range[0],
            max_zoom=cfg.scaling.range[1],
            mode=modes,
            padding_mode="constant",
            keep_size=True,
        ),
        _Sometimes(
            mt.Rand2DElasticd(
                keys,
                spacing=(cfg.elastic.spacing, cfg.elastic.spacing),
                magnitude_range=cfg.elastic.magnitude,
                prob=1.0,
                mode=modes,
                padding_mode="zeros",
            ),
            cfg.elastic.prob,
        ),
        mt.RandFlipd(keys, prob=cfg.flips.prob[0], spatial_axis=0),
        mt.RandFlipd(keys, prob=cfg.flips.prob[1], spatial_axis=1),
    ]
    b, c = cfg.brightness.range, cfg.contrast.range
    intensity = [
        mt.RandGaussianNoised("image", prob=cfg.noise.prob, mean=0.0, std=cfg.noise.std),
        mt.RandGaussianSmoothd(
            "image", sigma_x=cfg.blur.sigma, sigma_y=cfg.blur.sigma, prob=cfg.blur.prob
        ),
        mt.RandScaleIntensityd("image", factors=(b[0] - 1, b[1] - 1), prob=cfg.brightness.prob),
        mt.RandScaleIntensityFixedMeand(
            "image", factors=(c[0] - 1, c[1] - 1), prob=cfg.contrast.prob
        ),
        mt.RandSimulateLowResolutiond(
            "image",
            prob=cfg.lowres.prob,
            zoom_range=cfg.lowres.range,
            downsample_mode="nearest",
            upsample_mode="bilinear",
        ),
        mt.RandAdjustContrastd("image", gamma=cfg.gamma.range, prob=cfg.gamma.prob),
        mt.RandAdjustContrastd(
            "image",
            gamma=cfg.gamma.range,
            prob=cfg.gamma.invert_prob,
            invert_image=True,
            retain_stats=True,
        ),
    ]
    return spatial + intensity


def build_augmentation(cfg: AugmentationConfig, seed: int = 0) -> Augmentation | None:
    """The CPU (DataLoader-side) augmentation for ``cfg``; ``None`` when disabled or when the
    batched backend does the work on the device (``auto`` is resolved by the pipeline, see
    :func:`medseg.data.pipeline.resolved_augmentation`; here it means CPU)."""
    if not cfg.enabled or cfg.backend == "batched":
        return None
    return Augmentation(cfg, seed)


def _mean_std(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean and (unbiased) std; two plain reductions, ~10x faster on CPU than
    ``torch.std`` over several dimensions."""
    mean = x.mean(dim=dims, keepdim=True)
    n = math.prod(x.shape[d] for d in dims)
    var = (x - mean).square().sum(dim=dims, keepdim=True) / max(n - 1, 1)
    return mean, var.sqrt()


def control_grid_shape(size: int, spacing: float) -> int:
    """Control points along an axis of ``size`` pixels (MONAI ``create_control_grid``)."""
    if size % 2 == 0:
        return int(math.ceil((size - 1.0) / (2.0 * spacing) + 0.5) * 2 + 2)
    return int(math.ceil((size - 1.0) / (2.0 * spacing)) * 2 + 3)


@functools.lru_cache(maxsize=32)
def bicubic_upsampling(size: int, spacing: float) -> torch.Tensor:
    """The ``(floor(size * spacing), size)`` matrix ``M`` with ``M @ x`` equal to
    ``F.interpolate(x, scale_factor=spacing, mode="bicubic", align_corners=False,
    recompute_scale_factor=True)`` along one axis."""
    unit = torch.eye(size)[:, None, :, None]  # one unit impulse per control point
    out = math.floor(size * spacing)
    up = F.interpolate(unit, size=(out, 1), mode="bicubic", align_corners=False)
    return up[:, 0, :, 0].T.contiguous()


class BatchAugmenter:
    """Elastic + affine deformation and intensity augmentation of a whole batch on its device.

    One displacement field and one affine per sample, applied with a single
    ``F.grid_sample`` (image bilinear, label nearest). Parameters are drawn from a
    ``torch.Generator`` seeded with ``seed`` (CPU, so the stream is the same on any device).

    Args:
        cfg: the augmentation config (same meaning as for the CPU path).
        seed: seed of the parameter stream.
    """

    def __init__(self, cfg: AugmentationConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(seed)

    def _uniform(self, n: int, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=self.generator)

    def _coin(self, n: int, prob: float) -> torch.Tensor:
        return torch.rand(n, generator=self.generator) < prob

    @torch.no_grad()
    def __call__(
        self, image: torch.Tensor, label: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``image`` ``[B, C, H, W]`` float, ``label`` ``[B, H, W]`` int -> same shapes and device."""
        if image.ndim != 4 or label.shape != (image.shape[0], *image.shape[2:]):
            raise ValueError(
                f"expected image [B, C, H, W] and label [B, H, W], got {tuple(image.shape)} and {tuple(label.shape)}"
            )
        if not self.cfg.enabled:
            return image, label
        grid = self.sampling_grid(image.shape[0], image.shape[2], image.shape[3], image.device)
        image = F.grid_sample(
            image.float(),
            grid.to(image.dtype if image.is_floating_point() else torch.float32),
            mode="bilinear",
            padding_mode="zeros",
            align_corners=False,
        )
        label = (
            F.grid_sample(
                label[:, None].float(),
                grid.float(),
                mode="nearest",
                padding_mode="zeros",
                align_corners=False,
            )[:, 0]
            .round()
            .to(torch.int64)
        )
        return self._intensity_(image), label  # grid_sample's output: ours to change

    def displacement(
        self, batch: int, height: int, width: int, device: torch.device
    ) -> torch.Tensor:
        """Elastic displacement ``[B, 2, H, W]`` in pixels (dy, dx), zero for samples not drawn."""
        e = self.cfg.elastic
        on = self._coin(batch, e.prob)
        mag = self._uniform(batch, *e.magnitude) * on
        gh, gw = control_grid_shape(height, e.spacing), control_grid_shape(width, e.spacing)
        coarse = torch.randn(batch, 2, gh, gw, generator=self.generator) * mag[:, None, None, None]
        disp = torch.zeros(batch, 2, height, width, device=device)
        if not bool(on.any()):
            return disp
        # only the samples that drew an elastic deformation; bicubic upsampling is separable,
        # so it is two small matrix products (30x faster on CPU than F.interpolate, equal to
        # 1e-6: tests/data/test_data_augmentation.py)
        idx = on.nonzero()[:, 0]
        rows = bicubic_upsampling(gh, e.spacing).to(device)
        cols = bicubic_upsampling(gw, e.spacing).to(device)
        fine = rows @ coarse[idx].to(device) @ cols.T
        top, left = (fine.shape[2] - height) // 2, (fine.shape[3] - width) // 2
        disp[idx.to(device)] = fine[:, :, top : top + height, left : left + width]
        return disp

    def sampling_grid(
        self, batch: int, height: int, width: int, device: torch.device
    ) -> torch.Tensor:
        """Normalised ``grid_sample`` grid ``[B, H, W, 2]`` (x, y) for rotation, zoom, elastic, flips."""
        c = self.cfg
        angle = torch.deg2rad(self._uniform(batch, -c.rotation.degrees, c.rotation.degrees))
        angle = angle * self._coin(batch, c.rotation.prob)
        scale = torch.where(
            self._coin(batch, c.scaling.prob),
            self._uniform(batch, *c.scaling.range),
            torch.ones(batch),
        )
        flip_y, flip_x = self._coin(batch, c.flips.prob[0]), self._coin(batch, c.flips.prob[1])
        disp = self.displacement(batch, height, width, device)
        ys = torch.arange(height, device=device, dtype=torch.float32) - (height - 1) / 2
        xs = torch.arange(width, device=device, dtype=torch.float32) - (width - 1) / 2
        yy, xx = torch.meshgrid(ys, xs, indexing="ij")
        sy = torch.where(flip_y.to(device), -1.0, 1.0)[:, None, None]
        sx = torch.where(flip_x.to(device), -1.0, 1.0)[:, None, None]
        py, px = yy * sy + disp[:, 0], xx * sx + disp[:, 1]  # output pixel -> pre-flip, deformed
        cos, sin = (
            torch.cos(angle).to(device)[:, None, None],
            torch.sin(angle).to(device)[:, None, None],
        )
        inv_s = (1.0 / scale).to(device)[:, None, None]
        src_y = (cos * py - sin * px) * inv_s + (height - 1) / 2
        src_x = (sin * py + cos * px) * inv_s + (width - 1) / 2
        # pixel index -> normalised coordinate for align_corners=False
        return torch.stack([(2 * src_x + 1) / width - 1, (2 * src_y + 1) / height - 1], dim=-1)

    def intensity(self, image: torch.Tensor) -> torch.Tensor:
        """Noise, blur, brightness, contrast, low resolution, gamma, inverted gamma per sample
        (same order as the CPU path); ``image`` is left as it was."""
        return self._intensity_(image.clone())

    def _intensity_(self, image: torch.Tensor) -> torch.Tensor:
        """:meth:`intensity` in place: each transform rewrites only the samples that drew it
        (a full-batch pass per transform was half of the augmentation's time on a CPU)."""
        c, b = self.cfg, image.shape[0]
        dev = image.device
        noise_std = self._uniform(b, 0.0, c.noise.std) * self._coin(b, c.noise.prob)
        if bool((noise_std > 0).any()):
            noise_seed = int(torch.randint(2**62, (1,), generator=self.generator))
            gen = torch.Generator(device=dev).manual_seed(noise_seed)
            idx = (noise_std > 0).nonzero()[:, 0]
            noise = torch.randn(
                (len(idx), *image.shape[1:]), generator=gen, device=dev, dtype=image.dtype
            )
            scale = noise_std[idx].to(dev, image.dtype).view(-1, 1, 1, 1)
            image.index_add_(0, idx.to(dev), noise * scale)
        self._blur(image)
        for transform in (c.brightness, c.contrast):
            on = self._coin(b, transform.prob)
            factor = self._uniform(b, *transform.range)
            if not bool(on.any()):
                continue
            idx = on.nonzero()[:, 0].to(dev)
            f = factor[on].to(dev, image.dtype).view(-1, 1, 1, 1)
            sub = image[idx]
            if transform is c.brightness:
                image[idx] = sub * f
            else:  # contrast: around each sample's mean
                mean = sub.mean(dim=(1, 2, 3), keepdim=True)
                image[idx] = (sub - mean) * f + mean
        self._lowres(image)
        self._gamma(image, c.gamma.prob, invert=False)
        self._gamma(image, c.gamma.invert_prob, invert=True)
        return image

    def _gamma(self, image: torch.Tensor, prob: float, invert: bool) -> None:
        """Gamma on each drawn sample rescaled to [0, 1], in place; ``invert``: on the negated
        image, then negated back with its mean and std restored (MONAI ``invert_image`` +
        ``retain_stats``)."""
        b, dev = image.shape[0], image.device
        on = self._coin(b, prob)
        gamma = self._uniform(b, *self.cfg.gamma.range)
        if not bool(on.any()):
            return
        idx = on.nonzero()[:, 0].to(dev)
        sub = -image[idx] if invert else image[idx]
        dims = (1, 2, 3)
        lo = sub.amin(dim=dims, keepdim=True)
        span = (sub.amax(dim=dims, keepdim=True) - lo).clamp_min(1e-7)
        g = gamma[on].to(dev).view(-1, 1, 1, 1)
        # exp(g log x) rather than pow: 4x faster on CPU for a per-sample exponent; x = 0
        # gives exp(-inf) = 0 as pow does (g > 0)
        out = torch.exp(torch.log(((sub - lo) / span).clamp(0, 1)) * g) * span + lo
        if invert:
            mean, std = _mean_std(sub, dims)
            new_mean, new_std = _mean_std(out, dims)
            out = -((out - new_mean) / new_std.clamp_min(1e-8) * std + mean)
        image[idx] = out

    def _lowres(self, image: torch.Tensor) -> None:
        """Nearest down-sampling by a drawn zoom, bilinear back up, per drawn sample, in place."""
        c, b = self.cfg.lowres, image.shape[0]
        on = self._coin(b, c.prob)
        zoom = self._uniform(b, *c.range)
        if not bool(on.any()):
            return
        h, w = image.shape[2:]
        # a loop over the drawn samples (a quarter of the batch): each has its own size
        for i in on.nonzero()[:, 0].tolist():
            small = (max(1, round(h * float(zoom[i]))), max(1, round(w * float(zoom[i]))))
            down = F.interpolate(image[i : i + 1], size=small, mode="nearest")
            image[i : i + 1] = F.interpolate(
                down, size=(h, w), mode="bilinear", align_corners=False
            )

    def _blur(self, image: torch.Tensor) -> None:
        """Gaussian blur with a drawn sigma per axis, per drawn sample, in place."""
        c, b = self.cfg.blur, image.shape[0]
        on = self._coin(b, c.prob)
        sig = torch.stack([self._uniform(b, *c.sigma), self._uniform(b, *c.sigma)], dim=1)
        if not bool(on.any()):
            return
        idx = on.nonzero()[:, 0]
        sub = image[idx.to(image.device)]
        n, ch, h, w = sub.shape
        radius = math.ceil(3 * float(sig[idx].max()))
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernels = torch.exp(-0.5 * (offsets[None, None, :] / sig[idx][:, :, None]) ** 2)
        kernels = (kernels / kernels.sum(-1, keepdim=True)).to(
            image.device, image.dtype
        )  # [n, 2, k]
        flat = sub.reshape(1, n * ch, h, w)
        ky = kernels[:, 0].repeat_interleave(ch, 0)[:, None, :, None]
        kx = kernels[:, 1].repeat_interleave(ch, 0)[:, None, None, :]
        # separable grouped convolution: one kernel per (sample, channel); reflect like MONAI
        flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="reflect"), ky, groups=n * ch)
        flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="reflect"), kx, groups=n * ch)
        image[idx.to(image.device)] = flat.reshape(n, ch, h, w)
