"""``medseg predict --engine ray``: local predict's per-case stages as a Ray Data pipeline
over a cluster (``pip install medseg[cluster]``).

Stages (one case per block, so a failure costs that case only):

1. read, on CPU tasks: :func:`medseg.inference.batch.read_case` (file reading, ``.nii.gz``
   decompression, DICOM parsing); the slab-by-slab preprocessing stays inside
   ``Predictor.predict``, exactly as in local predict;
2. model, on an actor pool: each actor loads the model once (checkpoint, export, model
   folder or installed package name) on its GPU (``gpus_per_worker``), or on CPU when the
   cluster has none, and runs ``Predictor.predict``. A case that raises is retried
   (``retries``); after a CUDA out-of-memory error the retry runs on the actor's CPU;
3. write, on CPU tasks: :func:`medseg.inference.batch.write_case` (the same output guard and
   atomic group as local predict) or :func:`~medseg.inference.batch.write_failure`.

The driver runs local predict's checks first (:func:`~medseg.inference.batch.plan_run`),
skips finished cases the same way (:func:`~medseg.inference.batch.case_to_do`), and writes
the same ``summary.csv`` (:func:`~medseg.inference.batch.finish_run`). An actor that dies
(killed, out of host memory) is restarted by Ray and its in-flight case runs again, at most
``ACTOR_TASK_RETRIES`` times; then the case is recorded as failed and the others go on.

Ray is imported only inside this module's functions, so medseg works without it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import resource
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medseg.errors import ClusterError, ConfigError, OutputWriteError
from medseg.inference.batch import (
    Case,
    FolderResult,
    case_to_do,
    check_dicom_formats,
    check_plan_model,
    collect_failures,
    finish_run,
    plan_run,
    read_case,
    write_case,
    write_failure,
)
from medseg.inference.postprocess import PostprocessConfig
from medseg.io.atomic import write_text

logger = logging.getLogger(__name__)

#: how often a case may take its model actor down (killed, out of memory) before it is
#: recorded as failed; a case that always kills its worker must not stall the cohort
ACTOR_TASK_RETRIES = 2
STAGES = ("read", "model", "write")
#: CPUs each read / write task asks for (file I/O and compression; the model stage computes)
STAGE_TASK_CPUS = 0.25
INSTALL_HINT = "pip install medseg[cluster]"


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`ClusterError` saying how to install it."""
    try:
        import ray
        import ray.data  # the Data library comes with the [data] extra only
    except ImportError as err:
        raise ClusterError(
            f"engine ray: Ray is not installed ({err}); install it with `{INSTALL_HINT}` "
            "(Ray Data), or predict with the local engine (leave out --engine ray)",
            param="engine",
        ) from err
    return ray


def probe_address(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when nothing answers at ``HOST:PORT`` (``ray://HOST:PORT`` too) instead
    of waiting out Ray's own connection timeout (a minute)."""
    hostport = address.removeprefix("ray://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"address {address}: expected auto, HOST:PORT (the head's GCS, port 6379) or "
            "ray://HOST:PORT (Ray Client, port 10001)",
            param="address",
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ClusterError(
            f"address {address}: no Ray cluster answers at {host}:{port} ({err}); start one "
            f"with `ray start --head` on {host} (Ray Client listens on port 10001), check "
            "the address and the firewall, or leave out --address for a local one",
            param="address",
        ) from err


def connect(ray: Any, address: str | None) -> bool:
    """Join the cluster at ``address`` (``None``: start a local one; ``auto``: the one this
    machine belongs to); returns whether this call started Ray (and must shut it down)."""
    if ray.is_initialized():  # a notebook's or a test's own session
        return False
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    except (ConnectionError, RuntimeError, TimeoutError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ClusterError(
            f"address {address}: cannot connect to the Ray cluster ({first}); start it with "
            "`ray start --head`, pass its address (auto, HOST:6379 or ray://HOST:10001), or "
            "leave out --address for a local one",
            param="address",
        ) from err
    return True


def _probe_output(output: str, marker: str, token: str) -> str | None:
    """On a worker: why it cannot use ``output`` (None when it can)."""
    folder = Path(output)
    if not folder.is_dir():
        return f"{output} does not exist there"
    try:
        if (folder / marker).read_text() != token:
            return f"{output} holds another run's marker (a different folder of the same name)"
    except OSError:
        return f"{output} exists there but not the driver's marker file (another file system)"
    probe = folder / f".{marker}.{os.getpid()}"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        return f"{output} is not writable there ({err.strerror})"
    return None


def check_output_visible(ray: Any, output: Path, timeout_s: float = 120.0) -> None:
    """Before any case: every alive node's worker must see the driver's output folder (the
    driver writes a marker file, one task per node reads it and writes a probe)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = uuid.uuid4().hex
    marker = output / f".medseg-ray-check-{token[:12]}"
    write_text(marker, token)
    try:
        probe = ray.remote(num_cpus=0)(_probe_output)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        refs = [
            probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(output), marker.name, token)
            for n in nodes
        ]
        answers = ray.get(refs, timeout=timeout_s)
    finally:
        marker.unlink(missing_ok=True)
    bad = [
        f"node {n.get('NodeManagerAddress')}: {a}" for n, a in zip(nodes, answers, strict=True) if a
    ]
    if bad:
        raise ClusterError(
            f"output {output}: not usable from every Ray worker ({'; '.join(bad)}); put the "
            "output folder on a file system every node mounts at the same path (NFS, Lustre, "
            "a cloud bucket mount), or run without --engine ray",
            param="output",
        )


def peak_rss_mb() -> float:
    """This process's peak resident memory (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _is_cuda_oom(err: BaseException) -> bool:
    import torch

    return isinstance(err, torch.cuda.OutOfMemoryError) or "CUDA out of memory" in str(err)


def read_stage(
    row: dict[str, Any], *, channel_names: Sequence[str], series: str | None,
    channel: int | None,
) -> dict[str, Any]:  # fmt: skip
    """Stage 1 (CPU task): one case's channel Volumes, pickled for the model stage."""
    case = Case(str(row["case_id"]), [Path(p) for p in row["inputs"]])
    t0 = time.perf_counter()
    payload, error = b"", ""
    try:
        channels = read_case(case, channel_names, series, channel)
        payload = pickle.dumps(channels, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:  # the case fails, the cohort goes on
        error = _error_text(err)
    return {
        "case_id": case.case_id, "inputs": [str(p) for p in case.inputs], "payload": payload,
        "error": error, "read_s": time.perf_counter() - t0, "read_rss_mb": peak_rss_mb(),
    }  # fmt: skip


class ModelStage:
    """Stage 2 (actor): loads the model once, then predicts one case per call.

    ``fault_hook(case_id, attempt)`` runs before each attempt (fault injection in tests:
    raise to fail the attempt, ``os._exit`` to kill the actor)."""

    def __init__(
        self, model: str | None, device: str, options: dict[str, Any], retries: int,
        save_probabilities: bool, fault_hook: Callable[[str, int], None] | None = None,
    ) -> None:  # fmt: skip
        self.model, self.device, self.options = model, device, options
        self.retries, self.save_probabilities = retries, save_probabilities
        self.fault_hook = fault_hook
        self.predictor = self._load(device)
        self.cpu_predictor = None

    def _load(self, device: str) -> Any:
        from medseg.inference.predictor import Predictor, default_model_path

        return Predictor.load(self.model or default_model_path(), device=device, **self.options)

    def _predict(self, case_id: str, channels: list) -> tuple[Any, str, int]:
        """(prediction or None, error, attempts)."""
        predictor, error = self.predictor, ""
        for attempt in range(self.retries + 1):
            try:
                if self.fault_hook is not None:
                    self.fault_hook(case_id, attempt)
                prediction = predictor.predict(
                    channels, return_probabilities=self.save_probabilities
                )
                return prediction, "", attempt + 1
            except Exception as err:  # retried, then recorded: never stops the cohort
                error = _error_text(err)
                logger.warning("case %s, attempt %d: %s", case_id, attempt + 1, error)
                if _is_cuda_oom(err) and self.device != "cpu":
                    import torch

                    torch.cuda.empty_cache()
                    if self.cpu_predictor is None:  # the same model, on this actor's CPU
                        self.cpu_predictor = self._load("cpu")
                    predictor = self.cpu_predictor
        return None, error, self.retries + 1

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        out = {k: row[k] for k in ("case_id", "inputs", "error", "read_s", "read_rss_mb")}
        out.update(payload=b"", model_s=0.0, attempts=0, device=self.device)
        if not row["error"]:
            t0 = time.perf_counter()
            channels = pickle.loads(row["payload"])
            prediction, error, attempts = self._predict(str(row["case_id"]), channels)
            if prediction is not None:
                dicom_files = channels[0].metadata.get("dicom_files")
                out["payload"] = pickle.dumps((prediction, dicom_files), pickle.HIGHEST_PROTOCOL)
            out.update(error=error, model_s=time.perf_counter() - t0, attempts=attempts)
        out["model_rss_mb"] = peak_rss_mb()
        return out


def write_stage(
    row: dict[str, Any], *, output: str, folds: Sequence[str] | None,
    dicom_formats: Sequence[str],
) -> dict[str, Any]:  # fmt: skip
    """Stage 3 (CPU task): the case's outputs (or its failure record); a small status row."""
    case = Case(str(row["case_id"]), [Path(p) for p in row["inputs"]])
    output_dir, t0 = Path(output), time.perf_counter()
    status, error = "ok", str(row["error"])
    try:
        if error:
            status = "failed"
            write_failure(output_dir, case, error)
        else:
            prediction, dicom_files = pickle.loads(row["payload"])
            worker = {"engine": "ray", "host": socket.gethostname(), "device": row["device"]}
            write_case(
                case, prediction, output_dir, dicom_files=dicom_files, read_s=row["read_s"],
                worker=worker, folds=folds, dicom_formats=dicom_formats,
            )  # fmt: skip
    except OutputWriteError as err:  # the disk, not the case: the driver stops the run
        status, error = "write_error", str(err)
    except Exception as err:
        status, error = "failed", _error_text(err)
        write_failure(output_dir, case, error)
    keep = ("case_id", "read_s", "model_s", "attempts", "read_rss_mb", "model_rss_mb")
    return {
        **{k: row[k] for k in keep}, "status": status, "error": error,
        "write_s": time.perf_counter() - t0, "write_rss_mb": peak_rss_mb(),
    }  # fmt: skip


@dataclasses.dataclass
class RayResult(FolderResult):
    """:class:`~medseg.inference.batch.FolderResult` plus the run's per-stage figures."""

    stages: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    wall_s: float = 0.0
    workers: int = 0
    device: str = "cpu"


def stage_summary(rows: Sequence[dict[str, Any]], wall_s: float) -> dict[str, dict[str, float]]:
    """Per stage: cases, mean seconds per case, cases/s of one worker and peak memory of
    the busiest worker (MiB); ``all`` is the whole run's wall clock."""
    summary = {}
    for stage in STAGES:
        seconds = [float(r[f"{stage}_s"]) for r in rows]
        mean = sum(seconds) / len(seconds) if seconds else 0.0
        summary[stage] = {
            "cases": len(seconds),
            "mean_s": mean,
            "cases_per_s_per_worker": 1.0 / mean if mean > 0 else 0.0,
            "peak_rss_mb": max((float(r[f"{stage}_rss_mb"]) for r in rows), default=0.0),
        }
    summary["all"] = {"cases": len(rows), "wall_s": wall_s,
                      "cases_per_s": len(rows) / wall_s if wall_s > 0 else 0.0}  # fmt: skip
    return summary


def format_stage_summary(result: RayResult) -> list[str]:
    """The end-of-run lines the CLI prints (one per stage)."""
    lines = []
    for stage in STAGES:
        s = result.stages.get(stage)
        if s and s["cases"]:
            lines.append(
                f"  {stage:<5} {s['cases']:>5} case(s), {s['mean_s']:.2f} s/case "
                f"({s['cases_per_s_per_worker']:.2f} cases/s per worker), peak "
                f"{s['peak_rss_mb']:.0f} MiB per worker"
            )
    run = result.stages.get("all", {})
    if run.get("cases"):
        lines.append(
            f"  run   {run['cases']:>5} case(s) in {run['wall_s']:.1f} s "
            f"({run['cases_per_s']:.2f} cases/s, {result.workers} model worker(s) on "
            f"{result.device})"
        )
    return lines


def model_pool(ray: Any, gpus_per_worker: float, cpu_workers: int, device: str) -> dict:
    """The model stage's actor pool: one actor per ``gpus_per_worker`` GPUs of the cluster,
    or ``cpu_workers`` CPU actors when it has no GPU (or ``device`` is ``cpu``)."""
    if device not in ("auto", "cpu"):
        raise ConfigError(
            f"device {device}: with --engine ray each model worker takes a GPU when the "
            "cluster has one; expected auto (GPU where there is one) or cpu",
            param="device",
        )
    if gpus_per_worker <= 0 or cpu_workers < 1:
        raise ConfigError(
            f"gpus_per_worker {gpus_per_worker}, cpu_workers {cpu_workers}: expected a "
            "positive GPU share (e.g. 1 or 0.5) and at least one CPU worker",
            param="gpus_per_worker",
        )
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0.0)) if device == "auto" else 0.0
    if gpus >= gpus_per_worker:
        workers, num_gpus, kind = int(gpus // gpus_per_worker), gpus_per_worker, "cuda"
    else:
        workers, num_gpus, kind = cpu_workers, 0, "cpu"
    # Actors hold their CPUs for the whole run: leave room for the read and write tasks, or
    # a small cluster (1-2 CPUs) would wait forever for a CPU to read the next case.
    spare = float(resources.get("CPU", 1.0)) - 2 * STAGE_TASK_CPUS
    num_cpus = min(1.0, max(spare, STAGE_TASK_CPUS) / workers)
    return {"concurrency": workers, "num_gpus": num_gpus, "num_cpus": num_cpus, "device": kind}


def run_pipeline(
    ray: Any, todo: Sequence[Case], output: Path, pool: dict[str, Any], *,
    stage_args: dict[str, Any], progress: bool,
) -> list[dict[str, Any]]:  # fmt: skip
    """Run the three stages over ``todo``; the status rows of the cases that came through."""
    from tqdm import tqdm

    ctx = ray.data.DataContext.get_current()
    saved = (ctx.max_errored_blocks, ctx.enable_progress_bars)
    # A case whose actor died ACTOR_TASK_RETRIES + 1 times loses its block instead of
    # failing the dataset; the driver records it as failed.
    ctx.max_errored_blocks, ctx.enable_progress_bars = -1, False
    try:
        items = [{"case_id": c.case_id, "inputs": [str(p) for p in c.inputs]} for c in todo]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map(read_stage, fn_kwargs=stage_args["read"], num_cpus=STAGE_TASK_CPUS)
        with warnings.catch_warnings():  # Ray Data has no named parameter for the retries yet
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = ds.map(
                ModelStage, fn_constructor_kwargs={**stage_args["model"], "device": pool["device"]},
                compute=ray.data.ActorPoolStrategy(size=pool["concurrency"]),
                num_gpus=pool["num_gpus"], num_cpus=pool["num_cpus"], max_restarts=-1,
                max_task_retries=ACTOR_TASK_RETRIES,
            )  # fmt: skip
        ds = ds.map(write_stage, fn_kwargs={**stage_args["write"], "output": str(output)},
                    num_cpus=STAGE_TASK_CPUS)  # fmt: skip
        rows = []
        with tqdm(total=len(items), desc="predict (ray)", unit="case", disable=not progress) as bar:
            for row in ds.iter_rows():
                rows.append(dict(row))
                bar.update(1)
                if row["status"] == "write_error":  # a full or read-only output disk
                    raise OutputWriteError(row["error"])
    finally:
        ctx.max_errored_blocks, ctx.enable_progress_bars = saved
    return rows


def predict_folder_ray(
    inputs: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    model: str | Path | None = None,
    address: str | None = None,
    gpus_per_worker: float = 1.0,
    cpu_workers: int = 1,
    device: str = "auto",
    tta: bool | None = None,
    axes: Sequence[int] | None = None,
    batch_size: int = 16,
    postprocess: PostprocessConfig | None = None,
    save_probabilities: bool = False,
    overwrite: bool = False,
    series: str | None = None,
    progress: bool = True,
    channel: int | None = None,
    num_parts: int = 1,
    part_id: int = 0,
    dicom_formats: str | Sequence[str] = ("seg",),
    retries: int = 1,
    fault_hook: Callable[[str, int], None] | None = None,
) -> RayResult:
    """:func:`~medseg.inference.batch.predict_folder` on a Ray cluster (the same outputs,
    voxel for voxel). ``address``: ``None`` starts a local Ray, ``auto`` joins this
    machine's cluster, ``HOST:6379`` or ``ray://HOST:10001`` a remote one.
    ``gpus_per_worker``: GPUs per model actor (a fraction shares one GPU);
    ``cpu_workers``: model actors when the cluster has no GPU. ``retries``: extra attempts
    of a case whose prediction raised. The other arguments are predict_folder's."""
    from medseg.inference.predictor import Predictor, default_model_path

    ray = import_ray()
    dicom_formats = check_dicom_formats(dicom_formats)
    if address and address != "auto" and not ray.is_initialized():
        probe_address(address)  # before the output folder is made
    plan = plan_run(
        inputs, output, model, overwrite=overwrite, num_parts=num_parts, part_id=part_id
    )
    options = {"tta": tta, "axes": axes, "batch_size": batch_size, "postprocess": postprocess}
    # Loaded here once on CPU: a bad model is one error before the cluster does anything,
    # and its hash and channels are known to the driver.
    local = Predictor.load(plan.model or default_model_path(), device="cpu", **options)
    model_sha256 = local.provenance.get("checkpoint_sha256")
    check_plan_model(plan, model_sha256)
    todo = [c for c in plan.cases if case_to_do(plan.output, c, overwrite)]
    todo_ids = {c.case_id for c in todo}
    skipped = [c.case_id for c in plan.cases if c.case_id not in todo_ids]
    started = connect(ray, address)
    try:
        pool = model_pool(ray, gpus_per_worker, cpu_workers, device)
        check_output_visible(ray, plan.output)
        stage_args = {
            "read": {"channel_names": local.channel_names, "series": series, "channel": channel},
            "model": {"model": str(plan.model) if plan.model else None, "options": options,
                      "retries": retries, "save_probabilities": save_probabilities,
                      "fault_hook": fault_hook},
            "write": {"folds": local.provenance.get("fold_checkpoint_sha256"),
                      "dicom_formats": dicom_formats},
        }  # fmt: skip
        del local
        t0 = time.perf_counter()
        rows = run_pipeline(ray, todo, plan.output, pool, stage_args=stage_args,
                            progress=progress) if todo else []  # fmt: skip
        wall_s = time.perf_counter() - t0
    finally:
        if started:
            ray.shutdown()
    seen = {str(r["case_id"]) for r in rows}
    for case in todo:  # its actor died on every try: recorded like any failed case
        if case.case_id not in seen:
            write_failure(
                plan.output, case,
                f"WorkerDied: the Ray worker predicting it died {ACTOR_TASK_RETRIES + 1} times "
                "(out of memory or killed); predict it alone, or on a node with more memory",
            )  # fmt: skip
    summary = finish_run(plan, model_sha256, overwrite=overwrite)
    return RayResult(
        plan.cases, [str(r["case_id"]) for r in rows if r["status"] == "ok"], skipped,
        collect_failures(plan.cases, plan.output), summary,
        stages=stage_summary(rows, wall_s), wall_s=wall_s, workers=pool["concurrency"],
        device=pool["device"],
    )  # fmt: skip
