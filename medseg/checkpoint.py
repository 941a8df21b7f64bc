"""Checkpoint files and the typed model record they carry.

This module sits between ``data``/``models`` and ``inference``: the trainer writes
checkpoints through it, and the Predictor, export and model folders read them through
:class:`ModelRecord`, so what a model *is* (network, preprocessing, classes, channels, slice
axes, regions, postprocessing) is defined once.

A checkpoint is a plain ``dict`` of tensors, numbers, strings, lists and dicts, so it loads
with ``torch.load(weights_only=True)``. Keys (all written by the trainer):

``format_version`` (int), ``medseg_version`` (str),
``model``: ``{"name": str, "in_channels": int, "num_classes": int, "options": dict}``,
``state_dict``: model weights, unwrapped from DDP / ``torch.compile``,
``preprocessing``: ``PreprocessingParams.model_dump(mode="json")`` (recorded by the data
pipeline; inference re-applies it exactly),
``sampling``: ``{"axis": int, "axes": [int, ...], "context": int}`` (primary slice axis in
canonical RAS voxel order, every axis the network was trained on, and the 2.5D half-context
``k``; the network sees ``(2k+1) * channels`` input planes; ``axes`` absent in files from
medseg 0.1 means ``[axis]``),
``class_names``: list of str, index = label value (0 = background),
``channel_names``: list of str (one per input modality, e.g. ``["flair", "t1c"]``),
``postprocessing``: optional list of component rules (:mod:`medseg.inference.postprocess`),
``config``: the resolved training config (dict), ``epoch`` (int), ``metrics`` (dict),
and for resuming: ``optimizer``, ``scheduler``, ``scaler``, ``rng`` (state dicts).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pydantic
import torch

from medseg.data.preprocessing import PreprocessingParams
from medseg.data.slicing import check_axes
from medseg.errors import CheckpointError, InputNotFoundError, MedsegError, first_line
from medseg.io.atomic import atomic_path

FORMAT_VERSION = 1
REQUIRED_KEYS = ("model", "state_dict", "preprocessing", "sampling", "class_names")


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> Path:
    """Write ``payload`` atomically (temp file + rename): a crash never leaves a corrupt file."""
    from medseg import __version__

    payload = {"format_version": FORMAT_VERSION, "medseg_version": __version__, **payload}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check it has what inference needs."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a folder, expected a checkpoint file (.pt); pass "
            f"{path}/checkpoints/best.pt for a run folder, or a model folder with model.json "
            "where a model folder is accepted (medseg predict/view/export --model)"
        )
    if not path.is_file():
        raise InputNotFoundError(f"checkpoint {path} does not exist; pass the path to a .pt file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path}: cannot be loaded as a medseg checkpoint ({type(err).__name__}: "
            f"{first_line(err)}); expected a .pt file written by `medseg train`"
        ) from err
    if not isinstance(payload, dict):
        raise CheckpointError(
            f"{path}: found a {type(payload).__name__}, expected a dict checkpoint"
        )
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise CheckpointError(
            f"{path}: checkpoint lacks {', '.join(missing)}; expected a checkpoint written by "
            "`medseg train` (a bare state_dict has no preprocessing record and cannot be used)"
        )
    return payload


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (recorded in prediction reports to identify the model)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def model_from_checkpoint(
    payload: dict[str, Any], path: str | Path = "checkpoint"
) -> torch.nn.Module:
    """Rebuild the network a checkpoint records and load its weights (eval mode, CPU).

    Weight-initialisation options such as ``pretrained`` are dropped: the trained weights
    replace them, and the ImageNet file may not exist where the model is used. The network
    is first built without memory (PyTorch's ``meta`` device) and its parameter shapes are
    compared with the stored weights, so a damaged record (``base_channels: 10**6``) is
    refused before anything is allocated.
    """
    from medseg.models import architecture_options

    spec = payload["model"]
    options = architecture_options(dict(spec.get("options", {})))
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(
            f"{path}: state_dict is not a mapping of tensors; the checkpoint is damaged"
        )
    with torch.device("meta"):
        skeleton = _build_recorded(spec, options, path)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        wrong = sorted(set(expected) ^ set(found)) or sorted(
            k for k in expected if expected[k] != found[k]
        )
        key = wrong[0]
        raise CheckpointError(
            f"{path}: weights do not fit model {spec['name']!r} ({len(wrong)} tensor(s) "
            f"differ, e.g. {key!r}: model {expected.get(key, 'absent')}, checkpoint "
            f"{found.get(key, 'absent')}); the checkpoint is damaged or was written by an "
            "incompatible medseg version"
        )
    model = _build_recorded(spec, options, path)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # same shapes, other dtype that cannot be copied (complex...)
        raise CheckpointError(
            f"{path}: weights do not fit model {spec['name']!r} ({first_line(err)}); the "
            "checkpoint is damaged or was written by an incompatible medseg version"
        ) from err
    return model.eval()


def _build_recorded(spec: dict[str, Any], options: dict[str, Any], path: str | Path):
    from medseg.models import build_model

    try:
        return build_model(spec["name"], spec["in_channels"], spec["num_classes"], **options)
    except (MedsegError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{path}: the recorded model {spec.get('name')!r} with options {options} cannot "
            f"be built ({type(err).__name__}: {first_line(err)}); the checkpoint is damaged "
            "or was written by an incompatible medseg version"
        ) from err


TRAINING_STATE_KEYS = ("optimizer", "scheduler", "scaler", "rng")


def slim_checkpoint(source: str | Path, output: str | Path, **extra: Any) -> Path:
    """Copy a checkpoint without its resume state (optimizer, scheduler, scaler, RNG).

    What remains is everything inference needs (weights, preprocessing, sampling, names,
    config); ``extra`` adds keys such as a ``description``. Used to build the bundled model.
    """
    payload = load_checkpoint(source)
    slim = {k: v for k, v in payload.items() if k not in TRAINING_STATE_KEYS}
    slim.update(extra)
    slim.pop("format_version", None)
    slim.pop("medseg_version", None)
    return save_checkpoint(slim, output)


class ModelRecord(pydantic.BaseModel):
    """What a trained model is, independent of where its weights live.

    Built from a checkpoint (:meth:`from_payload`), an export's embedded metadata or a model
    folder's ``model.json``; written by the trainer (:meth:`payload_fields`).

    Attributes:
        name / in_channels / num_outputs / options: the network (``build_model`` arguments);
            ``num_outputs`` is the logit channels: classes (softmax) or regions (sigmoid).
        preprocessing: the recorded :class:`~medseg.data.preprocessing.PreprocessingParams`
            (includes ``regions`` for region-based models).
        class_names: name per label value of the output mask (0 = background).
        channel_names: one per input modality, in input order.
        axes: canonical RAS axes the network was trained on (slices along each).
        context: 2.5D half-context ``k``.
        postprocessing: component rules applied by default after prediction (JSON form of
            :class:`medseg.inference.postprocess.ComponentRule`), ``[]`` = none.
        tta: predict with test-time augmentation (the four in-plane flips) by default, as
            trained (``train.test_time_augmentation``) and as its out-of-fold figures were made.
    """

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    name: str
    in_channels: int = pydantic.Field(ge=1)
    num_outputs: int = pydantic.Field(ge=1)
    options: dict[str, Any] = pydantic.Field(default_factory=dict)
    preprocessing: PreprocessingParams
    class_names: list[str] = pydantic.Field(min_length=2)  # background and at least one
    channel_names: list[str] = pydantic.Field(min_length=1)
    axes: tuple[int, ...] = (2,)
    context: int = pydantic.Field(0, ge=0)
    postprocessing: list[dict[str, Any]] = pydantic.Field(default_factory=list)
    tta: bool = False

    @pydantic.field_validator("axes")
    @classmethod
    def _canonical_axes(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        return check_axes(value, "axes", ValueError)

    @property
    def axis(self) -> int:
        """The primary slice axis (the first trained one)."""
        return self.axes[0]

    @property
    def regions(self) -> dict[str, list[int]] | None:
        return self.preprocessing.regions

    @classmethod
    def from_payload(cls, payload: dict[str, Any], source: str | Path = "model") -> ModelRecord:
        """The record of a checkpoint dict or an export's metadata (CheckpointError if invalid)."""
        try:
            spec, sampling = payload["model"], payload["sampling"]
            params = PreprocessingParams.model_validate(payload["preprocessing"])
            axis = int(sampling.get("axis", params.slice_axis))
            return cls(
                name=spec["name"],
                in_channels=spec["in_channels"],
                num_outputs=spec["num_classes"],
                options=dict(spec.get("options", {})),
                preprocessing=params,
                class_names=list(payload["class_names"]),
                channel_names=list(payload.get("channel_names") or params.channel_names),
                axes=tuple(sampling.get("axes") or (axis,)),
                context=int(sampling.get("context", 0)),
                postprocessing=list(payload.get("postprocessing") or []),
                tta=bool(payload.get("tta", False)),
            )
        # RuntimeError: a tensor where a list belongs; OverflowError: int(inf)
        except (
            KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError,
            OverflowError,
        ) as err:  # fmt: skip
            raise CheckpointError(
                f"{source}: its model record is invalid for this medseg version "
                f"({type(err).__name__}: {first_line(err)}); re-export or "
                "retrain it"
            ) from err

    def payload_fields(self) -> dict[str, Any]:
        """The record as checkpoint keys (``model``, ``preprocessing``, ``sampling``, ...)."""
        return {
            "model": {
                "name": self.name,
                "in_channels": self.in_channels,
                "num_classes": self.num_outputs,
                "options": dict(self.options),
            },
            "preprocessing": self.preprocessing.model_dump(mode="json"),
            "sampling": {"axis": self.axis, "axes": list(self.axes), "context": self.context},
            "class_names": list(self.class_names),
            "channel_names": list(self.channel_names),
            "postprocessing": list(self.postprocessing),
            "tta": self.tta,
        }

    def same_model_family(self, other: ModelRecord) -> list[str]:
        """Fields that differ in a way that forbids ensembling the two (empty = compatible)."""
        keys = ("in_channels", "num_outputs", "class_names", "channel_names", "context")
        diff = [k for k in keys if getattr(self, k) != getattr(other, k)]
        if self.preprocessing.model_dump() != other.preprocessing.model_dump():
            diff.append("preprocessing")
        return diff


def load_record(path: str | Path) -> tuple[ModelRecord, dict[str, Any]]:
    """A checkpoint's :class:`ModelRecord` and its raw payload (weights included)."""
    payload = load_checkpoint(path)
    return ModelRecord.from_payload(payload, path), payload
