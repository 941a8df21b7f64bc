"""Deterministic synthetic scans that look like real ones (research/demo data, not anatomy).

* :func:`make_brain_mr` - FLAIR-like brain MR with a glioma-like tumour (core 1, oedema 2).
* :func:`make_ct_abdomen` - abdominal CT in HU with a hypodense liver lesion (lesion 1, liver 2).
* :func:`write_sample_data` - the committed ``sample_data/`` folder (``medseg sample-data``).
* :func:`save_montage` - a PNG of one axial slice per case with label contours.

Same seed -> identical arrays (numpy ``Generator`` streams; see ``docs/sample_data.md``).
"""

from __future__ import annotations

from medseg.synthetic.brain import BRAIN_LABELS, make_brain_mr
from medseg.synthetic.ct import CT_LABELS, make_ct_abdomen
from medseg.synthetic.montage import save_montage
from medseg.synthetic.sample_data import brain_case, ct_case, write_sample_data

__all__ = [
    "BRAIN_LABELS",
    "CT_LABELS",
    "brain_case",
    "ct_case",
    "make_brain_mr",
    "make_ct_abdomen",
    "save_montage",
    "write_sample_data",
]
