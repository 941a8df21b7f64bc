"""The :class:`Predictor`: one code path from scan(s) to a mask on the exact source grid.

Pipeline for one case (all steps recorded in ``Prediction.settings``):

1. the checkpoint's recorded preprocessing (:class:`medseg.data.slabs.SlabImage`, equal to
   :func:`medseg.data.preprocessing.preprocess_image` but made one slab of slices at a time
   from the source volumes): canonical RAS ``(C, X, Y, Z)``, optional in-plane resampling,
   intensity normalisation;
2. batched 2.5D slice inference along the trained axis (``slice_stack``, the same function
   as training), optional test-time augmentation (flips of the two in-plane axes) and optional
   multi-axis ensembling, softmax averaged over all passes;
3. inverse preprocessing (resampling back, reorientation) to the source grid ``(I, J, K)``;
4. optional post-processing (largest component / small-component removal, in mL);
5. readouts (per-class mL, lesions with longest axial diameter).

Memory (``N = X*Y*Z`` preprocessed voxels, ``C`` channels, ``K`` classes, ``B`` batch,
``P = C*(2k+1)`` input planes, ``H*W`` slice size):

* source volumes: an uncompressed NIfTI is a read-only memory map whose pages are released
  after each slab, so it is never resident as a whole; a ``.nii.gz`` (no random access) or
  DICOM series is in memory as read;
* single pass (no TTA, one axis) without probabilities: each batch's softmax becomes labels
  at once, written straight into the ``N``-byte uint8 label array on the source grid; no
  full-volume float array exists (MR and ``other`` fit their normalisation on one transient
  float32 copy per channel first, ``4*N`` bytes);
* TTA / several axes / ``return_probabilities`` / a model that resamples: one softmax
  accumulator of ``4*K*N`` bytes (float32) while that is under ``accumulator_limit_bytes``
  (default 2 GiB), else float16 (``2*K*N`` bytes; near-ties within ~5e-4 may then break
  differently); slices along an axis other than the trained one of a resampling model need
  the whole preprocessed image (``4*C*N``);
* per batch ``~4*B*(P + 2K)*H*W`` bytes plus the network's activations;
* probabilities restored to the source grid add ``4*K*I*J*K`` bytes (when requested, and for
  models that resample, whose probabilities are interpolated back before decoding);
* readouts: the components of each class within its bounding box (``5`` bytes per voxel of
  that box).

Measured in ``benchmarks/bench_infer.py --only memory``; figures in ``docs/performance.md``.
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
from medseg.checkpoint import ModelRecord
from medseg.data.slicing import AXIS_NAMES
from medseg.data.slicing import check_axes as check_canonical_axes
from medseg.device import resolve_device
from medseg.errors import CheckpointError, ConfigError
from medseg.inference.model_folder import is_model_folder, read_model_folder
from medseg.inference.networks import OnnxNetwork, TorchNetwork
from medseg.inference.postprocess import (
    ComponentRule,
    PostprocessConfig,
    postprocess_labels,
    structures_of,
)
from medseg.inference.readouts import compute_readouts
from medseg.inference.slices import LabelDecoder, ProgressFn, SlabSource, infer_slices
from medseg.io.volume import Volume

logger = logging.getLogger(__name__)


#: default cap on slices x pixels per batch on CPU (see ``Predictor``'s ``max_batch_pixels``)
CPU_BATCH_PIXELS = 1 << 19


def default_model_path(must_exist: bool = True) -> Path:
    """Path of the bundled demo model ``medseg/assets/default_model.pt``.

    Raises :class:`CheckpointError` when the package was installed without it, unless
    ``must_exist`` is false (the viewer lists the path and says when it is missing).
    """
    from importlib import resources

    path = Path(str(resources.files("medseg") / "assets" / "default_model.pt"))
    if must_exist and not path.is_file():
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
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, UnicodeDecodeError, OSError, ValueError, EOFError):
        return False  # not a readable zip: loading it as a checkpoint reports why
    return any(name.split("/", 1)[-1].startswith("code/") for name in names)


class Predictor:
    """Runs a trained network (or an ensemble of folds) over whole volumes. Build with
    :meth:`load` (checkpoint, export or model folder); call :meth:`predict`.

    Args:
        networks: one callable or a list (an ensemble, probabilities averaged), each
            ``[B, P, H, W]`` float32 tensor -> logits ``[B, K, H, W]``.
        record: what the model is (:class:`~medseg.checkpoint.ModelRecord`).
        provenance: where it came from (``source``, ``format``, ``checkpoint_sha256``...),
            copied into every prediction's settings.
        tta: average over the four in-plane flips; ``None``: as the model records (on for
            a model trained with ``train.test_time_augmentation``).
        axes: canonical axes to slice along and ensemble (``None`` = every trained axis);
            each must be one the model was trained on.
        batch_size: slices per forward pass (at most).
        max_batch_pixels: cap on slices x pixels per forward pass; ``"auto"``: 2**19 (2 slices
            of 512 x 512, 9 of 240 x 240) on CPU, no cap on a GPU; ``None``: no cap. On CPU
            the activations of a 2D network take host memory (~80 MiB per 512 x 512 slice for
            a tiny UNet, measured): 16 CT slices would need several times the memory of the
            scan. Per pixel the CPU time hardly depends on the batch (9 vs 16 BraTS slices:
            ~8 % slower; 1, 2 or 4 CT slices: the same), see docs/performance.md.
    """

    def __init__(
        self,
        networks: Callable[[torch.Tensor], torch.Tensor] | Sequence[Callable[..., Any]],
        record: ModelRecord,
        provenance: dict[str, Any] | None = None,
        *,
        tta: bool | None = None,
        axes: Sequence[int] | None = None,
        batch_size: int = 16,
        postprocess: PostprocessConfig | None = None,
        accumulator_limit_bytes: int = 2 << 30,
        max_batch_pixels: int | str | None = "auto",
    ) -> None:
        self.networks = list(networks) if isinstance(networks, list | tuple) else [networks]
        self.record = record
        self.provenance = dict(provenance or {})
        self.params = record.preprocessing
        self.axis, self.context = record.axis, record.context
        self.class_names = list(record.class_names)
        self.channel_names = list(record.channel_names)
        self.tta = record.tta if tta is None else bool(tta)
        self.axes = check_axes(axes, record, self.provenance.get("source", "model"))
        self.batch_size = max(1, int(batch_size))
        regions = record.regions
        self.decoder = LabelDecoder(
            record.num_outputs, self.params.region_labels if regions else None
        )
        self.structures = structures_of(self.params, self.class_names)
        if postprocess is None:
            rules = tuple(ComponentRule.model_validate(r) for r in record.postprocessing)
            postprocess = PostprocessConfig(rules=rules)
        self.postprocess = postprocess
        self.accumulator_limit_bytes = int(accumulator_limit_bytes)
        if max_batch_pixels == "auto":
            on_cpu = str(getattr(self.networks[0], "device", "cpu")).startswith("cpu")
            max_batch_pixels = CPU_BATCH_PIXELS if on_cpu else None
        self.max_batch_pixels = None if max_batch_pixels is None else int(max_batch_pixels)

    @property
    def network(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The first network (the only one unless this is an ensemble)."""
        return self.networks[0]

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, path: str | Path, **kwargs: Any) -> Predictor:
        """A checkpoint (``.pt`` from ``medseg train``), a TorchScript or ONNX export, or a
        model folder (``model.json``: the ensemble of its folds), by content; or the name
        of an installed model package (:func:`medseg.inference.store.resolve_model`)."""
        from medseg.inference.store import resolve_model

        path = resolve_model(path)
        if path.is_dir() and is_model_folder(path):
            return cls.from_model_folder(path, **kwargs)
        if path.suffix.lower() == ".onnx" or (path.is_file() and _is_torchscript(path)):
            return cls.from_export(path, **kwargs)
        return cls.from_checkpoint(path, **kwargs)

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "auto", amp: bool | str = "auto", **kwargs: Any
    ) -> Predictor:
        """Build the network recorded in a checkpoint and load its weights."""
        from medseg.checkpoint import file_sha256, load_record, model_from_checkpoint

        path = Path(path)
        record, payload = load_record(path)
        model = model_from_checkpoint(payload, path)
        provenance = {
            "source": str(path),
            "format": "checkpoint",
            "checkpoint_sha256": file_sha256(path),
        }
        return cls(TorchNetwork(model, resolve_device(device), amp), record, provenance, **kwargs)

    @classmethod
    def from_model_folder(
        cls, path: str | Path, device: str = "auto", amp: bool | str = "auto", **kwargs: Any
    ) -> Predictor:
        """The ensemble of a cross-validation's folds (probabilities averaged over folds)."""
        from medseg.checkpoint import file_sha256, load_record, model_from_checkpoint

        record, checkpoints, _ = read_model_folder(path)
        dev = resolve_device(device)
        networks, hashes = [], []
        for ckpt in checkpoints:
            fold_record, payload = load_record(ckpt)
            differ = fold_record.same_model_family(record)
            if differ:
                raise CheckpointError(
                    f"{ckpt}: differs from {path}/model.json in {', '.join(differ)}; every "
                    "fold of a model folder must share them (re-run the cross-validation)"
                )
            networks.append(TorchNetwork(model_from_checkpoint(payload, ckpt), dev, amp))
            hashes.append(file_sha256(ckpt))
        provenance = {
            "source": str(path),
            "format": "model_folder",
            "checkpoint_sha256": file_sha256(Path(path) / "model.json"),
            "fold_checkpoint_sha256": hashes,
        }
        return cls(networks, record, provenance, **kwargs)

    @classmethod
    def from_export(
        cls, path: str | Path, device: str = "auto", amp: bool | str = "auto", **kwargs: Any
    ) -> Predictor:
        """Load a TorchScript (``.pt``/``.ts``) or ONNX (``.onnx``) file from ``medseg export``."""
        from medseg.checkpoint import ModelRecord
        from medseg.inference.export import read_export_metadata

        path = Path(path)
        meta = read_export_metadata(path)
        record = ModelRecord.from_payload(meta, path)
        dev = resolve_device(device)
        if path.suffix.lower() == ".onnx":
            # ONNX Runtime, not a conversion back to PyTorch: on the 2-core CPU it ran the
            # exported UNet 2.8x faster than PyTorch (forward 16.8 vs 47.5 CPU s, end to end
            # 20.0 vs 54.1 s on a 512x512x200 CT; benchmarks/bench_infer.py --only onnx,
            # 2026-12-02, docs/performance.md), with logits equal to 6e-8.
            network: Any = OnnxNetwork(str(path), dev)
        else:
            network = TorchNetwork(torch.jit.load(str(path), map_location=dev), dev, amp)
        provenance = {
            "source": str(path),
            "format": meta.get("format"),
            "checkpoint_sha256": meta.get("checkpoint_sha256"),
        }
        return cls(network, record, provenance, **kwargs)

    # ------------------------------------------------------------------ inference
    def settings(self) -> dict[str, Any]:
        describe = getattr(self.network, "describe", dict)
        fields = self.record.payload_fields()
        return {
            "model": fields["model"],
            "model_file": self.provenance.get("source"),
            "model_format": self.provenance.get("format"),
            "checkpoint_sha256": self.provenance.get("checkpoint_sha256"),
            "ensemble_size": len(self.networks),
            "preprocessing": fields["preprocessing"],
            "sampling": fields["sampling"],
            "axes": list(self.axes),
            "tta": self.tta,
            "batch_size": self.batch_size,
            "max_batch_pixels": self.max_batch_pixels,
            "postprocess": self.postprocess.model_dump(mode="json"),
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
        from medseg.data.slabs import SlabImage

        channels = [channels] if isinstance(channels, Volume) else list(channels)
        timing: dict[str, float] = {}
        start = t0 = time.perf_counter()
        # Slabs are read, reoriented and normalised batch by batch inside the slice loop (in
        # its prefetch thread), so "preprocess" only checks the inputs and fits constants.
        image = SlabImage(channels, self.params)
        grid = image.grid
        timing["preprocess"] = time.perf_counter() - t0
        labels, probabilities = self._infer_on_source_grid(
            image, progress, return_probabilities, timing
        )
        del image
        t0 = time.perf_counter()
        labels, removed = postprocess_labels(
            labels, channels[0].voxel_volume_ml, self.postprocess, self.structures
        )
        timing["postprocess"] = time.perf_counter() - t0
        label_volume = channels[0].with_array(labels)
        t0 = time.perf_counter()
        readouts = compute_readouts(label_volume, self.class_names)
        readouts["postprocess_removed"] = removed
        if grid.nonfinite_replaced:  # NaN/Inf voxels replaced by preprocessing (check_finite)
            readouts["nonfinite_voxels_replaced"] = grid.nonfinite_replaced
        timing["readouts"] = time.perf_counter() - t0
        timing["total"] = time.perf_counter() - start
        return Prediction(
            label_volume, probabilities, self.class_names, readouts, timing, self.settings()
        )

    def _infer_on_source_grid(
        self,
        image: SlabSource,
        progress: ProgressFn | None,
        return_probabilities: bool,
        timing: dict[str, float],
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """(labels in the decoder's dtype, probabilities or None) on the source grid; adds
        ``inference`` and ``restore`` seconds to ``timing``."""
        from medseg.data.preprocessing import (
            canonical_view,
            restore_labels,
            restore_probabilities,
        )

        grid = image.grid
        t0 = time.perf_counter()
        # A model that resamples: interpolate probabilities back to the source grid and decode
        # there (smooth boundaries); nearest-neighbour labels would come back blocky.
        need_probabilities = return_probabilities or grid.resampled
        probabilities = None
        if len(self.axes) == 1 and not need_probabilities:
            # labels go straight into their place on the source grid: nothing to restore
            labels = np.zeros(grid.source_shape, dtype=self.decoder.dtype)
            self.infer_canonical(image, progress, out=canonical_view(labels, grid))
            timing["inference"] = time.perf_counter() - t0
            timing["restore"] = 0.0
            return labels, None
        canonical = self.infer_canonical(image, progress, need_probabilities)
        timing["inference"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if need_probabilities:
            restored = restore_probabilities(canonical, grid)
            del canonical
            labels = self.decoder.decode_volume(restored)
            probabilities = restored if return_probabilities else None
            del restored
        else:  # several axes: averaged probabilities -> labels before restoring
            labels = restore_labels(self.decoder.decode_volume(canonical), grid)
            del canonical
        timing["restore"] = time.perf_counter() - t0
        return labels, probabilities

    def infer_canonical(
        self,
        image: np.ndarray | SlabSource,
        progress: ProgressFn | None = None,
        need_probabilities: bool = False,
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Run the network over a preprocessed image ``(C, X, Y, Z)``, an array or a
        :class:`~medseg.data.slabs.SlabImage` (see :func:`medseg.inference.slices.infer_slices`):
        labels ``(X, Y, Z)`` (into ``out`` when given) for a single pass without
        probabilities, else the mean softmax ``(K, X, Y, Z)``."""
        return infer_slices(
            self.networks,
            image,
            self.record.num_outputs,
            axes=self.axes,
            context=self.context,
            tta=self.tta,
            batch_size=self.batch_size,
            need_probabilities=need_probabilities,
            accumulator_limit_bytes=self.accumulator_limit_bytes,
            progress=progress,
            decoder=self.decoder,
            out=out,
            max_batch_pixels=self.max_batch_pixels,
        )


def check_axes(
    axes: Sequence[int] | None, record: ModelRecord, source: str | Path = "model"
) -> tuple[int, ...]:
    """The axes to predict along: ``axes`` when each was trained on, else an error naming
    the trained axes (slices along an unseen axis look nothing like the training data)."""
    trained = tuple(record.axes)
    if not axes:
        return trained
    axes = check_canonical_axes(axes)
    unseen = [a for a in axes if a not in trained]
    if unseen:
        names = ", ".join(f"{a} ({AXIS_NAMES[a]})" for a in trained)
        raise ConfigError(
            f"axes {list(axes)}: {source} was trained on axis {names} only, not on "
            f"{', '.join(f'{a} ({AXIS_NAMES[a]})' for a in unseen)}; predict along the trained "
            "axes, or train with data.slice_axes: [0, 1, 2] for a multi-view ensemble",
            param="axes",
        )
    return axes
