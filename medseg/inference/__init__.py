"""Volumetric inference: :class:`Predictor`, readouts, post-processing, export, DICOM-SEG.

>>> from medseg.inference import Predictor
>>> prediction = Predictor.load("model.pt").predict(read_volume("scan.nii.gz"))  # doctest: +SKIP
>>> prediction.label          # Volume on the scan's exact grid
>>> prediction.readouts       # per-class mL, lesions with longest axial diameter (mm)
"""

from __future__ import annotations

from medseg.inference.postprocess import PostprocessConfig, postprocess_labels
from medseg.inference.predictor import Prediction, Predictor, default_model_path
from medseg.inference.readouts import compute_readouts, find_lesions, lesion_table

__all__ = [
    "PostprocessConfig",
    "Prediction",
    "Predictor",
    "compute_readouts",
    "default_model_path",
    "find_lesions",
    "lesion_table",
    "postprocess_labels",
]
