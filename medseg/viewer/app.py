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
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from medseg import RESEARCH_USE_NOTICE
from medseg.errors import MedsegError
from medseg.viewer import cases, loading, render, review_panel, services
from medseg.viewer.access import require_access
from medseg.viewer.launch import ViewerConfig, parse_app_args
from medseg.viewer.panels import (
    downloads_panel,
    identifiers_panel,
    image_panel,
    lesion_panel,
    navigation_layer,
    readouts_panel,
    three_plane_panel,
)
from medseg.viewer.state import DisplayCase, LRUStore, MaskLayer, make_layer, prepare_case
from medseg.viewer.ui import canvas

logger = logging.getLogger(__name__)

CONFIG_KEY = "medseg_config"
AUTO_WINDOW = "auto (MR percentiles)"
MANUAL_WINDOW = "manual"
OVERLAY_MODES = ("prediction", "ground truth", "both", "comparison", "none")
LAYOUTS = ("single view", "three planes")
FAVICON = Path(__file__).resolve().parents[1] / "assets" / "favicon.png"


# ----------------------------------------------------------------------------- caches
@st.cache_resource(max_entries=6, show_spinner="Loading case…")
def _load_case(key: str, _ref: loading.CaseRef) -> DisplayCase:
    return prepare_case(loading.load_case(_ref))


@st.cache_resource(max_entries=4, show_spinner="Reading upload…")
def _load_upload(key: str, name: str, _data: bytes, gt_name: str, _gt: bytes | None) -> DisplayCase:
    image = loading.read_upload(name, _data)
    truth = None
    if _gt is not None:
        truth = loading.attach_truth(image, loading.read_upload(gt_name, _gt))
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
def _discover(folder: str, confine: bool = True) -> list[loading.CaseRef]:
    return loading.discover_cases(Path(folder), confine=confine)


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
    samples = _discover(str(config.sample_root), confine=False) if config.sample_root else []
    sources = (
        (["command line"] if config.path else [])
        + (["sample data"] if samples else [])
        + (["data folder"] if config.data_root else [])
        + ["upload"]
    )
    source = st.sidebar.radio("Source", sources, key="source", horizontal=True)
    try:
        if source == "command line":
            ref = cases.command_line_case(
                [config.path, *config.more_paths], config.case_id, config.gt
            )
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
    # One main-area slot on every run, bar or not: an element that comes and goes shifts the
    # elements after it, and the canvas iframe would be rebuilt (and its volume resent).
    slot = st.empty()
    choices = _model_choices(config)
    name = st.sidebar.selectbox("Checkpoint", list(choices), key="model_choice")
    path = choices[name]
    # the common choices plus the one asked for (``--device cuda:1``), never replaced by auto
    devices = list(dict.fromkeys(("auto", "cpu", "cuda", config.device)))
    device = st.sidebar.selectbox(
        "Device", devices, key="device", index=devices.index(config.device)
    )
    tta = st.sidebar.checkbox("Test-time augmentation (flips, 4x slower)", key="tta")
    auto = st.sidebar.checkbox("Predict automatically", value=True, key="auto_predict")
    if not path.exists():
        st.sidebar.info(
            f"No model at {path}. The viewer shows the scan and any ground truth; train a model "
            "with `medseg train` or start with `medseg view --model CKPT`."
        )
        return None
    store = _prediction_store()
    key = (shown.digest, str(path), path.stat().st_mtime, device, tta)
    entry = store.get(key)
    clicked = st.sidebar.button("Run inference", key="run_inference", type="primary")
    # A click retries a failed run; otherwise a cached result (or error) is reused.
    if (entry is None and auto) or (clicked and not isinstance(entry, MaskLayer)):
        entry = _run_inference(shown, path, device, tta, name, slot)
        store.put(key, entry)
    if isinstance(entry, str):
        st.error(entry)
        return None
    return entry


def _run_inference(
    shown: DisplayCase, path: Path, device: str, tta: bool, name: str, slot: Any
) -> MaskLayer | str:
    bar = slot.progress(0.0, text=f"Running {name} on {shown.case.name}…")

    def progress(done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"Inference: batch {done}/{total}")

    try:
        predictor = _predictor(str(path), path.stat().st_mtime, device, tta)
        case = shown.case
        picks = cases.match_channels(
            case.channel_names, case.named_channels, predictor.channel_names
        )
        channels = [case.channels[i] for i in picks]
        result = services.run_inference(predictor, channels, name, progress)
        layer = make_layer(
            result.label,
            shown,
            result.class_names,
            result.readouts,
            name,
            uncertainty=result.uncertainty,
            model_sha256=result.model_sha256,
            channels_used=tuple(picks),
        )
    except MedsegError as err:
        return f"Inference failed: {err}"
    except (RuntimeError, ValueError) as err:  # e.g. a model trained for other channels
        logger.exception("inference failed")
        return (
            f"Inference failed ({type(err).__name__}: {str(err).splitlines()[0][:300]}). "
            "Check that the model was trained for this kind of scan and channel count."
        )
    finally:
        bar.empty()
    st.toast(f"Prediction ready ({name})")
    return layer


# ----------------------------------------------------------------------------- sidebar: display
def sidebar_display(shown: DisplayCase, layers: list[MaskLayer]) -> dict[str, Any]:
    """View, channel, window and overlay settings."""
    st.sidebar.header("Display")
    settings: dict[str, Any] = {}
    settings["image_area"] = canvas.image_area_choice()
    settings["layout"] = st.sidebar.radio(
        "Layout",
        LAYOUTS + (("3D render",) if settings["image_area"] == "canvas" else ()),
        key="layout",
        horizontal=True,
        help="Three planes: axial, coronal "
        "and sagittal side by side; a click in one moves the crosshair and the other two.",
    )
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


def main() -> None:
    """Page entry point (Streamlit re-runs this on every interaction)."""
    # A bundled PNG: an emoji makes Streamlit compile its emoji catalogue (~0.4 s before the
    # first image) and a :material/: favicon is fetched from a font CDN (no external requests).
    st.set_page_config(page_title="medseg viewer", layout="wide", page_icon=str(FAVICON))
    if not require_access():  # token check (non-local binds): nothing of a case before it
        return
    config = get_config()
    st.title("medseg viewer")
    st.warning(RESEARCH_USE_NOTICE, icon=":material/warning:")
    shown = sidebar_case(config)
    if shown is None:
        return
    _reset_on_new_case(shown.digest)
    identifiers_panel(shown)
    pred = sidebar_prediction(config, shown)
    session, edit_settings = review_panel.sidebar_review(shown, pred)
    if session is not None:
        pred = review_panel.reviewed_layer(session, shown, pred)
    truth = shown_truth(shown)
    layers = [layer for layer in (pred, truth) if layer is not None]
    settings = sidebar_display(shown, layers)
    settings.update(review_panel.uncertainty_settings(pred))
    settings.update(edit_settings)
    spacing = " × ".join(f"{s:.2f}" for s in shown.case.channels[0].spacing)
    st.caption(
        f"**{shown.case.name}** · {' × '.join(map(str, shown.case.channels[0].shape))} voxels "
        f"· {spacing} mm · stored {shown.stored_orientation}"
    )
    if settings["layout"] == "three planes" and settings["image_area"] != "canvas":
        three_plane_panel(shown, pred, truth, settings)
    left, right = st.columns([3, 2])
    with left:
        rgb = image_panel(shown, pred, truth, settings)
    with right:
        lesion_panel(shown, navigation_layer(pred, truth), settings)
    if session is not None:
        review_panel.review_section(shown, session, pred, config.data_root)
    readouts_tab, downloads_tab = st.tabs(["Readouts", "Downloads"])
    with readouts_tab:
        metrics = readouts_panel(shown, pred, truth)
    with downloads_tab:
        downloads_panel(shown, pred, truth, rgb, settings, metrics)
    st.caption(RESEARCH_USE_NOTICE)


if __name__ == "__main__":
    main()
