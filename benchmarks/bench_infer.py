"""Inference benchmark (issue 5, item 7): seconds per volume, TTA on/off, overhead ratio,
MONAI SliceInferer baseline with the same network, peak RSS for a big CT.

    python benchmarks/bench_infer.py            # quick: TTA and MONAI on the first BraTS case only,
                                                #   one peak-RSS run
    python benchmarks/bench_infer.py --full     # TTA + MONAI on every volume, RSS with probabilities
    python benchmarks/bench_infer.py --device cuda --base-channels 32 --depth 4 --full

The network is a randomly initialised ``unet`` (timing does not depend on the weights).
Overhead ratio = end-to-end ``Predictor.predict`` (preprocessing, batched 2.5D slicing,
softmax/argmax, restore to the source grid, readouts) / pure batched forward of the same
slices (input tensors prepared in advance, excluded from the timing); target <= 1.2.
Peak RSS is measured in a fresh subprocess per setting (``resource.getrusage``).
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


def make_checkpoint(path: Path, args, modality: str) -> Path:
    from medseg.checkpoint import save_checkpoint
    from medseg.data.preprocessing import PreprocessingParams
    from medseg.models import build_model

    torch.manual_seed(0)
    options = {"depth": args.depth, "base_channels": args.base_channels}
    model = build_model("unet", 1, 2, **options)
    params = PreprocessingParams(
        modality=modality,
        channel_names=["image"],
        class_names=["background", "lesion"],
        ct_window=(-200.0, 300.0) if modality == "ct" else None,
    )
    return save_checkpoint(
        {
            "model": {"name": "unet", "in_channels": 1, "num_classes": 2, "options": options},
            "state_dict": model.state_dict(),
            "preprocessing": params.model_dump(mode="json"),
            "sampling": {"axis": 2, "context": 0},
            "class_names": ["background", "lesion"],
            "channel_names": ["image"],
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


def pure_forward_seconds(predictor, volume) -> Clock:
    """Time of the network alone over the same batches of slices as the Predictor."""
    from medseg.data.preprocessing import preprocess_image
    from medseg.inference.slices import stack_slices

    image, _ = preprocess_image([volume], predictor.params)
    axis, k, bs = predictor.axis, predictor.context, predictor.batch_size
    batches = [stack_slices(image, axis, s, min(s + bs, image.shape[axis + 1]), k)
               for s in range(0, image.shape[axis + 1], bs)]  # fmt: skip
    with Clock() as clock:
        for batch in batches:
            predictor.network(batch).argmax(1)
    return clock


def monai_slice_inferer_seconds(predictor, volume) -> Clock:
    """MONAI SliceInferer over axial slices with the same network (peer baseline)."""
    from monai.inferers import SliceInferer

    from medseg.data.preprocessing import preprocess_image

    image, _ = preprocess_image([volume], predictor.params)
    shape = image.shape[1:]
    inferer = SliceInferer(roi_size=(shape[0], shape[1]), sw_batch_size=predictor.batch_size,
                           spatial_dim=2, progress=False)  # fmt: skip
    tensor = torch.from_numpy(image)[None]
    with Clock() as clock, torch.inference_mode():
        logits = inferer(tensor, predictor.network.module)
        logits.argmax(1)
    return clock


def time_predict(predictor, volume) -> tuple[Clock, dict[str, float]]:
    with Clock() as clock:
        prediction = predictor.predict(volume)
    return clock, prediction.timing


def rss_child(args) -> None:
    """Subprocess: predict one big CT volume, print peak RSS (MiB) as JSON."""
    import psutil

    from medseg.inference import Predictor

    volume = ct_volume(tuple(args.shape))
    base = psutil.Process().memory_info().rss / 2**20  # imports + the source volume
    predictor = Predictor.load(args.checkpoint, device=args.device, batch_size=args.batch_size,
                               tta=args.tta)  # fmt: skip
    start = time.perf_counter()
    predictor.predict(volume, return_probabilities=args.probabilities)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"peak_rss_mib": peak, "before_mib": base, "seconds": seconds}))


def measure_rss(checkpoint: Path, shape, args, tta: bool, probabilities: bool) -> dict:
    cmd = [sys.executable, __file__, "--rss-child", "--checkpoint", str(checkpoint),
           "--shape", *map(str, shape), "--device", args.device,
           "--batch-size", str(args.batch_size)]  # fmt: skip
    cmd += ["--tta"] if tta else []
    cmd += ["--probabilities"] if probabilities else []
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _fmt(clock: Clock) -> str:
    return f"{clock.wall:.1f}/{clock.cpu:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--depth", type=int, default=2)
    parser.add_argument("--base-channels", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--ct-shape", type=int, nargs=3, default=[512, 512, 200])
    parser.add_argument("--big-shape", type=int, nargs=3, default=[512, 512, 600])
    parser.add_argument("--brats-cases", type=int, default=4)
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS subprocesses")
    parser.add_argument("--no-tta", action="store_true", help="skip the (4x slower) TTA runs")
    parser.add_argument(
        "--full",
        action="store_true",
        help="TTA and MONAI baseline on every volume and a second RSS run with probabilities",
    )
    # internal: the RSS subprocess
    parser.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--shape", type=int, nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--tta", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--probabilities", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args)
        return

    from medseg.inference import Predictor
    from medseg.io import Volume, read_volume

    tmp = Path(tempfile.mkdtemp(prefix="bench_infer_"))
    ct_ckpt = make_checkpoint(tmp / "ct.pt", args, "ct")
    mr_ckpt = make_checkpoint(tmp / "mr.pt", args, "mr")
    print(f"device={args.device} torch threads={torch.get_num_threads()} unet depth={args.depth} "
          f"base_channels={args.base_channels} batch={args.batch_size}")  # fmt: skip
    cases = [
        ("CT-like " + "x".join(map(str, args.ct_shape)), ct_ckpt, ct_volume(tuple(args.ct_shape)))
    ]
    for i in range(1, args.brats_cases + 1):
        flair = BRATS / f"pat000{i}" / "flair.nii.gz"
        if flair.is_file():
            cases.append((f"BraTS pat000{i} 240x240x155", mr_ckpt, read_volume(flair)))
    print("times: wall s / process CPU s; ratio = predict / pure forward (wall, CPU)")
    header = (
        f"{'volume':<27}{'forward':>14}{'predict':>14}{'ratio':>11}{'TTA':>14}{'MONAI':>14}"
        "   predict breakdown (wall s)"
    )
    print(header)
    print("-" * len(header))
    for index, (name, ckpt, volume) in enumerate(cases):
        # quick mode: the 4x-slower TTA and the MONAI baseline on the first BraTS case only
        extras = args.full or index == 1 or len(cases) == 1
        plain = Predictor.load(ckpt, device=args.device, batch_size=args.batch_size)
        # warm-up (allocator, thread pools) on a few slices, not the whole volume
        time_predict(plain, Volume(np.ascontiguousarray(volume.array[:, :, :4]), volume.affine))
        forward = pure_forward_seconds(plain, volume)
        predict, timing = time_predict(plain, volume)
        monai = monai_slice_inferer_seconds(plain, volume) if extras else None
        tta = "skipped"
        if not args.no_tta and extras:
            tta_pred = Predictor.load(
                ckpt, device=args.device, batch_size=args.batch_size, tta=True
            )
            tta = _fmt(time_predict(tta_pred, volume)[0])
        ratio = f"{predict.wall / forward.wall:.2f}/{predict.cpu / forward.cpu:.2f}"
        parts = " ".join(f"{k[:5]}={v:.1f}" for k, v in timing.items() if k != "total")
        print(
            f"{name:<27}{_fmt(forward):>14}{_fmt(predict):>14}{ratio:>11}{tta:>14}"
            f"{_fmt(monai) if monai else 'skipped':>14}   {parts}",
            flush=True,
        )
    if not args.no_rss:
        n = int(np.prod(args.big_shape))
        print(f"\npeak RSS predicting a CT-like {'x'.join(map(str, args.big_shape))} int16 volume "
              f"({n / 1e6:.0f} M voxels; full float32 logits for 2 classes would be "
              f"{8 * n / 2**20:.0f} MiB):")  # fmt: skip
        for tta, probs in ((False, False), (False, True))[: 2 if args.full else 1]:
            res = measure_rss(ct_ckpt, args.big_shape, args, tta, probs)
            print(f"  tta={tta!s:<5} probabilities={probs!s:<5} peak RSS {res['peak_rss_mib']:.0f} MiB "
                  f"(before predict: {res['before_mib']:.0f} MiB), {res['seconds']:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
