"""Real-browser test: ``medseg view`` served on a free port, opened in headless Chromium.

Uses Debian's ``/usr/bin/chromium`` through Python Playwright (never downloads a browser);
skips with a reason when it is absent. The screenshot is kept under the test's tmp folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

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


@pytest.fixture
def viewer_url(case_root: Path, constant_checkpoint: Path, tmp_path: Path):
    medseg = shutil.which("medseg")
    command = [medseg] if medseg else [sys.executable, "-m", "medseg"]
    image = case_root / "brain_mr" / "imagesTr" / "brain_002_0000.nii.gz"
    label = case_root / "brain_mr" / "labelsTr" / "brain_002.nii.gz"
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [*command, "view", str(image), "--gt", str(label), "--model", str(constant_checkpoint),
         "--device", "cpu", "--port", str(port), "--no-browser"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_server(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _launch(pw, tmp_path: Path, height: int):
    """Debian's Chromium, headless, with a fresh profile folder (Playwright's --user-data-dir)."""
    return pw.chromium.launch_persistent_context(
        str(tmp_path / "profile"),
        executable_path=str(CHROMIUM),
        args=CHROMIUM_ARGS,
        headless=True,
        viewport={"width": 1500, "height": height},
    )


def test_viewer_in_headless_chromium(viewer_url: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    shot = tmp_path / "viewer.png"
    with sync_playwright() as pw:
        browser = _launch(pw, tmp_path, height=1100)
        try:
            page = browser.new_page()
            page.goto(viewer_url, wait_until="domcontentloaded")
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
    # Grey levels have R == G == B; the magenta-red label 1 overlay (238, 51, 119) does not.
    overlay = pixels[..., 0] - pixels[..., 1] > 60
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
            page.locator('[data-testid="stImage"] img').first.wait_for(
                state="visible", timeout=150_000
            )
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
            folder = page.get_by_role("textbox", name="Folder on the server")
            folder.fill(str(out))
            folder.press("Enter")
            page.wait_for_timeout(1500)
            page.get_by_role("button", name="Save reviewed case").click()
            page.get_by_text("Saved:").wait_for(timeout=60_000)
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
    record = json.loads((out / "brain_002_review.json").read_text())
    assert record["brushed_voxels"] > 0
    mask = np.asarray(nib.load(out / "brain_002_reviewed.nii.gz").dataobj)
    assert int((mask == 0).sum()) >= record["brushed_voxels"]
    assert record["edited_voxels"]["tumour_core"]["removed"] == record["brushed_voxels"]
