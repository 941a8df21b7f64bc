"""Slice-change latency of the viewer for a 512x512 CT slice (target: < 100 ms).

Measures, in one run on this machine:

1. ``render_slice`` alone (window LUT + overlay blend + orientation letters) for filled,
   contour and comparison overlays, plus the JPEG encoding sent to the browser (and, for
   comparison, what PNG would cost);
2. a full Streamlit script rerun after a slider change, driven by ``AppTest`` against the real
   app (case, ground truth and prediction cached; inference must not re-run).

Usage: ``python benchmarks/bench_viewer.py [--slices 120] [--repeats 30]``. Prints figures.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def synthetic_ct(shape: tuple[int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An abdomen-like CT in HU (int16) with a liver (label 2) holding a lesion (label 1)."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1
    liver = ((x + 0.35) / 0.35) ** 2 + ((y + 0.1) / 0.3) ** 2 < 1
    lesion = ((x + 0.3) / 0.08) ** 2 + ((y + 0.05) / 0.08) ** 2 < 1
    image = np.full(shape, -1000, np.int16)
    label = np.zeros(shape, np.uint8)
    for k in range(shape[2]):
        image[..., k][body] = 40
        image[..., k][liver] = 90
        label[..., k][liver] = 2
        if abs(k - shape[2] // 2) < shape[2] // 6:
            image[..., k][lesion] = 30
            label[..., k][lesion] = 1
    image += rng.normal(0, 12, shape).astype(np.int16)
    return image, label


def _stats(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"median {statistics.median(ms):6.1f} ms  p95 {p95:6.1f} ms  (n={len(ms)})"


def bench_render(image, label, affine, repeats: int) -> dict[str, list[float]]:
    from medseg.io import Volume
    from medseg.viewer.core import render
    from medseg.viewer.core.state import axial_friendly

    shown = render.to_display(Volume(image, affine))
    shown.array = axial_friendly(shown.array)  # as the app stores it
    pred = axial_friendly(render.to_display(Volume(label, affine)).array)
    truth = np.where(pred == 1, 0, pred).astype(np.uint8)
    rng = np.random.default_rng(1)
    results: dict[str, list[float]] = {}
    # an uncertainty map as the app keeps it: float16, display-oriented
    heat_map = axial_friendly(rng.random(pred.shape, dtype=np.float32).astype(np.float16))
    for mode, style, heat in (
        ("prediction", "filled", None),
        ("prediction", "contour", None),
        ("comparison", "filled", None),
        ("prediction", "contour", heat_map),
    ):
        times, jpeg, png = [], [], []
        for _ in range(repeats):
            index = int(rng.integers(0, shown.shape[2]))
            request = render.RenderRequest(
                shown.array, shown.spacing, "axial", index, render.Window(400, 40), prediction=pred,
                truth=truth, mode=mode, visible=(1, 2), style=style, heat=heat,
            )  # fmt: skip
            t0 = time.perf_counter()
            rgb = render.render_slice(request)
            times.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            render.encode_for_screen(rgb)
            jpeg.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            Image.fromarray(rgb).save(io.BytesIO(), format="PNG")
            png.append(time.perf_counter() - t0)
        results[f"render {mode}/{style}" + (" + uncertainty" if heat is not None else "")] = times
        results["  + JPEG q95 for the screen"] = jpeg
        results["  (PNG instead, not used)"] = png
    return results


def bench_apptest(image, label, affine, repeats: int) -> tuple[list[float], float, float]:
    from streamlit.testing.v1 import AppTest

    from medseg.io import Volume, write_mask, write_volume
    from medseg.viewer.launch import ViewerConfig

    app = Path(__file__).resolve().parents[1] / "apps" / "viewer.py"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "ct"
        vol = Volume(image, affine, {"modality": "CT"})
        write_volume(vol, folder / "ct_001.nii")
        write_mask(label, vol, folder / "ct_001_label.nii")
        at = AppTest.from_file(str(app), default_timeout=300)
        at.session_state["medseg_config"] = ViewerConfig(
            sample_root=Path(tmp), model=Path(tmp) / "no_model.pt", device="cpu"
        )
        import streamlit as st

        seen: list[float] = []
        original_image = st.image

        def timed_image(*args, **kwargs):  # when the script reaches the first image
            seen.append(time.perf_counter())
            return original_image(*args, **kwargs)

        st.image = timed_image
        t0 = time.perf_counter()
        at.run()
        first = time.perf_counter() - t0
        st.image = original_image
        first_image = (seen[0] - t0) if seen else float("nan")
        assert not at.exception, [e.value for e in at.exception]
        slider = at.slider(key="slider_axial")  # numbered from 1
        times = []
        for i in range(repeats):
            t0 = time.perf_counter()
            at.slider(key="slider_axial").set_value(
                (slider.value - 1 + 7 * (i + 1)) % image.shape[2] + 1
            ).run()
            times.append(time.perf_counter() - t0)
        assert not at.exception
    return times, first, first_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=120)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    shape = (512, 512, args.slices)
    affine = np.diag([-0.7, -0.7, 2.5, 1.0])  # LPS-stored like DICOM: reorientation is exercised
    t0 = time.perf_counter()
    image, label = synthetic_ct(shape)
    print(
        f"volume {shape} int16 ({image.nbytes / 2**20:.0f} MB) built in {time.perf_counter() - t0:.1f} s"
    )
    print("\n1. render_slice alone, one 512x512 axial slice:")
    for name, times in bench_render(image, label, affine, args.repeats).items():
        print(f"  {name:<32} {_stats(times)}")
    print("\n2. AppTest: full script rerun after a slider change (ground truth overlay):")
    times, first, first_image = bench_apptest(image, label, affine, max(10, args.repeats // 2))
    print(f"  first image sent (read + reorient + first slice): {first_image:.2f} s")
    print(f"  whole first page (+ lesion readouts, tables): {first:.2f} s")
    print(f"  {'rerun after slider change':<32} {_stats(times)}")
    median = statistics.median(times) * 1000
    print(f"\nslice change: {median:.0f} ms per rerun; target < 100 ms -> "
          f"{'OK' if median < 100 else 'OVER'} (ratio {median / 100:.2f} of budget)")  # fmt: skip


if __name__ == "__main__":
    main()
