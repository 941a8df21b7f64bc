"""The :class:`Predictor`: one code path from scan(s) to a mask on the exact source grid.

Pipeline for one case (all steps recorded in ``Prediction.settings``):

1. the checkpoint's recorded preprocessing (:func:`medseg.data.preprocessing.preprocess_image`):
   canonical RAS ``(C, X, Y, Z)``, optional in-plane resampling, intensity normalisation;
2. batched 2.5D slice inference along the trained axis (``slice_stack``, the same function
   as training), optional test-time augmentation (flips of the two in-plane axes) and optional
   multi-axis ensembling, softmax averaged over all passes;
3. inverse preprocessing (resampling back, reorientation) to the source grid ``(I, J, K)``;
4. optional post-processing (largest component / small-component removal, in mL);
5. readouts (per-class mL, lesions with longest axial diameter).

Memory (``N = X*Y*Z`` preprocessed voxels, ``C`` channels, ``K`` classes, ``B`` batch,
``P = C*(2k+1)`` input planes, ``H*W`` slice size):

* preprocessed image: ``4*C*N`` bytes;
* single pass (no TTA, one axis) without probabilities: the softmax of each batch becomes
  labels at once, so only ``N`` bytes of uint8 labels exist for the whole volume (no
  full-volume class array at all);
* TTA / several axes / ``return_probabilities``: one softmax accumulator of ``4*K*N`` bytes
  (float32) while that is under ``accumulator_limit_bytes`` (default 2 GiB), else float16
  (``2*K*N`` bytes; near-ties within ~5e-4 may then break differently);
* per batch ``~4*B*(P + 2K)*H*W`` bytes plus the network's activations;
* probabilities restored to the source grid add ``4*K*I*J*K`` bytes (only when requested).

Peak RSS ~ source volume + ``4*C*N`` + labels/accumulator + batch + model (measured in
``benchmarks/bench_infer.py``, figures in ``docs/inference.md``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg import RESEARCH_USE_NOTICE
from medseg.device import resolve_device
from medseg.errors import CheckpointError, DatasetError
from medseg.inference.networks import OnnxNetwork, TorchNetwork
from medseg.inference.postprocess import PostprocessConfig, postprocess_labels
from medseg.inference.readouts import compute_readouts
from medseg.inference.slices import ProgressFn, infer_slices
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)


def default_model_path() -> Path:
    """Path of the bundled demo model ``medseg/assets/default_model.pt``.

    Raises :class:`CheckpointError` when the package was installed without it.
    """
    from importlib import resources

    path = Path(str(resources.files("medseg") / "assets" / "default_model.pt"))
    if not path.is_file():
        raise CheckpointError(
            f"the bundled default model {path} is missing; pass a checkpoint or export with "
            "--model PATH (train one with `medseg train`), or reinstall medseg"
        )
    return path


@dataclasses.dataclass
class Prediction:
    """Result of :meth:`Predictor.predict` for one case.

    Attributes:
        label: integer class indices on the exact source grid (same shape and affine as the
            input Volume), uint8 (int16 when there are more than 255 classes).
        probabilities: ``(K, I, J, K_src)`` float32 softmax on the source grid, or ``None``.
        class_names: name per class index (0 = background).
        readouts: ``compute_readouts`` output (per-class mL, lesion list).
        timing: seconds per stage (``preprocess``, ``inference``, ``restore``,
            ``postprocess``, ``readouts``, ``total``).
        settings: everything needed to reproduce the result (model, hash, preprocessing,
            axes, TTA, post-processing, device).
    """

    label: Volume
    probabilities: np.ndarray | None
    class_names: list[str]
    readouts: dict[str, Any]
    timing: dict[str, float]
    settings: dict[str, Any]

    def report(self) -> dict[str, Any]:
        """JSON-serialisable summary (what ``medseg predict`` writes to ``<case>.json``)."""
        return {
            "notice": RESEARCH_USE_NOTICE,
            "class_names": self.class_names,
            "shape": list(self.label.shape),
            "spacing_mm": [round(s, 6) for s in self.label.spacing],
            "readouts": self.readouts,
            "timing_s": {k: round(v, 4) for k, v in self.timing.items()},
            "settings": self.settings,
        }


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.split("/", 1)[-1].startswith("code/") for name in archive.namelist())


class Predictor:
    """Runs a trained network over whole volumes. Build with :meth:`load`,
    :meth:`from_checkpoint` or :meth:`from_export`; call :meth:`predict`.

    Args:
        network: callable ``[B, P, H, W]`` float32 tensor -> logits ``[B, K, H, W]``.
        metadata: the checkpoint's ``model``, ``preprocessing``, ``sampling``,
            ``class_names``, ``channel_names`` (and ``checkpoint_sha256``, ``source``).
        tta: average over the four in-plane flips.
        axes: canonical axes to slice along and ensemble (``None`` = the trained axis).
        batch_size: slices per forward pass.
        postprocess: clean-up applied on the source grid.
        accumulator_limit_bytes: largest float32 softmax accumulator; above it float16 is used.
    """

    def __init__(
        self,
        network: Callable[[torch.Tensor], torch.Tensor],
        metadata: dict[str, Any],
        *,
        tta: bool = False,
        axes: Sequence[int] | None = None,
        batch_size: int = 16,
        postprocess: PostprocessConfig | None = None,
        accumulator_limit_bytes: int = 2 << 30,
    ) -> None:
        from medseg.data.preprocessing import PreprocessingParams

        self.network = network
        self.metadata = metadata
        try:
            self.params = PreprocessingParams.model_validate(metadata["preprocessing"])
        except ValueError as err:  # pydantic.ValidationError is a ValueError
            raise CheckpointError(
                f"{metadata.get('source', 'model')}: its recorded preprocessing is invalid for "
                f"this medseg version ({str(err).splitlines()[0]}); re-export or retrain it"
            ) from err
        self.axis = int(metadata["sampling"].get("axis", self.params.slice_axis))
        self.context = int(metadata["sampling"].get("context", 0))
        self.class_names = list(metadata["class_names"])
        self.channel_names = list(metadata.get("channel_names") or self.params.channel_names)
        self.tta = bool(tta)
        self.axes = tuple(int(a) for a in (axes if axes else (self.axis,)))
        if any(a not in (0, 1, 2) for a in self.axes):
            raise DatasetError(f"axes {self.axes}: expected canonical axes among 0, 1, 2")
        self.batch_size = max(1, int(batch_size))
        self.postprocess = postprocess or PostprocessConfig()
        self.accumulator_limit_bytes = int(accumulator_limit_bytes)

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> Predictor:
        """A checkpoint (``.pt`` from ``medseg train``), TorchScript or ONNX export, by content."""
        path = Path(path)
        if path.suffix.lower() == ".onnx" or (path.is_file() and _is_torchscript(path)):
            return cls.from_export(path, **kwargs)
        return cls.from_checkpoint(path, **kwargs)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "auto", amp: bool | str = "auto", **kwargs: Any
    ) -> Predictor:
        """Build the network recorded in a checkpoint and load its weights."""
        from medseg.engine.checkpoint import file_sha256, load_checkpoint, model_from_checkpoint

        path = Path(path)
        payload = load_checkpoint(path)
        model = model_from_checkpoint(payload, path)
        meta = {k: payload.get(k) for k in ("model", "preprocessing", "sampling", "class_names")}
        meta["channel_names"] = payload.get("channel_names")
        meta["checkpoint_sha256"] = file_sha256(path)
        meta["source"] = str(path)
        meta["format"] = "checkpoint"
        network = TorchNetwork(model, resolve_device(device), amp)
        return cls(network, meta, **kwargs)

    @classmethod
    def from_export(
        cls, path: str | Path, device: str = "auto", amp: bool | str = "auto", **kwargs: Any
    ) -> Predictor:
        """Load a TorchScript (``.pt``/``.ts``) or ONNX (``.onnx``) file from ``medseg export``."""
        from medseg.inference.export import read_export_metadata

        path = Path(path)
        meta = read_export_metadata(path)
        dev = resolve_device(device)
        if path.suffix.lower() == ".onnx":
            network: Any = OnnxNetwork(str(path), dev)
        else:
            network = TorchNetwork(torch.jit.load(str(path), map_location=dev), dev, amp)
        meta["source"] = str(path)
        return cls(network, meta, **kwargs)

    # ------------------------------------------------------------------ inference
    def settings(self) -> dict[str, Any]:
        describe = getattr(self.network, "describe", dict)
        return {
            "model": self.metadata.get("model"),
            "model_file": self.metadata.get("source"),
            "model_format": self.metadata.get("format"),
            "checkpoint_sha256": self.metadata.get("checkpoint_sha256"),
            "preprocessing": self.params.model_dump(mode="json"),
            "sampling": {"axis": self.axis, "context": self.context},
            "axes": list(self.axes),
            "tta": self.tta,
            "batch_size": self.batch_size,
            "postprocess": self.postprocess.model_dump(),
            **describe(),
        }

    def predict(
        self,
        channels: Volume | Sequence[Volume],
        progress: ProgressFn | None = None,
        return_probabilities: bool = False,
    ) -> Prediction:
        """Segment one case. ``channels``: one Volume per modality (in ``channel_names``
        order), all on one grid. Returns labels on that exact grid (shape and affine)."""
        from medseg.data.preprocessing import (
            preprocess_image,
            restore_labels,
            restore_probabilities,
        )

        channels = [channels] if isinstance(channels, Volume) else list(channels)
        timing: dict[str, float] = {}
        start = t0 = time.perf_counter()
        image, grid = preprocess_image(channels, self.params)
        timing["preprocess"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        canonical = self.infer_canonical(image, progress, need_probabilities=return_probabilities)
        del image
        timing["inference"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        probabilities = None
        if return_probabilities:
            probabilities = restore_probabilities(canonical, grid)
            labels = probabilities.argmax(axis=0)
        else:
            if canonical.ndim == 4:  # averaged softmax -> labels before restoring (less memory)
                canonical = canonical.argmax(axis=0)
            labels = restore_labels(canonical, grid)
        del canonical
        dtype = np.uint8 if len(self.class_names) <= 256 else np.int16
        labels = labels.astype(dtype, copy=False)
        timing["restore"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        labels, removed = postprocess_labels(labels, channels[0].voxel_volume_ml, self.postprocess)
        timing["postprocess"] = time.perf_counter() - t0
        label_volume = channels[0].with_array(labels)
        t0 = time.perf_counter()
        readouts = compute_readouts(label_volume, self.class_names)
        readouts["postprocess_removed"] = removed
        timing["readouts"] = time.perf_counter() - t0
        timing["total"] = time.perf_counter() - start
        return Prediction(
            label_volume, probabilities, self.class_names, readouts, timing, self.settings()
        )

    def infer_canonical(
        self,
        image: np.ndarray,
        progress: ProgressFn | None = None,
        need_probabilities: bool = False,
    ) -> np.ndarray:
        """Run the network over a preprocessed image ``(C, X, Y, Z)`` (see
        :func:`medseg.inference.slices.infer_slices`): labels ``(X, Y, Z)`` for a single pass
        without probabilities, else the mean softmax ``(K, X, Y, Z)``."""
        return infer_slices(
            self.network,
            image,
            len(self.class_names),
            axes=self.axes,
            context=self.context,
            tta=self.tta,
            batch_size=self.batch_size,
            need_probabilities=need_probabilities,
            accumulator_limit_bytes=self.accumulator_limit_bytes,
            progress=progress,
        )
