"""Review at scale in the real page (streamlit.testing AppTest): a prediction of 658 specks
and 4 large lesions is reviewed completely with two bulk clicks and saved; the size filter,
the progress count, the lesion list moving the crosshair and the greyed-out relabel box.

The model is stood in for (``viewer_factory.stand_in_model``), so the test controls every
lesion and its confidence.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from medseg.io import Volume, write_volume
from medseg.viewer.launch import ViewerConfig
from tests.apps.viewer_factory import page_ok as _ok
from tests.apps.viewer_factory import stand_in_model

APP = Path(__file__).resolve().parents[2] / "apps" / "viewer.py"
SHAPE = (64, 56, 20)
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])  # RAS, 1 mm: 1 voxel = 0.001 mL
BIG = [(slice(36 + 7 * n, 42 + 7 * n), slice(10, 16), slice(8, 12)) for n in range(4)]
SPECKS = 658
CLASS_NAMES = ["background", "lesion", "oedema"]


def _prediction() -> tuple[np.ndarray, np.ndarray]:
    """Specks of one voxel, 3 voxels apart (never touching), and four 144-voxel blocks."""
    label = np.zeros(SHAPE, np.uint8)
    fg = np.full(SHAPE, 0.02, np.float32)
    grid = [(x, y, z) for x in range(1, 31, 3) for y in range(1, 55, 3) for z in range(1, 19, 3)]
    for x, y, z in grid[:SPECKS]:
        label[x, y, z] = 1
        fg[x, y, z] = 0.3
    for box in BIG:
        label[box] = 1
        fg[box] = 0.9
    return label, fg


@pytest.fixture
def scale_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    rng = np.random.default_rng(0)
    scan = write_volume(
        Volume(rng.normal(300, 20, SHAPE).astype(np.float32), AFFINE, {"modality": "MR"}),
        tmp_path / "flair.nii.gz",
    )
    label, fg = _prediction()
    model, _ = stand_in_model(monkeypatch, tmp_path, label, AFFINE, CLASS_NAMES, fg)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["medseg_config"] = ViewerConfig(
        path=scan, model=model, device="cpu", runs_dir=tmp_path / "none"
    )
    return at


def _progress(at: AppTest) -> str:
    return next(p.proto.text for p in at.get("progress"))


@pytest.mark.slow  # ~10 s: 662 lesions, nine page runs
def test_662_lesions_reviewed_with_two_bulk_clicks_then_saved(
    scale_app: AppTest, tmp_path: Path
) -> None:
    at = _ok(scale_app.run())
    _ok(at.toggle(key="review_mode").set_value(True).run())
    session = at.session_state["_review_session"][1]
    assert len(session.lesions) == SPECKS + len(BIG) == 662
    assert _progress(at) == "0 / 662 reviewed"
    # the review list sits beside the image: the right (2/5) and left (3/5) main columns
    review = next(c for c in at.columns if any(h.value == "Review" for h in c.subheader))
    assert review.proto.weight == pytest.approx(0.4)
    image = next(c for c in at.columns if c.get("imgs") or c.get("image"))
    assert image.proto.weight == pytest.approx(0.6)

    bulk_clicks = 0
    at.number_input(key="rv_reject_below").set_value(10)
    _ok(at.button(key="rv_reject_below_go").click().run())
    bulk_clicks += 1
    assert _progress(at) == f"{SPECKS} / 662 reviewed"
    at.number_input(key="rv_accept_ml").set_value(0.1)
    at.number_input(key="rv_accept_conf").set_value(0.5)
    _ok(at.button(key="rv_accept_go").click().run())
    bulk_clicks += 1
    assert _progress(at) == "662 / 662 reviewed"
    assert bulk_clicks <= 5
    assert {les.decision for les in session.lesions.values() if les.voxels < 10} == {"reject"}
    assert {les.decision for les in session.lesions.values() if les.voxels > 100} == {"accept"}

    out = tmp_path / "reviewed"
    at.text_input(key="rv_reviewer").set_value("Dr Scale")
    _ok(at.text_input(key="rv_folder").set_value(str(out)).run())  # typing, not a click
    _ok(at.button(key="rv_save").click().run())
    assert any("Saved" in s.value for s in at.success)
    saved = np.asarray(nib.load(next(out.glob("*.nii.gz"))).dataobj)
    expected = np.zeros(SHAPE, np.uint8)
    for box in BIG:
        expected[box] = 1
    np.testing.assert_array_equal(saved, expected)  # every speck gone, the lesions kept
    record = json.loads(next(out.glob("*.json")).read_text())
    decisions = [row["decision"] for row in record["lesions"]]
    assert decisions.count("reject") == SPECKS
    assert decisions.count("accept") == len(BIG)


def test_filter_jump_and_relabel_only_when_relabelling(scale_app: AppTest) -> None:
    at = _ok(scale_app.run())
    _ok(at.toggle(key="review_mode").set_value(True).run())
    assert len(at.selectbox(key="rv_pick").options) == 662
    _ok(at.number_input(key="rv_min_voxels").set_value(10).run())
    picker = at.selectbox(key="rv_pick")
    assert len(picker.options) == len(BIG)
    assert any("Showing 4 of 662" in c.value for c in at.caption)

    # picking a lesion moves the position (FOCUS) to its centre; the slider follows
    session = at.session_state["_review_session"][1]
    target = next(
        les for les in session.lesions.values() if les.voxels > 100 and les.box[0].start == 50
    )
    _ok(picker.set_value(target.id).run())
    centre = np.array([(s.start + s.stop - 1) / 2 for s in target.box])
    focus = at.session_state["viewer.focus"]
    # RAS-stored, displayed L, P, S: i and j flip; an even-sized box centres between voxels
    exact = (SHAPE[0] - 1 - centre[0], SHAPE[1] - 1 - centre[1], centre[2])
    assert np.abs(np.subtract(focus, exact)).max() <= 0.5
    assert at.slider(key="slider_axial").value == focus[2] + 1
    assert at.session_state["slice_sagittal"] == focus[0]

    relabel = at.selectbox(key=f"rv_label_{target.id}")
    assert relabel.disabled
    _ok(at.radio(key=f"rv_decision_{target.id}").set_value("relabel").run())
    assert not at.selectbox(key=f"rv_label_{target.id}").disabled
    _ok(at.selectbox(key=f"rv_label_{target.id}").set_value(2).run())
    assert session.lesions[target.id].decision == "relabel"
    assert session.lesions[target.id].new_label == 2
