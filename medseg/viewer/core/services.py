"""The viewer's bridge to the library: inference, readouts, metrics, downloads.

Thin adapters over :mod:`medseg.inference` (Predictor, readouts) and :mod:`medseg.metrics`, so
the app and ``medseg predict`` compute the same numbers. Everything here is Streamlit-free and
unit-testable; the app adds caching on top.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, PngImagePlugin

from medseg import RESEARCH_USE_NOTICE
from medseg.errors import InputNotFoundError
from medseg.io import Volume, write_mask

if TYPE_CHECKING:
    from medseg.viewer.core.navigation import LesionTarget

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclasses.dataclass(eq=False)
class ViewerPrediction:
    """A predicted label volume (source grid) with its class names and readouts."""

    label: Volume
    class_names: list[str]
    readouts: dict[str, Any] | None  # None: computed later (MaskLayer.readouts)
    model: str
    #: ``"foreground probability"`` / ``"entropy"`` -> float16 ``(I, J, K)`` on the source grid
    uncertainty: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    model_sha256: str | None = None


#: medseg's bundled files (demo model, favicon)
ASSETS = Path(str(resources.files("medseg") / "assets"))


def default_model_path() -> Path:
    """Path of the bundled default model (it may be missing, e.g. in a fresh checkout): the
    file :func:`medseg.inference.predictor.default_model_path` names, found without importing
    it (that would import torch before the page's first image)."""
    return ASSETS / "default_model.pt"


def list_checkpoints(runs_dir: Path | None, limit: int = 200) -> list[Path]:
    """Model folders (cross-validation ensembles, ``model.json``) first, then checkpoints and
    exports (``.pt``, ``.onnx``) under ``runs_dir``, newest first."""
    if runs_dir is None or not Path(runs_dir).is_dir():
        return []
    folders = [p.parent for p in Path(runs_dir).rglob("model.json") if p.is_file()]
    found = [p for ext in ("*.pt", "*.onnx") for p in Path(runs_dir).rglob(ext) if p.is_file()]
    folders.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [*folders, *found][:limit]


def load_predictor(path: Path, device: str = "auto", tta: bool | None = None) -> Any:
    """A :class:`medseg.inference.Predictor` for a checkpoint, an export or a model folder
    (the ensemble of a cross-validation's folds) at ``path``; ``tta=None`` predicts with
    test-time flips when the model records them, as ``medseg predict`` does."""
    from medseg.inference.model_folder import is_model_folder

    path = Path(path)
    if not (path.is_file() or is_model_folder(path)):
        raise InputNotFoundError(
            f"model {path} does not exist; train one with `medseg train`, or pick another "
            "checkpoint"
        )
    from medseg.inference.predictor import Predictor

    return Predictor.load(path, device=device, tta=tta)


def run_inference(
    predictor: Any, channels: list[Volume], model_name: str, progress: Progress | None = None
) -> ViewerPrediction:
    """Predict labels for ``channels``, readouts and uncertainty maps (library code paths).

    The probabilities (softmax or region sigmoids, already averaged over TTA flips and
    ensemble folds by the predictor) are reduced at once to two float16 maps, foreground
    probability and normalised entropy (:mod:`medseg.viewer.core.review`), to keep memory small.
    """
    from medseg.viewer.core.review import foreground_probability, normalised_entropy

    prediction = predictor.predict(channels, progress=progress, return_probabilities=True)
    class_names = list(prediction.class_names)
    # None: the display layer computes them after the first image is on screen
    readouts = getattr(prediction, "readouts", None) or None
    uncertainty: dict[str, np.ndarray] = {}
    probs = getattr(prediction, "probabilities", None)
    if probs is not None:
        regions = bool(getattr(getattr(predictor, "record", None), "regions", None))
        uncertainty = {
            "foreground probability": foreground_probability(probs, regions).astype(np.float16),
            "entropy": normalised_entropy(probs, regions).astype(np.float16),
        }
    sha = getattr(predictor, "provenance", {}).get("checkpoint_sha256")
    return ViewerPrediction(prediction.label, class_names, readouts, model_name, uncertainty, sha)


def compute_readouts(
    label: Volume, class_names: list[str], max_lesions: int | None = None
) -> dict[str, Any]:
    """Per-class mL and the largest lesions (``medseg.inference.readouts.compute_readouts``;
    ``max_lesions`` None: its default bound)."""
    from medseg.inference.readouts import DEFAULT_MAX_LESIONS
    from medseg.inference.readouts import compute_readouts as library_readouts

    return library_readouts(label, class_names, max_lesions or DEFAULT_MAX_LESIONS)


def class_names_for(label: Volume | None, names: list[str] | None) -> list[str]:
    """``names`` padded with ``label N`` up to the largest label value present."""
    names = list(names or [])
    top = int(label.array.max(initial=0)) if label is not None else 0
    if not names:
        names = ["background"]
    return names + [f"label {i}" for i in range(len(names), top + 1)]


def compare_with_truth(
    prediction: Volume, truth: Volume, class_names: list[str]
) -> list[dict[str, Any]]:
    """Dice, HD95/ASSD (mm), volumes and lesion detection per class vs ground truth.

    Uses :func:`medseg.metrics.evaluate_masks` (same definitions as ``medseg evaluate``) on
    the shared source grid; with several foreground classes a "all foreground" row is added.
    Classes absent from both masks are left out. HD95 is ``None`` when one mask is empty.
    """
    from medseg.metrics import evaluate_masks

    present = set(np.unique(prediction.array).tolist()) | set(np.unique(truth.array).tolist())
    classes = {
        class_names[i] if i < len(class_names) else f"label {i}": [i]
        for i in sorted(int(v) for v in present if v > 0)
    }
    if len(classes) > 1:
        classes["all foreground"] = [v for values in classes.values() for v in values]
    rows = evaluate_masks(prediction.array, truth.array, prediction.spacing, classes)
    keep = ("class", "dice", "hd95_mm", "assd_mm", "pred_ml", "ref_ml", "tp", "fn", "fp")
    out = []
    for row in rows:
        clean = {}
        for key in keep:
            value = row[key]
            if isinstance(value, float):
                value = None if np.isnan(value) else round(value, 4 if key == "dice" else 2)
            clean[key] = value
        out.append(clean)
    return out


def lesion_rows(
    readouts: dict[str, Any], targets: Sequence[LesionTarget] | None = None
) -> list[dict[str, Any]]:
    """Flat lesion table rows (volume, longest axial diameter, slice range) for display/CSV.

    With ``targets`` (the layer's :class:`~medseg.viewer.core.navigation.LesionTarget` list) the
    ``slice_range`` is the inclusive range of axial *display* slices numbered from 1, i.e.
    the slider positions the lesion picker jumps to, and ``number`` is the picker's ``#N``. Without
    them it is the range along the source file's third voxel axis, which differs from the
    slider whenever the scan is not stored inferior-to-superior.
    """
    by_key = {(t.label, t.index): t for t in targets or ()}
    rows = []
    for les in sorted(readouts.get("lesions", []), key=lambda r: -float(r["volume_ml"])):
        target = by_key.get((int(les["label"]), int(les["index"])))
        # the slider numbers slices from 1; the library's range is 0-based voxel indices
        first, last = (v + 1 for v in target.slice_range("axial")) if target else les["slice_range"]
        row = {"number": target.number} if target else {}
        row.update(
            {
                "class": les["class_name"],
                "lesion": les["index"],
                "volume_ml": round(float(les["volume_ml"]), 3),
                "longest_axial_diameter_mm": round(float(les["longest_axial_diameter_mm"]), 1),
                "slice_range": f"{first}-{last}",
            }
        )
        rows.append(row)
    return rows


def class_rows(readouts: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-class volume table rows from the readouts (``listed``: lesions in the lesion
    table; the readouts list the largest ones only, see ``compute_readouts``)."""
    return [
        {
            "class": name,
            "label": info["label"],
            "volume_ml": round(float(info["volume_ml"]), 3),
            "lesions": info["lesions"],
            "listed": info.get("lesions_listed", info["lesions"]),
        }
        for name, info in readouts.get("classes", {}).items()
    ]


def report_json(
    case_name: str, model: str, readouts: dict[str, Any], metrics: list[dict[str, Any]] | None
) -> bytes:
    """A JSON report (readouts, optional metrics, research-use notice) as UTF-8 bytes."""
    payload = {
        "notice": RESEARCH_USE_NOTICE,
        "case": case_name,
        "model": model,
        "readouts": readouts,
        "metrics_vs_ground_truth": metrics or [],
    }
    return json.dumps(payload, indent=2, default=float).encode()


def report_csv(
    readouts: dict[str, Any],
    metrics: list[dict[str, Any]] | None,
    targets: Sequence[LesionTarget] | None = None,
) -> bytes:
    """A CSV report: one row per class, then one per lesion, with a notice line on top.

    ``targets`` makes the lesion ``slice_range`` the viewer's axial slider positions (see
    :func:`lesion_rows`).
    """
    from medseg.io.tables import csv_text

    columns = ["kind", "class", "lesion", "volume_ml", "longest_axial_diameter_mm",
               "slice_range", "dice", "hd95_mm"]  # fmt: skip
    by_class = {m["class"]: m for m in metrics or []}
    rows = []
    for row in class_rows(readouts):
        metric = by_class.get(row["class"], {})
        rows.append(
            {
                "kind": "class",
                "class": row["class"],
                "volume_ml": row["volume_ml"],
                "dice": metric.get("dice", ""),
                "hd95_mm": metric.get("hd95_mm", ""),
            }
        )
    rows += [{"kind": "lesion", **row} for row in lesion_rows(readouts, targets)]
    return csv_text([{k: r.get(k, "") for k in columns} for r in rows], columns).encode()


def mask_nifti_bytes(label: Volume) -> bytes:
    """The label volume as ``.nii.gz`` bytes on its source grid (exact affine)."""
    with tempfile.TemporaryDirectory(prefix="medseg-viewer-") as tmp:
        path = Path(tmp) / "mask.nii.gz"
        write_mask(label.array, label, path)
        return path.read_bytes()


def dicom_seg_bytes(
    label: Volume, source_files: Sequence[Any], class_names: Sequence[str], model: str
) -> bytes:
    """The reviewed label volume as DICOM-SEG bytes referencing ``source_files`` (the series
    the case was read from); written as :func:`medseg.viewer.core.review.save_reviewed_case` does."""
    from medseg.viewer.core.review import write_reviewed_seg

    with tempfile.TemporaryDirectory(prefix="medseg-viewer-") as tmp:
        path = Path(tmp) / "reviewed_seg.dcm"
        write_reviewed_seg(label, source_files, class_names, {"model": model}, path)
        return path.read_bytes()


def png_bytes(rgb: np.ndarray, caption: str = "") -> bytes:
    """The rendered view as PNG with a footer carrying ``caption`` and the research notice."""
    footer = 18 if caption or RESEARCH_USE_NOTICE else 0
    image = Image.new("RGB", (rgb.shape[1], rgb.shape[0] + footer * 2), (0, 0, 0))
    image.paste(Image.fromarray(np.ascontiguousarray(rgb)), (0, 0))
    draw = ImageDraw.Draw(image)
    draw.text((4, rgb.shape[0] + 2), caption, fill=(220, 220, 220))
    draw.text((4, rgb.shape[0] + footer + 2), RESEARCH_USE_NOTICE, fill=(255, 200, 40))
    # Also as PNG text chunks: the footer can be cropped off, the metadata travels along.
    info = PngImagePlugin.PngInfo()
    info.add_text("Disclaimer", RESEARCH_USE_NOTICE)
    if caption:
        info.add_text("Description", caption)
    info.add_text("Software", "medseg viewer")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()
