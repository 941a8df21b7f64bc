"""Cohort throughput (issue 25 item 1): ``medseg predict`` local vs ``--engine ray`` on the
same machine, cases/s per stage, peak memory per worker, and a scaling model for 100,000 CT
scans on N GPUs built from the measured per-case costs.

    python benchmarks/bench_cohort.py --cases 20              # a smoke run (2-core machine)
    python benchmarks/bench_cohort.py                         # 500 cases
    python benchmarks/bench_cohort.py --device cuda --cases 200 --json out.json   # GPU machine

Cases are synthetic abdominal CTs (``medseg.synthetic.make_ct_abdomen``, int16, uncompressed
``.nii``: ~2 MiB each at the default 128 x 128 x 64); a few distinct scans are generated and
copied to make up the cohort. The network is a randomly initialised small ``unet`` (timing
does not depend on the weights). Both engines predict the same cases into fresh folders.

On a machine with few cores the Ray run shares them with the local one's work (reading,
inference, writing all compete), so the ratio measures Ray's overhead (actor start-up, task
scheduling, moving each case through the object store), not a speed-up. Research use only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_infer import make_checkpoint  # the benchmarks share one model maker

#: the CT the scaling model is for: 512 x 512 x 300 voxels
REAL_CT_VOXELS = 512 * 512 * 300
DISTINCT_SCANS = 8


def make_cohort(folder: Path, cases: int, shape: tuple[int, int, int]) -> float:
    """``cases`` scans ``case_NNNNN.nii`` in ``folder``; returns MiB per case."""
    from medseg.io import write_volume
    from medseg.synthetic.ct import make_ct_abdomen

    folder.mkdir(parents=True)
    distinct = []
    for seed in range(min(cases, DISTINCT_SCANS)):
        image, _ = make_ct_abdomen(seed, shape=shape)
        distinct.append(write_volume(image, folder / f"case_{seed:05d}.nii"))
    for k in range(len(distinct), cases):
        shutil.copyfile(distinct[k % len(distinct)], folder / f"case_{k:05d}.nii")
    return distinct[0].stat().st_size / 2**20


def local_run(scans: Path, out: Path, ckpt: Path, device: str) -> dict:
    from medseg.inference.batch import predict_folder

    t0 = time.perf_counter()
    result = predict_folder(scans, out, model=ckpt, device=device, progress=False)
    wall = time.perf_counter() - t0
    reports = [json.loads(p.read_text()) for p in sorted(out.glob("case_*.json"))]
    stage = {
        "read": [r["timing_s"]["read"] for r in reports],
        "model": [r["timing_s"]["total"] for r in reports],
        "write": [r["timing_s"]["write"] for r in reports],
    }
    return {
        "cases": len(result.done),
        "failed": len(result.failures),
        "wall_s": wall,
        "cases_per_s": len(result.done) / wall,
        "mean_s": {k: float(np.mean(v)) for k, v in stage.items()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def ray_run(scans: Path, out: Path, ckpt: Path, args) -> dict:
    import ray

    from medseg.inference.ray_engine import predict_folder_ray

    t0 = time.perf_counter()
    started = not ray.is_initialized() and args.address is None
    if started:  # a local cluster on the CPUs this process may use
        ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False,
                 log_to_driver=False)  # fmt: skip
    init_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    result = predict_folder_ray(
        scans, out, model=ckpt, address=args.address, cpu_workers=args.cpu_workers,
        gpus_per_worker=args.gpus_per_worker, device="cpu" if args.device == "cpu" else "auto",
        progress=False,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if started:
        ray.shutdown()
    return {
        "cases": len(result.done),
        "failed": len(result.failures),
        "init_s": init_s,
        "wall_s": wall,
        "cases_per_s": len(result.done) / wall,
        "stages": result.stages,
        "workers": result.workers,
        "device": result.device,
    }


def scaling_model(local: dict, ray_: dict, shape, args) -> list[str]:
    """Hours for 100,000 CTs on N GPUs, from the measured per-case costs (see the lines)."""
    scale = REAL_CT_VOXELS / float(np.prod(shape))
    stages = ray_["stages"]
    model_s = args.gpu_seconds_per_case or stages["model"]["mean_s"] * scale
    io_s = (stages["read"]["mean_s"] + stages["write"]["mean_s"]) * scale
    overhead_s = max(ray_["wall_s"] * ray_["workers"] / max(ray_["cases"], 1)
                     - stages["model"]["mean_s"], 0.0)  # fmt: skip
    source = ("--gpu-seconds-per-case" if args.gpu_seconds_per_case
              else f"measured model stage x {scale:.0f} (voxels of 512x512x300 / this case)")  # fmt: skip
    lines = [
        "scaling model: 100,000 CT scans (512 x 512 x 300) on N GPUs, one model worker per GPU,",
        f"  model s/case = {model_s:.2f} ({source}, device {ray_['device']})",
        f"  read+write s/case = {io_s:.2f} on one CPU (measured x {scale:.0f}); "
        f"{args.cpus_per_gpu} CPUs per GPU feed it",
        f"  per-case pipeline overhead = {overhead_s:.3f} s (Ray wall x workers / cases - model s)",
        "  hours(N) = 100,000 x max(model + overhead, read+write / CPUs per GPU) / N / 3600",
    ]
    if ray_["device"] == "cpu" and not args.gpu_seconds_per_case:
        lines.insert(2, "  (a CPU figure: run this on a GPU node, or pass --gpu-seconds-per-case "
                        "from `bench_infer.py --device cuda`)")  # fmt: skip
    per_case = max(model_s + overhead_s, io_s / args.cpus_per_gpu)
    for n in (1, 8, 32, 128):
        lines.append(f"  N = {n:>3} GPUs: {100_000 * per_case / n / 3600:8.1f} h")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--shape", type=int, nargs=3, default=[128, 128, 64])
    parser.add_argument("--device", default="cpu", help="local engine's device; ray: cpu or auto")
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--base-channels", type=int, default=4)
    parser.add_argument("--address", default=None, help="Ray cluster (default: a local one)")
    parser.add_argument("--cpu-workers", type=int, default=1)
    parser.add_argument("--gpus-per-worker", type=float, default=1.0)
    parser.add_argument("--cpus-per-gpu", type=int, default=8, help="for the scaling model")
    parser.add_argument("--gpu-seconds-per-case", type=float, default=None,
                        help="model seconds per real CT on one GPU (default: scaled from this run)")  # fmt: skip
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    shape = tuple(args.shape)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        mib = make_cohort(root / "scans", args.cases, shape)
        ckpt = make_checkpoint(root / "model.pt", args, "ct")
        local = local_run(root / "scans", root / "local", ckpt, args.device)
        ray_ = ray_run(root / "scans", root / "ray", ckpt, args)
    cores = len(os.sched_getaffinity(0))
    print(f"cohort: {args.cases} synthetic CTs {shape[0]}x{shape[1]}x{shape[2]} "
          f"({mib:.1f} MiB each), {cores} core(s) usable")  # fmt: skip
    print(f"{'engine':<8}{'cases':>7}{'failed':>8}{'wall s':>9}{'cases/s':>9}")
    for name, r in (("local", local), ("ray", ray_)):
        print(
            f"{name:<8}{r['cases']:>7}{r['failed']:>8}{r['wall_s']:>9.1f}{r['cases_per_s']:>9.2f}"
        )
    ratio = ray_["cases_per_s"] / local["cases_per_s"]
    print(f"throughput ratio ray / local: {ratio:.2f} (Ray start-up {ray_['init_s']:.1f} s not "
          "included)")  # fmt: skip
    if cores <= 2:
        print(f"note: {cores} core(s): the ratio is Ray's overhead on a shared CPU, not a "
              "speed-up; run it on a multi-GPU node or a cluster for that")  # fmt: skip
    print(f"{'stage':<7}{'local s/case':>13}{'ray s/case':>11}{'ray cases/s/worker':>19}"
          f"{'ray peak MiB/worker':>20}")  # fmt: skip
    for stage in ("read", "model", "write"):
        s = ray_["stages"][stage]
        print(f"{stage:<7}{local['mean_s'][stage]:>13.3f}{s['mean_s']:>11.3f}"
              f"{s['cases_per_s_per_worker']:>19.1f}{s['peak_rss_mb']:>20.0f}")  # fmt: skip
    print(
        f"local engine peak RSS (one process, this benchmark's too): {local['peak_rss_mb']:.0f} MiB"
    )
    lines = scaling_model(local, ray_, shape, args)
    print("\n".join(lines))
    print("For research use only. Not for diagnostic use.")
    if args.json:
        report = {"cases": args.cases, "shape": shape, "local": local, "ray": ray_,
                  "ratio": ratio, "scaling_model": lines}  # fmt: skip
        Path(args.json).write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
