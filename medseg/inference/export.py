"""Export a checkpoint's network to TorchScript or ONNX with its preprocessing metadata.

The exported network maps ``image`` float32 ``[B, P, H, W]`` to ``logits`` ``[B, K, H, W]``
with dynamic ``B``, ``H``, ``W``. The metadata (model spec, preprocessing, sampling, class and
channel names, source checkpoint SHA-256) travels inside the file: TorchScript
``_extra_files["medseg.json"]``, ONNX ``metadata_props["medseg"]`` (JSON), so
``medseg predict --model exported.onnx`` applies exactly the checkpoint's preprocessing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from medseg import RESEARCH_USE_NOTICE, __version__
from medseg.checkpoint import ModelRecord
from medseg.errors import CheckpointError, first_line
from medseg.io.atomic import atomic_path, check_output

logger = logging.getLogger(__name__)

METADATA_KEY = "medseg"
TORCHSCRIPT_METADATA_FILE = "medseg.json"
EXPORT_FORMAT_VERSION = 1
ExportFormat = Literal["torchscript", "onnx"]


def _metadata(record: ModelRecord, sha256: str, fmt: str, folds: int = 1) -> dict[str, Any]:
    return {
        "export_format_version": EXPORT_FORMAT_VERSION,
        "medseg_version": __version__,
        "format": fmt,
        **record.payload_fields(),
        "ensemble_folds": folds,
        "checkpoint_sha256": sha256,
        "notice": RESEARCH_USE_NOTICE,
    }


class EnsembleModule(torch.nn.Module):
    """Several fold networks as one: outputs the log of the averaged probabilities, which
    softmax (or, for region models, sigmoid) turns back into exactly that average, so an
    exported ensemble runs through the same Predictor path as a single network."""

    def __init__(self, models: list[torch.nn.Module], sigmoid: bool) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(models)
        self.sigmoid = sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(1, device=x.device)
        for member in self.members:
            logits = member(x)
            total = total + (torch.sigmoid(logits) if self.sigmoid else torch.softmax(logits, 1))
        p = (total / len(self.members)).clamp(1e-7, 1 - 1e-7)
        return torch.log(p) - torch.log1p(-p) if self.sigmoid else torch.log(p)


def _load_for_export(path: Path) -> tuple[torch.nn.Module, ModelRecord, str, int]:
    """(network, record, sha256, number of folds) of a checkpoint or a model folder."""
    from medseg.checkpoint import file_sha256, load_record, model_from_checkpoint
    from medseg.inference.model_folder import MODEL_FILE, is_model_folder, read_model_folder

    if path.is_dir() and is_model_folder(path):
        record, checkpoints, _ = read_model_folder(path)
        models = [model_from_checkpoint(load_record(c)[1], c) for c in checkpoints]
        model = EnsembleModule(models, sigmoid=bool(record.regions)).eval()
        return model, record, file_sha256(path / MODEL_FILE), len(models)
    record, payload = load_record(path)
    return model_from_checkpoint(payload, path), record, file_sha256(path), 1


def _model_files(path: Path) -> list[Path]:
    """The files a model consists of (a model folder's manifest and fold checkpoints)."""
    from medseg.inference.model_folder import MODEL_FILE, is_model_folder, read_model_folder

    if path.is_dir() and is_model_folder(path):
        return [path, path / MODEL_FILE, *read_model_folder(path, verify=False)[1]]
    return [path]


def export_model(
    checkpoint: str | Path,
    output: str | Path,
    fmt: ExportFormat,
    *,
    overwrite: bool = False,
    opset: int = 17,
) -> dict[str, Any]:
    """Export ``checkpoint`` (a ``.pt`` file or a model folder, whose folds become one
    averaged network) to ``output``; returns the embedded metadata plus the parity check
    (``max_abs_diff`` of logits between PyTorch and the export on CPU)."""
    from medseg.inference.store import resolve_model
    from medseg.models import model_info

    checkpoint, output = resolve_model(checkpoint), Path(output)
    if fmt not in ("torchscript", "onnx"):
        raise CheckpointError(f"export format {fmt!r} is unknown; expected torchscript or onnx")
    check_output(output, overwrite=overwrite, inputs=_model_files(checkpoint))
    model, record, sha256, folds = _load_for_export(checkpoint)
    meta = _metadata(record, sha256, fmt, folds)
    # Odd H, W: networks that pad to a divisor must take their padding branch while traced,
    # otherwise the trace (ONNX) bakes in "no padding" and fails on other sizes.
    example = torch.randn(2, record.in_channels, 67, 93)
    with atomic_path(output) as tmp:
        if fmt == "torchscript":
            method = model_info(record.name).get("torchscript_method") or "trace"
            method = "trace" if folds > 1 else method
            _export_torchscript(model, example, tmp, meta, method)
        else:
            _export_onnx(model, example, tmp, meta, opset)
    # Check at a size and batch other than the traced ones: proves the dynamic axes work.
    meta["max_abs_diff"] = max(
        check_parity(model, output, torch.randn(3, record.in_channels, 48, 72)),
        check_parity(model, output, torch.randn(1, record.in_channels, 61, 77)),
    )
    logger.info(
        "exported %s -> %s (max |logit diff| %.2e)", checkpoint, output, meta["max_abs_diff"]
    )
    return meta


def _export_torchscript(
    model: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict, method: str
) -> None:
    with torch.no_grad():
        if method == "script":
            scripted = torch.jit.script(model)
        else:
            scripted = torch.jit.trace(model, example, check_trace=False)
    extra = {TORCHSCRIPT_METADATA_FILE: json.dumps(meta)}
    torch.jit.save(scripted, str(path), _extra_files=extra)


def _export_onnx(
    model: torch.nn.Module, example: torch.Tensor, path: Path, meta: dict, opset: int
) -> None:
    import onnx

    dynamic = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad():
        # The TorchScript-based exporter handles the models' shape-dependent padding with
        # dynamic H/W reliably; the torch.export one needs per-model dynamic-shape hints.
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": dynamic, "logits": dynamic},
            opset_version=opset,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    proto.producer_name = "medseg"
    onnx.save(proto, str(path))


def read_export_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata embedded by :func:`export_model` in a TorchScript or ONNX file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"exported model {path} does not exist; check the path")
    try:
        if path.suffix.lower() == ".onnx":
            import onnx

            proto = onnx.load(str(path), load_external_data=False)
            props = {p.key: p.value for p in proto.metadata_props}
            text = props.get(METADATA_KEY)
        else:
            extra = {TORCHSCRIPT_METADATA_FILE: ""}
            torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
            text = extra[TORCHSCRIPT_METADATA_FILE] or None
    except Exception as err:
        raise CheckpointError(
            f"{path}: cannot be read as a TorchScript/ONNX model ({type(err).__name__}: "
            f"{str(err).splitlines()[0][:200] if str(err) else ''}); expected a file written by `medseg export`"
        ) from err
    if not text:
        raise CheckpointError(
            f"{path}: has no medseg metadata (preprocessing, class names); export it with "
            "`medseg export --model CKPT` so inference can reproduce the preprocessing"
        )
    try:
        meta = json.loads(text)
    except ValueError as err:  # JSONDecodeError: the file was edited or damaged
        raise CheckpointError(
            f"{path}: its medseg metadata is damaged ({type(err).__name__}: {first_line(err)}); "
            "expected the JSON object `medseg export` writes: export the model again"
        ) from err
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"{path}: its medseg metadata is a JSON {type(meta).__name__}, expected the JSON "
            "object `medseg export` writes: export the model again"
        )
    return meta


def check_parity(model: torch.nn.Module, exported: str | Path, batch: torch.Tensor) -> float:
    """Max absolute logit difference between ``model`` and the exported file on ``batch``."""
    exported = Path(exported)
    with torch.no_grad():
        reference = model.eval()(batch).numpy()
        if exported.suffix.lower() == ".onnx":
            import onnxruntime as ort

            session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            other = session.run(None, {name: batch.numpy()})[0]
        else:
            other = torch.jit.load(str(exported), map_location="cpu")(batch).numpy()
    if other.shape != reference.shape:
        raise CheckpointError(
            f"{exported}: exported output shape {other.shape} != PyTorch {reference.shape}"
        )
    return float(np.abs(other - reference).max())
