"""Lesion review, editing and uncertainty maps (medseg.viewer.core.review, pure numpy)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medseg import RESEARCH_USE_NOTICE
from medseg.errors import DatasetError, OverwriteError
from medseg.io import Volume, write_mask, write_volume
from medseg.viewer.core import render
from medseg.viewer.core.review import (
    ReviewError,
    ReviewSession,
    brush_plane_pixels,
    display_to_source,
    fill_holes_on_slice,
    foreground_probability,
    normalised_entropy,
    review_record,
    save_reviewed_case,
)


def _mask() -> tuple[np.ndarray, np.ndarray]:
    """Three lesions: big confident (label 1), small unsure (1), medium unsure (2)."""
    mask = np.zeros((20, 20, 10), np.uint8)
    fg = np.full(mask.shape, 0.05, np.float32)
    mask[2:8, 2:8, 2:6] = 1
    fg[2:8, 2:8, 2:6] = 0.95
    mask[12:14, 12:14, 2:4] = 1
    fg[12:14, 12:14, 2:4] = 0.55
    mask[12:16, 2:6, 5:8] = 2
    fg[12:16, 2:6, 5:8] = 0.552
    return mask, fg


def test_lesions_listed_least_confident_then_largest() -> None:
    mask, fg = _mask()
    session = ReviewSession(mask, 0.001, fg, num_classes=3)
    order = session.review_order()
    assert [les.voxels for les in order] == [48, 8, 144]  # 0.55 ties: larger first
    assert order[0].label == 2
    assert order[2].confidence == pytest.approx(0.95)
    assert order[2].volume_ml == pytest.approx(0.144)


def test_reject_and_relabel_change_only_that_lesion() -> None:
    mask, fg = _mask()
    session = ReviewSession(mask, 0.001, fg, num_classes=3)
    small = next(les for les in session.lesions.values() if les.voxels == 8)
    big = next(les for les in session.lesions.values() if les.voxels == 144)
    session.decide(small.id, "reject", note="speck")
    session.decide(big.id, "relabel", new_label=2)
    work = session.working()
    assert work[12:14, 12:14, 2:4].max() == 0
    assert (work[2:8, 2:8, 2:6] == 2).all()
    assert (work != mask).sum() == 8 + 144
    assert session.edited_voxels(["bg", "core", "oedema"]) == {
        "core": {"added": 0, "removed": 152},
        "oedema": {"added": 144, "removed": 0},
    }
    session.decide(small.id, "accept")
    assert session.working()[12:14, 12:14, 2:4].min() == 1
    rows = {r["lesion"]: r for r in session.decisions(["bg", "core", "oedema"])}
    assert rows[big.id]["decision"] == "relabel"
    assert rows[big.id]["new_class"] == "oedema"
    with pytest.raises(ReviewError, match="not a foreground class"):
        session.decide(big.id, "relabel", new_label=7)
    with pytest.raises(ReviewError, match="no lesion"):
        session.decide(99, "reject")


def test_brush_eraser_undo_redo() -> None:
    mask, _ = _mask()
    session = ReviewSession(mask, 0.001, num_classes=3)
    assert session.review_order()[0].confidence is None
    changed = session.paint(np.array([[0, 0, 0], [0, 1, 0], [2, 2, 2], [50, 0, 0]]), 2)
    assert changed == 3  # (2,2,2) was label 1 -> 2; out-of-volume voxel dropped
    assert session.working()[0, 0, 0] == 2
    assert session.working()[2, 2, 2] == 2
    # eraser clears only the chosen label
    assert session.paint(np.array([[3, 3, 3], [0, 0, 0]]), 1, erase=True) == 1
    assert session.working()[3, 3, 3] == 0
    assert session.working()[0, 0, 0] == 2
    assert session.brushed_voxels() == 4
    assert session.undo()
    assert session.working()[3, 3, 3] == 1
    assert session.redo()
    assert session.working()[3, 3, 3] == 0
    while session.undo():
        pass
    np.testing.assert_array_equal(session.working(), mask)
    assert session.redo()  # the first stroke comes back
    assert session.working()[0, 0, 0] == 2
    assert session.working()[3, 3, 3] == 1


def test_uncertainty_maps() -> None:
    probs = np.stack([np.full((2, 2, 2), p) for p in (0.5, 0.25, 0.25)]).astype(np.float32)
    probs[:, 0, 0, 0] = (1.0, 0.0, 0.0)
    probs[:, 1, 1, 1] = (1 / 3, 1 / 3, 1 / 3)
    fg = foreground_probability(probs)
    assert fg[0, 0, 0] == pytest.approx(0.0)
    assert fg[0, 1, 0] == pytest.approx(0.5)
    entropy = normalised_entropy(probs)
    assert entropy[0, 0, 0] == pytest.approx(0.0, abs=1e-4)
    assert entropy[1, 1, 1] == pytest.approx(1.0, abs=1e-4)
    assert 0.9 < entropy[0, 1, 0] < 1.0
    regions = np.stack([np.full((1, 1, 2), 0.5), np.full((1, 1, 2), 0.9)]).astype(np.float32)
    assert foreground_probability(regions, regions=True)[0, 0, 0] == pytest.approx(0.9)
    assert normalised_entropy(regions, regions=True)[0, 0, 0] == pytest.approx(1.0, abs=1e-4)


def test_brush_is_round_in_millimetres() -> None:
    # rows 2 mm, columns 1 mm: a 4 mm brush spans +-2 rows and +-4 columns
    pixels = brush_plane_pixels((40, 40), (2.0, 1.0), (20.5, 20.5), 4.0)
    rows, cols = pixels[:, 0], pixels[:, 1]
    assert rows.max() - rows.min() == 4
    assert cols.max() - cols.min() == 8
    tiny = brush_plane_pixels((40, 40), (2.0, 1.0), (0.2, 39.9), 0.1)
    assert tiny.tolist() == [[0, 39]]


@pytest.mark.parametrize("view", render.VIEWS)
def test_plane_pixels_map_back_to_the_source_voxels(view: str) -> None:
    rng = np.random.default_rng(0)
    # stored LPS-like with a permutation, so display differs from source
    affine = np.array([[0, 0, -2.0, 5], [-1.0, 0, 0, 3], [0, 3.0, 0, -7], [0, 0, 0, 1]])
    source = Volume(rng.integers(0, 1000, (7, 5, 6)).astype(np.int32), affine)
    shown = render.to_display(source)
    index = 2
    plane = render.extract_slice(shown.array, view, index)
    pixels = np.argwhere(np.ones(plane.shape, bool))
    display_idx = render.plane_to_volume(view, index, pixels, shown.shape)
    src_idx = display_to_source(display_idx, shown.affine, source.affine)
    values = source.array[tuple(src_idx.T)]
    np.testing.assert_array_equal(values, plane[pixels[:, 0], pixels[:, 1]])


def test_screen_to_plane_scales_with_displayed_size() -> None:
    assert render.screen_to_plane(100, 50, (200, 400), (20, 40)) == (5.0, 10.0)


# ----------------------------------------------------------------------------- saving
AFFINE = np.array([[-1.0, 0, 0, 30.0], [0, -1.5, 0, 25.0], [0, 0, 3.0, -30.0], [0, 0, 0, 1]])


def _reviewed() -> tuple[ReviewSession, Volume, list[Volume]]:
    mask, fg = _mask()
    session = ReviewSession(mask, 0.0045, fg, num_classes=3)
    first = session.review_order()[0]
    session.decide(first.id, "reject", note="artefact")
    session.paint(np.array([[0, 0, 0], [0, 0, 1]]), 1)
    image = Volume(np.random.default_rng(0).normal(size=mask.shape).astype(np.float32), AFFINE)
    reviewed = image.with_array(np.array(session.working()))
    return session, reviewed, [image, image.with_array(image.array * 2)]


def _record(session: ReviewSession) -> dict:
    return review_record(
        session,
        case_name="pat",
        class_names=["background", "core", "oedema"],
        model="tiny.pt",
        model_sha256="ab" * 32,
        reviewer="Dr Test",
    )


def test_save_into_folder_rereads_on_source_grid_and_never_overwrites(tmp_path) -> None:
    session, reviewed, _ = _reviewed()
    record = _record(session)
    saved = save_reviewed_case(reviewed, record, tmp_path / "out", "pat")
    img = nib.load(saved.mask)
    np.testing.assert_allclose(img.affine, AFFINE)
    np.testing.assert_array_equal(np.asarray(img.dataobj), session.working())
    data = json.loads(saved.record.read_text())
    assert data["reviewer"] == "Dr Test"
    assert data["model_sha256"] == "ab" * 32
    assert data["notice"] == RESEARCH_USE_NOTICE
    assert data["medseg_version"]
    assert [r["decision"] for r in data["lesions"]].count("reject") == 1
    assert data["lesions"][0]["note"] == "artefact"
    assert data["edited_voxels"]["oedema"] == {"added": 0, "removed": 48}
    assert data["edited_voxels"]["core"] == {"added": 2, "removed": 0}
    with pytest.raises(OverwriteError, match="never overwrites"):
        save_reviewed_case(reviewed, record, tmp_path / "out", "pat")
    with pytest.raises(ReviewError, match="case id"):
        save_reviewed_case(reviewed, record, tmp_path / "out", "../x")


def _dataset(root) -> None:
    write_volume(
        Volume(np.zeros((20, 20, 10), np.float32), AFFINE), root / "imagesTr" / "old_0000.nii.gz"
    )
    write_volume(
        Volume(np.zeros((20, 20, 10), np.float32), AFFINE), root / "imagesTr" / "old_0001.nii.gz"
    )
    write_mask(
        np.zeros((20, 20, 10), np.uint8),
        Volume(np.zeros((20, 20, 10)), AFFINE),
        root / "labelsTr" / "old.nii.gz",
    )
    meta = {
        "channel_names": {"0": "flair", "1": "t1c"},
        "labels": {"background": 0, "core": 1, "oedema": 2},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))  # fmt: skip


def test_save_as_training_case(tmp_path) -> None:
    session, reviewed, channels = _reviewed()
    root = tmp_path / "ds"
    _dataset(root)
    saved = save_reviewed_case(
        reviewed, _record(session), root, "pat", channels=channels, as_training_case=True
    )
    assert saved.mask == root / "labelsTr" / "pat.nii.gz"
    assert [p.name for p in saved.images] == ["pat_0000.nii.gz", "pat_0001.nii.gz"]
    np.testing.assert_array_equal(np.asarray(nib.load(saved.mask).dataobj), session.working())
    np.testing.assert_allclose(nib.load(saved.images[1]).get_fdata(), channels[1].array, rtol=1e-6)
    meta = json.loads((root / "dataset.json").read_text())
    assert meta["numTraining"] == 2
    assert meta["channel_names"] == {"0": "flair", "1": "t1c"}
    from medseg.data.datasets import load_dataset

    assert load_dataset(root).case("pat").label == saved.mask
    # an existing case id is refused and nothing changes
    before = sorted(p.name for p in root.rglob("*"))
    for case_id in ("pat", "old"):
        with pytest.raises(OverwriteError, match="already exists"):
            save_reviewed_case(
                reviewed, _record(session), root, case_id, channels=channels, as_training_case=True
            )
    assert sorted(p.name for p in root.rglob("*")) == before
    with pytest.raises(DatasetError, match="2 channel"):
        save_reviewed_case(
            reviewed, _record(session), root, "new", channels=channels[:1], as_training_case=True
        )
    assert not (root / "labelsTr" / "new.nii.gz").exists()


@pytest.mark.parametrize("view", render.VIEWS)
def test_volume_to_plane_inverts_plane_to_volume(view: str) -> None:
    shape = (7, 5, 6)
    for ijk in [(0, 0, 0), (6, 4, 5), (3, 1, 2)]:
        row, col = render.volume_to_plane(view, ijk, shape)
        index = ijk[render.VIEW_AXIS[view]]
        back = render.plane_to_volume(view, index, np.array([[row, col]]), shape)[0]
        assert tuple(back) == ijk
    rgb = np.zeros((60, 70, 3), np.uint8)
    out = render.draw_crosshair(rgb, (2, 3), (6, 7))
    assert out[25, :, 0].max() == 255  # row (2 + 0.5) * 10 = 25
    assert out[:, 35, 0].max() == 255  # col (3 + 0.5) * 10 = 35
    assert rgb.max() == 0  # input untouched


def test_heat_overlay_transparent_at_zero_and_full_colour_at_one() -> None:
    rgb = np.full((4, 4, 3), 100, np.uint8)
    values = np.zeros((4, 4), np.float32)
    values[0, 0] = 1.0
    values[1, 1] = np.nan
    out = render.overlay_heat(rgb.copy(), values, opacity=1.0)
    assert out[0, 0].tolist() == render.HEAT_LUT[255].tolist()
    assert (out[1:, :] == 100).all()  # zero and NaN leave the image as it is
    bar = render.colour_bar("entropy")
    assert bar.shape == (44, 320, 3)
    assert bar[5, 0].tolist() == render.HEAT_LUT[0].tolist()


@pytest.mark.parametrize("view", render.VIEWS)
def test_fill_enclosed_area_on_the_shown_slice(view: str) -> None:
    # source stored RAS (display flips i and j), a ring of label 2 drawn on one display slice
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    mask = np.zeros((9, 9, 9), np.uint8)
    session = ReviewSession(mask, 0.002, num_classes=3)
    shown = render.to_display(Volume(mask, affine))
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7] = True
    ring[3:6, 3:6] = False
    pixels = np.argwhere(ring)
    src = display_to_source(
        render.plane_to_volume(view, 4, pixels, shown.shape), shown.affine, affine
    )
    session.paint(src, 2)
    assert fill_holes_on_slice(session, 2, view, 4, affine) == 9
    after = render.extract_slice(
        render.to_display(Volume(session.working(), affine)).array, view, 4
    )
    expected = np.zeros((9, 9), bool)
    expected[2:7, 2:7] = True
    np.testing.assert_array_equal(after == 2, expected)
    assert int((session.working() == 2).sum()) == 25  # only that slice
    assert session.undo()
    assert int((session.working() == 2).sum()) == 16
    assert fill_holes_on_slice(session, 1, view, 4, affine) == 0  # no outline of label 1


def test_the_page_does_not_wait_for_torch_before_its_first_image() -> None:
    """Importing the app (and the review modules) must not import torch (seconds)."""
    import subprocess
    import sys

    code = (
        "import sys, medseg.viewer.ui.app, medseg.viewer.core.review, medseg.viewer.ui.review_panel; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_bulk_decisions_touch_pending_lesions_only_and_count_progress() -> None:
    """Lesions: 144 voxels at 0.95, 8 voxels at 0.55, 48 voxels at 0.552 (0.001 mL each)."""
    mask, fg = _mask()
    session = ReviewSession(mask, 0.001, fg, num_classes=3)
    by_size = {les.voxels: les.id for les in session.lesions.values()}
    assert session.progress() == (0, 3)
    assert session.smaller_than(10) == [by_size[8]]
    assert sorted(session.smaller_than(50)) == sorted([by_size[8], by_size[48]])
    assert session.larger_and_surer(0.1, 0.9) == [by_size[144]]
    assert session.larger_and_surer(0.01, 0.9) == [by_size[144]]  # 48 is not sure enough
    assert session.larger_and_surer(0.2, 0.0) == []

    session.decide(by_size[48], "accept", note="kept")
    assert session.smaller_than(50) == [by_size[8]]  # a decision taken is never overwritten
    assert sorted(session.smaller_than(50, pending_only=False)) == sorted([by_size[8], by_size[48]])
    assert session.decide_all(session.smaller_than(50), "reject") == 1
    assert session.decide_all(session.larger_and_surer(0.1, 0.5), "accept") == 1
    assert session.progress() == (3, 3)
    assert session.lesions[by_size[48]].note == "kept"
    assert session.working()[12:14, 12:14, 2:4].max() == 0
    assert session.working()[2:8, 2:8, 2:6].min() == 1
    with pytest.raises(ReviewError, match="one at a time"):
        session.decide_all([by_size[8]], "relabel")


def test_without_probabilities_confidence_passes_only_at_zero() -> None:
    mask, _ = _mask()
    session = ReviewSession(mask, 0.001, None, num_classes=3)
    assert session.larger_and_surer(0.1, 0.5) == []
    assert len(session.larger_and_surer(0.1, 0.0)) == 1
