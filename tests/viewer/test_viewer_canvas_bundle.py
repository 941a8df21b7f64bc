"""The committed canvas bundle (CI's .ci/check_canvas_bundle proves it is the lockfile's build)."""

from __future__ import annotations

from pathlib import Path

DIST = Path(__file__).resolve().parents[2] / "medseg/viewer/ui/canvas/frontend/dist"


def test_the_bundle_leaves_out_the_zarr_codecs() -> None:
    """NiiVue's OME-Zarr codecs (1.4 MB of inlined WebAssembly) are stubbed by build.mjs: each
    page downloads and parses the NIfTI viewer only. A NiiVue upgrade that imports them another
    way shows here."""
    script = (DIST / "canvas.js").read_text(encoding="utf-8")
    assert "codec is not bundled (NIfTI only)" in script
    assert len(script.encode()) < 1_200_000, f"canvas.js is {len(script.encode())} bytes"
