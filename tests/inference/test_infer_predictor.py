"""Predictor on synthetic volumes: exact source grid, orientation invariance, TTA/ensemble,
streaming vs probability paths, progress, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.checkpoint import ModelRecord
from medseg.data.preprocessing import PreprocessingParams
from medseg.errors import CheckpointError, ConfigError, DatasetError, InputNotFoundError
from medseg.inference import PostprocessConfig, Predictor, default_model_path
from medseg.io.volume import Volume
from tests.inference.infer_factory import blob_volume


def test_label_on_exact_source_grid(tiny_checkpoint):
    vol = blob_volume()
    calls = []
    pred = Predictor.load(tiny_checkpoint, device="cpu", batch_size=5).predict(
        vol, progress=lambda done, total: calls.append((done, total))
    )
    assert pred.label.same_grid(vol)
    assert pred.label.array.dtype == np.uint8
    counts = np.bincount(pred.label.array.ravel(), minlength=2)
    assert counts.min() > 0.05 * vol.array.size  # both classes present
    assert calls[-1] == (3, 3)  # 12 axial slices in batches of 5
    assert pred.settings["checkpoint_sha256"]
    assert pred.settings["tta"] is False
    report = pred.report()
    assert "research use" in report["notice"].lower()
    assert report["readouts"]["classes"]["lesion"]["volume_ml"] == pytest.approx(
        counts[1] * vol.voxel_volume_ml, rel=1e-6
    )


def test_orientation_invariance(tiny_checkpoint):
    """The same anatomy stored LPS or RAS gets the same mask in world space."""
    lps = blob_volume()
    ras = lps.to_canonical()
    predictor = Predictor.load(tiny_checkpoint, device="cpu")
    mask_lps = predictor.predict(lps).label
    mask_ras = predictor.predict(ras).label
    assert mask_ras.same_grid(ras)
    np.testing.assert_array_equal(mask_lps.to_canonical().array, mask_ras.array)


def test_streaming_labels_equal_probability_argmax(tiny_checkpoint):
    vol = blob_volume(seed=3)
    predictor = Predictor.load(tiny_checkpoint, device="cpu")
    streamed = predictor.predict(vol)
    with_probs = predictor.predict(vol, return_probabilities=True)
    assert with_probs.probabilities.shape == (2, *vol.shape)
    np.testing.assert_allclose(with_probs.probabilities.sum(0), 1.0, atol=2e-3)
    np.testing.assert_array_equal(streamed.label.array, with_probs.label.array)


def test_tta_and_multi_axis_ensemble(checkpoint_factory):
    all_axes = checkpoint_factory(axes=(2, 0, 1))
    vol = blob_volume(shape=(24, 20, 16))
    plain = Predictor.load(all_axes, device="cpu", axes=(2,)).predict(
        vol, return_probabilities=True
    )
    calls = []
    ens = Predictor.load(all_axes, device="cpu", tta=True, axes=(0, 1, 2), batch_size=8)
    out = ens.predict(vol, progress=lambda d, t: calls.append(t), return_probabilities=True)
    assert out.label.same_grid(vol)
    assert calls[-1] == 3 + 3 + 2  # batches along each axis (the 4 flips run in each batch)
    assert out.settings["axes"] == [0, 1, 2]
    # without --axes a model trained on every axis predicts along all of them
    assert Predictor.load(all_axes, device="cpu").axes == (2, 0, 1)
    assert not np.allclose(out.probabilities, plain.probabilities, atol=1e-3)
    np.testing.assert_allclose(out.probabilities.sum(0), 1.0, atol=3e-3)


def test_axes_the_model_never_saw_are_refused(tiny_checkpoint):
    with pytest.raises(ConfigError, match=r"trained on axis 2 \(axial\) only.*0 \(sagittal\)"):
        Predictor.load(tiny_checkpoint, device="cpu", axes=(0, 1, 2))
    assert Predictor.load(tiny_checkpoint, device="cpu", axes=(2,)).axes == (2,)


def test_resampled_model_returns_source_grid(checkpoint_factory):
    ckpt = checkpoint_factory(target_spacing=(1.5, 1.5))
    vol = blob_volume(shape=(33, 27, 7))
    pred = Predictor.load(ckpt, device="cpu").predict(vol, return_probabilities=True)
    assert pred.label.same_grid(vol)
    assert pred.probabilities.shape == (2, 33, 27, 7)


def test_postprocess_applied(tiny_checkpoint):
    vol = blob_volume(seed=5)
    raw = Predictor.load(tiny_checkpoint, device="cpu").predict(vol)
    kept = Predictor.load(
        tiny_checkpoint, device="cpu", postprocess=PostprocessConfig(largest_component=True)
    ).predict(vol)
    n_raw = raw.readouts["classes"]["lesion"]["lesions"]
    assert n_raw > 1
    assert kept.readouts["classes"]["lesion"]["lesions"] == 1
    assert kept.readouts["postprocess_removed"]["removed_components"] == n_raw - 1


def test_multichannel_checkpoint_needs_all_channels(checkpoint_factory):
    ckpt = checkpoint_factory(channel_names=("flair", "t1c"), context=0)
    vol = blob_volume()
    predictor = Predictor.load(ckpt, device="cpu")
    assert predictor.predict([vol, blob_volume(seed=2)]).label.same_grid(vol)
    with pytest.raises(DatasetError, match="expected 2"):
        predictor.predict(vol)


def test_bad_model_files(tmp_path):
    with pytest.raises(InputNotFoundError):
        Predictor.load(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        Predictor.load(junk)
    # an axis is a setting, not a fact about the data: ConfigError, as everywhere else
    with pytest.raises(ConfigError, match=r"axes \(3,\): expected distinct canonical axes"):
        Predictor(lambda x: x, _record(), axes=(3,))


def _record() -> ModelRecord:
    return ModelRecord(
        name="unet",
        in_channels=1,
        num_outputs=2,
        preprocessing=PreprocessingParams(),
        class_names=["background", "x"],
        channel_names=["image"],
    )


def test_default_model_path():
    from importlib import resources

    bundled = Path(str(resources.files("medseg") / "assets" / "default_model.pt"))
    if bundled.is_file():
        assert default_model_path() == bundled
    else:
        with pytest.raises(CheckpointError, match="--model"):
            default_model_path()


def test_volume_helper_is_lps():
    assert "".join(blob_volume().orientation) == "LPS"
    assert isinstance(blob_volume(), Volume)


@pytest.mark.gpu
def test_cuda_matches_cpu(tiny_checkpoint):
    vol = blob_volume(shape=(64, 48, 20))
    cpu = Predictor.load(tiny_checkpoint, device="cpu").predict(vol)
    gpu = Predictor.load(tiny_checkpoint, device="cuda", amp="off").predict(vol)
    assert gpu.settings["device"].startswith("cuda")
    assert (cpu.label.array == gpu.label.array).mean() > 0.999


def test_tta_defaults_to_what_the_model_records(checkpoint_factory, tmp_path):
    import torch

    plain = checkpoint_factory()
    assert Predictor.load(plain, device="cpu").tta is False
    payload = torch.load(plain, weights_only=True)
    payload["tta"] = True  # as written by a run with train.test_time_augmentation
    planned = tmp_path / "planned.pt"
    torch.save(payload, planned)
    assert Predictor.load(planned, device="cpu").tta is True
    assert Predictor.load(planned, device="cpu", tta=False).tta is False  # --no-tta
