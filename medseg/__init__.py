"""medseg: medical image segmentation for clinician-researchers.

For research use only; not for diagnosis or treatment decisions.
"""

__version__ = "0.1.0"

RESEARCH_USE_NOTICE = "For research use only. Not for diagnostic use or treatment decisions."
