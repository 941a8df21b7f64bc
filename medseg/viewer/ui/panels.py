"""Main-area panels of the viewer page: slice controls and image, lesions, readouts, downloads.

Called by :mod:`medseg.viewer.ui.app` on every rerun; everything expensive is memoised on the
cached :class:`~medseg.viewer.core.state.DisplayCase` / :class:`~medseg.viewer.core.state.MaskLayer`,
so a rerun after a slider move renders one slice and re-sends small tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from medseg.viewer.core import measure, navigation, render, services
from medseg.viewer.core.state import DisplayCase, MaskLayer
from medseg.viewer.ui import canvas, focus, keys, measure_panel


# ----------------------------------------------------------------------------- callbacks
def _step(view: str, delta: int, shape: tuple[int, int, int]) -> None:
    focus.move_slice(view, int(st.session_state.get(keys.slice_of(view), 0)) + delta, shape)


def _slider_moved(view: str, shape: tuple[int, int, int]) -> None:
    focus.move_slice(view, int(st.session_state[keys.slider_of(view)]) - 1, shape)


def _goto_lesion(
    targets: list[navigation.LesionTarget], view: str, shape: tuple[int, int, int], step: int = 0
) -> None:
    if step == 0:
        number = st.session_state.get(keys.LESION_PICK)
        target = next((t for t in targets if t.number == number), None)
    else:
        current = st.session_state.get(keys.slice_of(view), 0)
        target = navigation.neighbour_lesion(targets, view, current, step)
    if target is not None:
        focus.focus_on(target.centre, shape)
        st.session_state[keys.LESION_PICK] = target.number


def _jump_to_area_slice(view: str, shape: tuple[int, int, int]) -> None:
    choice = st.session_state.get(keys.AREA_PICK)
    if choice is not None:
        focus.move_slice(view, int(choice), shape)


# ----------------------------------------------------------------------------- main area
def slice_controls(shown: DisplayCase, view: str) -> int:
    """Slider (numbered from 1) with previous/next buttons; returns the 0-based slice index."""
    count = render.num_slices(shown.shape, view)
    index = int(np.clip(st.session_state.get(keys.slice_of(view), 0), 0, count - 1))
    st.session_state[keys.slider_of(view)] = index + 1
    shape = shown.shape
    prev_col, slider_col, next_col = st.columns([1, 10, 1], vertical_alignment="bottom")
    prev_col.button(
        "◀", key=keys.PREV_SLICE, help="previous slice", on_click=_step, args=(view, -1, shape)
    )
    next_col.button(
        "▶", key=keys.NEXT_SLICE, help="next slice", on_click=_step, args=(view, 1, shape)
    )
    slider_col.slider(
        f"{view.capitalize()} slice (1 = most {render.FIRST_SLICE[view]})",
        1,
        max(count, 2),
        key=keys.slider_of(view),
        disabled=count <= 1,
        on_change=_slider_moved,
        args=(view, shape),
    )
    return index


def _legend(settings: dict[str, Any]) -> str:
    if settings["mode"] == "comparison":
        items = [(name, render.hex_colour(rgb)) for name, rgb in render.COMPARISON_COLOURS.items()]
    elif settings["mode"] == "none":
        return ""
    else:
        items = [
            (name, colour)
            for _, name, colour in render.legend_entries(
                settings["class_names"], settings["visible"]
            )
        ]
    chips = [f"<span style='color:{c};font-size:1.3em'>■</span>&nbsp;{n}" for n, c in items]
    note = " (ground truth outlined)" if settings["mode"] == "both" else ""
    return "&emsp;".join(chips) + note


def _request(
    shown: DisplayCase,
    pred: MaskLayer | None,
    truth: MaskLayer | None,
    settings: dict[str, Any],
    view: str,
    index: int,
    min_side: int = 384,
) -> render.RenderRequest:
    return render.RenderRequest(
        image=shown.images[settings["channel"]],
        spacing=shown.spacing,
        view=view,
        index=index,
        window=settings["window"],
        prediction=pred.display if pred else None,
        truth=truth.display if truth else None,
        mode=settings["mode"],
        visible=settings["visible"],
        opacity=settings["opacity"],
        style="contour" if settings.get("heat") is not None else settings["style"],
        heat=settings.get("heat"),
        min_side=min_side,
    )


def image_panel(
    shown: DisplayCase, pred: MaskLayer | None, truth: MaskLayer | None, settings: dict[str, Any]
) -> np.ndarray:
    """Render and show the current slice; returns the RGB array (for the PNG download)."""
    view = settings["view"]
    on_canvas = settings.get("image_area") == "canvas"
    # the canvas pages itself: no slider (a slider move is a server round trip)
    index = focus.current(shown.shape)[render.VIEW_AXIS[view]] if on_canvas else None
    if index is None:
        index = slice_controls(shown, view)
    point = focus.current(shown.shape)
    rgb = render.render_slice(_request(shown, pred, truth, settings, view, index))
    if on_canvas:  # the PNG download is still drawn on the server
        single = settings["layout"] == "single view"
        canvas.image_canvas(shown, pred, truth, settings, point, poster=rgb if single else None)
        legend = _legend(settings).replace("outlined", "in white")
        if settings.get("heat") is not None:
            st.image(render.colour_bar(settings["heat_name"]), caption=settings["heat_name"])
        if legend:
            st.markdown(legend, unsafe_allow_html=True)
        return rgb
    plane_shape = render.extract_slice(shown.images[0], view, index).shape
    if settings.get("crosshair", True):
        rgb = render.draw_crosshair(
            rgb, render.volume_to_plane(view, point, shown.shape), plane_shape
        )
    roi = measure_panel.roi_choice(plane_shape)
    if roi is not None:
        rgb = render.draw_outline(rgb, measure.roi_mask(plane_shape, roi[1], roi[0]))
    count = render.num_slices(shown.shape, view)
    win = settings["window"]
    caption = (
        f"{view} {index + 1}/{count} · W {win.width:.4g} / L {win.level:.4g} · "
        f"{render.orientation_sentence(view)} · "
        + measure_panel.intensity_text(shown, settings["channel"], point)
    )
    if settings.get("click_key"):
        # Editing: the same image, clickable (streamlit-image-coordinates); the click is
        # applied at the start of the next rerun against this view and slice.
        from streamlit_image_coordinates import streamlit_image_coordinates

        st.session_state[keys.BRUSH_CONTEXT] = {"view": view, "index": index}
        streamlit_image_coordinates(
            rgb, key=settings["click_key"], image_format="JPEG", jpeg_quality=95,
            cursor="crosshair",
        )  # fmt: skip
        st.caption(caption + " · click to paint")
    else:
        st.image(render.encode_for_screen(rgb), caption=caption)
    if settings.get("heat") is not None:
        st.image(
            render.colour_bar(settings["heat_name"]),
            caption=f"{settings['heat_name']} (0..1); masks drawn as outlines",
        )
    legend = _legend(settings)
    if legend:
        st.markdown(legend, unsafe_allow_html=True)
    measure_panel.roi_panel(shown, settings["channel"], view, index)
    return rgb


def _crosshair_clicks(shown: DisplayCase) -> None:
    """Move the position (FOCUS) to the last click in any of the three planes."""
    for view in render.VIEWS:
        click = st.session_state.get(keys.crosshair_click(view))
        seen = keys.crosshair_seen(view)
        if not click or click.get("unix_time") == st.session_state.get(seen):
            continue
        st.session_state[seen] = click.get("unix_time")
        index = int(st.session_state.get(keys.slice_of(view), 0))
        plane_shape = render.extract_slice(shown.images[0], view, index).shape
        size = (click.get("height") or plane_shape[0], click.get("width") or plane_shape[1])
        row, col = render.screen_to_plane(click["x"], click["y"], size, plane_shape)
        pixel = np.array([[min(int(row), plane_shape[0] - 1), min(int(col), plane_shape[1] - 1)]])
        focus.focus_on(render.plane_to_volume(view, index, pixel, shown.shape)[0], shown.shape)


def three_plane_panel(
    shown: DisplayCase, pred: MaskLayer | None, truth: MaskLayer | None, settings: dict[str, Any]
) -> None:
    """Axial, coronal and sagittal side by side with a linked crosshair (3D context)."""
    from streamlit_image_coordinates import streamlit_image_coordinates

    _crosshair_clicks(shown)
    point = focus.current(shown.shape)
    columns = st.columns(3)
    for column, view in zip(columns, render.VIEWS, strict=True):
        index = point[render.VIEW_AXIS[view]]
        rgb = render.render_slice(_request(shown, pred, truth, settings, view, index, 256))
        plane_shape = render.extract_slice(shown.images[0], view, index).shape
        rgb = render.draw_crosshair(
            rgb, render.volume_to_plane(view, point, shown.shape), plane_shape
        )
        with column:
            streamlit_image_coordinates(
                rgb,
                key=keys.crosshair_click(view),
                image_format="JPEG",
                jpeg_quality=90,
                width="stretch",
            )
            st.caption(f"{view} {index + 1}/{render.num_slices(shown.shape, view)}")
    st.caption("Three planes: click any view to move the crosshair; the other two follow.")


PENDING_LIST = "The ground truth's lesions are listed until the prediction is ready."


def navigation_layer(
    pred: MaskLayer | None, truth: MaskLayer | None, pending: bool = False
) -> MaskLayer | None:
    """The mask whose lesions are listed: the user's choice when both exist (``pending``: a
    prediction is on its way, and the ground truth's lesions are listed meanwhile)."""
    sources = ["prediction", "ground truth"]
    if pending and pred is None and truth is not None:
        # the choice to come, greyed out: the same height as the radio that replaces it, so
        # the image below does not move when the prediction arrives
        st.radio("Lesions of", sources, index=1, horizontal=True, disabled=True, help=PENDING_LIST)
        return truth
    if pred is None or truth is None:
        return pred or truth
    source = st.radio("Lesions of", sources, key=keys.LESION_SOURCE, horizontal=True)
    return pred if source == "prediction" else truth


AREA_CHART = {
    "mark": {"type": "bar", "color": render.hex_colour(render.label_colour(1))},
    "encoding": {
        "x": {"field": "slice", "type": "quantitative", "title": "slice"},
        "y": {"field": "area_mm2", "type": "quantitative", "title": "area (mm²)"},
        "tooltip": [{"field": "slice"}, {"field": "area_mm2", "format": ".0f"}],
    },
}


def _area_frame(areas: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"slice": np.arange(1, len(areas) + 1), "area_mm2": areas})


def lesion_panel(shown: DisplayCase, nav: MaskLayer | None, settings: dict[str, Any]) -> None:
    """Lesion list (picking one moves the position to its centre), next/previous, and the
    per-slice tumour area chart. Slices are numbered from 1, as on the slider."""
    view = settings["view"]
    shape = shown.shape
    st.subheader("Lesions")
    if nav is None:
        st.caption("No mask loaded: run inference or load a ground truth.")
        return
    targets = nav.targets
    if not targets:
        st.info("No lesions in this mask.")
    else:
        by_number = {t.number: t for t in targets}

        def title(n: int) -> str:
            first, last = by_number[n].slice_range(view)
            return f"{by_number[n].title}, slices {first + 1}-{last + 1}"

        st.selectbox(
            "Lesion",
            list(by_number),
            key=keys.LESION_PICK,
            format_func=title,
            on_change=_goto_lesion,
            args=(targets, view, shape, 0),
        )
        go, prev, nxt = st.columns(3)
        for column, (text, key, step) in zip(
            (go, prev, nxt),
            (
                ("Jump to lesion", keys.LESION_GO, 0),
                ("◀ Lesion", keys.LESION_PREV, -1),
                ("Lesion ▶", keys.LESION_NEXT, 1),
            ),
            strict=True,
        ):
            column.button(text, key=key, on_click=_goto_lesion, args=(targets, view, shape, step))
    labels = settings["visible"] or tuple(nav.present)
    areas = nav.areas(view, shown.spacing, tuple(labels))
    st.caption(f"Tumour area per {view} slice (mm²)")
    chart = nav.memo(f"chart_{view}_{labels}", lambda: _area_frame(areas))
    # A raw Vega-Lite spec: st.bar_chart builds it through Altair with schema validation,
    # ~30 ms on every slider move.
    current = int(st.session_state.get(keys.slice_of(view), 0))
    spec = {
        "layer": [
            {**AREA_CHART, "encoding": {**AREA_CHART["encoding"], "x": {
                **AREA_CHART["encoding"]["x"], "scale": {"domain": [1, max(len(areas), 2)], "nice": False}}}},
            {"mark": {"type": "rule", "color": render.hex_colour(render.CROSSHAIR_COLOUR),
                      "strokeDash": [4, 3]},
             "encoding": {"x": {"datum": current + 1}}},
        ]
    }  # fmt: skip
    st.vega_lite_chart(chart, spec, height=180)
    st.caption(f"dashed line: current slice {current + 1}")
    with_tumour = np.flatnonzero(areas > 0)
    ranked = sorted(with_tumour, key=lambda i: -areas[i])[:200]
    st.selectbox(
        "Go to slice (largest area first)",
        [int(i) for i in ranked],
        index=None,
        key=keys.AREA_PICK,
        placeholder=f"{len(with_tumour)} slices with tumour",
        format_func=lambda i: f"slice {i + 1}: {areas[i]:.0f} mm²",
        on_change=_jump_to_area_slice,
        args=(view, shape),
    )


def readouts_panel(
    shown: DisplayCase, pred: MaskLayer | None, truth: MaskLayer | None
) -> list[dict[str, Any]] | None:
    """Per-class mL, lesion table and Dice/HD95 vs ground truth; returns the metrics rows."""
    layer = pred or truth
    if layer is None:
        st.caption("No mask: nothing to measure yet.")
        return None
    st.caption(
        f"Measured on the {'prediction of ' + pred.model if pred else 'ground truth'}, "
        "in the scan's own voxel grid."
    )
    st.dataframe(pd.DataFrame(services.class_rows(layer.readouts)), hide_index=True)
    lesions = services.lesion_rows(layer.readouts, layer.targets)
    st.markdown(
        f"**Lesions** ({len(lesions)}): `number` as in the lesion picker, `slice_range` = "
        "axial slider positions"
    )
    st.dataframe(pd.DataFrame(lesions), hide_index=True)
    metrics = None
    if pred is not None and truth is not None:
        # per truth layer: a label mapping (--gt-map) gives another one, memoised on the case
        metrics = pred.memo(
            f"metrics_{id(truth)}",
            lambda: services.compare_with_truth(pred.source, truth.source, pred.class_names),
        )
        st.markdown("**Prediction vs ground truth**")
        st.dataframe(pd.DataFrame(metrics), hide_index=True)
    return metrics


def downloads_panel(
    shown: DisplayCase,
    pred: MaskLayer | None,
    truth: MaskLayer | None,
    rgb: np.ndarray,
    settings: dict[str, Any],
    metrics: list | None,
) -> None:
    """Mask NIfTI, report CSV/JSON and current view PNG."""
    layer = pred or truth
    stem = Path(shown.case.name).name.replace(".nii.gz", "").replace(".nii", "")
    caption = f"{shown.case.name} · {settings['view']} · {settings['mode']}"
    st.download_button(
        "Current view (PNG)",
        data=lambda: services.png_bytes(rgb, caption),
        file_name=f"{stem}_{settings['view']}.png",
        mime="image/png",
        key=keys.DL_PNG,
    )
    if layer is None:
        return
    model = pred.model if pred else "ground truth"
    st.download_button(
        "Report (CSV)",
        data=services.report_csv(layer.readouts, metrics, layer.targets),
        file_name=f"{stem}_report.csv",
        mime="text/csv",
        key=keys.DL_CSV,
    )
    st.download_button(
        "Report (JSON)",
        data=services.report_json(shown.case.name, model, layer.readouts, metrics),
        file_name=f"{stem}_report.json",
        mime="application/json",
        key=keys.DL_JSON,
    )
    if pred is not None:
        st.download_button(
            "Predicted mask (NIfTI)",
            data=lambda: pred.memo("nifti", lambda: services.mask_nifti_bytes(pred.source)),
            file_name=f"{stem}_pred.nii.gz",
            mime="application/gzip",
            key=keys.DL_MASK,
        )


def identifiers_panel(shown: DisplayCase) -> None:
    """Patient identifiers: hidden unless the user explicitly asks."""
    ids = shown.case.channels[0].identifiers
    if not ids:
        return
    if st.sidebar.checkbox("Show patient identifiers", value=False, key=keys.SHOW_IDS):
        st.sidebar.json(ids)
    else:
        st.sidebar.caption("Patient identifiers hidden.")
