"""Cache (memory-mapped, keyed, invalidated, safe for two processes) and slice sampling."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from medseg.data.cache import prepare_cases
from medseg.data.datasets import load_dataset
from medseg.data.preprocessing import PreprocessingParams
from medseg.data.sampling import SliceDataset
from medseg.data.slicing import slice_stack
from medseg.errors import DatasetError
from tests.data.data_factory import RAS, blob_case, nnunet_dataset, save

PARAMS = PreprocessingParams(channel_names=["flair", "t1c"], class_names=["bg", "oedema", "core"])


@pytest.fixture
def dataset(tmp_path):
    return load_dataset(nnunet_dataset(tmp_path / "ds", n_cases=3, shape=(40, 36, 30)))


def test_cache_is_memory_mapped_and_reused(dataset, tmp_path):
    cached = prepare_cases(dataset.cases, PARAMS, tmp_path / "cache", progress=False)
    case = cached[0]
    assert isinstance(case.image, np.memmap)
    assert case.image.dtype == np.float32
    assert case.image.shape == (2, 40, 36, 30)
    assert case.label.dtype == np.int16
    assert set(case.foreground) == {0, 1, 2}
    fg_z = np.flatnonzero((np.asarray(case.label) > 0).any(axis=(0, 1)))
    np.testing.assert_array_equal(case.foreground[2], fg_z)
    entry_mtime = (case.path / "image.npy").stat().st_mtime_ns
    again = prepare_cases(dataset.cases, PARAMS, tmp_path / "cache", progress=False)
    assert again[0].path == case.path
    assert (again[0].path / "image.npy").stat().st_mtime_ns == entry_mtime  # not rebuilt


def test_cache_invalidated_when_source_or_params_change(dataset, tmp_path):
    cache = tmp_path / "cache"
    first = prepare_cases(dataset.cases[:1], PARAMS, cache, progress=False)[0]
    # a changed parameter -> a new entry; the old one stays (another run may be reading it)
    other = prepare_cases(
        dataset.cases[:1], PARAMS.model_copy(update={"label_map": {2: 1}}), cache, progress=False
    )[0]
    assert other.path != first.path
    assert (first.path / "image.npy").is_file()
    assert set(np.unique(other.label)) == {0, 1}
    # an edited source scan -> rebuilt with the new content
    case = dataset.cases[0]
    _images, label = blob_case(shape=(40, 36, 30), seed=0)
    label[:] = 0
    label[10:20, 10:20, 5:8] = 2
    save(label, RAS, case.label)
    os.utime(case.label, ns=(time.time_ns(), time.time_ns() + 10**9))
    rebuilt = prepare_cases(
        [case], PARAMS.model_copy(update={"label_map": {2: 1}}), cache, progress=False
    )[0]
    assert rebuilt.path != other.path
    np.testing.assert_array_equal(rebuilt.foreground[2], [5, 6, 7])
    entries = sorted(p.name.split("-")[0] for p in cache.iterdir() if not p.name.startswith("."))
    assert entries == ["case000"] * 3  # original, new parameters, edited source


def test_two_processes_build_the_cache_at_once(dataset, tmp_path):
    cache = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import sys, numpy as np
        from medseg.data.cache import prepare_cases
        from medseg.data.datasets import load_dataset
        from medseg.data.preprocessing import PreprocessingParams
        spec = load_dataset({str(dataset.root)!r})
        params = PreprocessingParams(channel_names=["flair", "t1c"], class_names=["bg", "a", "b"])
        cases = prepare_cases(spec.cases, params, {str(cache)!r}, progress=False)
        print(sum(float(np.asarray(c.image, dtype=np.float64).sum()) for c in cases))
    """)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    assert outs[0][0] == outs[1][0]  # both read identical, complete entries
    entries = sorted(p for p in cache.iterdir() if not p.name.startswith("."))
    assert len(entries) == 3  # one entry per case, no leftovers from the loser
    assert not [p for p in cache.iterdir() if p.name.startswith(".case") and p.is_dir()]
    for entry in entries:
        assert {p.name for p in entry.iterdir()} == {"image.npy", "label.npy", "meta.json"}


def test_case_without_label_is_refused(dataset, tmp_path):
    dataset.cases[0].label.unlink()
    with pytest.raises((DatasetError, FileNotFoundError)):
        prepare_cases(dataset.cases[:1], PARAMS, tmp_path / "c", progress=False)


@pytest.fixture
def cached(dataset, tmp_path):
    return prepare_cases(dataset.cases, PARAMS, tmp_path / "cache", progress=False)


def test_training_samples_shapes_context_and_crop(cached):
    ds = SliceDataset(cached, axis=2, context=1, crop_size=(24, 48), samples_per_epoch=40, seed=0)
    assert len(ds) == 40
    item = ds[3]
    assert item["image"].shape == (6, 24, 48)
    assert item["image"].dtype == torch.float32
    assert item["label"].shape == (24, 48)
    assert item["label"].dtype == torch.int64
    # the channel-major 2.5D stack is the shared slice_stack() of the cached case (cropped)
    case = next(c for c in cached if c.case_id == item["case_id"])
    full = slice_stack(case.image, 2, item["index"], 1)
    # the crop comes from one position of the full slice, placed inside the wider (48) crop
    placements = [
        (top, left)
        for top in range(40 - 24 + 1)
        for left in range(48 - 36 + 1)
        if torch.equal(
            item["image"][:, :, left : left + 36], torch.from_numpy(full[:, top : top + 24])
        )
    ]
    assert placements
    # the 12 padded columns hold each channel's background (minimum), not 0
    left = placements[0][1]
    pad = torch.cat([item["image"][:, :, :left], item["image"][:, :, left + 36 :]], dim=2)
    background = torch.from_numpy(full.reshape(full.shape[0], -1).min(axis=1))
    assert torch.equal(pad, background[:, None, None].expand_as(pad))
    sagittal = SliceDataset(cached, axis=0, context=0, crop_size=None, train=False)
    assert len(sagittal) == 3 * 40
    assert sagittal[0]["image"].shape == (2, 36, 30)


def test_all_axis_training_draws_every_axis_with_its_own_context(cached):
    ds = SliceDataset(cached, axis=(2, 0, 1), context=1, crop_size=(32, 32), samples_per_epoch=300)
    items = [ds[i] for i in range(300)]
    counts = {a: sum(it["axis"] == a for it in items) for a in (0, 1, 2)}
    assert all(70 < n < 130 for n in counts.values()), counts  # uniform over the three axes
    for it in items[:30]:
        assert it["image"].shape == (6, 32, 32)
        case = next(c for c in cached if c.case_id == it["case_id"])
        assert it["index"] < case.label.shape[it["axis"]]
    # whole slices of every axis pad to one size so batches of mixed axes stack
    whole = SliceDataset(cached, axis=(2, 0), context=0, crop_size=None, samples_per_epoch=20)
    assert len({tuple(whole[i]["image"].shape) for i in range(20)}) == 1


def test_foreground_oversampling_share(cached):
    fg_slices = sum(len(c.foreground[2]) for c in cached)
    natural = fg_slices / sum(c.label.shape[2] for c in cached)
    for ratio in (0.0, 0.5, 1.0):
        ds = SliceDataset(
            cached, crop_size=(16, 16), foreground_ratio=ratio, samples_per_epoch=400, seed=1
        )
        items = [ds[i] for i in range(len(ds))]
        drawn = np.mean([it["foreground"] for it in items])
        has_fg = np.mean([bool((it["label"] > 0).any()) for it in items])
        if ratio == 1.0:
            assert drawn == 1.0
            assert has_fg == 1.0
        else:
            assert abs(drawn - ratio) < 0.08, (ratio, drawn)
    # without oversampling, slices with foreground appear at their natural rate
    ds = SliceDataset(cached, crop_size=None, foreground_ratio=0.0, samples_per_epoch=600, seed=2)
    share = np.mean([bool((ds[i]["label"] > 0).any()) for i in range(600)])
    assert abs(share - natural) < 0.08


def test_sampling_is_deterministic_per_seed_epoch_index(cached):
    ds = SliceDataset(cached, crop_size=(16, 16), samples_per_epoch=20, seed=5)
    a = [ds[i] for i in range(20)]
    b = [ds[i] for i in reversed(range(20))][::-1]  # order of requests does not matter
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(a, b, strict=True))
    ds.set_epoch(1)
    c = [ds[i] for i in range(20)]
    assert sum(torch.equal(x["image"], y["image"]) for x, y in zip(a, c, strict=True)) < 5
    # DataLoader with 2 workers delivers exactly the single-process items
    ds.set_epoch(0)
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=2)
    batches = list(loader)
    stacked = torch.cat([b["image"] for b in batches])
    assert torch.equal(stacked, torch.stack([x["image"] for x in a]))


def test_validation_covers_every_slice_padded(tmp_path):
    shapes = [(30, 20, 6), (24, 26, 4)]
    for i, shape in enumerate(shapes):
        images, label = blob_case(shape=shape, seed=i, channels=1)
        save(images[0], RAS, tmp_path / "images" / f"c{i}.nii.gz")
        save(label, RAS, tmp_path / "labels" / f"c{i}.nii.gz")
    spec = load_dataset(tmp_path)
    params = PreprocessingParams(class_names=["background", "a", "b"])  # labels hold 0, 1, 2
    cached = prepare_cases(spec.cases, params, tmp_path / "cache", progress=False)
    ds = SliceDataset(cached, axis=2, train=False, pad_multiple=8)
    assert len(ds) == 10
    seen = [(ds[i]["case_id"], ds[i]["index"]) for i in range(len(ds))]
    assert seen == [("c0", k) for k in range(6)] + [("c1", k) for k in range(4)]
    item = ds[7]
    assert item["image"].shape == (1, 32, 32)
    assert item["valid_shape"] == (24, 26)
    background = item["image"][:, :24, :26].min()  # padding continues the background
    assert torch.all(item["image"][:, 24:] == background)
    assert torch.all(item["image"][:, :, 26:] == background)
    assert torch.all(item["label"][:, 26:] == 0)


def test_label_values_beyond_the_classes_are_refused_up_front(dataset, tmp_path):
    """A folder dataset without declared labels defaults to 2 classes; labels 0/1/2 must stop
    training before the first step with a message naming the case and the fix."""
    two_classes = PARAMS.model_copy(update={"class_names": ["background", "foreground"]})
    with pytest.raises(DatasetError, match=r"case000: \[2\].*label_map"):
        prepare_cases(dataset.cases[:1], two_classes, tmp_path / "cache", progress=False)
    merged = two_classes.model_copy(update={"label_map": {2: 1}})
    (case,) = prepare_cases(dataset.cases[:1], merged, tmp_path / "cache", progress=False)
    assert case.class_values == (0, 1)


def test_cache_key_sees_a_slice_rewritten_inside_a_dicom_folder(tmp_path):
    from medseg.data.cache import cache_key
    from medseg.data.datasets import CaseSpec

    series = tmp_path / "series"
    (series / "sub").mkdir(parents=True)
    (series / "001.dcm").write_bytes(b"a")
    (series / "sub" / "002.dcm").write_bytes(b"b")
    case = CaseSpec("c", [series], None, None)
    before = cache_key(case, PARAMS)
    (series / "sub" / "002.dcm").write_bytes(b"bb")  # the folder's own mtime does not change
    assert cache_key(case, PARAMS) != before
