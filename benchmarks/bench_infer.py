"""Inference benchmark (issue 5 item 7, issue 13 item 4): seconds per volume, TTA on/off,
overhead ratio, MONAI SliceInferer baseline, ONNX Runtime vs PyTorch, peak memory for a big CT.

    python benchmarks/bench_infer.py                 # all sections, quick settings
    python benchmarks/bench_infer.py --only timing   # predict / pure forward (CT + BraTS)
    python benchmarks/bench_infer.py --only memory   # peak RSS / (source + model), 512x512x600
    python benchmarks/bench_infer.py --only onnx     # ONNX Runtime vs PyTorch, forward and e2e
    python benchmarks/bench_infer.py --full          # TTA + MONAI on every volume, more RSS rows
    python benchmarks/bench_infer.py --device cuda --base-channels 32 --depth 4 --full

The network is a randomly initialised ``unet`` (timing does not depend on the weights).
Overhead ratio = end-to-end ``Predictor.predict`` including reading the files (reading,
preprocessing, batched 2.5D slicing, softmax/argmax, restore to the source grid, readouts) /
pure batched forward of the same slices (input tensors prepared in advance, excluded from the
timing); target <= 1.2. BraTS cases use two channels (FLAIR + T1c) when ../shared/data is
there.

Memory: a CT-like int16 volume is written as an uncompressed ``.nii`` (and ``.nii.gz`` with
``--full``) in a temporary folder; a fresh subprocess imports everything, records its RSS,
loads the model, reads the file with ``read_volume`` and predicts; the ratio is
``(peak RSS - RSS before) / (source array bytes + model bytes)`` (target <= 1.5).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
BRATS = REPO / ".." / "shared" / "data" / "brats2015"
BRATS_CHANNELS = ("flair", "t1c")


def make_checkpoint(
    path: Path, args, modality: str, channels: tuple[str, ...] = ("image",)
) -> Path:
    from medseg.checkpoint import save_checkpoint
    from medseg.data.preprocessing import PreprocessingParams
    from medseg.models import build_model

    torch.manual_seed(0)
    options = {"depth": args.depth, "base_channels": args.base_channels}
    model = build_model("unet", len(channels), 2, **options)
    params = PreprocessingParams(
        modality=modality,
        channel_names=list(channels),
        class_names=["background", "lesion"],
        ct_window=(-200.0, 300.0) if modality == "ct" else None,
    )
    return save_checkpoint(
        {
            "model": {
                "name": "unet",
                "in_channels": len(channels),
                "num_classes": 2,
                "options": options,
            },
            "state_dict": model.state_dict(),
            "preprocessing": params.model_dump(mode="json"),
            "sampling": {"axis": 2, "context": 0},
            "class_names": ["background", "lesion"],
            "channel_names": list(channels),
        },
        path,
    )


def ct_volume(shape: tuple[int, int, int], seed: int = 0):
    """CT-like int16 HU volume: air, a body ellipse (soft tissue) with brighter blobs."""
    from medseg.io.volume import Volume

    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x / 0.8) ** 2 + (y / 0.6) ** 2 < 1
    data = np.full(shape, -1000, np.int16)
    data[body] = 40
    noise = rng.normal(0, 20, size=shape[:2]).astype(np.int16)
    data += noise[:, :, None]
    for _ in range(6):
        c = rng.integers(
            [shape[0] // 4, shape[1] // 4, 0], [3 * shape[0] // 4, 3 * shape[1] // 4, shape[2]]
        )
        data[c[0] - 15 : c[0] + 15, c[1] - 15 : c[1] + 15, max(c[2] - 8, 0) : c[2] + 8] = 150
    affine = np.diag([-0.8, -0.8, 1.5, 1.0])
    return Volume(data, affine, {"source": "synthetic_ct", "modality": "CT"})


class Clock:
    """Wall and process CPU seconds of a block (CPU time is robust on a shared machine)."""

    def __enter__(self) -> Clock:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = time.process_time() - self.cpu0


def prepared_batches(predictor, volumes) -> list[torch.Tensor]:
    """The Predictor's batches of 2.5D slices, built in advance (for pure-forward timings)."""
    from medseg.data.preprocessing import preprocess_image
    from medseg.inference.slices import batch_slices, stack_slices

    image, _ = preprocess_image(volumes, predictor.params)
    axis, k = predictor.axis, predictor.context
    bs = batch_slices(predictor.batch_size, image.shape[1:], axis, predictor.max_batch_pixels)
    return [stack_slices(image, axis, s, min(s + bs, image.shape[axis + 1]), k)
            for s in range(0, image.shape[axis + 1], bs)]  # fmt: skip


def pure_forward_seconds(network, batches) -> Clock:
    """Time of the network alone (logits -> argmax) over prepared batches."""
    from medseg.inference.slices import first_argmax

    with Clock() as clock:
        for batch in batches:
            first_argmax(network(batch))
    return clock


def monai_slice_inferer_seconds(predictor, volumes) -> Clock:
    """MONAI SliceInferer over axial slices with the same network (peer baseline)."""
    from monai.inferers import SliceInferer

    from medseg.data.preprocessing import preprocess_image

    image, _ = preprocess_image(volumes, predictor.params)
    shape = image.shape[1:]
    inferer = SliceInferer(roi_size=(shape[0], shape[1]), sw_batch_size=predictor.batch_size,
                           spatial_dim=2, progress=False)  # fmt: skip
    tensor = torch.from_numpy(image)[None]
    with Clock() as clock, torch.inference_mode():
        logits = inferer(tensor, predictor.network.module)
        logits.argmax(1)
    return clock


def time_predict(predictor, read) -> tuple[Clock, dict[str, float]]:
    """End-to-end: ``read()`` (the files -> Volumes) and ``predict``, timed together."""
    with Clock() as clock:
        prediction = predictor.predict(read())
    return clock, {"read": clock.wall - prediction.timing["total"], **prediction.timing}


def _fmt(clock: Clock | None) -> str:
    return f"{clock.wall:.1f}/{clock.cpu:.1f}" if clock else "skipped"


def timing_cases(args, tmp: Path) -> list[tuple[str, Path, object]]:
    """(name, checkpoint, reader) per timed volume: a CT-like .nii written here, BraTS cases."""
    from medseg.io import read_volume, write_volume

    ct_ckpt, mr_ckpt, ct_path = tmp / "ct.pt", tmp / "mr.pt", tmp / "ct.nii"
    if not ct_path.exists():  # the first section to run writes them
        make_checkpoint(ct_ckpt, args, "ct")
        make_checkpoint(mr_ckpt, args, "mr", BRATS_CHANNELS)
        write_volume(ct_volume(tuple(args.ct_shape)), ct_path)
    cases = [("CT-like " + "x".join(map(str, args.ct_shape)), ct_ckpt,
              lambda: read_volume(ct_path))]  # fmt: skip
    for i in range(1, args.brats_cases + 1):
        files = [BRATS / f"pat000{i}" / f"{c}.nii.gz" for c in BRATS_CHANNELS]
        if all(f.is_file() for f in files):
            cases.append((f"BraTS pat000{i} 2ch", mr_ckpt,
                          lambda files=files: [read_volume(f) for f in files]))  # fmt: skip
    return cases


def run_timing(args, tmp: Path) -> None:
    from medseg.inference import Predictor
    from medseg.io import Volume

    print("times: wall s / process CPU s; ratio = predict incl. reading / pure forward "
          "(wall, CPU)")  # fmt: skip
    header = (
        f"{'volume':<27}{'forward':>14}{'predict':>14}{'ratio':>11}{'TTA':>14}{'MONAI':>14}"
        "   predict breakdown (wall s)"
    )
    print(header)
    print("-" * len(header))
    for index, (name, ckpt, read) in enumerate(timing_cases(args, tmp)):
        # quick mode: the 4x-slower TTA and the MONAI baseline on the first BraTS case only
        extras = args.full or index == 1
        plain = Predictor.load(ckpt, device=args.device, batch_size=args.batch_size)
        volumes = read()
        volumes = [volumes] if isinstance(volumes, Volume) else volumes
        # warm-up (allocator, thread pools) on a few slices, not the whole volume
        plain.predict([Volume(np.ascontiguousarray(v.array[:, :, :4]), v.affine) for v in volumes])
        forward = pure_forward_seconds(plain.network, prepared_batches(plain, volumes))
        predict, timing = time_predict(plain, read)
        monai = monai_slice_inferer_seconds(plain, volumes) if extras else None
        tta = None
        if not args.no_tta and extras:
            tta_pred = Predictor.load(ckpt, device=args.device, batch_size=args.batch_size,
                                      tta=True)  # fmt: skip
            tta = time_predict(tta_pred, read)[0]
        ratio = f"{predict.wall / forward.wall:.2f}/{predict.cpu / forward.cpu:.2f}"
        parts = " ".join(f"{k[:5]}={v:.2f}" for k, v in timing.items() if k != "total")
        print(f"{name:<27}{_fmt(forward):>14}{_fmt(predict):>14}{ratio:>11}{_fmt(tta):>14}"
              f"{_fmt(monai):>14}   {parts}", flush=True)  # fmt: skip


def run_onnx(args, tmp: Path) -> None:
    """ONNX Runtime vs PyTorch on the same exported network: forward and end to end."""
    from medseg.inference import Predictor
    from medseg.inference.export import export_model
    from medseg.io import Volume

    print("\nONNX Runtime vs PyTorch (same weights; wall s / CPU s; forward = logits + argmax over "
          "prepared batches, predict = end to end incl. reading):")  # fmt: skip
    header = f"{'volume':<27}{'torch fwd':>12}{'ORT fwd':>12}{'torch e2e':>12}{'ORT e2e':>12}" \
             f"{'ORT/torch fwd':>15}{'max|dlogit|':>13}"  # fmt: skip
    print(header)
    print("-" * len(header))
    for index, (name, ckpt, read) in enumerate(timing_cases(args, tmp)):
        if index > 1 and not args.full:
            break
        onnx_path = tmp / f"{ckpt.stem}.onnx"
        if not onnx_path.exists():
            export_model(ckpt, onnx_path, "onnx")
        torch_pred = Predictor.load(ckpt, device="cpu", batch_size=args.batch_size)
        ort_pred = Predictor.load(onnx_path, device="cpu", batch_size=args.batch_size)
        volumes = read()
        volumes = [volumes] if isinstance(volumes, Volume) else volumes
        batches = prepared_batches(torch_pred, volumes)
        diff = max(float((torch_pred.network(b) - ort_pred.network(b)).abs().max())
                   for b in batches[:: max(1, len(batches) // 4)])  # fmt: skip
        for pred in (torch_pred, ort_pred):  # warm-up
            pred.network(batches[0])
        fwd = [pure_forward_seconds(p.network, batches) for p in (torch_pred, ort_pred)]
        e2e = [time_predict(p, read)[0] for p in (torch_pred, ort_pred)]
        print(f"{name:<27}{_fmt(fwd[0]):>12}{_fmt(fwd[1]):>12}{_fmt(e2e[0]):>12}{_fmt(e2e[1]):>12}"
              f"{fwd[1].wall / fwd[0].wall:>15.2f}{diff:>13.1e}", flush=True)  # fmt: skip


def rss_child(args) -> None:
    """Subprocess: read one big CT file, predict it, print RSS figures (MiB) as JSON."""
    import psutil
    import scipy.ndimage  # noqa: F401  (imported before the baseline, like torch)

    from medseg.inference import Predictor
    from medseg.io import read_volume

    torch.nn.functional.conv2d(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 3, 3))  # thread pool
    before = psutil.Process().memory_info().rss
    predictor = Predictor.load(args.checkpoint, device=args.device, batch_size=args.batch_size,
                               tta=args.tta)  # fmt: skip
    module = predictor.network.module
    model_bytes = sum(t.numel() * t.element_size()
                      for t in [*module.parameters(), *module.buffers()])  # fmt: skip
    start = time.perf_counter()
    volume = read_volume(args.input)
    prediction = predictor.predict(volume, return_probabilities=args.probabilities)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    source = volume.array.nbytes
    print(json.dumps({
        "before_mib": before / 2**20, "peak_rss_mib": peak / 2**20, "seconds": seconds,
        "source_mib": source / 2**20, "model_mib": model_bytes / 2**20,
        "ratio": (peak - before) / (source + model_bytes),
        "memory_mapped": type(volume.array).__name__ == "memmap",
        "foreground_fraction": float(np.count_nonzero(prediction.label.array))
        / prediction.label.array.size,
    }))  # fmt: skip


def measure_rss(checkpoint: Path, path: Path, args, tta: bool, probabilities: bool) -> dict:
    cmd = [sys.executable, __file__, "--rss-child", "--checkpoint", str(checkpoint),
           "--input", str(path), "--device", args.device,
           "--batch-size", str(args.batch_size)]  # fmt: skip
    cmd += ["--tta"] if tta else []
    cmd += ["--probabilities"] if probabilities else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def run_memory(args, tmp: Path) -> None:
    from medseg.io import write_volume

    ckpt = tmp / "ct.pt"
    if not ckpt.exists():
        make_checkpoint(ckpt, args, "ct")
    n = int(np.prod(args.big_shape))
    shape = "x".join(map(str, args.big_shape))
    print(f"\npeak RSS predicting a CT-like {shape} int16 volume ({n / 1e6:.0f} M voxels, "
          f"{2 * n / 2**20:.0f} MiB; float32 logits for 2 classes would be {8 * n / 2**20:.0f} MiB)"
          "; ratio = (peak - before) / (source array + model), target <= 1.5:")  # fmt: skip
    volume = ct_volume(tuple(args.big_shape))
    rows = [("nii", False, False)]
    if args.full:
        rows += [("nii.gz", False, False), ("nii", False, True)]
    files = {}
    for suffix in {r[0] for r in rows}:
        files[suffix] = write_volume(volume, tmp / f"big.{suffix}")
    del volume
    for suffix, tta, probs in rows:
        res = measure_rss(ckpt, files[suffix], args, tta, probs)
        print(f"  .{suffix:<7} probabilities={probs!s:<5} mapped={res['memory_mapped']!s:<5} "
              f"before {res['before_mib']:.0f} MiB, peak {res['peak_rss_mib']:.0f} MiB, "
              f"source {res['source_mib']:.0f} MiB + model {res['model_mib']:.2f} MiB -> "
              f"ratio {res['ratio']:.2f}; {res['seconds']:.1f} s, "
              f"foreground {100 * res['foreground_fraction']:.1f} %", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--base-channels", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--ct-shape", type=int, nargs=3, default=[512, 512, 200])
    parser.add_argument("--big-shape", type=int, nargs=3, default=[512, 512, 600])
    parser.add_argument("--brats-cases", type=int, default=4)
    parser.add_argument("--only", choices=["timing", "memory", "onnx"], action="append",
                        help="run only these sections (repeatable); default all")  # fmt: skip
    parser.add_argument("--no-tta", action="store_true", help="skip the (4x slower) TTA runs")
    parser.add_argument(
        "--full",
        action="store_true",
        help="TTA, MONAI and ONNX on every volume; RSS also for .nii.gz and with probabilities",
    )
    # internal: the RSS subprocess
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--tta", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--probabilities", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args)
        return
    sections = args.only or ["timing", "memory", "onnx"]
    print(f"device={args.device} torch threads={torch.get_num_threads()} unet depth={args.depth} "
          f"base_channels={args.base_channels} batch={args.batch_size}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench_infer_") as folder:
        tmp = Path(folder)
        if "timing" in sections:
            run_timing(args, tmp)
        if "onnx" in sections:
            run_onnx(args, tmp)
        if "memory" in sections:
            run_memory(args, tmp)


if __name__ == "__main__":
    main()
