"""Pretrained ImageNet encoders from local files only, and first-conv channel adaptation.

Nothing here downloads: ``pretrained`` is a path to a torchvision state_dict ``.pth``, a file
name looked up in the torch hub cache (``$TORCH_HOME/hub/checkpoints``, default
``~/.cache/torch/hub/checkpoints``), or ``True`` for torchvision's default file name there.
Files load with ``torch.load(weights_only=True)`` (no pickled code is executed).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from medseg.errors import CheckpointError, ConfigError

logger = logging.getLogger(__name__)

# torchvision's ImageNet file names (the ``weights_backbone`` defaults of its seg. models).
DEFAULT_WEIGHT_FILES = {
    "resnet50": "resnet50-0676ba61.pth",
    "resnet101": "resnet101-63fe2227.pth",
    "mobilenet_v3_large": "mobilenet_v3_large-8738ca79.pth",
}


def hub_checkpoint_dir() -> Path:
    """Where torch hub caches weights (``$TORCH_HOME/hub/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_pretrained(pretrained: str | Path | bool | None, arch: str, model: str) -> Path | None:
    """Local weights file for ``pretrained`` (see module docstring); ``None`` when not wanted.

    Raises ``CheckpointError`` naming the places looked at when the file is absent.
    """
    if pretrained is None or pretrained is False or pretrained == "":
        return None
    default = DEFAULT_WEIGHT_FILES[arch]
    hub = hub_checkpoint_dir()
    if pretrained is True:
        candidates = [hub / default]
    elif isinstance(pretrained, (str, Path)):
        path = Path(pretrained).expanduser()
        candidates = [path] if len(path.parts) > 1 or path.is_file() else [path, hub / path.name]
    else:
        raise ConfigError(
            f"model {model!r}: option pretrained={pretrained!r} is invalid; expected a path to "
            f"a {arch} state_dict .pth, a file name in {hub}, true, or null"
        )
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise CheckpointError(
        f"model {model!r}: pretrained {arch} weights not found (looked at "
        f"{', '.join(str(c) for c in candidates)}); cannot download here: place {default} in "
        f"{hub} or pass pretrained=/path/to/{arch}.pth (a torchvision {arch} state_dict)"
    )


def load_encoder_weights(
    encoder: nn.Module,
    path: Path,
    model: str,
    rename: Callable[[str], str | None] = lambda key: key,
) -> None:
    """Load an ImageNet classifier state_dict at ``path`` into ``encoder`` (strictly).

    ``rename`` maps a file key to the encoder's key, or ``None`` to drop it (the classifier
    head). Missing or mismatched tensors raise ``CheckpointError``: a wrong architecture must
    never be half-loaded silently.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path}: cannot be read as a torchvision state_dict ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200]}); expected a .pth file of tensors"
        ) from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds a {type(state).__name__}; expected a state_dict")
    renamed = {new: value for key, value in state.items() if (new := rename(key)) is not None}
    own = encoder.state_dict()
    missing = sorted(set(own) - set(renamed))
    unexpected = sorted(set(renamed) - set(own))
    wrong = sorted(
        k for k in set(own) & set(renamed) if tuple(own[k].shape) != tuple(renamed[k].shape)
    )
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{path}: does not match the {model!r} encoder ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(wrong)} wrong-shape tensors, e.g. "
            f"{(missing + unexpected + wrong)[:3]}); pass the ImageNet weights of the right "
            "torchvision architecture"
        )
    encoder.load_state_dict(renamed)
    logger.info("loaded pretrained encoder weights for %s from %s", model, path)


def adapt_first_conv(conv: nn.Conv2d, in_channels: int, pretrained: bool) -> nn.Conv2d:
    """Return ``conv`` rebuilt for ``in_channels`` inputs.

    With pretrained weights the RGB kernel is averaged over its 3 input channels and each new
    channel gets ``mean * 3 / in_channels``, so a constant image gives the same activations as
    an RGB one (timm's rule); a 3-channel pretrained conv is kept as is. Without pretrained
    weights the new conv is initialised as torchvision initialises ResNet convs.
    """
    if in_channels == conv.in_channels and pretrained:
        return conv
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        dilation=conv.dilation,
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    if pretrained:
        with torch.no_grad():
            mean = conv.weight.mean(dim=1, keepdim=True)
            new.weight.copy_(mean.repeat(1, in_channels, 1, 1) * (3.0 / in_channels))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    else:
        nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
        if new.bias is not None:
            nn.init.zeros_(new.bias)
    return new


def replace_module(root: nn.Module, dotted: str, new: nn.Module) -> None:
    """Set the submodule at ``dotted`` (e.g. ``"conv1"`` or ``"0.0"``) to ``new``."""
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
