"""The viewer's image area as a NiiVue canvas (WebGL2, in the browser): medseg's own component.

Python owns the data: a new page first gets the opening slice drawn on the server (a JPEG
"poster", shown while NiiVue starts); per case it then sends the display volume once (NIfTI
bytes, keyed by the case digest; a large one after a small 8-bit preview, sent alone) and each
overlay once per version; the page reports which keys it holds, so a rerun sends no volume
again. Paging (wheel, arrows, PageUp/PageDown), window/level (right
drag), zoom/pan, layouts and drawing run in the browser; a click or a finished stroke comes
back as the crosshair position (``keys.FOCUS``) and queued strokes (:func:`apply_edits`).

Without a browser (AppTest, scripts) the page keeps the static PNG path
(:func:`image_area_choice`). Research use only.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st
import streamlit.components.v1 as components

from medseg.errors import MedsegError
from medseg.viewer.core import measure, render
from medseg.viewer.core.review import ReviewSession, display_to_source
from medseg.viewer.core.state import DisplayCase, MaskLayer
from medseg.viewer.ui import keys
from medseg.viewer.ui.canvas import volumes

IMAGE_AREAS = ("canvas", "static images")
LAYOUTS = {"single view": None, "three planes": "multiplanar", "3D render": "render"}
HEIGHT = 620

_FRONTEND = Path(__file__).resolve().parent / "frontend" / "dist"
_component = components.declare_component("medseg_canvas", path=str(_FRONTEND))
_tokens = itertools.count(1)


def browser_connected() -> bool:
    """Whether a browser shows this run: AppTest and bare scripts send no request headers."""
    return bool(st.context.headers)


def canvas_in_browser() -> bool:
    """Whether a browser shows this run's image area as the canvas (the sidebar choice, or
    its default)."""
    if not browser_connected():
        return False
    return st.session_state.get(keys.IMAGE_AREA, IMAGE_AREAS[0]) == IMAGE_AREAS[0]


def image_area_choice() -> str:
    """Sidebar choice of the image area; the canvas by default when a browser is connected
    (:func:`browser_connected`); AppTest and bare scripts get the static PNG images, which
    need no WebGL."""
    return st.sidebar.radio(
        "Image area",
        IMAGE_AREAS,
        index=0 if browser_connected() else 1,
        key=keys.IMAGE_AREA,
        horizontal=True,
        help="Canvas: NiiVue in the browser (WebGL2): wheel/arrow paging, right-drag "
        "window/level, 3D. Static images: one PNG per slice, drawn on the server.",
    )


def _token(layer: MaskLayer, name: str) -> str:
    """A key for data held by ``layer`` (a cached layer): the same while it lives."""
    return layer.memo(f"canvas token {name}", lambda: f"{name}-{next(_tokens)}")


def shows_case(shown: DisplayCase) -> bool:
    """Whether the page has reported it shows ``shown`` (its preview or its own voxels)."""
    held = (st.session_state.get(keys.CANVAS) or {}).get("loaded") or {}
    return any(str(held.get(name) or "").startswith(shown.digest) for name in ("case", "preview"))


# ----------------------------------------------------------------------------- focus
def take_click(shown: DisplayCase) -> None:
    """A click in the canvas the page has not acted on yet moves ``keys.FOCUS``;
    :func:`medseg.viewer.ui.focus.sync_focus` then moves the sliders and the other views."""
    state = st.session_state
    value = state.get(keys.CANVAS) or {}
    token = (value.get("instance"), value.get("seq"))
    mine = value.get("digest") == shown.digest
    if value.get("focus") and mine and token != state.get(keys.CANVAS_SEEN):
        state[keys.CANVAS_SEEN] = token
        point = volumes.canvas_to_display(value["focus"], shown.shape)
        state[keys.FOCUS] = tuple(
            int(np.clip(v, 0, n - 1)) for v, n in zip(point, shown.shape, strict=True)
        )


# ----------------------------------------------------------------------------- edits
def _drawing_key(session: ReviewSession) -> str:
    return f"review-{id(session)}-{session.version}"


def apply_edits(session: ReviewSession, shown: DisplayCase) -> int:
    """Apply the canvas's strokes not applied yet to ``session`` (one undo step per stroke);
    returns how many. Call at the start of a run, before the reviewed mask is drawn."""
    state = st.session_state
    value = state.get(keys.CANVAS) or {}
    instance = value.get("instance")
    if value.get("digest") != shown.digest or not value.get("edits"):
        return 0
    seen_instance, last = state.get(keys.CANVAS_ACK, (None, 0))
    if seen_instance != instance:
        last = 0
    held = (value.get("loaded") or {}).get("drawing")
    before = _drawing_key(session)
    applied = 0
    for edit in value["edits"]:
        if int(edit["id"]) <= last:
            continue
        display = volumes.flat_to_display(edit["voxels"], shown.shape)
        source = display_to_source(display, shown.affine, shown.case.channels[0].affine)
        session.paint(source, int(edit["label"]), erase=bool(edit["erase"]))
        last = int(edit["id"])
        applied += 1
    state[keys.CANVAS_ACK] = (instance, last)
    if applied and held == before:
        # the page's bitmap already shows these strokes: it renames instead of reloading
        state[keys.CANVAS_DRAWING_ALIAS] = (_drawing_key(session), before)
    return applied


# ----------------------------------------------------------------------------- measure
DRAG_MODES = {"window/level": "contrast", "ruler (mm)": "measurement", "ROI": "roiSelection"}
_VIEWS = ("axial", "coronal", "sagittal")  # NiiVue's axCorSag order


def roi_text(shown: DisplayCase, channel: int) -> str | None:
    """Mean, SD and area of the last ellipse ROI dragged in the canvas (``None`` when there is
    none for this case), from :func:`medseg.viewer.core.measure.roi_stats` on the display
    array, in the image's units."""
    value = st.session_state.get(keys.CANVAS) or {}
    roi = value.get("roi")
    if not roi or value.get("digest") != shown.digest or roi.get("plane") not in (0, 1, 2):
        return None
    view = _VIEWS[roi["plane"]]
    start = volumes.canvas_to_display(roi["start"], shown.shape)
    index = start[render.VIEW_AXIS[view]]
    box = volumes.roi_box(roi["start"], roi["end"], view, shown.shape)
    plane = render.extract_slice(shown.images[channel], view, index)
    unit = measure.intensity_unit(shown.is_ct[channel])
    try:
        stats = measure.roi_stats(
            plane, box, render.pixel_spacing(shown.spacing, view), "ellipse", unit
        )
    except MedsegError as err:
        return str(err)
    return f"ROI on {view} slice {index + 1}: {stats.text()}"


# ----------------------------------------------------------------------------- layers
def _layer_specs(
    shown: DisplayCase,
    pred: MaskLayer | None,
    truth: MaskLayer | None,
    settings: dict[str, Any],
    drawing: bool,
) -> list[tuple[dict[str, Any], Any]]:
    """``(spec, make_bytes)`` per overlay, bottom first; bytes are built only when sent."""
    mode, visible, opacity = settings["mode"], settings["visible"], settings["opacity"]
    names = settings["class_names"]
    count = max([len(names), *(max(m.present, default=0) + 1 for m in (pred, truth) if m)])
    out: list[tuple[dict[str, Any], Any]] = []

    def label(name: str, layer: MaskLayer, lut: dict[str, list], alpha: float) -> None:
        spec = {"name": name, "key": _token(layer, name), "kind": "label", "lut": lut}
        spec["opacity"] = alpha
        out.append((spec, lambda: volumes.nifti_bytes(layer.display, shown.affine)))

    if truth is not None and mode in ("ground truth", "both"):
        white = (240, 240, 240) if mode == "both" else None
        lut = volumes.label_lut(count, visible, names, colour=white)
        label("truth", truth, lut, opacity * (0.6 if mode == "both" else 1.0))
    if pred is not None and not drawing and mode in ("prediction", "both"):
        label("prediction", pred, volumes.label_lut(count, visible, names), opacity)
    if pred is not None and truth is not None and mode == "comparison":
        layer = pred
        spec = {"name": "comparison", "kind": "label", "lut": volumes.comparison_lut()}
        spec["key"] = f"{_token(pred, 'comparison')}-{_token(truth, 'versus')}-{visible}"
        spec["opacity"] = opacity
        out.append(
            (
                spec,
                lambda: volumes.nifti_bytes(
                    volumes.comparison_volume(layer.display, truth.display, visible),
                    shown.affine,
                ),
            )
        )
    heat = settings.get("heat")
    if heat is not None and pred is not None:
        spec = {"name": "uncertainty", "kind": "heat", "lut": volumes.heat_lut()}
        spec["key"] = f"{_token(pred, 'heat')}-{settings['heat_name']}"  # a layer, not state
        spec["range"] = [5, 255]
        spec["opacity"] = 1.0
        out.append((spec, lambda: volumes.nifti_bytes(volumes.heat_bytes(heat), shown.affine)))
    return out


def image_canvas(
    shown: DisplayCase,
    pred: MaskLayer | None,
    truth: MaskLayer | None,
    settings: dict[str, Any],
    focus: tuple[int, int, int],
    poster: np.ndarray | None = None,
) -> None:
    """Draw the canvas for this run. ``settings``: the page's display settings (window,
    overlay mode, opacity, visible labels, layout, view) plus, in review mode, ``review``
    (the :class:`ReviewSession`) and the tool (``tool``, ``label``, ``radius``). ``poster``:
    the server-drawn RGB slice of ``focus`` in the single view: a new page's first message
    (it shows it until NiiVue has drawn the volume, sent with the next run)."""
    state = st.session_state
    held = (state.get(keys.CANVAS) or {}).get("loaded") or {}
    session: ReviewSession | None = settings.get("review")
    # one key per case and channel: the page reports it holds it, so reruns send no volume
    args: dict[str, Any] = {"case": f"{shown.digest}-{settings['channel']}"}
    args["digest"] = shown.digest
    win = settings["window"]
    args["window"] = [float(win.low), float(win.high)]
    if held.get("case") != args["case"]:
        if state.get(keys.CANVAS) is None and poster is not None:
            # A new page gets the server-drawn slice alone (a JPEG of ~0.1 MB, shown at once)
            # and asks for the volume while NiiVue starts: with the 8 MB preview in it, the
            # first message reached the page ~0.5 s later.
            args["poster"] = render.encode_for_screen(poster)
        else:
            image = shown.images[settings["channel"]]
            # A large volume's first image is a small 8-bit copy, sent alone (its message is
            # an eighth of the case's); the case follows once the page says it shows the copy.
            preview = None
            if held.get("preview") != args["case"]:
                preview = volumes.preview_bytes(image, shown.affine, win)
            if preview is not None:
                args["preview"] = preview
            else:
                args["image"] = volumes.nifti_bytes(image, shown.affine)
    args["unit"] = measure.intensity_unit(shown.is_ct[settings["channel"]])
    drag = st.sidebar.radio(
        "Canvas right-drag",
        tuple(DRAG_MODES),
        key=keys.CANVAS_DRAG,
        horizontal=True,
        help="window/level from the dragged box; a ruler in mm (drawn on the canvas); or an "
        "ellipse ROI whose mean, SD and area show under the canvas.",
    )
    args["drag"] = DRAG_MODES[drag]
    held_layers = held.get("layers") or {}
    # overlays go with the case or to a page that holds it (a preview takes none)
    with_case = "image" in args or held.get("case") == args["case"]
    specs = []
    for spec, make in _layer_specs(shown, pred, truth, settings, drawing=session is not None):
        specs.append(spec)
        if with_case and held_layers.get(spec["name"]) != spec["key"]:
            args[f"layer_{spec['name']}"] = make()
    args["layers"] = specs
    args["drawing"] = None
    args["tool"] = None
    if session is not None and pred is not None:
        key = _drawing_key(session)
        alias = state.get(keys.CANVAS_DRAWING_ALIAS)
        names = settings["class_names"]
        count = max(len(names), max(pred.present, default=0) + 1)
        args["drawing"] = {
            "key": key,
            "alias": alias[1] if alias and alias[0] == key else None,
            "lut": volumes.label_lut(count, range(1, 256), names),
            "opacity": settings["opacity"],
        }
        alias = args["drawing"]["alias"]
        if with_case and held.get("drawing") not in (key, alias or key):
            args["drawing_bytes"] = volumes.nifti_bytes(pred.display, shown.affine)
        tool = settings.get("tool", "navigate")
        filled = tool == "brush" and st.sidebar.checkbox(
            "Fill each stroke's outline (canvas)",
            key=keys.CANVAS_FILL,
            help="A closed freehand outline is filled on release: one stroke, one undo step.",
        )
        pixel = render.pixel_spacing(shown.spacing, settings["view"])
        args["tool"] = {
            "mode": tool,
            "label": int(settings.get("label", 1)),
            "filled": bool(filled),
            "pen_size": volumes.pen_size(float(settings.get("radius", 2.0)), pixel),
        }
    _, last = state.get(keys.CANVAS_ACK, (None, 0))
    args["ack"] = int(last)
    args["radiological"] = True
    args["layout"] = LAYOUTS.get(settings["layout"]) or settings["view"]
    args["view"] = settings["view"]
    args["focus"] = volumes.display_to_canvas(focus, shown.shape)
    args["shape"] = list(shown.shape)  # the case's voxel grid (a preview's is coarser)
    args["height"] = HEIGHT
    # Streamlit posts a new render to the page only when the JSON arguments change: name
    # the bytes attached, and answer each message of the page (a remounted page asks again).
    args["attached"] = sorted(k for k, v in args.items() if isinstance(v, bytes))
    args["reply"] = (state.get(keys.CANVAS) or {}).get("seq")
    _component(key=keys.CANVAS, default=None, **args)
    text = roi_text(shown, settings["channel"])
    if text:
        st.caption(text)
    st.caption(
        "Canvas: wheel or ↑/↓ (PageUp/PageDown: 10) pages slices, click moves the crosshair, "
        "right-drag sets window/level, middle-drag pans, Ctrl+wheel zooms · radiological "
        "convention: patient's right on screen left"
        + (" · draw with the left button; each stroke is saved on release" if args["tool"] and
           args["tool"]["mode"] != "navigate" else "")
    )  # fmt: skip
