"""Slicing geometry: plane axes, the one axis check, and the 2.5D rule shared by slice_stack
and the device-resident sampler's batched reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.checkpoint import ModelRecord
from medseg.data.config import parse_data_config
from medseg.data.preprocessing import PreprocessingParams
from medseg.data.sampling import SliceDataset
from medseg.data.slicing import (
    AXIS_NAMES,
    channel_major,
    check_axes,
    neighbour_indices,
    plane_axes,
    plane_shape,
    slice_stack,
)
from medseg.errors import CheckpointError, ConfigError


@pytest.mark.parametrize(
    ("axis", "axes", "shape"), [(0, (1, 2), (5, 6)), (1, (0, 2), (4, 6)), (2, (0, 1), (4, 5))]
)
def test_plane_axes_and_shape(axis, axes, shape):
    assert plane_axes(axis) == axes
    assert plane_shape((4, 5, 6), axis) == shape
    assert np.take(np.zeros((4, 5, 6)), 0, axis=axis).shape == shape
    assert AXIS_NAMES[axis] in ("sagittal", "coronal", "axial")


@pytest.mark.parametrize("given", [(), (3,), (0, 0), ("x",), "0,5", "a", "2,2", 2])
def test_check_axes_refuses_empty_unknown_repeated_and_unparsable(given):
    with pytest.raises(
        ConfigError, match=r"expected distinct canonical axes among 0 \(sagittal\)"
    ) as err:
        check_axes(given)
    assert err.value.param == "axes"


@pytest.mark.parametrize("given", [[3], [0, 0], [-1, 2]])
def test_every_axis_validation_refuses_the_same_values(given):
    """Data config, checkpoint record, sampler: one rule (the pydantic models report it under
    their own key, wrapped in their own error)."""
    with pytest.raises(ConfigError, match=r"slice_axes.*expected distinct canonical axes"):
        parse_data_config({"dataset": "x", "slice_axes": given})
    payload = {
        "model": {"name": "unet", "in_channels": 1, "num_classes": 2},
        "preprocessing": PreprocessingParams().model_dump(mode="json"),
        "sampling": {"axes": given},
        "class_names": ["background", "x"],
    }
    with pytest.raises(CheckpointError) as err:
        ModelRecord.from_payload(payload)
    assert "expected distinct canonical axes" in str(err.value.__cause__)
    with pytest.raises(ConfigError, match=r"axis \[.*expected distinct canonical axes"):
        SliceDataset([object()], given)  # type: ignore[list-item]


def test_check_axes_accepts_cli_text_and_sequences():
    assert check_axes("0,1,2") == (0, 1, 2)
    assert check_axes([2]) == (2,)
    assert check_axes(np.array([1, 2])) == (1, 2)


@pytest.mark.parametrize("context", [0, 1, 3])
def test_batched_neighbours_on_tensors_equal_the_numpy_rule(context):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 9, size=40)
    index = np.array([rng.integers(0, n) for n in lengths])
    got = neighbour_indices(torch.from_numpy(index), torch.from_numpy(lengths), context)
    want = np.stack(
        [neighbour_indices(int(i), int(n), context) for i, n in zip(index, lengths, strict=True)]
    )
    assert isinstance(got, torch.Tensor)
    np.testing.assert_array_equal(got.numpy(), want)
    np.testing.assert_array_equal(neighbour_indices(index, lengths, context), want)
    assert want.min() >= 0
    assert (want < lengths[:, None]).all()


def test_slice_stack_is_channel_major_with_replicated_edges():
    image = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)
    stack = slice_stack(image, 2, 0, context=1)  # neighbours -1, 0, 1 -> 0, 0, 1
    assert stack.shape == (6, 3, 4)
    for c in range(2):
        for j, k in enumerate((0, 0, 1)):
            np.testing.assert_array_equal(stack[c * 3 + j], image[c, :, :, k])
    planes = torch.arange(2 * 2 * 3 * 4 * 5).reshape(2, 2, 3, 4, 5)
    assert channel_major(planes).shape == (2, 6, 4, 5)
    assert torch.equal(channel_major(planes)[1, 4], planes[1, 1, 1])
