"""The canvas's voxel order and bytes: what NiiVue gets must land on the same world points."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np

from medseg.io import Volume
from medseg.viewer.core import render
from medseg.viewer.ui.canvas import volumes


def _display_volume() -> Volume:
    """A display-oriented (L, P, S) volume from an oblique-free LPS-stored one, 3 mm slices."""
    affine = np.array([[-0.8, 0, 0, 30.0], [0, -0.9, 0, 25.0], [0, 0, 3.0, -30.0], [0, 0, 0, 1]])
    array = np.arange(5 * 4 * 3, dtype=np.int16).reshape(5, 4, 3)
    return render.to_display(Volume(array, affine))


def test_nifti_bytes_put_each_voxel_on_the_same_world_point() -> None:
    shown = _display_volume()
    image = nib.Nifti1Image.from_bytes(volumes.nifti_bytes(shown.array, shown.affine))
    canvas = np.asarray(image.dataobj)
    assert nib.aff2axcodes(image.affine) == ("R", "A", "S")  # NiiVue's voxel order
    assert canvas.dtype == np.int16  # sent as stored: no float copy
    for ijk in [(0, 0, 0), (4, 3, 2), (1, 2, 1)]:
        xyz = volumes.display_to_canvas(ijk, shown.array.shape)
        assert canvas[tuple(xyz)] == shown.array[ijk]
        world = shown.affine @ [*ijk, 1]
        np.testing.assert_allclose(image.affine @ [*xyz, 1], world)
        assert volumes.canvas_to_display(xyz, shown.array.shape) == list(ijk)


def test_flat_canvas_indices_map_back_to_display_voxels() -> None:
    shape = (5, 4, 3)
    display = np.array([[0, 0, 0], [4, 3, 2], [2, 1, 0]])
    canvas = [volumes.display_to_canvas(d, shape) for d in display]
    flat = [int(np.ravel_multi_index(c, shape, order="F")) for c in canvas]  # NIfTI order
    np.testing.assert_array_equal(volumes.flat_to_display(flat, shape), display)


def test_compact_types_and_uncompressed_bytes() -> None:
    labels = np.zeros((3, 3, 3), np.int64)
    labels[1, 1, 1] = 2
    data = volumes.nifti_bytes(labels, np.eye(4))
    assert nib.Nifti1Image.from_bytes(data).get_data_dtype() == np.uint8
    assert data[:4] != gzip.compress(b"")[:4]  # not gzip: the local link is faster raw
    floats = volumes.nifti_bytes(np.full((2, 2, 2), 0.5), np.eye(4))
    assert nib.Nifti1Image.from_bytes(floats).get_data_dtype() == np.float32


def test_label_lut_hides_label_zero_and_hidden_labels() -> None:
    lut = volumes.label_lut(4, visible=[2], names=["bg", "a", "b", "c"])
    assert lut["A"] == [0, 0, 255, 0]
    assert lut["labels"] == ["bg", "a", "b", "c"]
    assert (lut["R"][2], lut["G"][2], lut["B"][2]) == render.label_colour(2)


def test_comparison_volume_codes() -> None:
    pred = np.array([[[1, 1, 0, 2]]])
    truth = np.array([[[1, 0, 1, 1]]])
    np.testing.assert_array_equal(volumes.comparison_volume(pred, truth, [1, 2]), [[[1, 2, 3, 2]]])


def test_pen_size_is_odd_and_follows_the_spacing() -> None:
    assert volumes.pen_size(2.0, (1.0, 1.0)) == 5
    assert volumes.pen_size(0.1, (1.0, 1.0)) == 1
    assert volumes.pen_size(2.0, (0.5, 0.8)) == 9


def test_preview_is_a_small_windowed_uint8_copy_on_the_same_world_points() -> None:
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    rng = np.random.default_rng(0)
    display = rng.integers(-1000, 1000, size=(600, 520, 4)).astype(np.int16)
    image = nib.Nifti1Image.from_bytes(
        volumes.preview_bytes(display, affine, render.Window(400.0, 100.0))
    )
    preview = np.asarray(image.dataobj)
    step = volumes.preview_step(display.shape)
    assert step == 3
    assert preview.dtype == np.uint8
    assert preview.shape == (200, 174, 4)  # <= 256 in-plane, every slice kept
    assert max(preview.shape[:2]) <= volumes.PREVIEW_SIZE
    full = nib.Nifti1Image.from_bytes(volumes.nifti_bytes(display, affine))
    for xyz in [(0, 0, 0), (10, 20, 3), (199, 173, 1)]:
        source = (step * xyz[0], step * xyz[1], xyz[2])  # the full canvas voxel it samples
        np.testing.assert_allclose(image.affine @ [*xyz, 1], full.affine @ [*source, 1], atol=1e-3)
        value = float(np.asarray(full.dataobj)[source])
        expected = np.clip((value + 100) * 255 / 400, 0, 255).astype(np.uint8)
        assert preview[xyz] == expected


def test_no_preview_for_a_volume_small_enough_to_send_as_it_is() -> None:
    display = np.zeros((256, 200, 30), np.int16)
    assert volumes.preview_bytes(display, np.eye(4), render.Window(1.0, 0.5)) is None


def test_float_volumes_of_whole_values_are_sent_as_integers() -> None:
    hu = np.array([[[-1000.0, 40.0], [700.0, 3000.0]]], np.float32)
    sent = nib.Nifti1Image.from_bytes(volumes.nifti_bytes(hu, np.eye(4)))
    assert sent.get_data_dtype() == np.int16  # half the bytes of float32, values kept
    np.testing.assert_array_equal(np.asarray(sent.dataobj)[::-1, ::-1, :], hu)
    mr = hu + 0.25
    assert nib.Nifti1Image.from_bytes(volumes.nifti_bytes(mr, np.eye(4))).get_data_dtype() == (
        np.float32
    )
