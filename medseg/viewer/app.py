"""medseg viewer: review scans with predicted tumour masks, slice by slice (Streamlit).

Run with ``medseg view [PATH] [--gt MASK] [--data-root DIR] [--model CKPT]`` or
``streamlit run apps/viewer.py -- [same arguments]``. A thin UI: loading, rendering,
inference, readouts and reports are library functions in :mod:`medseg.viewer` and
:mod:`medseg.inference`. Research use only.

Speed: the loaded case (display-oriented), the predictor and every prediction are cached per
server process (``st.cache_resource``), so moving the slider re-runs this script but only
renders one 2D slice (``render.render_slice``).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from medseg import RESEARCH_USE_NOTICE
from medseg.errors import MedsegError
from medseg.viewer import loading, navigation, render, services
from medseg.viewer.launch import ViewerConfig, parse_app_args
from medseg.viewer.state import DisplayCase, LRUStore, MaskLayer, make_layer, prepare_case

CONFIG_KEY = "medseg_config"
AUTO_WINDOW = "auto (MR percentiles)"
MANUAL_WINDOW = "manual"
OVERLAY_MODES = ("prediction", "ground truth", "both", "comparison", "none")


# ----------------------------------------------------------------------------- caches
@st.cache_resource(max_entries=6, show_spinner="Loading case…")
def _load_case(key: str, _ref: loading.CaseRef) -> DisplayCase:
    return prepare_case(loading.load_case(_ref))


@st.cache_resource(max_entries=4, show_spinner="Reading upload…")
def _load_upload(key: str, name: str, _data: bytes, gt_name: str, _gt: bytes | None) -> DisplayCase:
    image = loading.read_upload(name, _data)
    truth = None
    if _gt is not None:
        truth = loading.read_upload(gt_name, _gt)
        loading.check_same_grid(image, truth, what="ground-truth mask")
        truth = truth.with_array(np.rint(truth.array).astype(np.int16))
    case = loading.Case(name, [image], [Path(name).name], truth)
    return prepare_case(case)


@st.cache_resource(max_entries=4, show_spinner="Loading model…")
def _predictor(path: str, mtime: float, device: str, tta: bool) -> Any:
    return services.load_predictor(Path(path), device=device, tta=tta)


@st.cache_resource
def _prediction_store() -> LRUStore:
    """Predictions of this server process, keyed by (case hash, model, mtime, settings)."""
    return LRUStore(capacity=8)


@st.cache_resource(ttl=30)
def _discover(folder: str) -> list[loading.CaseRef]:
    return loading.discover_cases(Path(folder))


# ----------------------------------------------------------------------------- helpers
def get_config() -> ViewerConfig:
    """Launch arguments (``sys.argv`` after ``--``); tests put a ViewerConfig in session state."""
    if CONFIG_KEY not in st.session_state:
        own_script = Path(sys.argv[0]).name in ("app.py", "viewer.py")
        st.session_state[CONFIG_KEY] = parse_app_args(sys.argv[1:] if own_script else [])
    return st.session_state[CONFIG_KEY]


def _ref_key(ref: loading.CaseRef) -> str:
    """Cache key of a case: its file paths (no stat calls: they cost on every rerun)."""
    return repr(ref)


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


def _reset_on_new_case(digest: str) -> None:
    if st.session_state.get("_case_digest") != digest:
        for key in [
            k for k in st.session_state if str(k).startswith(("slice_", "lesion_", "area_"))
        ]:
            del st.session_state[key]
        st.session_state["_case_digest"] = digest


# ----------------------------------------------------------------------------- sidebar: case
def _case_from_refs(refs: list[loading.CaseRef], label: str, key: str) -> DisplayCase | None:
    if not refs:
        st.sidebar.info("No cases found in this folder.")
        return None
    names = [r.name for r in refs]
    default = loading.default_case(refs)
    index = names.index(default.name) if default else 0
    name = st.sidebar.selectbox(label, names, index=index, key=key)
    ref = refs[names.index(name)]
    return _load_case(_ref_key(ref), ref)


def _data_root_case(root: Path) -> DisplayCase | None:
    typed = st.sidebar.text_input(
        "…or a path inside the data folder", key="root_path", help=f"relative to {root}"
    )
    if typed:
        path = loading.resolve_in_root(root, typed)
        ref = loading.CaseRef(path.name, (path,))
        return _load_case(_ref_key(ref), ref)
    return _case_from_refs(_discover(str(root)), "Case in data folder", "root_case")


def _upload_case() -> DisplayCase | None:
    image = st.sidebar.file_uploader(
        "Image: NIfTI or zipped DICOM series",
        type=["nii", "gz", "zip", "nrrd", "mha"],
        key="upload_image",
        help=f"Up to {loading.MAX_UPLOAD_MB} MB; temporary files are removed after reading.",
    )
    truth = st.sidebar.file_uploader(
        "Ground-truth mask (optional)", type=["nii", "gz", "nrrd", "mha"], key="upload_gt"
    )
    if image is None:
        st.info("Upload a scan in the sidebar to start.")
        return None
    data = image.getvalue()
    gt = truth.getvalue() if truth is not None else None
    key = hashlib.sha1(data + (gt or b"")).hexdigest()
    return _load_upload(key, image.name, data, truth.name if truth else "", gt)


def sidebar_case(config: ViewerConfig) -> DisplayCase | None:
    """Case picker (command line / sample data / data root / upload); None when nothing."""
    st.sidebar.header("Case")
    samples = _discover(str(config.sample_root)) if config.sample_root else []
    sources = (
        (["command line"] if config.path else [])
        + (["sample data"] if samples else [])
        + (["data folder"] if config.data_root else [])
        + ["upload"]
    )
    source = st.sidebar.radio("Source", sources, key="source", horizontal=True)
    try:
        if source == "command line":
            ref = loading.CaseRef(config.path.name, (config.path,), config.gt)
            return _load_case(_ref_key(ref), ref)
        if source == "sample data":
            return _case_from_refs(samples, "Sample case", "sample_case")
        if source == "data folder":
            return _data_root_case(Path(config.data_root))
        return _upload_case()
    except MedsegError as err:
        st.error(f"Could not open the case: {err}")
    except Exception as err:  # a bad upload must give a readable message, not a traceback
        st.error(
            f"Could not read this file ({type(err).__name__}: {err}). Check it is a valid scan."
        )
    return None


# ----------------------------------------------------------------------------- sidebar: model
def _model_choices(config: ViewerConfig) -> dict[str, Path]:
    choices: dict[str, Path] = {}
    if config.model is not None:
        choices[f"{Path(config.model).name} (--model)"] = Path(config.model)
    choices["bundled default model"] = services.default_model_path()
    for path in services.list_checkpoints(config.runs_dir):
        choices[str(path.relative_to(config.runs_dir))] = path
    return choices


def sidebar_prediction(config: ViewerConfig, shown: DisplayCase) -> MaskLayer | None:
    """Model picker and inference (with progress bar); the cached prediction or None."""
    st.sidebar.header("Model")
    choices = _model_choices(config)
    name = st.sidebar.selectbox("Checkpoint", list(choices), key="model_choice")
    path = choices[name]
    device = st.sidebar.selectbox(
        "Device",
        ["auto", "cpu", "cuda"],
        key="device",
        index=["auto", "cpu", "cuda"].index(config.device)
        if config.device in ("auto", "cpu", "cuda")
        else 0,
    )
    tta = st.sidebar.checkbox("Test-time augmentation (flips, 4x slower)", key="tta")
    auto = st.sidebar.checkbox("Predict automatically", value=True, key="auto_predict")
    if not path.is_file():
        st.sidebar.info(
            f"No model at {path}. The viewer shows the scan and any ground truth; train a model "
            "with `medseg train` or start with `medseg view --model CKPT`."
        )
        return None
    store = _prediction_store()
    key = (shown.digest, str(path), path.stat().st_mtime, device, tta)
    entry = store.get(key)
    clicked = st.sidebar.button("Run inference", key="run_inference", type="primary")
    if entry is None and (auto or clicked):
        entry = _run_inference(shown, path, device, tta, name)
        store.put(key, entry)
    if isinstance(entry, str):
        st.error(entry)
        return None
    return entry


def _run_inference(
    shown: DisplayCase, path: Path, device: str, tta: bool, name: str
) -> MaskLayer | str:
    bar = st.progress(0.0, text=f"Running {name} on {shown.case.name}…")

    def progress(done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"Inference: batch {done}/{total}")

    try:
        predictor = _predictor(str(path), path.stat().st_mtime, device, tta)
        result = services.run_inference(predictor, shown.case.channels, name, progress)
        layer = make_layer(result.label, shown, result.class_names, result.readouts, name)
    except MedsegError as err:
        return f"Inference failed: {err}"
    finally:
        bar.empty()
    st.toast(f"Prediction ready ({name})")
    return layer


# ----------------------------------------------------------------------------- sidebar: display
def sidebar_display(shown: DisplayCase, layers: list[MaskLayer]) -> dict[str, Any]:
    """View, channel, window and overlay settings."""
    st.sidebar.header("Display")
    settings: dict[str, Any] = {}
    settings["view"] = st.sidebar.radio("View", render.VIEWS, key="view", horizontal=True)
    channel = 0
    if len(shown.images) > 1:
        names = shown.case.channel_names
        channel = st.sidebar.selectbox(
            "Channel", range(len(names)), format_func=lambda i: names[i], key="channel"
        )
    settings["channel"] = channel
    presets = [AUTO_WINDOW, *render.CT_PRESETS, MANUAL_WINDOW]
    default = "soft tissue" if shown.is_ct[channel] else AUTO_WINDOW
    preset = st.sidebar.selectbox(
        "Window preset", presets, index=presets.index(default), key=f"preset_{channel}"
    )
    window = shown.windows[channel] if preset == AUTO_WINDOW else None
    if preset in render.CT_PRESETS:
        window = render.Window(*render.CT_PRESETS[preset])
    if preset == MANUAL_WINDOW:
        lo, hi = shown.intensity_range[channel]
        span = float(hi - lo)
        auto = shown.windows[channel]
        width = st.sidebar.slider(
            "Window width",
            span / 100,
            span * 2,
            float(min(max(auto.width, span / 100), span * 2)),
            key=f"ww_{channel}",
        )
        level = st.sidebar.slider(
            "Window level",
            lo - span / 2,
            hi + span / 2,
            float(np.clip(auto.level, lo - span / 2, hi + span / 2)),
            key=f"wl_{channel}",
        )
        window = render.Window(width, level)
    settings["window"] = window
    settings.update(_overlay_settings(layers, shown))
    return settings


def _overlay_settings(layers: list[MaskLayer], shown: DisplayCase) -> dict[str, Any]:
    pred = next((layer for layer in layers if layer.model), None)
    truth = shown_truth(shown)
    st.sidebar.header("Overlay")
    if pred is not None and truth is not None:
        modes = list(OVERLAY_MODES)
    else:
        modes = (
            ["prediction" if pred is not None else "ground truth", "none"] if layers else ["none"]
        )
    mode = st.sidebar.radio("Show", modes, key="overlay_mode")
    style = st.sidebar.radio("Style", ["filled", "contour"], key="overlay_style", horizontal=True)
    opacity = st.sidebar.slider("Opacity", 0.0, 1.0, 0.45, 0.05, key="opacity")
    names = (pred or truth).class_names if (pred or truth) is not None else []
    present = sorted({v for layer in layers for v in layer.present})
    visible = tuple(
        label
        for label in present
        if st.sidebar.checkbox(
            f"Show {names[label] if label < len(names) else label}",
            value=True,
            key=f"show_label_{label}",
        )
    )
    return {
        "mode": mode,
        "style": style,
        "opacity": opacity,
        "visible": visible,
        "class_names": names,
        "present": present,
    }


def shown_truth(shown: DisplayCase) -> MaskLayer | None:
    """The case's ground truth prepared for display (memoised on the cached case)."""
    if shown.case.truth is None:
        return None
    memo = shown.__dict__.setdefault("_truth_layer", {})
    if "layer" not in memo:
        memo["layer"] = make_layer(shown.case.truth, shown, shown.case.class_names)
    return memo["layer"]


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
        style=settings["style"],
    )
    rgb = render.render_slice(request)
    count = render.num_slices(shown.shape, view)
    win = settings["window"]
    st.image(
        render.encode_for_screen(rgb),
        caption=(
            f"{view} {index + 1}/{count} · W {win.width:.4g} / L {win.level:.4g} · "
            "radiological convention: patient's right on screen left"
            + (" (axial, coronal)" if view != "sagittal" else "; anterior on screen left")
        ),
    )
    legend = _legend(settings)
    if legend:
        st.markdown(legend, unsafe_allow_html=True)
    return rgb


def _navigation_layer(pred: MaskLayer | None, truth: MaskLayer | None) -> MaskLayer | None:
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
                **AREA_CHART["encoding"]["x"], "scale": {"domain": [0, max(len(areas) - 1, 1)]}}}},
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
    lesions = services.lesion_rows(layer.readouts)
    st.markdown(f"**Lesions** ({len(lesions)}): slice range along the axial voxel axis")
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
        data=services.report_csv(layer.readouts, metrics),
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


def niivue_panel(shown: DisplayCase, layer: MaskLayer | None) -> None:
    """Optional 3D/multiplanar view with the NiiVue component (bundled JS, works offline)."""
    try:
        from niivue_component import niivue_viewer
    except ImportError:
        st.info("Install the optional 3D viewer with `pip install niivue-streamlit`.")
        return
    if not st.checkbox("Load the 3D view (sends the volume to the browser)", key="niivue_on"):
        return
    image = shown.case.channels[0]
    memo = shown.__dict__.setdefault("_niivue", {})
    if "image" not in memo:
        memo["image"] = _nifti_bytes(image)
    overlays = []
    if layer is not None:
        overlays.append(
            {
                "data": layer.memo("nifti", lambda: services.mask_nifti_bytes(layer.source)),
                "name": "mask.nii.gz",
                "colormap": "red",
                "opacity": 0.5,
            }
        )
    niivue_viewer(
        nifti_data=memo["image"],
        filename="image.nii.gz",
        overlays=overlays,
        height=520,
        view_mode="multiplanar",
        settings={"radiological": True},
        update_interval_ms=None,
        key="niivue",
    )


def _nifti_bytes(volume: Any) -> bytes:
    import tempfile

    from medseg.io import write_volume

    with tempfile.TemporaryDirectory(prefix="medseg-viewer-") as tmp:
        path = Path(tmp) / "image.nii.gz"
        write_volume(volume.with_array(np.asarray(volume.array, np.float32)), path)
        return path.read_bytes()


def identifiers_panel(shown: DisplayCase) -> None:
    """Patient identifiers: hidden unless the user explicitly asks."""
    ids = shown.case.channels[0].identifiers
    if not ids:
        return
    if st.sidebar.checkbox("Show patient identifiers", value=False, key="show_ids"):
        st.sidebar.json(ids)
    else:
        st.sidebar.caption("Patient identifiers hidden.")


def main() -> None:
    """Page entry point (Streamlit re-runs this on every interaction)."""
    st.set_page_config(page_title="medseg viewer", layout="wide", page_icon="🧠")
    config = get_config()
    st.title("medseg viewer")
    st.warning(RESEARCH_USE_NOTICE, icon="⚠️")
    shown = sidebar_case(config)
    if shown is None:
        return
    _reset_on_new_case(shown.digest)
    identifiers_panel(shown)
    pred = sidebar_prediction(config, shown)
    truth = shown_truth(shown)
    layers = [layer for layer in (pred, truth) if layer is not None]
    settings = sidebar_display(shown, layers)
    spacing = " × ".join(f"{s:.2f}" for s in shown.case.channels[0].spacing)
    st.caption(
        f"**{shown.case.name}** · {' × '.join(map(str, shown.case.channels[0].shape))} voxels "
        f"· {spacing} mm · stored {shown.stored_orientation}"
    )
    left, right = st.columns([3, 2])
    with left:
        rgb = image_panel(shown, pred, truth, settings)
    with right:
        lesion_panel(shown, _navigation_layer(pred, truth), settings)
    readouts_tab, downloads_tab, view3d_tab = st.tabs(["Readouts", "Downloads", "3D view"])
    with readouts_tab:
        metrics = readouts_panel(shown, pred, truth)
    with downloads_tab:
        downloads_panel(shown, pred, truth, rgb, settings, metrics)
    with view3d_tab:
        niivue_panel(shown, pred or truth)
    st.caption(RESEARCH_USE_NOTICE)


if __name__ == "__main__":
    main()
