"""Main-area panels of the viewer page: slice controls and image, lesions, readouts, downloads.

Called by :mod:`medseg.viewer.app` on every rerun; everything expensive is memoised on the
cached :class:`~medseg.viewer.state.DisplayCase` / :class:`~medseg.viewer.state.MaskLayer`,
so a rerun after a slider move renders one slice and re-sends small tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from medseg.viewer import navigation, render, services
from medseg.viewer.state import DisplayCase, MaskLayer
from medseg.viewer.ui import canvas


# ----------------------------------------------------------------------------- callbacks
def _step(key: str, delta: int, count: int) -> None:
    st.session_state[key] = int(np.clip(st.session_state.get(key, 0) + delta, 0, count - 1))


def _goto_lesion(targets: list[navigation.LesionTarget], view: str, step: int = 0) -> None:
    key = f"slice_{view}"
    if step == 0:
        number = st.session_state.get("lesion_pick")
        target = next((t for t in targets if t.number == number), None)
    else:
        target = navigation.neighbour_lesion(targets, view, st.session_state.get(key, 0), step)
    if target is not None:
        st.session_state[key] = target.slice_for(view)
        st.session_state["lesion_pick"] = target.number


def _jump_to_area_slice(view: str) -> None:
    choice = st.session_state.get("area_pick")
    if choice is not None:
        st.session_state[f"slice_{view}"] = int(choice)


# ----------------------------------------------------------------------------- main area
def _initial_slice(layer: MaskLayer | None, shown: DisplayCase, view: str) -> int:
    """Open on the slice with the most foreground, else the middle slice."""
    count = render.num_slices(shown.shape, view)
    if layer is not None and layer.present:
        areas = layer.areas(view, shown.spacing, tuple(layer.present))
        if areas.max() > 0:
            return int(np.argmax(areas))
    return count // 2


def slice_controls(shown: DisplayCase, nav: MaskLayer | None, view: str) -> int:
    """Slider with previous/next buttons; returns the current slice index."""
    count = render.num_slices(shown.shape, view)
    key = f"slice_{view}"
    if key not in st.session_state:
        st.session_state[key] = _initial_slice(nav, shown, view)
    st.session_state[key] = int(np.clip(st.session_state[key], 0, count - 1))
    prev_col, slider_col, next_col = st.columns([1, 10, 1], vertical_alignment="bottom")
    prev_col.button(
        "◀", key="prev_slice", help="previous slice", on_click=_step, args=(key, -1, count)
    )
    next_col.button("▶", key="next_slice", help="next slice", on_click=_step, args=(key, 1, count))
    first = {"axial": "inferior", "coronal": "anterior", "sagittal": "patient's right"}[view]
    slider_col.slider(
        f"{view.capitalize()} slice (0 = most {first})",
        0,
        max(count - 1, 1),
        key=key,
        disabled=count <= 1,
    )
    return int(st.session_state[key])


def _legend(settings: dict[str, Any]) -> str:
    if settings["mode"] == "comparison":
        items = [
            (name, "#{:02x}{:02x}{:02x}".format(*rgb))
            for name, rgb in render.COMPARISON_COLOURS.items()
        ]
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


def image_panel(
    shown: DisplayCase, pred: MaskLayer | None, truth: MaskLayer | None, settings: dict[str, Any]
) -> np.ndarray:
    """Render and show the current slice; returns the RGB array (for the PNG download)."""
    view = settings["view"]
    nav = pred or truth
    on_canvas = settings.get("image_area") == "canvas"
    if on_canvas:  # the NiiVue canvas pages itself: no slider (a slider move is a rerun)
        focus = canvas.sync_focus(shown, lambda v: _initial_slice(nav, shown, v))
        index = focus[render.VIEW_AXIS[view]]
    else:
        index = slice_controls(shown, nav, view)
    request = render.RenderRequest(
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
    )
    rgb = render.render_slice(request)  # the PNG download, on the canvas path too
    if on_canvas:
        canvas.image_canvas(shown, pred, truth, settings, focus)
        legend = _legend(settings).replace("outlined", "in white")
        if settings.get("heat") is not None:
            st.image(render.colour_bar(settings["heat_name"]), caption=settings["heat_name"])
        if legend:
            st.markdown(legend, unsafe_allow_html=True)
        return rgb
    count = render.num_slices(shown.shape, view)
    win = settings["window"]
    caption = (
        f"{view} {index + 1}/{count} · W {win.width:.4g} / L {win.level:.4g} · "
        "radiological convention: patient's right on screen left"
        + (" (axial, coronal)" if view != "sagittal" else "; anterior on screen left")
    )
    if settings.get("click_key"):
        # Editing: the same image, clickable (streamlit-image-coordinates); the click is
        # applied at the start of the next rerun against this view and slice.
        from streamlit_image_coordinates import streamlit_image_coordinates

        st.session_state["_brush_ctx"] = {"view": view, "index": index}
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
    return rgb


def _crosshair_clicks(shown: DisplayCase) -> None:
    """Move the crosshair (the three slice indices) to the last click in any of the planes."""
    for view in render.VIEWS:
        click = st.session_state.get(f"xhair_{view}")
        seen = f"_xhair_seen_{view}"
        if not click or click.get("unix_time") == st.session_state.get(seen):
            continue
        st.session_state[seen] = click.get("unix_time")
        index = int(st.session_state.get(f"slice_{view}", 0))
        plane_shape = render.extract_slice(shown.images[0], view, index).shape
        size = (click.get("height") or plane_shape[0], click.get("width") or plane_shape[1])
        row, col = render.screen_to_plane(click["x"], click["y"], size, plane_shape)
        pixel = np.array([[min(int(row), plane_shape[0] - 1), min(int(col), plane_shape[1] - 1)]])
        ijk = render.plane_to_volume(view, index, pixel, shown.shape)[0]
        for other in render.VIEWS:
            st.session_state[f"slice_{other}"] = int(ijk[render.VIEW_AXIS[other]])


def three_plane_panel(
    shown: DisplayCase, pred: MaskLayer | None, truth: MaskLayer | None, settings: dict[str, Any]
) -> None:
    """Axial, coronal and sagittal side by side with a linked crosshair (3D context)."""
    from streamlit_image_coordinates import streamlit_image_coordinates

    nav = pred or truth
    for view in render.VIEWS:
        key = f"slice_{view}"
        if key not in st.session_state:
            st.session_state[key] = _initial_slice(nav, shown, view)
    _crosshair_clicks(shown)
    point = tuple(int(st.session_state[f"slice_{v}"]) for v in ("sagittal", "coronal", "axial"))
    columns = st.columns(3)
    for column, view in zip(columns, render.VIEWS, strict=True):
        index = point[render.VIEW_AXIS[view]]
        request = render.RenderRequest(
            image=shown.images[settings["channel"]], spacing=shown.spacing, view=view,
            index=index, window=settings["window"],
            prediction=pred.display if pred else None, truth=truth.display if truth else None,
            mode=settings["mode"], visible=settings["visible"], opacity=settings["opacity"],
            style="contour" if settings.get("heat") is not None else settings["style"],
            heat=settings.get("heat"), min_side=256,
        )  # fmt: skip
        rgb = render.render_slice(request)
        plane_shape = render.extract_slice(shown.images[0], view, index).shape
        rgb = render.draw_crosshair(
            rgb, render.volume_to_plane(view, point, shown.shape), plane_shape
        )
        with column:
            streamlit_image_coordinates(
                rgb, key=f"xhair_{view}", image_format="JPEG", jpeg_quality=90, width="stretch"
            )
            st.caption(f"{view} {index + 1}/{render.num_slices(shown.shape, view)}")
    st.caption("Three planes: click any view to move the crosshair; the other two follow.")


def navigation_layer(pred: MaskLayer | None, truth: MaskLayer | None) -> MaskLayer | None:
    """The mask whose lesions are listed: the user's choice when both exist."""
    if pred is None or truth is None:
        return pred or truth
    source = st.radio(
        "Lesions of", ["prediction", "ground truth"], key="lesion_source", horizontal=True
    )
    return pred if source == "prediction" else truth


AREA_CHART = {
    "mark": {"type": "bar", "color": "#ee3377"},
    "encoding": {
        "x": {"field": "slice", "type": "quantitative", "title": "slice"},
        "y": {"field": "area_mm2", "type": "quantitative", "title": "area (mm²)"},
        "tooltip": [{"field": "slice"}, {"field": "area_mm2", "format": ".0f"}],
    },
}


def _area_frame(areas: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"slice": np.arange(len(areas)), "area_mm2": areas})


def lesion_panel(shown: DisplayCase, nav: MaskLayer | None, settings: dict[str, Any]) -> None:
    """Lesion list with jump/next/previous and the per-slice tumour area chart."""
    view = settings["view"]
    st.subheader("Lesions")
    if nav is None:
        st.caption("No mask loaded: run inference or load a ground truth.")
        return
    targets = nav.targets
    if not targets:
        st.info("No lesions in this mask.")
    else:
        by_number = {t.number: t for t in targets}
        st.selectbox(
            "Lesion",
            list(by_number),
            key="lesion_pick",
            format_func=lambda n: (
                f"{by_number[n].title}, slices "
                f"{by_number[n].slice_range(view)[0]}-{by_number[n].slice_range(view)[1]}"
            ),
        )
        go, prev, nxt = st.columns(3)
        go.button("Jump to lesion", key="lesion_go", on_click=_goto_lesion, args=(targets, view, 0))
        prev.button("◀ Lesion", key="lesion_prev", on_click=_goto_lesion, args=(targets, view, -1))
        nxt.button("Lesion ▶", key="lesion_next", on_click=_goto_lesion, args=(targets, view, 1))
    labels = settings["visible"] or tuple(nav.present)
    areas = nav.areas(view, shown.spacing, tuple(labels))
    st.caption(f"Tumour area per {view} slice (mm²)")
    chart = nav.memo(f"chart_{view}_{labels}", lambda: _area_frame(areas))
    # A raw Vega-Lite spec: st.bar_chart builds it through Altair with schema validation,
    # ~30 ms on every slider move.
    current = int(st.session_state.get(f"slice_{view}", 0))
    spec = {
        "layer": [
            {**AREA_CHART, "encoding": {**AREA_CHART["encoding"], "x": {
                **AREA_CHART["encoding"]["x"], "scale": {"domain": [0, max(len(areas) - 1, 1)], "nice": False}}}},
            {"mark": {"type": "rule", "color": "#ffc828", "strokeDash": [4, 3]},
             "encoding": {"x": {"datum": current}}},
        ]
    }  # fmt: skip
    st.vega_lite_chart(chart, spec, height=180)
    st.caption(f"dashed line: current slice {current}")
    with_tumour = np.flatnonzero(areas > 0)
    ranked = sorted(with_tumour, key=lambda i: -areas[i])[:200]
    st.selectbox(
        "Go to slice (largest area first)",
        [int(i) for i in ranked],
        index=None,
        key="area_pick",
        placeholder=f"{len(with_tumour)} slices with tumour",
        format_func=lambda i: f"slice {i}: {areas[i]:.0f} mm²",
        on_change=_jump_to_area_slice,
        args=(view,),
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
        metrics = pred.memo(
            "metrics",
            lambda: services.compare_with_truth(pred.source, shown.case.truth, pred.class_names),
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
        key="dl_png",
    )
    if layer is None:
        return
    model = pred.model if pred else "ground truth"
    st.download_button(
        "Report (CSV)",
        data=services.report_csv(layer.readouts, metrics, layer.targets),
        file_name=f"{stem}_report.csv",
        mime="text/csv",
        key="dl_csv",
    )
    st.download_button(
        "Report (JSON)",
        data=services.report_json(shown.case.name, model, layer.readouts, metrics),
        file_name=f"{stem}_report.json",
        mime="application/json",
        key="dl_json",
    )
    if pred is not None:
        st.download_button(
            "Predicted mask (NIfTI)",
            data=lambda: pred.memo("nifti", lambda: services.mask_nifti_bytes(pred.source)),
            file_name=f"{stem}_pred.nii.gz",
            mime="application/gzip",
            key="dl_mask",
        )


def identifiers_panel(shown: DisplayCase) -> None:
    """Patient identifiers: hidden unless the user explicitly asks."""
    ids = shown.case.channels[0].identifiers
    if not ids:
        return
    if st.sidebar.checkbox("Show patient identifiers", value=False, key="show_ids"):
        st.sidebar.json(ids)
    else:
        st.sidebar.caption("Patient identifiers hidden.")
