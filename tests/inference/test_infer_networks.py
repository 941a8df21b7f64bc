"""Slice-by-slice prediction puts every slice back at its place along the chosen axis."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from medseg.device import resolve_amp_dtype
from medseg.inference.networks import eval_network
from medseg.inference.slices import infer_slices


def predict_volume_probabilities(model, image, axis=2, context=0, batch_size=16, num_classes=2):
    """Mean softmax ``(K, X, Y, Z)`` of a training model through the shared slice loop."""
    with eval_network(model) as network:
        return infer_slices(
            network, image, num_classes, axes=(axis,), context=context,
            batch_size=batch_size, need_probabilities=True,
        )  # fmt: skip


def predict_volume_labels(model, image, axis=2, context=0, batch_size=16, num_classes=256):
    """Streaming argmax labels ``(X, Y, Z)`` of a training model (what validation runs)."""
    with eval_network(model) as network:
        return infer_slices(
            network, image, num_classes, axes=(axis,), context=context, batch_size=batch_size
        )


class CentrePlane(nn.Module):
    """Logits ``[-x, x]`` from the centre plane of a 2.5D stack: class 1 where x > 0."""

    def __init__(self, context: int) -> None:
        super().__init__()
        self.context = context
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        centre = x[:, self.context : self.context + 1]
        return torch.cat([-centre, centre], dim=1) + self.dummy


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("context", [0, 1])
def test_probabilities_are_placed_along_axis(axis: int, context: int) -> None:
    rng = np.random.default_rng(axis)
    image = rng.standard_normal((1, 7, 5, 9)).astype(np.float32)
    probs = predict_volume_probabilities(
        CentrePlane(context), image, axis=axis, context=context, batch_size=3
    )
    assert probs.shape == (2, 7, 5, 9)
    assert probs.dtype == np.float32
    expected = 1 / (1 + np.exp(-2 * image[0]))  # softmax([-x, x])[1]
    np.testing.assert_allclose(probs[1], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(0), 1, atol=1e-6)


@pytest.mark.parametrize("axis", [0, 2])
def test_streaming_labels_equal_argmax_of_probabilities(axis: int) -> None:
    image = np.random.default_rng(1).standard_normal((2, 6, 8, 4)).astype(np.float32)
    model = CentrePlane(0)
    probs = predict_volume_probabilities(model, image, axis=axis, batch_size=4)
    labels = predict_volume_labels(model, image, axis=axis, batch_size=4)
    assert np.issubdtype(labels.dtype, np.integer)
    np.testing.assert_array_equal(labels, probs.argmax(0))
    np.testing.assert_array_equal(labels, image[0] > 0)


def test_single_logit_model_gives_two_class_probabilities() -> None:
    model = nn.Conv2d(1, 1, 1, bias=False)
    nn.init.ones_(model.weight)
    image = np.linspace(-3, 3, 4 * 4 * 3, dtype=np.float32).reshape(1, 4, 4, 3)
    probs = predict_volume_probabilities(model, image)
    assert probs.shape == (2, 4, 4, 3)
    np.testing.assert_allclose(probs[1], 1 / (1 + np.exp(-image[0])), rtol=1e-5)


def test_model_mode_restored() -> None:
    model = CentrePlane(0).train()
    image = np.ones((1, 3, 3, 2), np.float32)
    result = predict_volume_probabilities(model, image)
    assert (result >= 0).all()
    assert model.training
    predict_volume_labels(model.eval(), image)
    assert not model.training


def test_validation_and_predictor_share_one_slice_loop() -> None:
    """Training validation and ``medseg predict`` run the same loop: same labels."""
    image = np.random.default_rng(3).standard_normal((1, 6, 5, 7)).astype(np.float32)
    model = CentrePlane(1)
    ours = predict_volume_labels(model, image, axis=1, context=1, batch_size=2, num_classes=2)
    with torch.inference_mode():
        shared = infer_slices(model, image, 2, axes=(1,), context=1, batch_size=4)
    np.testing.assert_array_equal(ours, shared)
    np.testing.assert_array_equal(ours, image[0] > 0)


def test_amp_only_on_cuda() -> None:
    assert resolve_amp_dtype("auto", torch.device("cpu")) is None
    assert resolve_amp_dtype(True, torch.device("cpu")) is None
    assert resolve_amp_dtype("off", torch.device("cuda")) is None
    assert resolve_amp_dtype("fp16", torch.device("cuda")) is torch.float16
