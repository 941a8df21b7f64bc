"""Preprocessing: canonical orientation, resampling, normalisation, label mapping, exact inverse."""

from __future__ import annotations

import numpy as np
import pydantic
import pytest

from medseg.data.preprocessing import (
    PreprocessingParams,
    fit_preprocessing,
    mr_foreground,
    preprocess_image,
    preprocess_label,
    restore_labels,
    restore_probabilities,
)
from medseg.errors import DatasetError, GeometryMismatchError
from medseg.io import Volume
from tests.data.data_factory import LPS_LIKE, RAS, blob_case


def _case(affine, seed=0):
    images, label = blob_case(seed=seed)
    return [Volume(i, affine, {"source": f"ch{n}"}) for n, i in enumerate(images)], Volume(
        label, affine
    )


PARAMS = PreprocessingParams(channel_names=["flair", "t1c"], class_names=["bg", "oedema", "core"])


@pytest.mark.parametrize("affine", [RAS, LPS_LIKE], ids=["RAS", "LPS"])
def test_round_trip_is_identity_on_source_grid(affine):
    channels, label = _case(affine)
    image, grid = preprocess_image(channels, PARAMS)
    labels = preprocess_label(label, PARAMS, grid)
    assert image.dtype == np.float32
    assert image.shape == (2, 40, 36, 10)
    assert labels.dtype == np.int16
    # canonical RAS: the grid affine has a positive diagonal and voxels keep world positions
    assert np.all(np.diag(grid.affine)[:3] > 0)
    np.testing.assert_allclose(grid.affine, channels[0].to_canonical().affine)
    np.testing.assert_array_equal(restore_labels(labels, grid), label.array.astype(np.int16))
    probs = np.stack([labels == k for k in range(3)]).astype(np.float32)
    np.testing.assert_array_equal(restore_probabilities(probs, grid).argmax(0), label.array)


@pytest.mark.parametrize("affine", [RAS, LPS_LIKE], ids=["RAS", "LPS"])
def test_round_trip_with_target_spacing_up_to_resampling(affine):
    params = PARAMS.model_copy(update={"target_spacing": (1.0, 0.8)})
    channels, label = _case(affine)
    image, grid = preprocess_image(channels, params)
    # in-plane axes 0, 1 resampled to ~1.0 x 0.8 mm, slice axis kept
    assert grid.shape == (60, 54, 10)
    np.testing.assert_allclose(grid.spacing, (1.0, 0.8, 3.0))
    labels = preprocess_label(label, params, grid)
    assert labels.shape == grid.shape == image.shape[1:]
    restored = restore_labels(labels, grid)
    assert restored.shape == label.shape
    agree = (restored == label.array).mean()
    assert agree > 0.995, agree

    # the preprocessed grid's affine puts each voxel at the same world point as the source:
    # the tumour centroid in mm agrees on both grids
    def centroid_mm(mask, aff):
        ijk = np.argwhere(mask).mean(0)
        return aff[:3, :3] @ ijk + aff[:3, 3]

    np.testing.assert_allclose(
        centroid_mm(labels > 0, grid.affine), centroid_mm(label.array > 0, affine), atol=0.3
    )


def test_mr_zscore_over_nonzero_voxels_background_stays_zero():
    channels, _ = _case(RAS)
    image, _ = preprocess_image(channels, PARAMS)
    for c in range(2):
        inside = channels[c].array != 0
        canon = Volume(inside.astype(np.uint8), RAS).to_canonical().array.astype(bool)
        values = image[c][canon]
        assert abs(values.mean()) < 1e-4
        assert abs(values.std() - 1) < 1e-3
        assert np.all(image[c][~canon] == 0)


def test_ct_window_and_fitted_statistics():
    rng = np.random.default_rng(0)
    ct = rng.normal(40, 300, (20, 20, 4)).astype(np.float32)
    ct[0, 0, 0] = np.nan
    label = np.zeros_like(ct)
    label[5:15, 5:15] = 1
    vol, lab = Volume(ct, RAS), Volume(label, RAS)
    windowed = PreprocessingParams(modality="ct", ct_window=(-100, 200))
    image, _ = preprocess_image([vol], windowed)
    assert np.isfinite(image).all()
    assert image.min() >= -1 - 1e-6
    assert image.max() <= 1 + 1e-6
    fitted = fit_preprocessing([([vol], lab)], PreprocessingParams(modality="ct"))
    stats = fitted.intensity_stats[0]
    fg = ct[5:15, 5:15][np.isfinite(ct[5:15, 5:15])]
    assert stats["p_low"] == pytest.approx(np.percentile(fg, 0.5), rel=1e-3)
    assert stats["p_high"] == pytest.approx(np.percentile(fg, 99.5), rel=1e-3)
    image, _ = preprocess_image([vol], fitted)
    assert abs(float(image[0][5:15, 5:15].mean())) < 0.05  # z-scored with foreground stats


def test_label_map_merges_classes_and_rejects_soft_masks():
    channels, label = _case(RAS)
    whole = PARAMS.model_copy(update={"label_map": {1: 1, 2: 1}, "class_names": ["bg", "tumour"]})
    _, grid = preprocess_image(channels, whole)
    labels = preprocess_label(label, whole, grid)
    assert set(np.unique(labels)) == {0, 1}
    assert (labels > 0).sum() == (label.array > 0).sum()
    soft = Volume(label.array * 0.5, RAS, {"source": "soft.nii.gz"})
    with pytest.raises(DatasetError, match=r"soft\.nii\.gz.*non-integer"):
        preprocess_label(soft, whole, grid)


def test_mismatched_grids_are_refused():
    channels, label = _case(RAS)
    moved = RAS.copy()
    moved[0, 3] = 5.0  # origin 5 mm away
    shifted = Volume(channels[1].array, moved, {"source": "t1c"})
    with pytest.raises(GeometryMismatchError, match="t1c"):
        preprocess_image([channels[0], shifted], PARAMS)
    _, grid = preprocess_image(channels, PARAMS)
    with pytest.raises(GeometryMismatchError, match="label grid"):
        preprocess_label(Volume(label.array[:, :, :5], RAS), PARAMS, grid)
    with pytest.raises(DatasetError, match="expected 2"):
        preprocess_image(channels[:1], PARAMS)


def test_params_are_strict_and_json_round_trip():
    params = PARAMS.model_copy(update={"label_map": {1: 1, 4: 2}, "target_spacing": (0.5, 0.5)})
    again = PreprocessingParams.model_validate(params.model_dump(mode="json"))
    assert again == params
    assert again.label_map == {1: 1, 4: 2}
    with pytest.raises(pydantic.ValidationError, match="extra"):
        PreprocessingParams(modalty="ct")
    with pytest.raises(pydantic.ValidationError):
        PreprocessingParams(target_spacing=(0, 1))


def test_mr_background_fill_at_the_minimum_is_background_like_zero():
    """A skull-stripped scan normalises the same whether its background is 0 (TCGA) or a
    constant at its minimum (another tool's z-scoring, the BraTS copies in shared/)."""
    rng = np.random.default_rng(0)
    brain = np.zeros((30, 30, 10), bool)
    brain[8:22, 6:24, 2:8] = True
    zero_bg = np.where(brain, rng.normal(300, 40, brain.shape), 0).astype(np.float32)
    scored = (zero_bg - zero_bg[brain].mean()) / zero_bg[brain].std()
    fill_bg = np.where(brain, scored, scored[brain].min() - 0.5).astype(np.float32)
    assert np.array_equal(mr_foreground(fill_bg), brain)
    assert np.array_equal(mr_foreground(zero_bg), brain)
    params = PreprocessingParams(channel_names=["flair"], class_names=["bg", "t"])
    a, _ = preprocess_image([Volume(zero_bg, RAS)], params)
    b, _ = preprocess_image([Volume(fill_bg, RAS)], params)
    np.testing.assert_allclose(a, b, atol=1e-4)
    # a scan that is not skull-stripped (noisy background, no constant fill) keeps every voxel
    noisy = rng.normal(10, 3, (20, 20, 5)).astype(np.float32)
    assert mr_foreground(noisy).all()
