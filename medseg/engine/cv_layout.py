"""What a cross-validation folder looks like, shared by training the folds
(:mod:`medseg.engine.crossval`) and joining them (:mod:`medseg.engine.crossval_join`), so
that the one imports the other and never the reverse.
"""

from __future__ import annotations

import dataclasses
from typing import Any

#: the fold plan, ``DIR/splits.json`` (unless ``data.split_file`` names another)
SPLITS_FILE = "splits.json"
#: written into ``DIR/fold_<k>/`` when fold k has finished training
FOLD_DONE = "fold_done.json"
#: out-of-fold predictions, ``DIR/oof/<case>.nii.gz`` (before postprocessing)
OOF_DIR = "oof"
#: per case and structure, raw and postprocessed
CASES_CSV = "cv_summary.csv"
#: per structure and figure: mean and bootstrap interval over cases
INTERVALS_CSV = "cv_summary_intervals.csv"
PLOT_FILE = "cv_summary.png"
#: drop-small-component thresholds tried per structure (mL), besides "largest component"
#: and the thresholds read off the out-of-fold false-positive components
MIN_ML_CANDIDATES = (0.1, 0.5, 1.0, 2.0, 5.0)

#: the figures of each structure in the summary, in print order (``<figure>_raw``: the same
#: before postprocessing); Dice, HD95 and FP lesions are means of per-case figures, lesion
#: sensitivity and F1 are pooled over the lesions of all cases
FIGURES = ("dice", "hd95_mm", "fp_lesions", "lesion_sensitivity", "lesion_f1")
FIGURE_LABELS = {
    "dice": "Dice",
    "hd95_mm": "HD95 mm",
    "fp_lesions": "false-positive lesions per case",
    "lesion_sensitivity": "lesion sensitivity",
    "lesion_f1": "lesion F1",
}
RAW = "_raw"


def fold_dir(k: int) -> str:
    """The run folder of fold ``k``, relative to the cross-validation folder."""
    return f"fold_{k}"


@dataclasses.dataclass
class CrossValSetup:
    """Everything the folds share: the split plan, fitted parameters and the cached cases."""

    plan: dict[str, Any]
    params: Any
    spec: Any
    num_folds: int
    cached: list[Any]
