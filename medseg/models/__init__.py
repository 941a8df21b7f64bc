"""Segmentation networks chosen by name: ``build_model(name, in_channels, num_classes, **options)``.

Contract (every registered model, enforced by ``tests/models/test_all_models.py``): the module
maps a float tensor ``[B, in_channels, H, W]`` to logits ``[B, num_classes, H, W]`` at the
input size for **any** ``H, W`` (odd sizes included). Networks whose down-sampling needs sizes
divisible by ``divisor`` pad the input (zeros, bottom/right) and crop the logits back
(:class:`PadToDivisor`); the torchvision / DeepLabv3+ heads upsample bilinearly to the input
size instead. ``channels_last`` memory format works for all of them.

Families live in one file each (``unet``, ``monai_nets``, ``torchvision_nets``,
``deeplabv3plus``) and register themselves with :func:`register_model`, which records what
:func:`model_info` reports (TorchScript method, pretrained-encoder support, divisor, options).
"""

from medseg.models import (
    deeplabv3plus,  # noqa: F401  (each family registers its models on import)
    monai_nets,  # noqa: F401
    torchvision_nets,  # noqa: F401
    unet,  # noqa: F401
)
from medseg.models.padding import PadToDivisor
from medseg.models.registry import (
    MODELS,
    WEIGHT_OPTIONS,
    ModelSpec,
    architecture_options,
    build_model,
    check_choice,
    check_range,
    list_models,
    model_info,
    register_model,
)

__all__ = [
    "MODELS",
    "WEIGHT_OPTIONS",
    "ModelSpec",
    "PadToDivisor",
    "architecture_options",
    "build_model",
    "check_choice",
    "check_range",
    "list_models",
    "model_info",
    "register_model",
]
