"""Cases open right, and the page's measurements (streamlit.testing AppTest).

``medseg view t1c.nii.gz flair.nii.gz --gt seg.nii.gz`` with a one-channel FLAIR model opens
and feeds FLAIR; ``--labels`` names the ground truth, a different label scheme is warned
about and ``--gt-map`` maps it; the caption gives the intensity at the crosshair (a.u. for
MR, HU for CT) and the plane's own orientation sentence; an ROI gives mean, SD and area; a
position written by the canvas moves the sliders; the uncertainty map stays visible over
bright tissue. The model is stood in for (``viewer_factory.stand_in_model``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from medseg.io import Volume, write_mask, write_volume
from medseg.viewer.core import render
from medseg.viewer.launch import ViewerConfig
from tests.apps.viewer_factory import page_ok as _ok
from tests.apps.viewer_factory import stand_in_model

APP = Path(__file__).resolve().parents[2] / "apps" / "viewer.py"
SHAPE = (40, 30, 12)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])  # RAS: display flips i and j
MODEL_NAMES = ["background", "tumour_core", "oedema"]


def _truth() -> np.ndarray:
    truth = np.zeros(SHAPE, np.uint8)
    truth[5:12, 5:12, 3:7] = 1
    truth[25:32, 15:22, 5:9] = 2
    return truth


@pytest.fixture
def case(tmp_path: Path) -> dict[str, Path]:
    i = np.arange(SHAPE[0], dtype=np.float32)[:, None, None]
    flair = np.broadcast_to(100.0 + i, SHAPE).copy()  # value = 100 + source i
    flair[_truth() > 0] = 900.0  # bright lesions, as on FLAIR
    paths = {
        "flair": write_volume(Volume(flair, AFFINE), tmp_path / "flair.nii.gz"),
        "t1c": write_volume(
            Volume(np.full(SHAPE, 7.0, np.float32), AFFINE), tmp_path / "t1c.nii.gz"
        ),
    }
    paths["seg"] = write_mask(_truth(), Volume(flair, AFFINE), tmp_path / "seg.nii.gz")
    return paths


def _captions(at: AppTest) -> str:
    return "\n".join(
        [c.value for c in at.caption] + [c for i in at.get("image") for c in i.captions]
    )


def _app(config: ViewerConfig) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["medseg_config"] = config
    return _ok(at.run())


def test_flair_model_opens_flair_whatever_the_file_order(
    case: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    truth = _truth()
    swapped = np.where(truth == 1, 2, np.where(truth == 2, 1, 0)).astype(np.uint8)
    model, fed = stand_in_model(monkeypatch, tmp_path, swapped, AFFINE, MODEL_NAMES)
    at = _app(
        ViewerConfig(
            path=case["t1c"], more_paths=(case["flair"],), gt=case["seg"], model=model,
            labels="core=1,oedema=2", device="cpu", runs_dir=tmp_path / "none",
        )
    )  # fmt: skip
    assert at.selectbox(key="channel").options == ["flair", "t1c"]
    assert at.selectbox(key="channel").value == 0  # shown: the first, FLAIR
    assert len(fed) == 1
    assert len(fed[0]) == 1
    assert fed[0][0].max() == 900.0  # the model read FLAIR, not t1c (all 7)
    # --labels names the ground truth; it differs from the model's scheme: warned
    warning = " ".join(w.value for w in at.warning)
    assert "different label schemes" in warning
    assert "1: core vs tumour_core" in warning
    assert "--gt-map" in warning

    def dice() -> dict[str, float]:
        table = next(df.value for df in at.dataframe if "dice" in df.value.columns)
        return dict(zip(table["class"], table["dice"], strict=True))

    assert dice()["tumour_core"] == 0.0  # values compared one to one: different structures
    _ok(at.sidebar.text_input(key="gt_map").set_value("1=2,2=1").run())
    assert dice()["tumour_core"] == pytest.approx(1.0)
    assert not any("different label schemes" in w.value for w in at.warning)
    at.sidebar.text_input(key="gt_map").set_value("1:2").run()  # a typo: said, not raised
    assert not at.exception
    assert any("FROM=TO" in e.value for e in at.sidebar.error)


def test_captions_measurements_and_canvas_position(case: dict[str, Path], tmp_path: Path) -> None:
    at = _app(ViewerConfig(path=case["flair"], device="cpu", runs_dir=tmp_path / "none"))
    # a position written by the canvas (display voxel x, y, z) moves every slider
    at.session_state["viewer.focus"] = (4, 6, 2)
    _ok(at.run())
    assert at.slider(key="slider_axial").value == 3
    assert at.session_state["slice_sagittal"] == 4
    assert at.session_state["slice_coronal"] == 6
    # display x = 39 - source i (RAS shown L->R): 100 + 35 at x = 4
    assert "crosshair (5, 7, 3): 135 a.u. (MR: arbitrary units)" in _captions(at)
    assert "seen from the feet: patient's right on screen left" in _captions(at)

    _ok(at.radio(key="view").set_value("sagittal").run())
    text = _captions(at)
    assert "sagittal 5/40" in text
    assert "seen from the patient's left: anterior on screen left, superior at the top" in text
    assert "patient's right on screen left" not in text

    _ok(at.radio(key="view").set_value("axial").run())
    _ok(at.radio(key="roi_shape").set_value("rectangle").run())
    for key, value in (("roi_row", 1), ("roi_col", 11), ("roi_height", 2), ("roi_width", 4)):
        at.number_input(key=key).set_value(value)
    _ok(at.run())
    # axial columns 11..14 from the screen's left = display x 10..13 = source i 29..26
    values = [100.0 + i for i in (29, 28, 27, 26)] * 2  # two rows
    expected = f"mean {np.mean(values):.4g} a.u., SD {np.std(values, ddof=1):.3g} a.u., area 8 mm²"
    assert expected in _captions(at)


def test_ct_intensity_is_in_hounsfield_units(tmp_path: Path) -> None:
    ct = np.full(SHAPE, -1000.0, np.float32)
    ct[10:30, 5:25, :] = 40.0
    scan = write_volume(Volume(ct, AFFINE), tmp_path / "ct.nii.gz")
    at = _app(ViewerConfig(path=scan, device="cpu", runs_dir=tmp_path / "none"))
    at.session_state["viewer.focus"] = (20, 15, 6)
    _ok(at.run())
    assert "crosshair (21, 16, 7): 40 HU (CT: Hounsfield units)" in _captions(at)


def test_uncertainty_map_stays_visible_on_bright_flair(
    case: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    truth = _truth()
    sure = np.where(truth > 0, 1.0, 0.0).astype(np.float32)
    model, _ = stand_in_model(monkeypatch, tmp_path, truth, AFFINE, MODEL_NAMES, sure)
    shown: list[np.ndarray] = []
    original = render.render_slice

    def spy(request):
        rgb = original(request)
        shown.append(rgb)
        return rgb

    monkeypatch.setattr(render, "render_slice", spy)
    at = _app(
        ViewerConfig(path=case["flair"], model=model, device="cpu", runs_dir=tmp_path / "none")
    )
    at.session_state["viewer.focus"] = (39 - 8, 29 - 8, 4)  # source (8, 8, 4): a lesion
    _ok(at.sidebar.checkbox(key="show_crosshair").uncheck().run())
    _ok(at.radio(key="overlay_mode").set_value("none").run())
    plain = shown[-1].copy()
    _ok(at.sidebar.radio(key="uncertainty").set_value("foreground probability").run())
    heat = shown[-1]
    centre = (int(21.5 * heat.shape[0] / 30), int(31.5 * heat.shape[1] / 40))
    assert plain[centre].min() > 240  # the lesion is white on FLAIR ...
    assert heat[centre].min() < 150  # ... and the map over it is still seen


def test_test_time_augmentation_follows_the_model_unless_chosen(
    case: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medseg.viewer.core import services

    model, fed = stand_in_model(monkeypatch, tmp_path, _truth(), AFFINE, MODEL_NAMES)
    stand_in, asked = services.load_predictor, []

    def load_predictor(path, device="auto", tta=None):
        asked.append(tta)
        return stand_in(path, device, tta)

    monkeypatch.setattr(services, "load_predictor", load_predictor)
    config = ViewerConfig(path=case["flair"], model=model, device="cpu", runs_dir=tmp_path / "x")
    at = _app(config)
    choice = at.selectbox(key="tta")
    assert choice.value == "as trained"
    assert asked
    assert set(asked) == {None}
    _ok(choice.set_value("off").run())
    assert asked[-1] is False
    _ok(at.selectbox(key="tta").set_value("on").run())
    assert asked[-1] is True
    assert len(fed) == 3  # each choice is its own prediction
