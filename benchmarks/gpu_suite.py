"""The one GPU suite: every speed check a lent GPU machine should run, as one command.

Steps (each with its own time limit, 9.5 min in all, so one slow step cannot eat the
machine's minutes):

1. ``pytest -m gpu``: the GPU tests;
2. batched augmentation throughput at 256x256 (goal >= 20,000 slices/s) and the
   device-resident sampler + augmentation (``bench_data.py --only-batched``);
3. training step (fp32 / channels_last / AMP / torch.compile) and the pipeline ratio for the
   worker and the device-resident pipelines at the BraTS recipe's settings
   (``bench_train.py --recipe configs/brats_2d.yaml``);
4. time to Dice, medseg recipe vs the MONAI peer, for a fixed short budget
   (``bench_time_to_dice.py``; needs ../shared/data);
5. CT inference timing and the MONAI SliceInferer comparison (``bench_infer.py``);
6. cohort throughput, local predict vs ``--engine ray`` on the GPU (``bench_cohort.py``, needs
   ``medseg[cluster]``; not in ``--quick``).

Writes ``OUTPUT/gpu_suite_<stamp>.json`` (each step's command, exit code, seconds, the JSON
figures it wrote and its output tail) and ``OUTPUT/gpu_suite_<stamp>.md``. ``--quick`` runs
every step at toy sizes on the CPU in about a minute (the test suite runs it, so the suite
cannot rot); its figures mean nothing.

    bash benchmarks/gpu_suite.sh                    # on the GPU machine, <= 9.5 min on one H100/H200
    bash benchmarks/gpu_suite.sh --quick --output /tmp/suite
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SHARED = ROOT.parent / "shared" / "data"


def steps(device: str, quick: bool, out: Path) -> list[tuple[str, list[str], int]]:
    """``(name, command, time limit in s)`` for each step."""
    py = sys.executable
    if quick:
        return [
            ("augmentation", [py, str(BENCH / "bench_data.py"), "--only-batched", "--device", device,
                              "--size", "32", "--batch", "4", "--repeats", "2",
                              "--json", str(out / "augmentation.json")], 120),
            ("train_step", [py, str(BENCH / "bench_train.py"), "--quick", "--device", device,
                            "--json", str(out / "train_step.json")], 180),
            ("time_to_dice", [py, str(BENCH / "bench_time_to_dice.py"), "--quick", "--device", device,
                              "--output", str(out / "time_to_dice"),
                              "--json", str(out / "time_to_dice.json")], 420),
            ("inference", [py, str(BENCH / "bench_infer.py"), "--device", device,
                           "--ct-shape", "64", "64", "8", "--big-shape", "64", "64", "8",
                           "--brats-cases", "1", "--no-tta", "--only", "timing", "--only", "onnx"], 180),
        ]  # fmt: skip
    return [
        ("pytest_gpu", [py, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"], 60),
        ("augmentation", [py, str(BENCH / "bench_data.py"), "--only-batched", "--device", device,
                          "--size", "256", "--batch", "256", "--repeats", "40",
                          "--json", str(out / "augmentation.json")], 45),
        ("train_step", [py, str(BENCH / "bench_train.py"), "--device", device,
                        "--recipe", str(ROOT / "configs" / "brats_2d.yaml"),
                        "--models", "unet", "monai_unet", "deeplabv3_mobilenet_v3_large",
                        "--variants", "fp32", "AMP", "AMP+CL", "AMP+CL+compile",
                        "--steps", "20", "--workers", "8",
                        "--json", str(out / "train_step.json")], 150),
        ("time_to_dice", [py, str(BENCH / "bench_time_to_dice.py"), "--device", device,
                          "--output", str(out / "time_to_dice"),
                          "--json", str(out / "time_to_dice.json")], 105),
        ("inference", [py, str(BENCH / "bench_infer.py"), "--device", device,
                       "--only", "timing"], 120),
        ("cohort", [py, str(BENCH / "bench_cohort.py"), "--device", device, "--cases", "200",
                    "--json", str(out / "cohort.json")], 90),
    ]  # fmt: skip


def run_step(name: str, command: list[str], limit: int, out: Path) -> dict:
    start = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    print(f"[gpu_suite] {name}: {' '.join(command[1:])}", flush=True)
    try:
        proc = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit
        )
        rc, text = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as err:
        rc = 124
        text = (
            (err.stdout or b"").decode(errors="replace")
            if isinstance(err.stdout, bytes)
            else (err.stdout or "")
        )
        text += f"\n[gpu_suite] {name} stopped after its {limit} s limit"
    (out / f"{name}.log").write_text(text)
    figures = out / f"{name}.json"
    record = {
        "command": " ".join(command[1:]),
        "rc": rc,
        "seconds": round(time.perf_counter() - start, 1),
        "figures": json.loads(figures.read_text()) if figures.is_file() else None,
        "output_tail": text[-3000:],
    }
    print(f"[gpu_suite] {name}: exit {rc} in {record['seconds']} s", flush=True)
    return record


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or 'CPU'} ({os.cpu_count()} cores)"


def markdown(report: dict) -> str:
    lines = [
        f"# GPU suite {report['date']} on {report['device_name']}",
        "",
        f"`{report['command']}`, torch {report['torch']}; {report['total_seconds']:.0f} s in all."
        + (" Quick mode: toy sizes, figures not meaningful." if report["quick"] else ""),
        "",
        "| step | exit | seconds |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {s['rc']} | {s['seconds']} |" for n, s in report["steps"].items()]
    for name, step in report["steps"].items():
        tail = "\n".join(step["output_tail"].strip().splitlines()[-25:])
        lines += ["", f"## {name}", "", f"`{step['command']}`", "", "```", tail, "```"]
    lines += ["", "For research use only. Not for diagnostic use."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes on the CPU (test mode)")
    parser.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    parser.add_argument("--output", default=str(BENCH / "results"))
    parser.add_argument("--only", nargs="+", help="run only these steps")
    args = parser.parse_args(argv)
    import torch

    device = args.device or ("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
    stamp = time.strftime("%Y%m%d_%H%M%S")
    out = Path(args.output)
    work = out / f"gpu_suite_{stamp}"
    work.mkdir(parents=True, exist_ok=True)
    if not args.quick and not device.startswith("cuda"):
        print("[gpu_suite] no CUDA device: running the full suite on the CPU (slow)", flush=True)
    start = time.perf_counter()
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "command": "bash benchmarks/gpu_suite.sh "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "device": device,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "quick": args.quick,
        "shared_data": SHARED.is_dir(),
        "steps": {},
    }
    for name, command, limit in steps(device, args.quick, work):
        if args.only and name not in args.only:
            continue
        report["steps"][name] = run_step(name, command, limit, work)
    report["total_seconds"] = round(time.perf_counter() - start, 1)
    (out / f"gpu_suite_{stamp}.json").write_text(json.dumps(report, indent=2))
    (out / f"gpu_suite_{stamp}.md").write_text(markdown(report))
    failed = [n for n, s in report["steps"].items() if s["rc"] != 0]
    print(
        f"[gpu_suite] wrote {out / f'gpu_suite_{stamp}.md'} in {report['total_seconds']:.0f} s"
        + (f"; failed: {', '.join(failed)}" if failed else "; every step passed")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
