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
from medseg.viewer import services

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


def test_png_download_carries_notice_footer() -> None:
    rgb = np.full((50, 80, 3), 30, np.uint8)
    image = Image.open(io.BytesIO(services.png_bytes(rgb, "case")))
    assert image.format == "PNG"
    assert image.size[0] == 80
    assert image.size[1] > 50
    np.testing.assert_array_equal(np.asarray(image)[:50], rgb)


def test_checkpoint_listing_and_missing_model(tmp_path: Path) -> None:
    (tmp_path / "run1").mkdir()
    (tmp_path / "run1" / "best.pt").write_bytes(b"x")
    (tmp_path / "run1" / "model.onnx").write_bytes(b"x")
    (tmp_path / "run1" / "notes.txt").write_bytes(b"x")
    assert {p.name for p in services.list_checkpoints(tmp_path)} == {"best.pt", "model.onnx"}
    assert services.list_checkpoints(tmp_path / "absent") == []
    assert services.default_model_path().name == "default_model.pt"
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
