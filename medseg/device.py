"""The one device policy: which device, which autocast dtype, channels_last, and the torchrun job.

Used by training, prediction (single and batch), export and the viewer, so a rule (how
``auto`` is chosen, what ``cuda:1`` does on a machine with one GPU) lives in this file only.

* :func:`resolve_device`: ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` / ``mps``. A device this
  machine does not have is a :class:`~medseg.errors.ConfigError` naming the devices present;
  it never falls back to the CPU in silence. Under torchrun ``auto``/``cuda`` mean
  ``cuda:LOCAL_RANK``.
* :func:`resolve_amp_dtype` and :func:`autocast`: mixed precision. On CUDA bf16 where the GPU
  supports it, else fp16. On a CPU only for training and only where it has native bf16
  (AMX / AVX512-BF16, :func:`cpu_has_native_bf16`): there bf16 autocast trains the recipe's
  UNet 2.2x faster (3.1x with channels_last), elsewhere it is emulated and slower than fp32.
  CPU inference stays fp32 (masks a reader sees do not change with the machine).
* :func:`use_channels_last`: on CUDA, and for CPU training (the recipe's UNet steps 1.2-1.4x
  faster on the 2-core Xeon; ``bench_train.py --recipe``).
* :class:`DistInfo`: this process's place in a torchrun job. The CLI reads the environment
  once (:meth:`DistInfo.from_env`) and passes the result down; library code never reads the
  environment. :func:`init_process_group` / :func:`destroy_process_group` and the collective
  helpers are no-ops for a single process.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from medseg.errors import ConfigError

logger = logging.getLogger(__name__)

DEVICE_CHOICES = "auto|cpu|cuda|cuda:N|mps"
_DEVICE_RE = re.compile(r"^(cpu|mps|cuda)(:\d+)?$")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job; ``world_size == 1`` means no process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DistInfo:
        """Read torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (absent -> single process).
        Called by the CLI entry points only."""
        env = os.environ if environ is None else environ
        return cls(
            rank=int(env.get("RANK", 0)),
            world_size=int(env.get("WORLD_SIZE", 1)),
            local_rank=int(env.get("LOCAL_RANK", 0)),
        )


def check_device_name(device: object, param: str = "device") -> str:
    """``device`` normalised (``"CUDA:1 "`` -> ``"cuda:1"``) without touching torch; a
    :class:`ConfigError` naming ``param`` for anything that is not a device name."""
    text = str(device).strip().lower()
    if text != "auto" and not _DEVICE_RE.match(text):
        raise ConfigError(
            f"{param} {device!r}: unknown device; expected one of {DEVICE_CHOICES}", param=param
        )
    return text


def _present(torch: Any) -> str:
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return "this machine has no CUDA GPU"
    names = ", ".join(f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(count))
    return f"this machine has {count} CUDA GPU(s): {names}"


def resolve_device(
    device: object = "auto", info: DistInfo | None = None, *, param: str = "device"
) -> Any:
    """A ``torch.device`` for ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``).

    ``auto`` -> CUDA when present, else CPU. Under torchrun (``info.enabled``) ``auto`` and
    ``cuda`` take ``cuda:LOCAL_RANK`` (modulo the GPUs present) and make it the current device.

    Raises:
        ConfigError: an unknown name, or a device this machine does not have (the message
            lists the GPUs present), instead of torch's RuntimeError deep inside model loading.
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
    text = check_device_name(device, param)
    info = info or DistInfo()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    if text == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(
                f"{param} {device!r}: Apple MPS is not available on this machine; "
                f"{_present(torch)}; use cpu or auto",
                param=param,
            )
        return torch.device("mps")
    if text.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"{param} {device!r}: no CUDA GPU is available on this machine; use cpu or "
                f"auto (valid values: {DEVICE_CHOICES})",
                param=param,
            )
        index = text.partition(":")[2]
        index = int(index) if index else (info.local_rank % count if info.enabled else 0)
        if index >= count:
            raise ConfigError(
                f"{param} {device!r}: {_present(torch)}; pick one of those, or auto|cpu",
                param=param,
            )
        resolved = torch.device("cuda", index)
        if info.enabled:
            torch.cuda.set_device(resolved)
        return resolved
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively (AMX or AVX512-BF16 through oneDNN)."""
    import torch

    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    try:
        native = any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    except RuntimeError:  # a torch built without the probes
        return False
    return native and torch.backends.mkldnn.is_available()


def resolve_amp_dtype(amp: object, device: Any, training: bool = False) -> Any:
    """The autocast dtype for ``amp`` (``auto``/``True``, ``bf16``, ``fp16``, ``off``/``False``
    or a ``torch.dtype``) on ``device``; ``None`` means full precision. Off the GPU only when
    ``training`` on a CPU with native bf16 (``auto``/``bf16``; fp16 has no fast CPU kernels)."""
    import torch

    if amp in (None, False, "off"):
        return None
    if device.type == "cpu" and training:
        wanted = amp in (True, "auto", "bf16") or amp is torch.bfloat16
        return torch.bfloat16 if wanted and cpu_has_native_bf16() else None
    if device.type != "cuda":
        return None
    if isinstance(amp, torch.dtype):
        return amp
    if amp == "fp16":
        return torch.float16
    if amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(device: Any, dtype: Any) -> contextlib.AbstractContextManager:
    """``torch.autocast`` when ``dtype`` is set, else a no-op context."""
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device.type, dtype=dtype)


def use_channels_last(requested: bool, device: Any, training: bool = False) -> bool:
    """Whether to use channels_last: asked for, and on CUDA or for CPU training."""
    return bool(requested) and (device.type == "cuda" or (training and device.type == "cpu"))


# ---------------------------------------------------------------- process group
def _dist() -> Any:
    import torch.distributed as dist

    return dist if dist.is_available() else None


def _initialised() -> bool:
    dist = _dist()
    return dist is not None and dist.is_initialized()


def backend_for(device: Any) -> str:
    """The process-group backend for ``device``: NCCL on CUDA, Gloo otherwise. NCCL reduces
    device tensors only, so on CUDA the collectives take their tensors to the device."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_process_group(info: DistInfo, device: Any, timeout_s: int = 1800) -> None:
    """Join the torchrun job: NCCL on CUDA, Gloo otherwise (no-op for a single process or
    when already initialised)."""
    if not info.enabled or _initialised():
        return
    dist = _dist()
    backend = backend_for(device)
    dist.init_process_group(
        backend=backend,
        rank=info.rank,
        world_size=info.world_size,
        timeout=datetime.timedelta(seconds=timeout_s),
    )
    logger.info("rank %d/%d joined the %s process group", info.rank, info.world_size, backend)


def destroy_process_group() -> None:
    if _initialised():
        _dist().destroy_process_group()


@contextlib.contextmanager
def process_group(info: DistInfo, device: Any) -> Iterator[None]:
    """Joined for the ``with`` block and left afterwards (only if this call joined it)."""
    owned = info.enabled and not _initialised()
    init_process_group(info, device)
    try:
        yield
    finally:
        if owned:
            destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if _initialised():
        _dist().barrier()


def all_reduce_sum(tensor: Any, device: Any = None) -> Any:
    """Sum ``tensor`` over ranks and return it (identity without a process group). ``device``:
    the run's device; under NCCL the sum runs there and comes back to ``tensor``'s device."""
    if _initialised():
        dist = _dist()
        work = tensor.to(device) if device is not None and backend_for(device) == "nccl" else tensor
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
        return work.to(tensor.device)
    return tensor


def any_rank(flag: bool, device: Any) -> bool:
    """True when ``flag`` is true on any rank (used so all ranks stop on the same step)."""
    if not _initialised():
        return flag
    import torch

    dist = _dist()
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def all_gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj`` in rank order (``[obj]`` without a process group)."""
    if not _initialised():
        return [obj]
    dist = _dist()
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shard(items: list, info: DistInfo) -> list:
    """This rank's share of ``items`` (round robin), e.g. validation or prediction cases."""
    return list(items)[info.rank :: info.world_size]


def broadcast_buffers(module: Any) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank."""
    if not _initialised():
        return
    dist = _dist()
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)
