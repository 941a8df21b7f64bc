"""Streamed preprocessing (SlabImage): every slab equals the same slices of preprocess_image."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data import intensity
from medseg.data.intensity import mr_plan, stat_slabs
from medseg.data.preprocessing import PreprocessingParams, mr_foreground, preprocess_image
from medseg.data.slabs import SlabImage
from medseg.errors import CorruptFileError, DatasetError
from medseg.io import Volume
from tests.data.data_factory import LPS_LIKE, RAS, blob_case

# stored I-S-A: every canonical axis comes from another source axis, two of them flipped
PERMUTED = np.array([[0, 0, -1.5, 30.0], [-1.2, 0, 0, 10.0], [0, 3.0, 0, -5.0], [0, 0, 0, 1]])


def _channels(affine, n=2, seed=0):
    images, _ = blob_case(seed=seed, channels=n)
    return [Volume(i, affine, {"source": f"ch{c}"}) for c, i in enumerate(images)]


def _params(modality, spacing=None, **kwargs):
    return PreprocessingParams(
        modality=modality, channel_names=["a", "b"], target_spacing=spacing, **kwargs
    )


def _assert_slabs_equal(channels, params, axes=(0, 1, 2)):
    full, grid = preprocess_image(channels, params)
    slabs = SlabImage(channels, params)
    assert slabs.shape == full.shape
    assert slabs.grid.to_dict() == grid.to_dict()
    for axis in axes:
        n = full.shape[axis + 1]
        for start, stop in [(0, 3), (n // 2 - 1, n // 2 + 2), (n - 2, n)]:
            got = slabs.slab(axis, start, stop)
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, np.take(full, range(start, stop), axis=axis + 1))


@pytest.mark.parametrize("affine", [RAS, LPS_LIKE, PERMUTED], ids=["RAS", "LPS", "permuted"])
@pytest.mark.parametrize("modality", ["mr", "ct", "other"])
def test_slabs_equal_whole_volume_preprocessing(affine, modality):
    kwargs = {"ct_window": (50.0, 150.0)} if modality == "ct" else {}
    _assert_slabs_equal(_channels(affine), _params(modality, **kwargs))


def test_ct_with_statistics_and_int16_source():
    channels = [
        Volume((c.array * 10 - 1000).astype(np.int16), c.affine, c.metadata)
        for c in _channels(LPS_LIKE)
    ]
    stats = [{"mean": 30.0, "std": 200.0, "p_low": -900.0, "p_high": 400.0}] * 2
    _assert_slabs_equal(channels, _params("ct", intensity_stats=stats))


def test_resampled_slabs_along_the_slice_axis_and_fallback_for_others():
    params = _params("mr", spacing=(1.0, 0.8))  # in-plane X, Y resampled; Z (slice axis) kept
    channels = _channels(LPS_LIKE)
    slabs = SlabImage(channels, params)
    assert slabs.grid.resampled
    assert slabs.streamed_axes == (2,)
    # the slice axis is streamed (interpolated per slab), the others use the whole image
    _assert_slabs_equal(channels, params)


def test_nonfinite_voxels_follow_the_one_rule():
    channels = _channels(RAS)
    bad = channels[1].array.copy()
    bad[3, 4, 5] = np.nan
    bad[10, 2, 1] = np.inf
    channels[1] = Volume(bad, RAS, {"source": "ch1"})
    slabs = SlabImage(channels, _params("mr"))
    assert slabs.grid.nonfinite_replaced == [0, 2]
    _assert_slabs_equal(channels, _params("mr"))
    bad[:, :, :5] = np.nan
    channels[1] = Volume(bad, RAS, {"source": "ch1"})
    with pytest.raises(CorruptFileError, match="ch1"):
        SlabImage(channels, _params("mr"))


def test_wrong_channel_count_is_refused():
    with pytest.raises(DatasetError, match="expected 2"):
        SlabImage(_channels(RAS, n=1), _params("mr"))


def _fill_background(channels, fill=-3.6):
    # a z-scored copy: background is a constant at the minimum (the BraTS copies in shared/)
    return [
        Volume(np.where(c.array == 0, np.float32(fill), c.array), c.affine, c.metadata)
        for c in channels
    ]


@pytest.mark.parametrize("slab_voxels", [1, 500, 2000, 1 << 20])
@pytest.mark.parametrize("spacing", [None, (1.0, 0.8)], ids=["native", "resampled"])
@pytest.mark.parametrize("fill", [False, True], ids=["zero-bg", "fill-bg"])
def test_streamed_mr_fit_is_identical_in_both_paths(slab_voxels, spacing, fill, monkeypatch):
    """The MR constants are fitted over slabs of one to many planes; the whole-volume path
    sums the same slabs, so both paths still agree bit for bit."""
    monkeypatch.setattr(intensity, "STAT_SLAB_VOXELS", slab_voxels)
    channels = _channels(PERMUTED)
    if fill:
        channels = _fill_background(channels)
    _assert_slabs_equal(channels, _params("mr", spacing=spacing), axes=(2,))


@pytest.mark.parametrize("fill", [False, True], ids=["zero-bg", "fill-bg"])
def test_streamed_mr_constants_match_numpy_over_the_whole_channel(fill, monkeypatch):
    monkeypatch.setattr(intensity, "STAT_SLAB_VOXELS", 3000)  # two planes
    data = _channels(RAS, n=1)[0]
    data = (_fill_background([data]) if fill else [data])[0].array
    assert len(stat_slabs(data.shape, 2)) == 5
    plan = mr_plan(lambda a, b: np.ascontiguousarray(data[:, :, a:b]), data.shape, 2)
    fg = mr_foreground(data)
    assert plan.fill == (np.float32(-3.6) if fill else None)
    assert plan.shift == pytest.approx(data.mean(where=fg, dtype=np.float64), rel=1e-13)
    assert plan.divide == pytest.approx(data.std(where=fg, dtype=np.float64), rel=1e-12)


def test_stat_slabs_are_whole_planes_covering_the_axis(monkeypatch):
    monkeypatch.setattr(intensity, "STAT_SLAB_VOXELS", 100)
    assert stat_slabs((4, 5, 7), 2) == [(0, 5), (5, 7)]  # 20-voxel planes: five a slab
    assert stat_slabs((4, 50, 7), 0) == [(0, 1), (1, 2), (2, 3), (3, 4)]  # one plane at least
    assert stat_slabs((4, 5, 0), 2) == []
