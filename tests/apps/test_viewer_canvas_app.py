"""The canvas path without a browser: AppTest checks the component's arguments and feeds it
the values the page would send (a click, a stroke), so everything but WebGL is covered."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from medseg.viewer.core import measure, render
from medseg.viewer.launch import ViewerConfig
from medseg.viewer.ui import keys
from medseg.viewer.ui.app import WAIT_FOR_SCAN
from medseg.viewer.ui.canvas import volumes
from medseg.viewer.ui.panels import PENDING_LIST

APP = Path(__file__).resolve().parents[2] / "apps" / "viewer.py"


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def _canvas(at: AppTest) -> tuple[dict, set[str]]:
    """The canvas element's JSON arguments and the names of its bytes arguments."""
    (element,) = [e for e in at.get("component_instance")]
    proto = element.proto
    return json.loads(proto.json_args), {s.key for s in proto.special_args}


def _image(at: AppTest) -> np.ndarray:
    """The canvas's volume as sent (NIfTI bytes, RAS voxel order)."""
    import nibabel as nib

    (element,) = [e for e in at.get("component_instance")]
    (image,) = [a.bytes for a in element.proto.special_args if a.key == "image"]
    return np.asarray(nib.Nifti1Image.from_bytes(image).dataobj)


def _page_value(args: dict, seq: int, focus=None, edits=()) -> dict:
    """What the page sends after loading everything it was given."""
    layers = {spec["name"]: spec["key"] for spec in args["layers"]}
    drawing = args["drawing"]["key"] if args["drawing"] else None
    return {
        "seq": seq,
        "instance": "test-page",
        "digest": args["digest"],
        "loaded": {"case": args["case"], "layers": layers, "drawing": drawing},
        "focus": focus,
        "edits": list(edits),
    }


#: what a new canvas page sends once it shows the poster (index.html): "send the volume"
NEW_PAGE = {"seq": 0, "loaded": {}}


def _after_poster(at: AppTest) -> AppTest:
    """A new page's first message is the poster alone; the page then asks for the volume."""
    _args, attached = _canvas(at)
    assert attached == {"poster"}, attached
    at.session_state[keys.CANVAS] = dict(NEW_PAGE)
    return _ok(at.run())


def _canvas_page(case_root: Path, model: Path) -> AppTest:
    """The viewer with the canvas picked as the image area, once the page asked for the
    volume."""
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state[keys.CONFIG] = ViewerConfig(sample_root=case_root, model=model, device="cpu")
    at.session_state[keys.IMAGE_AREA] = "canvas"
    return _after_poster(_ok(at.run()))


@pytest.mark.slow  # ~10 s: real inference and six page runs
def test_canvas_arguments_click_and_stroke(case_root: Path, constant_checkpoint: Path) -> None:
    at = _canvas_page(case_root, constant_checkpoint)
    args, attached = _canvas(at)
    canvas_image = _image(at)
    # First run: the volume and the prediction overlay go as bytes, never as JSON.
    assert {"image", "layer_prediction"} <= attached
    assert args["attached"] == sorted(attached - {"key", "default"})
    assert args["layout"] == "axial"
    assert args["radiological"] is True
    assert [spec["name"] for spec in args["layers"]] == ["prediction"]
    assert keys.slider_of("axial") not in [s.key for s in at.slider]  # the canvas pages itself
    shape = (64, 56, 20)
    focus = tuple(at.session_state[keys.FOCUS])
    assert args["focus"] == volumes.display_to_canvas(focus, shape)

    # The page reports what it holds: the next run sends no volume again.
    at.session_state[keys.CANVAS] = _page_value(args, seq=1)
    _ok(at.run())
    args, attached = _canvas(at)
    assert args["attached"] == []
    assert "image" not in attached

    # A click in the canvas moves the crosshair in Python (FOCUS and the slice keys).
    at.session_state[keys.CANVAS] = _page_value(args, seq=2, focus=[10, 20, 7])
    _ok(at.run())
    assert tuple(at.session_state[keys.FOCUS]) == (53, 35, 7)
    assert at.session_state[keys.slice_of("axial")] == 7
    args, _ = _canvas(at)
    assert args["focus"] == [10, 20, 7]

    # Measurements: the crosshair's value is shown in the image's unit (MR: a.u.), and an
    # ellipse dragged in the canvas comes back and gets its statistics from Python.
    assert args["unit"] == "a.u."
    assert args["drag"] == "contrast"
    at.sidebar.radio(key=keys.CANVAS_DRAG).set_value("ROI")
    _ok(at.run())
    args, _ = _canvas(at)
    assert args["drag"] == "roiSelection"
    roi = {"plane": 0, "start": [30, 12, 7], "end": [21, 25, 7]}  # canvas voxels, any corners
    at.session_state[keys.CANVAS] = {**_page_value(args, seq=3, focus=[10, 20, 7]), "roi": roi}
    _ok(at.run())
    (text,) = [c.value for c in at.caption if c.value.startswith("ROI on")]
    # independently: the same ellipse on the canvas's own array (RAS; rows y, columns x)
    canvas_plane = canvas_image[:, :, 7].T.astype(np.float64)
    box = (12, 21, 14, 10)
    expected = canvas_plane[measure.roi_mask(canvas_plane.shape, box, "ellipse")]
    assert text.startswith("ROI on axial slice 8: ellipse ROI: ")
    assert f"mean {expected.mean():.4g} a.u." in text
    assert f"({expected.size} pixels)" in text

    # Comparison mode: one TP/FP/FN overlay, sent once as bytes.
    at.sidebar.radio(key="overlay_mode").set_value("comparison")
    _ok(at.run())
    args, attached = _canvas(at)
    assert [spec["name"] for spec in args["layers"]] == ["comparison"]
    assert "layer_comparison" in attached
    assert args["layers"][0]["lut"]["labels"][1:] == list(render.COMPARISON_COLOURS)
    at.sidebar.radio(key="overlay_mode").set_value("prediction")

    # Review mode: the reviewed mask becomes the canvas's drawing; a stroke of label 2 comes
    # back as flat canvas indices and lands in the review session (one undo step).
    at.toggle(key="review_mode").set_value(True)
    _ok(at.run())
    args, attached = _canvas(at)
    assert args["drawing"] is not None
    assert "drawing_bytes" in attached
    assert "prediction" not in [spec["name"] for spec in args["layers"]]
    voxels = [int(np.ravel_multi_index((x, 30, 7), shape, order="F")) for x in range(10, 15)]
    edit = {"id": 1, "label": 2, "erase": False, "voxels": voxels}
    at.session_state[keys.CANVAS] = _page_value(args, seq=4, focus=[12, 30, 7], edits=[edit])
    _ok(at.run())
    assert "brush/eraser strokes: 1" in "\n".join(c.value for c in at.caption)
    session = at.session_state[keys.REVIEW_SESSION][1]
    working = session.working()
    # the fixture's LPS-stored source is the display order: canvas x -> display 63 - x
    assert all(working[63 - x, 55 - 30, 7] == 2 for x in range(10, 15))
    assert int((working == 2).sum()) == 5
    args, attached = _canvas(at)
    assert args["ack"] == 1
    # the page's bitmap already shows the stroke: it renames, nothing is resent
    assert args["drawing"]["alias"] is not None
    assert "drawing_bytes" not in attached

    # The same message again (a rerun for another reason) applies nothing twice.
    _ok(at.run())
    assert int((at.session_state[keys.REVIEW_SESSION][1].working() == 2).sum()) == 5

    # The brush, filled: NiiVue fills a closed outline on release.
    at.sidebar.radio(key="rv_tool").set_value("brush")
    _ok(at.run())
    at.sidebar.checkbox(key=keys.CANVAS_FILL).check()
    _ok(at.run())
    args, _ = _canvas(at)
    assert args["tool"]["mode"] == "brush"
    assert args["tool"]["filled"] is True


def _browser_and_held_model(monkeypatch: pytest.MonkeyPatch):
    """A connected browser (faked), and inference held until the test sets ``gate``:
    (gate, started), ``started`` set once the model is loaded and predicting."""
    import threading

    from medseg.viewer.core import services
    from medseg.viewer.ui import canvas

    gate, started = threading.Event(), threading.Event()
    real = services.run_inference

    def held_inference(*args, **kwargs):
        started.set()
        assert gate.wait(60), "the test never let the model finish"
        return real(*args, **kwargs)

    monkeypatch.setattr(services, "run_inference", held_inference)
    monkeypatch.setattr(canvas, "browser_connected", lambda: True)
    return gate, started


def test_a_browser_gets_the_scan_before_the_prediction(
    case_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a browser, the page is sent before the model runs: the first run draws the scan
    with the prediction already picked as the overlay, the model starts once the page shows
    the scan, a progress bar polls it, and the prediction arrives in the same canvas (the
    image is not sent again)."""
    from tests.apps.viewer_factory import write_constant_checkpoint

    model = write_constant_checkpoint(tmp_path / "slow.pt")  # its own key in the job queue
    gate, started = _browser_and_held_model(monkeypatch)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state[keys.CONFIG] = ViewerConfig(sample_root=case_root, model=model, device="cpu")
    _after_poster(_ok(at.run()))
    args, attached = _canvas(at)
    assert "image" in attached
    assert args["layers"] == []
    assert at.radio(key=keys.OVERLAY_MODE).value == "prediction"
    (bar,) = at.get("progress")
    assert "the model starts once the scan is drawn" in bar.proto.text
    assert not started.wait(1)  # held: it would slow the drawing of the scan
    captions = [c.value for c in at.caption]
    assert WAIT_FOR_SCAN in captions  # so do the lesion list and the readouts
    assert not any(c.startswith("Measured on") for c in captions)
    # the lesion source to come, greyed out on the ground truth (the same height: no jump)
    (source,) = [r for r in at.radio if r.label == "Lesions of"]
    assert (source.value, source.disabled, source.help) == ("ground truth", True, PENDING_LIST)
    opened_on = at.session_state[keys.slice_of("axial")]  # the ground truth's largest slice

    at.session_state[keys.CANVAS] = _page_value(args, seq=1)  # the page shows the scan
    _ok(at.run())
    assert started.wait(30)
    _ok(at.run())
    assert any(c.value.startswith("Measured on the ground truth") for c in at.caption)
    (bar,) = at.get("progress")
    assert "Running slow.pt (--model)" in bar.proto.text
    gate.set()
    for _ in range(60):  # the fragment polls the job; here each run asks again
        _ok(at.run())
        if not at.get("progress"):
            break
    args, attached = _canvas(at)
    assert [spec["name"] for spec in args["layers"]] == ["prediction"]
    assert attached == {"layer_prediction"}  # the prediction only: the page keeps the scan
    assert at.radio(key=keys.OVERLAY_MODE).value == "prediction"
    assert [t.value for t in at.toast] == ["Prediction ready (slow.pt (--model))"]
    source = at.radio(key=keys.LESION_SOURCE)  # the same radio, now live, on the prediction
    assert (source.value, source.disabled) == ("prediction", False)
    # nobody moved while it ran: the page goes where the prediction is largest (the constant
    # model's mask is the same on every slice: the first)
    assert opened_on != 0
    assert at.session_state[keys.slice_of("axial")] == 0


def test_the_ground_truth_is_named_by_the_model_before_its_prediction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ground truth with no names of its own (no --labels, no dataset.json) takes the
    model's class names once the model is loaded, while it still predicts: its lesions are
    not listed as "label 1" and then renamed when the prediction arrives."""
    from medseg.io import Volume, write_mask, write_volume
    from tests.apps.viewer_factory import stand_in_model

    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    truth = np.zeros((40, 30, 12), np.uint8)
    truth[5:12, 5:12, 3:7] = 1
    scan = Volume(np.where(truth > 0, 900.0, 100.0).astype(np.float32), affine)
    image = write_volume(scan, tmp_path / "flair.nii.gz")
    seg = write_mask(truth, scan, tmp_path / "seg.nii.gz")
    model, _ = stand_in_model(monkeypatch, tmp_path, truth, affine, ["background", "tumour"])
    gate, started = _browser_and_held_model(monkeypatch)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state[keys.CONFIG] = ViewerConfig(
        path=image, gt=seg, model=model, device="cpu", runs_dir=tmp_path / "none"
    )
    _after_poster(_ok(at.run()))
    args, _ = _canvas(at)
    at.session_state[keys.CANVAS] = _page_value(args, seq=1)  # the scan is drawn
    _ok(at.run())
    assert started.wait(30)  # the model is loaded and predicting
    _ok(at.run())
    assert at.get("progress")
    (listed,) = at.selectbox(key=keys.LESION_PICK).options
    assert listed.startswith("#1 tumour 1:")
    gate.set()
    for _ in range(60):
        _ok(at.run())
        if not at.get("progress"):
            break
    assert at.selectbox(key=keys.LESION_PICK).options == [listed]
    at.radio(key=keys.LESION_SOURCE).set_value("ground truth")
    _ok(at.run())
    assert at.selectbox(key=keys.LESION_PICK).options == [listed]


def test_a_large_volume_goes_as_a_preview_first(
    case_root: Path, constant_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first message carries only the 8-bit preview (no case, no overlay); the case and
    its overlays follow once the page says it shows the preview, then nothing is resent."""
    monkeypatch.setattr(volumes, "preview_step", lambda shape, size=0: 2)  # "large"
    at = _canvas_page(case_root, constant_checkpoint)
    args, attached = _canvas(at)
    assert attached == {"preview"}
    (element,) = at.get("component_instance")
    (preview,) = [a.bytes for a in element.proto.special_args if a.key == "preview"]
    assert len(preview) < 64 * 56 * 20 / 2  # a quarter of the voxels, one byte each

    shown = {**_page_value(args, seq=1), "loaded": {"case": None, "preview": args["case"]}}
    at.session_state[keys.CANVAS] = shown
    _ok(at.run())
    args, attached = _canvas(at)
    assert attached == {"image", "layer_prediction"}

    at.session_state[keys.CANVAS] = _page_value(args, seq=2)
    _ok(at.run())
    assert _canvas(at)[1] == set()


def test_a_new_page_gets_the_opening_slice_alone_first(case_root: Path, tmp_path: Path) -> None:
    """A new page's first message is the server-drawn opening slice (a small JPEG, shown while
    NiiVue starts), with no volume or overlay; the volume follows the page's ask. The three-
    plane layout, which one slice cannot stand for, gets no poster."""
    from PIL import Image

    from medseg.viewer.core import loading, state
    from tests.apps.viewer_factory import write_constant_checkpoint

    # a model that finds nothing: the poster is the scan itself, on a slice with the head
    empty = write_constant_checkpoint(tmp_path / "empty.pt", label=0)
    config = ViewerConfig(sample_root=case_root, model=empty, device="cpu")
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state[keys.CONFIG] = config
    at.session_state[keys.IMAGE_AREA] = "canvas"
    _ok(at.run())
    args, attached = _canvas(at)
    assert attached == {"poster"}
    (element,) = at.get("component_instance")
    (jpeg,) = [a.bytes for a in element.proto.special_args if a.key == "poster"]
    assert len(jpeg) < 200_000
    poster = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L"), np.float32)

    # the opening slice, windowed as the canvas shows it, at the viewer's physical aspect
    ref = loading.default_case(loading.discover_cases(case_root, confine=False))
    shown = state.prepare_case(loading.load_case(ref))
    index = at.session_state[keys.FOCUS][render.VIEW_AXIS["axial"]]
    plane = render.extract_slice(shown.images[0], "axial", index)
    size = render.display_size(plane.shape, render.pixel_spacing(shown.spacing, "axial"), 384)
    assert poster.shape == size
    low, high = args["window"]
    grey = render.apply_window(plane, render.Window(high - low, (high + low) / 2))
    grey = np.asarray(Image.fromarray(grey).resize(size[::-1], Image.Resampling.BILINEAR))
    assert np.corrcoef(poster.ravel(), grey.ravel().astype(np.float32))[0, 1] > 0.8

    at.session_state[keys.CANVAS] = dict(NEW_PAGE)
    _ok(at.run())
    attached = _canvas(at)[1]
    assert "poster" not in attached
    assert "image" in attached

    planes = AppTest.from_file(str(APP), default_timeout=120)
    planes.session_state[keys.CONFIG] = config
    planes.session_state[keys.IMAGE_AREA] = "canvas"
    planes.session_state[keys.LAYOUT] = "three planes"
    _ok(planes.run())
    assert "poster" not in _canvas(planes)[1]
