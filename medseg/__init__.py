"""medseg: medical image segmentation for clinician-researchers.

For research use only; not for diagnosis or treatment decisions.

The public API (see ``docs/api.md``) is imported on first use, so ``import medseg`` loads
neither torch nor any reader::

    from medseg import Predictor, read_volume, write_volume, load_config, train
    from medseg import predict_folder, evaluate
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

RESEARCH_USE_NOTICE = "For research use only. Not for diagnostic use or treatment decisions."

__all__ = [
    "RESEARCH_USE_NOTICE",
    "PostprocessConfig",
    "Prediction",
    "Predictor",
    "TrainConfig",
    "Volume",
    "__version__",
    "cross_validate",
    "default_model_path",
    "describe_models",
    "evaluate",
    "export_model",
    "export_package",
    "import_dicom",
    "install_model",
    "installed_models",
    "load_config",
    "merge_prediction_parts",
    "plan",
    "predict_dicomweb",
    "predict_folder",
    "preview_data",
    "read_volume",
    "resolve_device",
    "train",
    "validate_data",
    "write_mask",
    "write_volume",
]


def __getattr__(name: str) -> Any:
    if name.startswith("__"):  # dunder probes (copy, pickle, doctest) are not API names
        raise AttributeError(name)
    import importlib

    api = importlib.import_module("medseg.api")
    if name not in api.EXPORTS:
        raise AttributeError(f"module 'medseg' has no attribute {name!r}")
    value = api.resolve(name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
