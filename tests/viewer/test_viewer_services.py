"""Readouts, metrics and downloads produced for the viewer (files re-read)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from medseg import RESEARCH_USE_NOTICE
from medseg.io import Volume
from medseg.viewer.core import services

NAMES = ["background", "tumour_core", "oedema"]
AFFINE = np.array([[-0.5, 0, 0, 10], [0, -0.5, 0, 12], [0, 0, 2.0, -4], [0, 0, 0, 1]])


def _label() -> Volume:
    label = np.zeros((20, 20, 6), np.uint8)
    label[4:10, 4:10, 1:4] = 1
    label[14:16, 14:16, 4] = 2
    return Volume(label, AFFINE)


def test_reports_and_mask_roundtrip(tmp_path: Path) -> None:
    label = _label()
    readouts = services.compute_readouts(label, NAMES)
    truth = label.with_array(np.where(label.array == 2, 0, label.array).astype(np.uint8))
    metrics = services.compare_with_truth(label, truth, NAMES)
    by_class = {row["class"]: row for row in metrics}
    assert by_class["tumour_core"]["dice"] == 1.0
    assert by_class["tumour_core"]["hd95_mm"] == 0.0
    assert by_class["oedema"]["dice"] == 0.0
    assert by_class["oedema"]["hd95_mm"] is None
    assert "all foreground" in by_class

    lesions = services.lesion_rows(readouts)
    assert [row["class"] for row in lesions] == ["tumour_core", "oedema"]
    assert lesions[0]["volume_ml"] == round(6 * 6 * 3 * 0.5 * 0.5 * 2 / 1000, 3)
    assert lesions[0]["longest_axial_diameter_mm"] == round(np.hypot(3, 3), 1)
    assert lesions[0]["slice_range"] == "1-3"

    report = json.loads(services.report_json("case", "model.pt", readouts, metrics))
    assert report["notice"] == RESEARCH_USE_NOTICE
    assert report["readouts"]["classes"]["tumour_core"]["lesions"] == 1
    text = services.report_csv(readouts, metrics).decode()
    assert text.startswith(f"# {RESEARCH_USE_NOTICE}")
    rows = list(csv.DictReader(io.StringIO(text.split("\n", 1)[1])))
    assert {r["kind"] for r in rows} == {"class", "lesion"}
    core = next(r for r in rows if r["kind"] == "class" and r["class"] == "tumour_core")
    assert float(core["dice"]) == 1.0

    path = tmp_path / "mask.nii.gz"
    path.write_bytes(services.mask_nifti_bytes(label))
    img = nib.load(path)
    np.testing.assert_array_equal(np.asarray(img.dataobj), label.array)
    np.testing.assert_allclose(img.affine, AFFINE)


NOTICE_RGB = (255, 200, 40)
CAPTION_RGB = (220, 220, 220)


def _band_has(band: np.ndarray, colour: tuple[int, int, int]) -> bool:
    """Some pixel of ``band`` is (nearly: the font is anti-aliased) ``colour``."""
    distance = np.abs(band.astype(int) - np.array(colour)).max(axis=-1)
    return bool((distance <= 12).any())


def test_png_download_carries_notice_footer() -> None:
    rgb = np.full((50, 400, 3), 30, np.uint8)
    image = Image.open(io.BytesIO(services.png_bytes(rgb, "case 7 axial")))
    assert image.format == "PNG"
    assert image.size[0] == 400
    pixels = np.asarray(image.convert("RGB"))
    np.testing.assert_array_equal(pixels[:50], rgb)
    footer = pixels[50:]
    half = footer.shape[0] // 2
    assert footer.shape[0] > 0
    assert _band_has(footer[half:], NOTICE_RGB)  # the notice is really drawn, below the caption
    assert not _band_has(footer[:half], NOTICE_RGB)
    assert _band_has(footer[:half], CAPTION_RGB)
    assert image.text["Disclaimer"] == RESEARCH_USE_NOTICE
    assert image.text["Description"] == "case 7 axial"


def test_png_without_caption_still_carries_notice() -> None:
    image = Image.open(io.BytesIO(services.png_bytes(np.zeros((20, 300, 3), np.uint8))))
    footer = np.asarray(image.convert("RGB"))[20:]
    half = footer.shape[0] // 2
    assert not _band_has(footer[:half], CAPTION_RGB)  # no caption text drawn
    assert _band_has(footer[half:], NOTICE_RGB)
    assert image.text["Disclaimer"] == RESEARCH_USE_NOTICE
    assert "Description" not in image.text


def test_lesion_table_uses_display_slices_like_the_slider() -> None:
    """A scan stored with k pointing inferior: table, picker and slider show the same slices."""
    from medseg.viewer.core import navigation, render

    affine = np.diag([1.0, 1.0, -2.0, 1.0])  # k runs superior -> inferior
    label = np.zeros((12, 12, 10), np.uint8)
    label[3:7, 3:7, 2:4] = 1  # source k 2-3 = display (inferior-first) slices 6-7
    vol = Volume(label, affine)
    readouts = services.compute_readouts(vol, NAMES[:2])
    shown = render.to_display(vol)
    targets = navigation.lesion_targets(readouts["lesions"], vol.affine, shown.affine, shown.shape)
    assert targets[0].slice_range("axial") == (6, 7)
    assert shown.array[:, :, 6:8].any()
    assert not shown.array[:, :, 2:4].any()

    (row,) = services.lesion_rows(readouts, targets)
    assert row["slice_range"] == "7-8"  # the slider numbers slices from 1
    assert row["number"] == targets[0].number == 1
    assert services.lesion_rows(readouts)[0]["slice_range"] == "2-3"  # source-grid fallback
    text = services.report_csv(readouts, None, targets).decode()
    rows = list(csv.DictReader(io.StringIO(text.split("\n", 1)[1])))
    assert [r["slice_range"] for r in rows if r["kind"] == "lesion"] == ["7-8"]


def test_checkpoint_listing_and_missing_model(tmp_path: Path) -> None:
    (tmp_path / "run1").mkdir()
    (tmp_path / "run1" / "best.pt").write_bytes(b"x")
    (tmp_path / "run1" / "model.onnx").write_bytes(b"x")
    (tmp_path / "run1" / "notes.txt").write_bytes(b"x")
    assert {p.name for p in services.list_checkpoints(tmp_path)} == {"best.pt", "model.onnx"}
    # a cross-validation folder (model.json) is listed first, as one model
    (tmp_path / "cv" / "fold_0").mkdir(parents=True)
    (tmp_path / "cv" / "model.json").write_text("{}")
    (tmp_path / "cv" / "fold_0" / "best.pt").write_bytes(b"x")
    assert services.list_checkpoints(tmp_path)[0] == tmp_path / "cv"
    assert services.list_checkpoints(tmp_path / "absent") == []
    # the bundled files the page names, found without importing the inference package
    from medseg.inference.predictor import default_model_path
    from medseg.viewer.ui.app import FAVICON

    assert services.default_model_path() == default_model_path(must_exist=False)
    assert services.default_model_path().is_file()
    assert FAVICON.is_file()
    import pytest

    from medseg.errors import InputNotFoundError

    with pytest.raises(InputNotFoundError, match="does not exist"):
        services.load_predictor(tmp_path / "none.pt")


def test_class_names_padded_to_labels() -> None:
    assert services.class_names_for(_label(), ["background"]) == [
        "background",
        "label 1",
        "label 2",
    ]
    assert services.class_names_for(_label(), NAMES) == NAMES
