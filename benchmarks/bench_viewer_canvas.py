"""Viewer canvas timings in a real browser: first image, slice paging, brush stroke.

    python benchmarks/bench_viewer_canvas.py                      # 512 x 512 x 120 CT
    python benchmarks/bench_viewer_canvas.py --shape 256 256 60 --pages 30
    python benchmarks/bench_viewer_canvas.py --screenshots docs/images   # + the docs' pictures

Serves ``medseg view`` on a synthetic CT (int16 HU, with a ground-truth mask and a tiny
constant model, so inference takes seconds) and opens it in Debian's Chromium with WebGL2 on SwiftShader (the
CPU; a real GPU is much faster). Prints:

* first image: page opened -> the canvas has drawn the CT and its overlay (wall clock; server
  read, display preparation, transfer and upload included), and inside the page, the case's
  bytes received -> first image drawn (the 8-bit preview of a large volume) and -> the
  case's own voxels and overlays drawn;
* paging: key press -> frame drawn (a 1-pixel read waits for the GPU) -> next animation frame,
  with the number of messages the page sent to the server meanwhile (0: no round trip);
* brush: per mouse move of a freehand stroke, event -> stroke drawn (the same 1-pixel read).

``--screenshots DIR`` also opens the bundled sample case (``medseg view`` with no argument,
the bundled demo model) and saves the canvas in single-view, three-plane and 3D layouts there.
Research use only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medseg.io import Volume, write_mask, write_volume  # noqa: E402
from tests.apps.test_viewer_browser import CHROMIUM, _serve  # noqa: E402
from tests.apps.test_viewer_canvas import PAGE_TIMING, READY, WEBGL_ARGS  # noqa: E402
from tests.apps.viewer_factory import write_constant_checkpoint  # noqa: E402

STROKE_PROBE = """() => {
  const c = document.getElementById('gl'), nv = window.medsegCanvas.nv, px = new Uint8Array(4);
  window.__moves = [];
  let t0 = 0;
  c.addEventListener('mousemove', () => { t0 = performance.now(); }, true);
  window.addEventListener('mousemove', () => {
    nv.gl.readPixels(0, 0, 1, 1, nv.gl.RGBA, nv.gl.UNSIGNED_BYTE, px);
    if (nv.uiData.mouseButtonLeftDown) window.__moves.push(performance.now() - t0);
  });
  nv.setDrawingEnabled(true);
  nv.setPenValue(1, false);
}"""


def synthetic_ct(shape: tuple[int, int, int], folder: Path) -> tuple[Path, Path]:
    """An int16 CT-like volume (air, body, lungs, bone) and a mask with one lesion."""
    x, y, z = np.ogrid[: shape[0], : shape[1], : shape[2]]
    cx, cy, cz = (s / 2 for s in shape)
    body = ((x - cx) / (0.45 * shape[0])) ** 2 + ((y - cy) / (0.35 * shape[1])) ** 2 < 1
    lungs = (((abs(x - cx) - 0.18 * shape[0]) / (0.12 * shape[0])) ** 2 +
             ((y - cy) / (0.2 * shape[1])) ** 2) < 1  # fmt: skip
    spine = ((x - cx) ** 2 + (y - cy - 0.25 * shape[1]) ** 2) < (0.04 * shape[0]) ** 2
    rng = np.random.default_rng(0)
    ct = np.full(shape, -1000, np.int16)
    ct[np.broadcast_to(body, shape)] = 40
    ct[np.broadcast_to(body & lungs, shape)] = -850
    ct[np.broadcast_to(spine, shape)] = 700
    ct = (ct + rng.normal(0, 15, shape)).astype(np.int16)
    lesion = ((x - cx - 0.1 * shape[0]) ** 2 + (y - cy) ** 2 + ((z - cz) * 2) ** 2) < (
        0.06 * shape[0]
    ) ** 2
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    volume = Volume(ct, affine, {"modality": "CT"})
    image, mask = folder / "ct.nii.gz", folder / "ct_mask.nii.gz"
    write_volume(volume, image)
    write_mask(lesion.astype(np.uint8), volume, mask)
    return image, mask


def _frame(page):
    frames = [f for f in page.frames if "medseg_canvas" in f.url and not f.is_detached()]
    return frames[-1]


def _ready(page, timeout: float = 300.0):
    from playwright.sync_api import Error

    deadline = time.monotonic() + timeout
    page.wait_for_selector('iframe[title*="medseg_canvas"]', timeout=timeout * 1000)
    while True:
        try:
            _frame(page).wait_for_function(READY, timeout=5_000)
            return _frame(page)
        except (Error, IndexError):
            if time.monotonic() > deadline:
                raise


def measure(shape: tuple[int, int, int], pages: int, folder: Path) -> dict[str, object]:
    from playwright.sync_api import sync_playwright

    image, mask = synthetic_ct(shape, folder)
    # a tiny U-Net (a few seconds of inference): the page draws the image after the prediction
    model = write_constant_checkpoint(folder / "tiny.pt")
    args = [str(image), "--gt", str(mask), "--model", str(model)]
    sent: list[int] = []
    with _serve(folder, *args) as (url, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=WEBGL_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1200})
            page.on("websocket", lambda ws: ws.on("framesent", lambda _: sent.append(1)))
            start = time.monotonic()
            page.goto(url, wait_until="domcontentloaded")
            frame = _ready(page)
            first = time.monotonic() - start
            in_page = frame.evaluate("() => window.medsegCanvas.state.timing")
            in_page_full = frame.evaluate("() => window.medsegCanvas.state.timingFull")
            steps = frame.evaluate("() => window.medsegCanvas.state.steps")
            page.wait_for_timeout(2000)
            frame = _frame(page)
            box = page.frame_locator('iframe[title*="medseg_canvas"]').locator("canvas").first
            area = box.bounding_box()
            page.mouse.click(area["x"] + area["width"] / 2, area["y"] + area["height"] / 2)
            page.wait_for_timeout(2000)
            frame = _frame(page)
            before = len(sent)
            page_ms = frame.evaluate(PAGE_TIMING, pages)
            messages = len(sent) - before
            frame.evaluate(STROKE_PROBE)
            x0, y0 = area["x"] + area["width"] * 0.4, area["y"] + area["height"] * 0.5
            page.mouse.move(x0, y0)
            page.mouse.down()
            page.mouse.move(x0 + 80, y0 + 20, steps=12)
            page.mouse.up()
            stroke_ms = frame.evaluate("() => window.__moves")
        finally:
            browser.close()
    return {
        "volume": "x".join(map(str, shape)) + " int16 CT + uint8 mask",
        "first image, page opened -> drawn (s, tiny model's inference included)": round(first, 2),
        "first image in the page, bytes received -> drawn (ms)": in_page,
        "full-resolution case and overlays in the page, bytes received -> drawn (ms)": (
            in_page_full
        ),
        "steps in the page (ms)": dict(steps),
        "paging key -> frame (ms, median / max)": [
            round(statistics.median(page_ms), 1),
            round(max(page_ms), 1),
        ],
        "messages to the server while paging": messages,
        "brush move -> stroke drawn (ms, median / max)": [
            round(statistics.median(stroke_ms), 1) if stroke_ms else None,
            round(max(stroke_ms), 1) if stroke_ms else None,
        ],
    }


def screenshots(out: Path, folder: Path) -> None:
    """The bundled sample case in the canvas: single view, three planes, 3D render."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    with _serve(folder) as (url, _), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=WEBGL_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1150})
            page.goto(url, wait_until="domcontentloaded")
            _ready(page)
            page.get_by_text("Measured on the prediction of").first.wait_for(timeout=120_000)
            page.wait_for_timeout(2500)
            page.screenshot(path=str(out / "viewer_canvas.png"))
            for layout, name in (("three planes", "planes"), ("3D render", "3d")):
                page.get_by_text(layout, exact=True).click()
                page.wait_for_timeout(4000)
                shot = page.locator('iframe[title*="medseg_canvas"]')
                shot.screenshot(path=str(out / f"viewer_canvas_{name}.png"))
        finally:
            browser.close()
    print(f"screenshots written to {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 120))
    parser.add_argument("--pages", type=int, default=20, help="key presses timed")
    parser.add_argument("--screenshots", type=Path, help="also save the docs' canvas pictures")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"{CHROMIUM} not installed (apt install chromium)")
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure(tuple(args.shape), args.pages, Path(tmp))
        print(json.dumps(figures, indent=2))
        if args.screenshots:
            screenshots(args.screenshots, Path(tmp))


if __name__ == "__main__":
    main()
