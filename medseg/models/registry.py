"""The model registry: :func:`register_model` (the decorator each family module uses), the
specs it records, and the lookups by name (:func:`build_model`, :func:`list_models`,
:func:`model_info`) plus the option checks the families share.

Its own module so that the families import it without importing the package that imports
them (timm keeps its registry apart from its models the same way); ``medseg.models``
re-exports everything and imports the families, so a name is registered before any lookup.
"""

from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from medseg.errors import ConfigError
from medseg.registry import Registry

logger = logging.getLogger(__name__)

MODELS: Registry[nn.Module] = Registry("model")


@dataclass(frozen=True)
class ModelSpec:
    """What :func:`model_info` reports about a registered model."""

    name: str
    family: str
    description: str
    torchscript: str | None  # "script", "trace" or None (not exportable to TorchScript)
    pretrained: bool  # accepts ``pretrained=`` (local ImageNet encoder weights)
    divisor: int  # input sizes padded internally to a multiple of this (1 = none needed)
    options: dict[str, Any] = field(default_factory=dict)  # option -> default


_SPECS: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    family: str,
    description: str,
    torchscript: str | None,
    pretrained: bool = False,
    divisor: int | Callable[..., int] = 1,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``factory(in_channels, num_classes, **options) -> nn.Module``.

    The keyword parameters after ``in_channels, num_classes`` are the model's options (their
    defaults are listed by :func:`model_info`). ``divisor`` is an int or a function of the
    options' default values (e.g. ``2 ** depth``) used for the reported default divisor.
    """
    if torchscript not in ("script", "trace", None):
        raise ValueError(f"torchscript must be 'script', 'trace' or None, got {torchscript!r}")

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        params = list(inspect.signature(factory).parameters.values())[2:]
        defaults = {p.name: p.default for p in params}
        div = divisor(**defaults) if callable(divisor) else divisor
        _SPECS[name] = ModelSpec(
            name, family, description, torchscript, pretrained, int(div), defaults
        )
        return MODELS.register(name)(factory)

    return decorator


def list_models() -> list[str]:
    """Names accepted by :func:`build_model`, sorted."""
    return MODELS.names()


def model_info(name: str) -> dict[str, Any]:
    """Facts about model ``name``: ``family``, ``description``, ``torchscript`` (bool),
    ``torchscript_method`` ("script" / "trace" / None), ``pretrained`` (bool: accepts local
    ImageNet encoder weights), ``divisor`` (int, at default options) and ``options``
    (option -> default value). Unknown name -> ``UnknownNameError`` with did-you-mean."""
    MODELS.get(name)  # raises UnknownNameError with did-you-mean
    spec = _SPECS[name]
    return {
        "name": spec.name,
        "family": spec.family,
        "description": spec.description,
        "torchscript": spec.torchscript is not None,
        "torchscript_method": spec.torchscript,
        "pretrained": spec.pretrained,
        "divisor": spec.divisor,
        # lists, not tuples: the options are written to YAML configs and JSON checkpoints
        "options": {k: list(v) if isinstance(v, tuple) else v for k, v in spec.options.items()},
    }


def build_model(name: str, in_channels: int, num_classes: int, **options: Any) -> nn.Module:
    """Build model ``name`` mapping ``[B, in_channels, H, W]`` to logits ``[B, num_classes, H, W]``.

    ``in_channels`` is the number of input planes (modalities x (2k+1) for 2.5D input);
    ``num_classes`` the number of output logits (background included for softmax models, 1
    for a single-logit sigmoid model). Raises ``UnknownNameError`` (did-you-mean + valid names)
    for an unknown model and ``ConfigError`` for unknown options or invalid values.
    """
    factory = MODELS.get(name)
    spec = _SPECS[name]
    for label, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"model {name!r}: {label} must be a positive integer, got {value!r}; "
                "set it from the number of input planes / classes of your dataset"
            )
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        valid = ", ".join(f"{k} (default {v!r})" for k, v in spec.options.items()) or "none"
        close = difflib.get_close_matches(unknown[0], list(spec.options), n=1, cutoff=0.6)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"model {name!r} has no option {', '.join(repr(u) for u in unknown)}.{hint} "
            f"Valid options: {valid}"
        )
    model = factory(in_channels, num_classes, **options)
    logger.debug(
        "built %s (in=%d, classes=%d, options=%s): %.2fM parameters",
        name,
        in_channels,
        num_classes,
        options,
        sum(p.numel() for p in model.parameters()) / 1e6,
    )
    return model


WEIGHT_OPTIONS = ("pretrained",)  # options that only choose initial weights


def architecture_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` without those that only pick initial weights (``pretrained``).

    Record these in checkpoints: rebuilding a trained network to load its ``state_dict`` must
    not need (or read) the ImageNet file it was initialised from.
    """
    return {k: v for k, v in options.items() if k not in WEIGHT_OPTIONS}


def check_choice(model: str, option: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raise ``ConfigError`` unless ``value`` is one of ``choices`` (option validation helper)."""
    if value not in choices:
        raise ConfigError(
            f"model {model!r}: option {option}={value!r} is invalid; expected one of "
            f"{', '.join(repr(c) for c in choices)}"
        )


def check_range(
    model: str, option: str, value: Any, low: float, high: float, kind: type = float
) -> None:
    """Raise ``ConfigError`` unless ``low <= value <= high`` (and an int when ``kind`` is int)."""
    ok_type = isinstance(value, int) if kind is int else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or not low <= value <= high:
        raise ConfigError(
            f"model {model!r}: option {option}={value!r} is invalid; expected "
            f"{'an integer' if kind is int else 'a number'} in [{low}, {high}]"
        )
