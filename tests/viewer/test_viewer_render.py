"""Rendering: radiological orientation for LPS and RAS storage, aspect ratio, windowing,
overlays and comparison colours."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.io import Volume
from medseg.viewer.core import render

SHAPE = (40, 30, 10)
SPACING = (1.0, 2.0, 4.0)


def _volume(storage: str) -> Volume:
    """A volume stored in ``storage`` orientation with a bright marker on the patient's left,
    anterior and superior side."""
    if storage == "RAS":  # i -> right, j -> anterior, k -> superior
        affine = np.diag([*SPACING, 1.0])
    elif storage == "LPS":  # i -> left, j -> posterior (DICOM-like)
        affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    else:  # "LAS", like many nibabel-written radiological files
        affine = np.diag([-SPACING[0], SPACING[1], SPACING[2], 1.0])
    vol = Volume(np.zeros(SHAPE, np.float32), affine)
    # Marker 1 on the patient's left: find the index along axis 0 that points left.
    left = SHAPE[0] - 4 if vol.orientation[0] == "L" else 3
    anterior = SHAPE[1] - 4 if vol.orientation[1] == "A" else 3
    superior = SHAPE[2] - 2
    vol.array[left - 1 : left + 2, anterior - 1 : anterior + 2, superior] = 100.0
    return vol


@pytest.mark.parametrize("storage", ["LPS", "RAS", "LAS"])
def test_patient_left_appears_on_screen_right(storage: str) -> None:
    shown = render.to_display(_volume(storage))
    assert shown.orientation == render.DISPLAY_AXCODES
    axial = render.extract_slice(shown.array, "axial", SHAPE[2] - 2)
    rows, cols = np.nonzero(axial)
    assert cols.mean() > axial.shape[1] / 2, "patient's left must be on the screen's right"
    assert rows.mean() < axial.shape[0] / 2, "anterior must be at the top"
    coronal = render.extract_slice(shown.array, "coronal", int(np.nonzero(shown.array)[1][0]))
    rows, cols = np.nonzero(coronal)
    assert cols.mean() > coronal.shape[1] / 2
    assert rows.mean() < coronal.shape[0] / 2
    sagittal = render.extract_slice(shown.array, "sagittal", int(np.nonzero(shown.array)[0][0]))
    rows, cols = np.nonzero(sagittal)
    assert cols.mean() < sagittal.shape[1] / 2, "anterior must be on the screen's left"
    assert rows.mean() < sagittal.shape[0] / 2, "superior must be at the top"


def test_orientation_letters_state_the_convention() -> None:
    assert render.ORIENTATION_LABELS["axial"] == {
        "left": "R",
        "right": "L",
        "top": "A",
        "bottom": "P",
    }
    assert render.ORIENTATION_LABELS["coronal"]["left"] == "R"
    assert render.ORIENTATION_LABELS["sagittal"]["top"] == "S"


def test_rendered_marker_lands_right_in_rgb() -> None:
    shown = render.to_display(_volume("LPS"))
    request = render.RenderRequest(
        shown.array, shown.spacing, "axial", SHAPE[2] - 2, render.Window(100, 50), labels=False
    )
    rgb = render.render_slice(request)
    bright = np.nonzero(rgb[..., 0] > 200)
    assert bright[1].mean() > rgb.shape[1] / 2


@pytest.mark.parametrize(
    ("view", "expected_ratio"),
    [
        ("axial", 30 * 2.0 / (40 * 1.0)),
        ("coronal", 10 * 4.0 / (40 * 1.0)),
        ("sagittal", 10 * 4.0 / (30 * 2.0)),
    ],
)
def test_physical_aspect_ratio(view: str, expected_ratio: float) -> None:
    shown = render.to_display(_volume("RAS"))
    index = render.num_slices(shown.shape, view) // 2
    rgb = render.render_slice(
        render.RenderRequest(shown.array, shown.spacing, view, index, render.Window(1, 0))
    )
    height, width = rgb.shape[:2]
    assert height / width == pytest.approx(expected_ratio, rel=0.02)
    assert min(height, width) >= 384  # small images are enlarged


def test_pixel_spacing_per_view() -> None:
    assert render.pixel_spacing(SPACING, "axial") == (2.0, 1.0)
    assert render.pixel_spacing(SPACING, "coronal") == (4.0, 1.0)
    assert render.pixel_spacing(SPACING, "sagittal") == (4.0, 2.0)
    with pytest.raises(ValueError, match="unknown view"):
        render.pixel_spacing(SPACING, "oblique")


def test_ct_presets_and_window_mapping() -> None:
    assert render.CT_PRESETS["brain"] == (80, 40)
    assert render.CT_PRESETS["soft tissue"] == (400, 40)
    assert render.CT_PRESETS["lung"] == (1500, -600)
    assert render.CT_PRESETS["liver"] == (150, 90)
    assert render.CT_PRESETS["bone"] == (2500, 480)
    hu = np.array([[-1000, 0, 40, 80, 3000]], dtype=np.int16)
    grey = render.apply_window(hu, render.Window(*render.CT_PRESETS["brain"]))
    assert grey.tolist() == [[0, 0, 127, 255, 255]]
    # float path gives the same mapping as the integer lookup table
    assert (
        render.apply_window(hu.astype(np.float32), render.Window(80, 40)).tolist() == grey.tolist()
    )


def test_auto_window_ignores_background_zeros() -> None:
    rng = np.random.default_rng(0)
    data = np.zeros((50, 50, 10), np.float32)
    data[10:40, 10:40] = rng.normal(500, 50, (30, 30, 10))
    window = render.auto_window(data)
    assert 300 < window.low < 400
    assert 600 < window.high < 700


def test_overlay_filled_contour_and_hidden_labels() -> None:
    grey = np.full((20, 20, 3), 100, np.uint8)
    labels = np.zeros((20, 20), np.uint8)
    labels[5:15, 5:15] = 1
    labels[0:3, 0:3] = 2
    filled = render.overlay_labels(grey.copy(), labels, visible=(1,), opacity=0.5)
    red = render.label_colour(1)
    assert tuple(filled[10, 10]) == tuple((np.array(red) * 0.5 + 50).astype(np.uint8))
    assert tuple(filled[1, 1]) == (100, 100, 100)  # label 2 hidden
    contour = render.overlay_labels(grey.copy(), labels, visible=(1, 2), style="contour")
    assert tuple(contour[10, 10]) == (100, 100, 100)  # inside untouched
    assert tuple(contour[5, 10]) != (100, 100, 100)  # the edge is drawn


def test_comparison_colours() -> None:
    pred = np.zeros((10, 10), np.uint8)
    truth = np.zeros((10, 10), np.uint8)
    pred[2:6, 2:6] = 1
    truth[4:8, 4:8] = 1
    planes = render.comparison_planes(pred, truth)
    assert planes["true positive"].sum() == 4
    assert planes["false positive"].sum() == 12
    assert planes["false negative"].sum() == 12
    rgb = render.overlay_comparison(np.zeros((10, 10, 3), np.uint8), pred, truth, opacity=1.0)
    assert tuple(rgb[5, 5]) == render.COMPARISON_COLOURS["true positive"]
    assert tuple(rgb[2, 2]) == render.COMPARISON_COLOURS["false positive"]
    assert tuple(rgb[7, 7]) == render.COMPARISON_COLOURS["false negative"]
    assert tuple(rgb[0, 9]) == (0, 0, 0)


def test_comparison_counts_label_swaps_as_errors() -> None:
    pred = np.array([[1, 2]], np.uint8)
    truth = np.array([[2, 2]], np.uint8)
    planes = render.comparison_planes(pred, truth)
    assert planes["true positive"].tolist() == [[False, True]]
    assert planes["false positive"].tolist() == [[True, False]]
    assert planes["false negative"].tolist() == [[True, False]]


def test_legend_entries() -> None:
    entries = render.legend_entries(["background", "tumour_core", "oedema"], [0, 2, 1, 7])
    assert [e[1] for e in entries] == ["tumour_core", "oedema", "label 7"]
    assert all(e[2].startswith("#") and len(e[2]) == 7 for e in entries)


def test_real_brats_tumour_side_follows_world_coordinates(shared_data) -> None:
    """BraTS pat0001 (stored LPS): the tumour lies towards the patient's right in world RAS
    coordinates, so the axial view must show it on the screen's left."""
    from medseg.io import read_volume

    folder = shared_data / "brats2015" / "pat0001"
    seg = read_volume(folder / "seg.nii.gz")
    brain = read_volume(folder / "brainmask.nii.gz")

    def world_x(vol: Volume) -> float:
        centre = np.argwhere(vol.array > 0).mean(axis=0)
        return float(vol.affine[0, :3] @ centre + vol.affine[0, 3])

    tumour_is_right = world_x(seg) > world_x(brain)  # RAS: +x is the patient's right
    shown = render.to_display(seg)
    index = int(np.argmax((shown.array > 0).sum(axis=(0, 1))))
    plane = render.extract_slice(shown.array, "axial", index)
    brain_plane = render.extract_slice(render.to_display(brain).array, "axial", index)
    tumour_col = np.nonzero(plane)[1].mean()
    brain_col = np.nonzero(brain_plane)[1].mean()
    assert (tumour_col < brain_col) == tumour_is_right


OKABE_ITO = [
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
]


def test_label_palette_is_okabe_ito_and_a_plain_list() -> None:
    """One palette for the PNG path and the canvas: a list of RGB tuples, label = index."""
    assert isinstance(render.LABEL_COLOURS, list)
    assert render.LABEL_COLOURS[1:] == OKABE_ITO
    assert all(isinstance(c, tuple) and len(c) == 3 for c in render.LABEL_COLOURS)
    assert [render.label_colour(v) for v in (1, 7, 8)] == [OKABE_ITO[0], OKABE_ITO[6], OKABE_ITO[0]]
    assert render.legend_entries(["bg", "core"], [1])[0][2] == "#e69f00"


def test_crosshair_colour_is_used_by_no_label() -> None:
    cross = np.array(render.CROSSHAIR_COLOUR, float)
    for colour in [*render.LABEL_COLOURS, *render.COMPARISON_COLOURS.values()]:
        assert np.linalg.norm(cross - np.array(colour, float)) > 120, colour
    assert len(set(render.CROSSHAIR_COLOUR)) > 1  # not a grey: anatomy is grey
    rgb = render.draw_crosshair(np.zeros((20, 20, 3), np.uint8), (5, 5), (10, 10))
    assert tuple(rgb[11, 0]) == render.CROSSHAIR_COLOUR


def test_heat_map_stays_visible_over_bright_tissue() -> None:
    """Full uncertainty over white (bright FLAIR) must not look white: no white-hot end."""
    white = np.full((4, 4, 3), 255, np.uint8)
    out = render.overlay_heat(white.copy(), np.ones((4, 4), np.float32), opacity=0.6)
    assert int(out[0, 0].min()) < 150
    top = render.HEAT_LUT[-26:].astype(int)  # the top tenth of the map
    assert (top.min(axis=1) < 80).all()  # a saturated colour, never pale
    assert top.sum(axis=1).max() < 450


def test_orientation_sentence_per_plane() -> None:
    assert render.orientation_sentence("axial") == (
        "seen from the feet: patient's right on screen left, anterior at the top"
    )
    assert render.orientation_sentence("coronal") == (
        "seen from the front: patient's right on screen left, superior at the top"
    )
    sagittal = render.orientation_sentence("sagittal")
    assert sagittal == "seen from the patient's left: anterior on screen left, superior at the top"
    assert "right" not in sagittal


def test_draw_outline_marks_only_the_edge_of_a_scaled_mask() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True
    out = render.draw_outline(np.zeros((40, 40, 3), np.uint8), mask, (1, 2, 3))
    edge = (out == (1, 2, 3)).all(axis=2)
    assert edge[8, 8:32].all()
    assert edge[8:32, 8].all()
    assert not edge[20, 20]
    assert not edge[0, 0]
