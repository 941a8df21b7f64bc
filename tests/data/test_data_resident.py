"""The device-resident pipeline: exact crops, the SliceDataset's sample distribution,
seeding by (seed, epoch, rank), and the auto / resident / workers choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.data import resident
from medseg.data.cache import CachedCase
from medseg.data.config import DataConfig
from medseg.data.pipeline import PreparedData, build_train_batches, choose_pipeline
from medseg.data.preprocessing import PreprocessingParams
from medseg.data.resident import ResidentSlices
from medseg.data.sampling import SliceDataset
from medseg.data.slicing import label_slice, slice_stack, slices_with_foreground
from medseg.device import DistInfo
from medseg.errors import ConfigError


def _cases() -> list[CachedCase]:
    """Two cases of different shapes (one smaller than the crop in-plane), with a per-slice
    intensity ramp so that the padding value (each plane's minimum) differs between planes."""
    rng = np.random.default_rng(0)
    cases = []
    for i, shape in enumerate([(40, 36, 20), (30, 44, 16)]):
        image = rng.normal(size=(2, *shape)).astype(np.float32)
        image += np.arange(shape[2], dtype=np.float32)[None, None, None] * 0.5
        label = np.zeros(shape, np.int16)
        label[10:18, 12:20, 5:9] = 1 + i
        label[3, 3, 12] = 1  # a one-voxel lesion: a slice with very little foreground
        fg = {a: slices_with_foreground(label, a) for a in range(3)}
        cases.append(CachedCase(f"case{i}", image, label, None, fg, Path(".")))  # type: ignore[arg-type]
    return cases


def _expected_crop(case, axis, index, origin, size, context):
    """The crop by hand from the numpy slicing used everywhere else (slice_stack), padded
    with each plane's minimum, as SliceDataset pads."""
    stack, label = (
        slice_stack(case.image, axis, index, context),
        label_slice(case.label, axis, index),
    )
    image = np.broadcast_to(
        stack.reshape(len(stack), -1).min(1)[:, None, None], (len(stack), *size)
    ).copy()
    out_label = np.zeros(size, label.dtype)
    rows, cols = np.arange(size[0]) + origin[0], np.arange(size[1]) + origin[1]
    r_ok = np.flatnonzero((rows >= 0) & (rows < label.shape[0]))
    c_ok = np.flatnonzero((cols >= 0) & (cols < label.shape[1]))
    image[np.ix_(range(len(stack)), r_ok, c_ok)] = stack[:, rows[r_ok]][:, :, cols[c_ok]]
    out_label[np.ix_(r_ok, c_ok)] = label[rows[r_ok]][:, cols[c_ok]]
    return image, out_label


@pytest.mark.parametrize("axes", [(2, 0, 1), (0,), (1,), (2,)])
def test_batches_are_exact_crops_of_the_volumes_with_context_and_padding(axes):
    # one axis: the volumes are stored with that axis first; several: canonical layout
    cases = _cases()
    sampler = ResidentSlices(cases, axes, 1, (48, 32), 0.5, 64, 16, seed=3)
    sampler.set_epoch(0)
    seen_axes, padded = set(), 0
    for batch in sampler:
        assert batch["image"].shape == (16, 6, 48, 32)
        assert batch["label"].dtype == torch.int64
        for j in range(16):
            case = cases[int(batch["case_index"][j])]
            axis, index = int(batch["axis"][j]), int(batch["index"][j])
            origin = batch["origin"][j].tolist()
            image, label = _expected_crop(case, axis, index, origin, (48, 32), 1)
            np.testing.assert_array_equal(batch["image"][j].numpy(), image)
            np.testing.assert_array_equal(batch["label"][j].numpy(), label)
            if bool(batch["foreground"][j]):
                assert label.any(), "a foreground draw must show foreground"
            seen_axes.add(axis)
            padded += min(origin) < 0
    assert seen_axes == set(axes)
    assert padded > 0  # the 30-pixel-high planes are smaller than the 48-pixel crop


def test_same_sample_distribution_as_the_slice_dataset():
    """Share of foreground draws, of each case and of crops showing foreground, and where
    the foreground sits in the crop: resident vs the worker pipeline's SliceDataset."""
    cases, n = _cases(), 3000
    dataset = SliceDataset(cases, 2, 1, (32, 32), 0.4, samples_per_epoch=n, seed=0)
    ref = [dataset[i] for i in range(n)]
    sampler = ResidentSlices(cases, (2,), 1, (32, 32), 0.4, n, 500, seed=0)
    sampler.set_epoch(0)
    batches = list(sampler)
    got_case = torch.cat([b["case_index"] for b in batches]).numpy()
    got_fg = torch.cat([b["foreground"] for b in batches]).numpy()
    got_label = torch.cat([b["label"] for b in batches]).numpy() > 0
    ref_case = np.array([int(s["case_id"][-1]) for s in ref])
    ref_fg = np.array([s["foreground"] for s in ref])
    ref_label = np.stack([s["label"].numpy() for s in ref]) > 0
    tol = 4 * np.sqrt(0.25 / n)  # 4 standard errors of a proportion
    assert abs(got_fg.mean() - ref_fg.mean()) < tol
    assert abs((got_case == 1).mean() - (ref_case == 1).mean()) < tol
    assert abs(got_label.any((1, 2)).mean() - ref_label.any((1, 2)).mean()) < tol
    # where foreground pixels land in the crop (centred draws + jitter + clipping)
    got_map, ref_map = got_label.mean(0), ref_label.mean(0)
    assert np.abs(got_map - ref_map).max() < 0.06
    assert abs(got_map[8:24, 8:24].mean() - ref_map[8:24, 8:24].mean()) < 0.02


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_foreground_pixel_tables_list_each_slices_foreground_in_raster_order(axis):
    cases = _cases()
    sampler = ResidentSlices(cases, (axis,), 0, (32, 32), 0.5, 16, 4)
    start, count, rows, cols = sampler.fg_pixels[axis]
    at = 0
    for case in cases:
        for i in range(case.label.shape[axis]):
            want = np.nonzero(label_slice(case.label, axis, i) > 0)
            s, n = int(start[at]), int(count[at])
            assert n == len(want[0])
            np.testing.assert_array_equal(rows[s : s + n].numpy(), want[0])
            np.testing.assert_array_equal(cols[s : s + n].numpy(), want[1])
            at += 1
    assert at == int(sampler.slice_start[axis][-1])


def test_draws_depend_on_seed_epoch_and_rank_only():
    cases = _cases()

    def first(seed=0, epoch=0, rank=0, world=1):
        s = ResidentSlices(cases, (2,), 0, (32, 32), 0.5, 64, 8, seed, info=DistInfo(rank, world))
        s.set_epoch(epoch)
        s.batch()  # a different history before set_epoch must not matter
        s.set_epoch(epoch)
        return s.batch()["image"]

    torch.testing.assert_close(first(), first())
    assert not torch.equal(first(), first(epoch=1))
    assert not torch.equal(first(), first(seed=1))
    assert not torch.equal(first(rank=0, world=2), first(rank=1, world=2))
    # two ranks share one epoch's samples like DistributedSampler (rounded up)
    two = ResidentSlices(cases, (2,), 0, (32, 32), 0.5, 65, 8, info=DistInfo(1, 2))
    assert two.per_rank == 33
    assert len(two) == 4


def _prepared() -> PreparedData:
    names = ["background", "a", "b"]
    return PreparedData(PreprocessingParams(class_names=names), _cases(), [], ["c0", "c1"], names)


def test_auto_chooses_resident_or_says_why_not(monkeypatch):
    data = _prepared()
    cfg = DataConfig(dataset="x", crop_size=(32, 32), samples_per_epoch=16)
    assert choose_pipeline(data, cfg, "cpu")[0] == "resident"
    batches = build_train_batches(data, cfg, 4, 0, 0)
    assert batches.mode == "resident"
    assert batches.augmentation.backend == "batched"
    cpu_aug = cfg.model_copy(
        update={"augmentation": cfg.augmentation.model_copy(update={"backend": "cpu"})}
    )
    mode, why = choose_pipeline(data, cpu_aug, "cpu")
    assert mode == "workers"
    assert "backend: cpu" in why
    workers = build_train_batches(data, cpu_aug, 4, 0, 0)
    assert workers.mode == "workers"
    assert isinstance(workers.dataset, SliceDataset)
    with pytest.raises(ConfigError, match=r"data\.pipeline: resident cannot be used"):
        choose_pipeline(data, cpu_aug.model_copy(update={"pipeline": "resident"}), "cpu")
    monkeypatch.setitem(resident.FIT_SHARE, "cpu", 1e-9)
    mode, why = choose_pipeline(data, cfg, "cpu")
    assert mode == "workers"
    assert "do not fit" in why
    assert "MiB" in why
    assert build_train_batches(data, cfg, 4, 0, 0).augmentation.backend == "cpu"


def test_resident_needs_a_crop_size():
    with pytest.raises(ConfigError, match="crop_size"):
        ResidentSlices(_cases(), (2,), 0, None, 0.5, 16, 4)


@pytest.mark.gpu
@pytest.mark.parametrize("axes", [(2,), (2, 0, 1)])
def test_batches_on_the_gpu_equal_the_cpu_ones(axes):
    """Draws come from a CPU generator and the crops are exact copies, so the buffer's
    device must not change a single value (padding and several strides included)."""
    cpu = ResidentSlices(_cases(), axes, 1, (48, 32), 0.5, 64, 16, seed=3)
    gpu = ResidentSlices(_cases(), axes, 1, (48, 32), 0.5, 64, 16, seed=3, device="cuda")
    cpu.set_epoch(1)
    gpu.set_epoch(1)
    for got, want in zip(gpu, cpu, strict=True):
        assert got["image"].is_cuda
        for key, value in want.items():
            assert torch.equal(got[key].cpu(), value), key
