"""Viewer canvas timings in a real browser: first image, slice paging, brush stroke.

    python benchmarks/bench_viewer_canvas.py                      # 512 x 512 x 120 CT
    python benchmarks/bench_viewer_canvas.py --compositing software   # one browser mode only
    python benchmarks/bench_viewer_canvas.py --shape 256 256 60 --pages 30
    python benchmarks/bench_viewer_canvas.py --screenshots docs/images   # + the docs' pictures
    python benchmarks/bench_viewer_canvas.py --case ../shared/data/brats2015/pat0003/{flair,t1c}.nii.gz \
        --gt ../shared/data/brats2015/pat0003/seg.nii.gz                # a real case

Serves ``medseg view`` on a synthetic CT (int16 HU, with a ground-truth mask and a tiny
constant model that finds nothing, so inference takes seconds and the readouts are those of
the ground truth's one lesion) and opens it in Debian's Chromium with WebGL2 on SwiftShader (the
CPU; a real GPU is much faster), twice by default: with headless Chromium's own compositing
on SwiftShader, then with the software compositing Chrome uses on a computer without a usable
GPU (``--compositing gpu|software|both``), and compares the two. Prints, for each:

* first image: page opened (as soon as the server answers, as ``medseg view`` opens its tab)
  -> the server-drawn JPEG of the opening slice shown in the canvas page, and -> NiiVue's
  first image (the 8-bit preview of a large volume), from which the canvas pages, windows and
  draws; server read, display preparation, transfer and upload included, taken from the
  page's own clock (Playwright's polling lags while the page is busy); ``medseg view``
  started -> the server answers, and -> those two images (Chromium's start in between), and
  the same for another page opened on the running server; page opened -> the
  prediction drawn (the model runs beside the page); whether the canvas page was rebuilt when
  the prediction came; and inside the page: the canvas page created -> first image drawn, the
  render message with the bytes -> first image drawn (NiiVue's attach included) and the render
  message with the case's bytes -> its own voxels and overlays drawn;
* paging: a real key press (Chromium's input path) -> the frame that shows the new slice
  presented on screen, from the browser's Event Timing (``duration`` of each ``keydown``:
  input timestamp to the next presentation after its handlers, in 8 ms steps): lone presses
  1 s apart, and a held key (a press every 33 ms), with the number of messages the page sent
  to the server meanwhile (0: no round trip);
* brush: pen press -> the first dot presented (Event Timing of ``mousedown``), and per mouse
  move of a freehand stroke, event -> the frame with the stroke drawn (a 1-pixel read waits
  for the GPU; the page's compositing after it is not included).

The interaction figures are taken once the app's script run has finished (its readouts keep
the server busy on the same core for a while after the first image); the server's CPU time
during each measurement is printed with it.

``--screenshots DIR`` also opens the bundled sample case (``medseg view`` with no argument,
the bundled demo model) and saves the canvas in single-view, three-plane and 3D layouts there.
Research use only.
"""

from __future__ import annotations

import argparse
import contextlib
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
from tests.apps.test_viewer_canvas import READY, SOFTWARE_COMPOSITING, WEBGL_ARGS  # noqa: E402
from tests.apps.viewer_factory import write_constant_checkpoint  # noqa: E402

# How Chromium puts the page on screen; WebGL runs on SwiftShader in both. "gpu": headless
# Chromium's default with --use-angle=swiftshader, the display compositor drawing the whole
# window on SwiftShader too (36-41 ms a frame at 1500 x 1200: it bounds paging, see
# docs/viewer.md). "software": what Chrome does on a computer without a usable GPU, the
# compositor on the CPU's own raster path, which redraws only what changed
COMPOSITING = {"gpu": [], "software": SOFTWARE_COMPOSITING}
# the figures compared between the two in one run
COMPARED = (
    "first image (the server-drawn slice), page opened -> shown (s)",
    "canvas drawn (NiiVue: pages, windows, draws), page opened -> drawn (s)",
    "paging, lone key press -> presented (ms, median / max, 1 s apart)",
    "paging, held key (a press every 33 ms) -> presented (ms, median / max)",
    "brush, pen press -> first dot presented (ms, median / max)",
)

# per move: event -> the next animation frame's callbacks (the canvas draws a stroke's moves
# there, at most once a frame) -> a 1-pixel read waits for the GPU to finish that draw
STROKE_PROBE = """() => {
  const c = document.getElementById('gl'), nv = window.medsegCanvas.nv, px = new Uint8Array(4);
  window.__moves = [];
  let t0 = 0;
  c.addEventListener('mousemove', () => { t0 = performance.now(); }, true);
  // after NiiVue's handler: this frame callback runs after the draw it put off, if it did
  window.addEventListener('mousemove', () => {
    if (!nv.uiData.mouseButtonLeftDown) return;
    const since = t0;
    requestAnimationFrame(() => {
      nv.gl.readPixels(0, 0, 1, 1, nv.gl.RGBA, nv.gl.UNSIGNED_BYTE, px);
      window.__moves.push(performance.now() - since);
    });
  });
  nv.setDrawingEnabled(true);
  nv.setPenValue(1, false);
}"""
# the case's first image drawn (the preview of a large volume); the prediction comes later
FIRST_IMAGE = "() => window.medsegCanvas && window.medsegCanvas.state.timing !== null"
# Event Timing: input timestamp -> next presentation after the handlers (the browser's own
# "input to next paint"), for the events named
EVENT_TIMING = """(names) => {
  window.__events = [];
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (names.includes(e.name)) window.__events.push([e.name, e.duration]);
    }
  }).observe({type: 'event', durationThreshold: 16});
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


def _ready(page, script: str = READY, timeout: float = 300.0):
    from playwright.sync_api import Error

    deadline = time.monotonic() + timeout
    page.wait_for_selector('iframe[title*="medseg_canvas"]', timeout=timeout * 1000)
    while True:
        try:
            _frame(page).wait_for_function(script, timeout=5_000)
            return _frame(page)
        except (Error, IndexError):
            if time.monotonic() > deadline:
                raise


class ServerCpu:
    """CPU seconds used by the ``medseg view`` process tree (the Streamlit server) since the
    last call: the browser shares the core with it."""

    def __init__(self, process) -> None:
        import psutil

        self.root = psutil.Process(process.pid)
        self.last = self.total()

    def total(self) -> float:
        import psutil

        seconds = 0.0
        for proc in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                seconds += times.user + times.system
        return seconds

    def since(self) -> float:
        now = self.total()
        used, self.last = now - self.last, now
        return round(used, 2)

    def wait_idle(self, timeout: float = 600.0) -> float:
        """Wait until the server uses < 5 % of a core over 2 s (its script run is over);
        returns the seconds waited."""
        start = time.monotonic()
        self.since()
        while time.monotonic() - start < timeout:
            time.sleep(2.0)
            if self.since() < 0.1:
                break
        return round(time.monotonic() - start, 1)


def _first_images(frame, opened: float) -> tuple[float | None, float]:
    """Seconds from ``opened`` (wall clock) to the server-drawn slice shown in the canvas
    page (None when the page showed none) and to NiiVue's first image, from the page's clock."""
    origin, poster, drawn = frame.evaluate(
        "() => { const s = window.medsegCanvas.state;"
        " return [performance.timeOrigin, s.timingPoster, s.timingPage]; }"
    )
    seconds = [
        None if v is None else round((origin + v) / 1000 - opened, 2) for v in (poster, drawn)
    ]
    return seconds[0], seconds[1]


def _median_max(values: list[float]) -> list[float | None]:
    if not values:
        return [None, None]
    return [round(statistics.median(values), 1), round(max(values), 1)]


def _ratio(software, gpu) -> str:
    """``software / gpu`` of one figure (a number, or the first of [median, max])."""
    first = [v[0] if isinstance(v, list) else v for v in (software, gpu)]
    if None in first or not first[1]:
        return f"{software} vs {gpu}"
    return f"{software} vs {gpu}: x{first[0] / first[1]:.2f}"


def _key_presses(page, frame, count: int, gap_ms: int) -> list[float]:
    """Event Timing durations (ms) of ``count`` real arrow-key presses ``gap_ms`` apart."""
    frame.evaluate("() => { window.__events = []; }")
    for i in range(count):
        page.keyboard.press("ArrowDown" if i % 2 else "ArrowUp")
        page.wait_for_timeout(gap_ms)
    page.wait_for_timeout(1000)  # the last presentations are reported
    events = frame.evaluate("() => window.__events")
    return [ms for name, ms in events if name == "keydown"]


def measure(
    shape: tuple[int, int, int],
    pages: int,
    folder: Path,
    case: list[str] | None = None,
    compositing: str = "gpu",
) -> dict[str, object]:
    """The figures on the synthetic CT of ``shape``, or on ``case`` (``medseg view``'s own
    arguments, e.g. a BraTS case's files and ``--gt``; the bundled model predicts), with the
    page composited as ``compositing`` says (see ``COMPOSITING``)."""
    from playwright.sync_api import sync_playwright

    if case:
        args, volume = list(case), " ".join(Path(a).name for a in case)
    else:
        image, mask = synthetic_ct(shape, folder)
        # a tiny U-Net (seconds of inference on small cases), run beside the page after its
        # first image. It predicts background everywhere: predicting a class everywhere makes
        # the whole 31 M voxel volume one "lesion", whose readouts (diameters, surface
        # distances to the ground truth) kept the server on the browser's core for a minute,
        # which no real prediction does
        model = write_constant_checkpoint(folder / "tiny.pt", label=0)
        args = [str(image), "--gt", str(mask), "--model", str(model)]
        volume = "x".join(map(str, shape)) + " int16 CT + uint8 mask"
    sent: list[int] = []
    cpu: dict[str, float] = {}
    launched = time.time()
    with contextlib.ExitStack() as stack:
        url, server = stack.enter_context(_serve(folder, *args))
        served = time.time()
        pw = stack.enter_context(sync_playwright())
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=WEBGL_ARGS + COMPOSITING[compositing]
        )
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1200})
            page.on("websocket", lambda ws: ws.on("framesent", lambda _: sent.append(1)))
            server_cpu = ServerCpu(server)
            start, opened = time.monotonic(), time.time()
            page.goto(url, wait_until="domcontentloaded")
            frame = _ready(page, FIRST_IMAGE)
            poster, drawn = _first_images(frame, opened)
            instance = frame.evaluate("() => document.title")
            frame = _ready(page)
            predicted = time.monotonic() - start
            rebuilt = _frame(page).evaluate("() => document.title") != instance
            state = frame.evaluate(
                "() => { const s = window.medsegCanvas.state; return {timing: s.timing,"
                " page: s.timingPage, full: s.timingFull, attach: s.attachMs, steps: s.steps}; }"
            )
            cpu["first image (page opened -> drawn)"] = server_cpu.since()
            waited = server_cpu.wait_idle()
            frame = _frame(page)
            frame.evaluate(EVENT_TIMING, ["keydown", "mousedown"])
            box = page.frame_locator('iframe[title*="medseg_canvas"]').locator("canvas").first
            area = box.bounding_box()
            page.mouse.click(area["x"] + area["width"] / 2, area["y"] + area["height"] / 2)
            page.wait_for_timeout(2000)
            frame = _frame(page)
            before = len(sent)
            server_cpu.since()
            lone = _key_presses(page, frame, pages, gap_ms=1000)
            held = _key_presses(page, frame, 30, gap_ms=33)
            cpu["paging"] = server_cpu.since()
            messages = len(sent) - before
            frame.evaluate(STROKE_PROBE)
            frame.evaluate("() => { window.__events = []; }")
            for k in range(5):  # five short strokes, 1 s apart
                x0 = area["x"] + area["width"] * (0.3 + 0.08 * k)
                y0 = area["y"] + area["height"] * 0.5
                page.mouse.move(x0, y0)
                page.mouse.down()
                page.mouse.move(x0 + 30, y0 + 40, steps=12)
                page.mouse.up()
                page.wait_for_timeout(1000)
            stroke_ms = frame.evaluate("() => window.__moves")
            presses = [ms for name, ms in frame.evaluate("() => window.__events")
                       if name == "mousedown"]  # fmt: skip
            cpu["brush"] = server_cpu.since()
            # another page on the running server (its case and prediction cached)
            other = browser.new_context(viewport={"width": 1500, "height": 1200}).new_page()
            opened_again = time.time()
            other.goto(url, wait_until="domcontentloaded")
            again = _first_images(_ready(other, FIRST_IMAGE), opened_again)
        finally:
            browser.close()
    return {
        "volume": volume,
        "compositing": compositing,
        "first image (the server-drawn slice), page opened -> shown (s)": poster,
        "canvas drawn (NiiVue: pages, windows, draws), page opened -> drawn (s)": drawn,
        "medseg view started -> server answers (s)": round(served - launched, 2),
        "medseg view started -> first image / canvas drawn (s; Chromium starts, then the page "
        "opens at once)": [
            round(opened - launched + v, 2) if v is not None else None for v in (poster, drawn)
        ],
        "another page on the running server: first image / canvas drawn (s)": list(again),
        "prediction drawn, page opened -> drawn (s, the tiny model's inference)": round(
            predicted, 2
        ),
        "canvas page rebuilt when the prediction came": rebuilt,
        "first image in the page: page created (with the bytes) -> drawn (ms)": state["page"],
        "first image in the page: render message with the bytes -> drawn (ms)": state["timing"],
        "the case's own voxels: render message with them -> drawn (ms)": state["full"],
        "NiiVue attach at the first render (ms, included above)": state["attach"],
        "steps in the page (ms)": dict(state["steps"]),
        "server busy after the first image (s waited before the interaction figures)": waited,
        "paging, lone key press -> presented (ms, median / max, 1 s apart)": _median_max(lone),
        "paging, held key (a press every 33 ms) -> presented (ms, median / max)": _median_max(held),
        "key presses timed (lone, held)": [len(lone), len(held)],
        "messages to the server while paging": messages,
        "brush, pen press -> first dot presented (ms, median / max)": _median_max(presses),
        "brush, move -> stroke drawn (ms, median / max; compositing not included)": (
            _median_max(stroke_ms)
        ),
        "server CPU during each measurement (s)": cpu,
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
    parser.add_argument("--pages", type=int, default=20, help="lone key presses timed")
    parser.add_argument("--screenshots", type=Path, help="also save the docs' canvas pictures")
    parser.add_argument(
        "--case",
        nargs=argparse.REMAINDER,
        help="a real case instead of the synthetic CT: medseg view's arguments, last "
        "(e.g. --case flair.nii.gz t1c.nii.gz --gt seg.nii.gz; the bundled model predicts)",
    )
    parser.add_argument(
        "--compositing",
        choices=[*COMPOSITING, "both"],
        default="both",
        help="how Chromium composites the page (both: one after the other, then compared)",
    )
    args = parser.parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"{CHROMIUM} not installed (apt install chromium)")
    modes = list(COMPOSITING) if args.compositing == "both" else [args.compositing]
    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for mode in modes:
            folder = Path(tmp) / mode
            folder.mkdir()
            runs[mode] = measure(tuple(args.shape), args.pages, folder, args.case, mode)
            print(json.dumps(runs[mode], indent=2), flush=True)
        if len(runs) == 2:
            print("software / gpu compositing, same run:")
            for name in COMPARED:
                print(f"  {name}: {_ratio(runs['software'][name], runs['gpu'][name])}")
        if args.screenshots:
            screenshots(args.screenshots, Path(tmp))


if __name__ == "__main__":
    main()
