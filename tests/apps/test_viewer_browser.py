"""Real-browser test: ``medseg view`` served on a free port, opened in headless Chromium.

Uses Debian's ``/usr/bin/chromium`` through Python Playwright (never downloads a browser);
skips with a reason when it is absent. The screenshot is kept under the test's tmp folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from medseg.viewer import launch

CHROMIUM = Path(os.environ.get("MEDSEG_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,  # ~25 s: server start, first inference, page render
    pytest.mark.skipif(
        not CHROMIUM.exists(), reason=f"{CHROMIUM} not installed (apt install chromium)"
    ),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_server(url: str, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"medseg view exited early with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"viewer did not answer at {url} within {timeout:.0f} s")


@contextlib.contextmanager
def _serve(tmp_path: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``medseg view ARGS`` on a free local port, until the block ends: (url, process)."""
    medseg = shutil.which("medseg")
    command = [medseg] if medseg else [sys.executable, "-m", "medseg"]
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [*command, "view", *args, "--device", "cpu", "--port", str(port), "--no-browser"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(url, process)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture
def viewer_url(case_root: Path, constant_checkpoint: Path, tmp_path: Path):
    image = case_root / "brain_mr" / "imagesTr" / "brain_002_0000.nii.gz"
    label = case_root / "brain_mr" / "labelsTr" / "brain_002.nii.gz"
    args = [str(image), "--gt", str(label), "--model", str(constant_checkpoint)]
    with _serve(tmp_path, *args) as (url, _):
        yield url


def static_images(page) -> None:
    """Pick the server-drawn PNG image area (these tests cover that path; a browser session
    opens on the canvas, see test_viewer_canvas.py)."""
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("static images", exact=True).click(timeout=150_000)


def _launch(pw, tmp_path: Path, height: int):
    """Debian's Chromium, headless, with a fresh profile folder (Playwright's --user-data-dir)."""
    return pw.chromium.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=str(CHROMIUM),
        args=CHROMIUM_ARGS,
        headless=True,
        viewport={"width": 1500, "height": height},
    )


def save_review(page, out: Path) -> None:
    """Type the output folder, press *Save reviewed case*, wait for the confirmation."""
    folder = page.get_by_role("textbox", name="Folder on the server")
    folder.fill(str(out))
    folder.press("Enter")
    page.wait_for_timeout(1500)
    page.get_by_role("button", name="Save reviewed case").click()
    page.get_by_text("Saved:").wait_for(timeout=60_000)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_viewer_in_headless_chromium(viewer_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    shot = tmp_path / "viewer.png"
    with sync_playwright() as pw:
        browser = _launch(pw, tmp_path, height=1100)
        try:
            page = browser.new_page()
            page.goto(viewer_url, wait_until="domcontentloaded")
            static_images(page)
            image = page.locator('[data-testid="stImage"] img').first
            image.wait_for(state="visible", timeout=150_000)
            page.wait_for_function(
                "() => { const i = document.querySelector('[data-testid=\"stImage\"] img');"
                " return i && i.complete && i.naturalWidth > 0; }",
                timeout=60_000,
            )
            page.get_by_text("Research use only").first.wait_for(timeout=30_000)
            page.wait_for_timeout(1500)  # let the remaining elements settle
            page.screenshot(path=str(shot), full_page=True)
            image.screenshot(path=str(tmp_path / "slice.png"))
            assert page.locator('[data-testid="stException"]').count() == 0
            assert page.locator('[data-testid="stAlertContentError"]').count() == 0
            assert "Traceback" not in page.content()
        finally:
            browser.close()

    from PIL import Image

    assert shot.stat().st_size > 10_000
    pixels = np.asarray(Image.open(tmp_path / "slice.png").convert("RGB")).astype(int)
    # Grey levels have R == G == B; the orange label 1 overlay (230, 159, 0) does not (and
    # the magenta crosshair, R == B, is not counted).
    overlay = pixels[..., 0] - pixels[..., 2] > 60
    assert overlay.mean() > 0.05, f"overlay covers only {overlay.mean():.1%} of the image"


def test_brush_click_and_save_in_chromium(viewer_url: str, tmp_path: Path) -> None:
    """Review mode -> eraser -> one click on the image (the component's iframe) -> save."""
    import json

    import nibabel as nib
    from playwright.sync_api import sync_playwright

    out = tmp_path / "reviewed"
    with sync_playwright() as pw:
        browser = _launch(pw, tmp_path, height=1400)
        try:
            page = browser.new_page()
            page.goto(viewer_url, wait_until="domcontentloaded")
            static_images(page)
            page.locator('[data-testid="stImage"] img').first.wait_for(
                state="visible", timeout=150_000
            )
            # the scan is drawn first; the prediction (and its review toggle) follows
            page.get_by_text("Measured on the prediction of").first.wait_for(timeout=150_000)
            page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]')")
            page.get_by_text("Review and edit the prediction").click()
            page.get_by_text("Review order: least confident first").wait_for(timeout=60_000)
            page.get_by_text("eraser", exact=True).click()
            frame = page.frame_locator('iframe[title*="streamlit_image_coordinates"]')
            target = frame.locator("#image")
            target.wait_for(state="visible", timeout=60_000)
            box = target.bounding_box()
            assert box is not None
            target.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
            page.get_by_text("brush/eraser strokes: 1").wait_for(timeout=60_000)
            page.screenshot(path=str(tmp_path / "review.png"), full_page=True)
            save_review(page, out)
        finally:
            browser.close()
    record = json.loads((out / "brain_002_review.json").read_text())
    assert record["brushed_voxels"] > 0
    mask = np.asarray(nib.load(out / "brain_002_reviewed.nii.gz").dataobj)
    assert int((mask == 0).sum()) >= record["brushed_voxels"]
    assert record["edited_voxels"]["tumour_core"]["removed"] == record["brushed_voxels"]


# ----------------------------------------------------------------------------- load
SESSIONS = 5
SAMPLE_ROOT = Path(__file__).resolve().parents[2] / "sample_data"  # what `medseg view` offers
SAMPLE_CASES = [f"brain_mr/brain_{n:03d}" for n in range(1, SESSIONS + 1)]
# Measured (docs/viewer.md): ~52 MB per session that opens a new case (the case and its
# prediction join the server's bounded caches) and ~5 MB per session on a cached case.
# The bounds leave ~3x and ~8x room for allocator noise on a loaded machine; what they
# catch is memory that grows with sessions rather than with cases, e.g. a per-session copy
# of the torch runtime and model (the ~900 MB warm-up), or of every case and prediction.
PER_SESSION_MB = 150
REPEAT_SESSION_MB = 40


def _streamlit_rss(launcher: subprocess.Popen) -> int:
    """Resident memory of the Streamlit server process that ``medseg view`` started."""
    import psutil

    children = psutil.Process(launcher.pid).children(recursive=True)
    server = [c for c in children if launch.SERVER_MODULE in c.cmdline()]
    assert len(server) == 1, [c.cmdline() for c in children]
    return server[0].memory_info().rss


def _open(browser, url: str):
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(url, wait_until="domcontentloaded")
    static_images(page)
    return page


def _wait_ready(page, case: str | None = None) -> None:
    """The slice image is drawn and the prediction's readouts are there (of ``case``)."""
    if case is not None:
        page.get_by_text(re.compile(rf"^{re.escape(case)} · ")).first.wait_for(timeout=120_000)
    page.get_by_text("Measured on the prediction of").first.wait_for(timeout=120_000)
    page.locator('[data-testid="stImage"] img').first.wait_for(state="visible", timeout=60_000)


def _pick_case(page, case: str) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    box = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]')
    option = page.get_by_role("option", name=case, exact=True)
    # a rerun still under way (the image-area switch, a busy server) re-renders the sidebar
    # and closes an open dropdown, or detaches its options as they are clicked: open it again
    # until the click lands
    for _ in range(6):
        page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]')")
        box.filter(has_text="Sample case").first.click()
        try:
            option.wait_for(timeout=10_000)
            option.click(timeout=10_000)
            return
        except PlaywrightTimeoutError:
            page.keyboard.press("Escape")
    raise AssertionError(f"could not pick {case} in the case list: the sidebar kept re-rendering")


def _slice_caption(page):
    return page.get_by_text(re.compile(r"^axial \d+/\d+ · ")).first


def _slice_number(page) -> int:
    # elements of the previous run stay on the page, marked stale, until the rerun ends
    page.wait_for_function("() => !document.querySelector('[data-stale=\"true\"]')")
    return int(_slice_caption(page).inner_text().split()[1].split("/")[0])


def _no_error(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    assert "Traceback" not in page.content()


@pytest.mark.long
@pytest.mark.skipif(not SAMPLE_ROOT.is_dir(), reason=f"{SAMPLE_ROOT} missing (medseg sample-data)")
def test_five_concurrent_sessions_on_one_server_stay_bounded(tmp_path: Path) -> None:
    """SESSIONS browser contexts at once, each opening its own sample case (inference on
    the server), moving slices; then as many again on the same cases (cached). No session
    shows an error, and the server's memory grows by a bounded amount per session."""
    from playwright.sync_api import expect, sync_playwright

    rss: dict[str, int] = {}
    seconds: dict[str, float] = {}
    start = time.monotonic()
    with _serve(tmp_path) as (url, process), sync_playwright() as pw:
        rss["idle"] = _streamlit_rss(process)
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            warm = _open(browser, url)  # imports, the model and one inference, once
            _wait_ready(warm)
            warm.context.close()
            rss["warm"] = _streamlit_rss(process)
            seconds["warm"] = time.monotonic() - start
            for wave in ("first", "again"):
                pages = [_open(browser, url) for _ in SAMPLE_CASES]
                for page in pages:
                    page.locator('[data-testid="stImage"] img').first.wait_for(timeout=120_000)
                for page, case in zip(pages, SAMPLE_CASES, strict=True):
                    _pick_case(page, case)  # the server works on all of them at once
                for page, case in zip(pages, SAMPLE_CASES, strict=True):
                    _wait_ready(page, case)
                for _ in range(2):
                    before = [_slice_number(page) for page in pages]
                    for page in pages:
                        page.get_by_role("button", name="▶", exact=True).click()
                    for page, number in zip(pages, before, strict=True):
                        expect(_slice_caption(page)).not_to_have_text(
                            re.compile(rf"^axial {number}/"), timeout=60_000
                        )
                for page in pages:
                    _no_error(page)
                rss[wave] = _streamlit_rss(process)
                seconds[wave] = time.monotonic() - start
                for page in pages:
                    page.context.close()
        finally:
            browser.close()
    mb = {k: v / 2**20 for k, v in rss.items()}
    first = (mb["first"] - mb["warm"]) / SESSIONS
    again = (mb["again"] - mb["first"]) / SESSIONS
    print(
        f"viewer server RSS (MB): idle {mb['idle']:.0f}, after a warm-up session "
        f"{mb['warm']:.0f}, after {SESSIONS} concurrent sessions {mb['first']:.0f}, after "
        f"{SESSIONS} more on the same cases {mb['again']:.0f}; per session: {first:.1f} MB "
        f"(new case), {again:.1f} MB (cached case); done at {seconds['warm']:.0f} / "
        f"{seconds['first']:.0f} / {seconds['again']:.0f} s"
    )
    assert first < PER_SESSION_MB
    assert again < REPEAT_SESSION_MB
