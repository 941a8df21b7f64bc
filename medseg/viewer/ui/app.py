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
from medseg.viewer.core import cases, loading, render, services
from medseg.viewer.core.state import DisplayCase, LRUStore, MaskLayer, make_layer, prepare_case
from medseg.viewer.launch import ViewerConfig, parse_app_args
from medseg.viewer.ui import canvas, keys, review_panel
from medseg.viewer.ui.access import require_access
from medseg.viewer.ui.focus import sync_focus
from medseg.viewer.ui.panels import (
    downloads_panel,
    identifiers_panel,
    image_panel,
    lesion_panel,
    navigation_layer,
    readouts_panel,
    three_plane_panel,
)

logger = logging.getLogger(__name__)

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
def _predictor(path: str, mtime: float, device: str, tta: bool | None) -> Any:
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
    if keys.CONFIG not in st.session_state:
        own_script = Path(sys.argv[0]).name in ("app.py", "viewer.py")
        st.session_state[keys.CONFIG] = parse_app_args(sys.argv[1:] if own_script else [])
    return st.session_state[keys.CONFIG]


def _ref_key(ref: loading.CaseRef) -> str:
    """Cache key of a case: its file paths (no stat calls: they cost on every rerun)."""
    return repr(ref)


def _reset_on_new_case(digest: str) -> None:
    if st.session_state.get(keys.CASE_DIGEST) != digest:
        for key in [k for k in st.session_state if str(k).startswith(keys.PER_CASE_PREFIXES)]:
            del st.session_state[key]
        st.session_state[keys.CASE_DIGEST] = digest


# ----------------------------------------------------------------------------- sidebar: case
def _open(ref: loading.CaseRef, model_channels: tuple[str, ...]) -> DisplayCase:
    """Load ``ref`` with the model's channels first (the first image shown is what the model
    reads, e.g. FLAIR for a FLAIR model, whatever order the files were given in)."""
    if model_channels:
        ref = cases.model_first(ref, model_channels)
    return _load_case(_ref_key(ref), ref)


def _case_from_refs(
    refs: list[loading.CaseRef], label: str, key: str, model_channels: tuple[str, ...]
) -> DisplayCase | None:
    if not refs:
        st.sidebar.info("No cases found in this folder.")
        return None
    names = [r.name for r in refs]
    default = loading.default_case(refs)
    index = names.index(default.name) if default else 0
    name = st.sidebar.selectbox(label, names, index=index, key=key)
    return _open(refs[names.index(name)], model_channels)


def _data_root_case(root: Path, model_channels: tuple[str, ...]) -> DisplayCase | None:
    typed = st.sidebar.text_input(
        "…or a path inside the data folder", key=keys.ROOT_PATH, help=f"relative to {root}"
    )
    if typed:
        path = loading.resolve_in_root(root, typed)
        return _open(loading.CaseRef(path.name, (path,)), model_channels)
    return _case_from_refs(
        _discover(str(root)), "Case in data folder", keys.ROOT_CASE, model_channels
    )


def _upload_case() -> DisplayCase | None:
    image = st.sidebar.file_uploader(
        "Image: NIfTI or zipped DICOM series",
        type=["nii", "gz", "zip", "nrrd", "mha"],
        key=keys.UPLOAD_IMAGE,
        help=f"Up to {loading.MAX_UPLOAD_MB} MB; temporary files are removed after reading.",
    )
    truth = st.sidebar.file_uploader(
        "Ground-truth mask (optional)", type=["nii", "gz", "nrrd", "mha"], key=keys.UPLOAD_GT
    )
    if image is None:
        st.info("Upload a scan in the sidebar to start.")
        return None
    data = image.getvalue()
    gt = truth.getvalue() if truth is not None else None
    key = hashlib.sha1(data + (gt or b"")).hexdigest()
    return _load_upload(key, image.name, data, truth.name if truth else "", gt)


def sidebar_case(config: ViewerConfig, model_channels: tuple[str, ...] = ()) -> DisplayCase | None:
    """Case picker (command line / sample data / data root / upload); None when nothing.
    ``model_channels``: the model's input channels, shown first (:func:`_open`)."""
    st.sidebar.header("Case")
    samples = _discover(str(config.sample_root), confine=False) if config.sample_root else []
    sources = (
        (["command line"] if config.path else [])
        + (["sample data"] if samples else [])
        + (["data folder"] if config.data_root else [])
        + ["upload"]
    )
    source = st.sidebar.radio("Source", sources, key=keys.SOURCE, horizontal=True)
    try:
        if source == "command line":
            ref = cases.command_line_case(
                [config.path, *config.more_paths], config.case_id, config.gt, labels=config.labels
            )
            return _open(ref, model_channels)
        if source == "sample data":
            return _case_from_refs(samples, "Sample case", keys.SAMPLE_CASE, model_channels)
        if source == "data folder":
            return _data_root_case(Path(config.data_root), model_channels)
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


#: the viewer's test-time augmentation choices -> Predictor(tta=...); None follows the model
TTA_CHOICES: dict[str, bool | None] = {"as trained": None, "on": True, "off": False}


def expected_channels(config: ViewerConfig, choices: dict[str, Path]) -> tuple[str, ...]:
    """The input channels of the model the page is about to run (its widgets' last values),
    so the case opens on them. Empty unless it predicts automatically: a model costs seconds
    to load, which a page that only shows the scan should not wait for."""
    state = st.session_state
    if not state.get(keys.AUTO_PREDICT, True):
        return ()
    path = choices.get(state.get(keys.MODEL_CHOICE, ""), next(iter(choices.values())))
    if not path.exists():
        return ()
    device = state.get(keys.DEVICE, config.device)
    tta = TTA_CHOICES[state.get(keys.TTA, next(iter(TTA_CHOICES)))]
    try:
        return tuple(_predictor(str(path), path.stat().st_mtime, device, tta).channel_names)
    except (MedsegError, RuntimeError, ValueError, OSError):
        return ()  # sidebar_prediction runs it again and shows the error


def sidebar_prediction(
    config: ViewerConfig, shown: DisplayCase, choices: dict[str, Path]
) -> MaskLayer | None:
    """Model picker and inference (with progress bar); the cached prediction or None."""
    st.sidebar.header("Model")
    # One main-area slot on every run, bar or not: an element that comes and goes shifts the
    # elements after it, and the canvas iframe would be rebuilt (and its volume resent).
    slot = st.empty()
    name = st.sidebar.selectbox("Checkpoint", list(choices), key=keys.MODEL_CHOICE)
    path = choices[name]
    # the common choices plus the one asked for (``--device cuda:1``), never replaced by auto
    devices = list(dict.fromkeys(("auto", "cpu", "cuda", config.device)))
    device = st.sidebar.selectbox(
        "Device", devices, key=keys.DEVICE, index=devices.index(config.device)
    )
    tta = TTA_CHOICES[
        st.sidebar.selectbox(
            "Test-time augmentation (flips, 4x slower)",
            list(TTA_CHOICES),
            key=keys.TTA,
            help="As trained: what the model records (on for models planned by `medseg train "
            "DATASET`, as `medseg predict` does).",
        )
    ]
    auto = st.sidebar.checkbox("Predict automatically", value=True, key=keys.AUTO_PREDICT)
    if not path.exists():
        st.sidebar.info(
            f"No model at {path}. The viewer shows the scan and any ground truth; train a model "
            "with `medseg train` or start with `medseg view --model CKPT`."
        )
        return None
    store = _prediction_store()
    key = (shown.digest, str(path), path.stat().st_mtime, device, tta)
    entry = store.get(key)
    clicked = st.sidebar.button("Run inference", key=keys.RUN_INFERENCE, type="primary")
    # A click retries a failed run; otherwise a cached result (or error) is reused.
    if (entry is None and auto) or (clicked and not isinstance(entry, MaskLayer)):
        entry = _run_inference(shown, path, device, tta, name, slot)
        store.put(key, entry)
    if isinstance(entry, str):
        st.error(entry)
        return None
    return entry


def _run_inference(
    shown: DisplayCase, path: Path, device: str, tta: bool | None, name: str, slot: Any
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
        key=keys.LAYOUT,
        horizontal=True,
        help="Three planes: axial, coronal "
        "and sagittal side by side; a click in one moves the crosshair and the other two.",
    )
    settings["view"] = st.sidebar.radio("View", render.VIEWS, key=keys.VIEW, horizontal=True)
    settings["crosshair"] = st.sidebar.checkbox(
        "Crosshair",
        value=True,
        key=keys.SHOW_CROSSHAIR,
        help="The position lesion jumps move to; the caption gives the intensity there.",
    )
    channel = 0
    if len(shown.images) > 1:
        names = shown.case.channel_names
        channel = st.sidebar.selectbox(
            "Channel", range(len(names)), format_func=lambda i: names[i], key=keys.CHANNEL
        )
    settings["channel"] = channel
    presets = [AUTO_WINDOW, *render.CT_PRESETS, MANUAL_WINDOW]
    default = "soft tissue" if shown.is_ct[channel] else AUTO_WINDOW
    preset = st.sidebar.selectbox(
        "Window preset", presets, index=presets.index(default), key=keys.preset(channel)
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
            key=keys.window_width(channel),
        )
        level = st.sidebar.slider(
            "Window level",
            lo - span / 2,
            hi + span / 2,
            float(np.clip(auto.level, lo - span / 2, hi + span / 2)),
            key=keys.window_level(channel),
        )
        window = render.Window(width, level)
    settings["window"] = window
    settings.update(_overlay_settings(layers))
    return settings


def _overlay_settings(layers: list[MaskLayer]) -> dict[str, Any]:
    pred = next((layer for layer in layers if layer.model), None)
    truth = next((layer for layer in layers if not layer.model), None)
    st.sidebar.header("Overlay")
    if pred is not None and truth is not None:
        modes = list(OVERLAY_MODES)
    else:
        modes = (
            ["prediction" if pred is not None else "ground truth", "none"] if layers else ["none"]
        )
    mode = st.sidebar.radio("Show", modes, key=keys.OVERLAY_MODE)
    style = st.sidebar.radio(
        "Style", ["filled", "contour"], key=keys.OVERLAY_STYLE, horizontal=True
    )
    opacity = st.sidebar.slider("Opacity", 0.0, 1.0, 0.45, 0.05, key=keys.OPACITY)
    names = (pred or truth).class_names if (pred or truth) is not None else []
    present = sorted({v for layer in layers for v in layer.present})
    visible = tuple(
        label
        for label in present
        if st.sidebar.checkbox(
            f"Show {names[label] if label < len(names) else label}",
            value=True,
            key=keys.show_label(label),
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


def sidebar_truth(
    config: ViewerConfig, shown: DisplayCase, pred: MaskLayer | None
) -> MaskLayer | None:
    """The ground truth for display, its values mapped onto the model's when the user says
    how (``--gt-map`` or the sidebar box); warns when the two label schemes differ."""
    if shown.case.truth is None:
        return None
    st.sidebar.header("Ground truth")
    st.session_state.setdefault(keys.GT_MAP, config.gt_map or "")
    text = st.sidebar.text_input(
        "Map ground-truth labels (FROM=TO,...)",
        key=keys.GT_MAP,
        help="When the ground truth numbers its labels differently from the model: e.g. "
        "1=2,4=3 makes ground-truth 1 the model's 2 and 4 the model's 3.",
    )
    try:
        mapping = cases.parse_label_map(text)
    except MedsegError as err:
        st.sidebar.error(str(err))
        mapping = {}
    model_names = tuple(pred.class_names) if pred is not None else ()
    truth = shown_truth(shown, model_names, mapping)
    if pred is not None and not mapping:
        present = sorted({*truth.present, *pred.present})
        warning = cases.label_scheme_warning(truth.class_names, model_names, present)
        if warning:
            st.warning(
                f"{warning}; or map the ground truth onto the model's values with --gt-map "
                "FROM=TO,... (e.g. 1=2,4=3) or the sidebar box *Map ground-truth labels*."
            )
    return truth


def shown_truth(
    shown: DisplayCase, model_names: tuple[str, ...] = (), mapping: dict[int, int] | None = None
) -> MaskLayer:
    """The case's ground truth prepared for display (memoised on the cached case, per
    mapping). Label names: ``--labels``, else the case's dataset.json, else the model's
    (:func:`cases.truth_class_names`); a mapped truth uses the model's scheme."""
    mapping = mapping or {}
    names = cases.truth_class_names(shown.case.class_names, None, model_names)
    if mapping and model_names:
        names = model_names
    memo = shown.__dict__.setdefault("_truth_layers", {})
    key = (tuple(sorted(mapping.items())), names)
    if key not in memo:
        volume = shown.case.truth
        if mapping:
            volume = volume.with_array(cases.map_labels(volume.array, mapping))
        memo[key] = make_layer(volume, shown, list(names))
    return memo[key]


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
    choices = _model_choices(config)  # lists --runs-dir once per run
    shown = sidebar_case(config, expected_channels(config, choices))
    if shown is None:
        return
    _reset_on_new_case(shown.digest)
    identifiers_panel(shown)
    pred = sidebar_prediction(config, shown, choices)
    session, edit_settings = review_panel.sidebar_review(shown, pred)
    if session is not None:
        pred = review_panel.reviewed_layer(session, shown, pred)
    truth = sidebar_truth(config, shown, pred)
    layers = [layer for layer in (pred, truth) if layer is not None]
    settings = sidebar_display(shown, layers)
    settings.update(review_panel.uncertainty_settings(pred))
    settings.update(edit_settings)
    spacing = " × ".join(f"{s:.2f}" for s in shown.case.channels[0].spacing)
    st.caption(
        f"**{shown.case.name}** · {' × '.join(map(str, shown.case.channels[0].shape))} voxels "
        f"· {spacing} mm · stored {shown.stored_orientation}"
    )
    nav = navigation_layer(pred, truth)
    if settings["image_area"] == "canvas":
        canvas.take_click(shown)  # a click in the canvas moves FOCUS, and the sliders follow
    sync_focus(shown, nav)
    if settings["layout"] == "three planes" and settings["image_area"] != "canvas":
        three_plane_panel(shown, pred, truth, settings)
    # Reviewing: the review list beside the image, so each decision is seen where it lands.
    left, right = st.columns([3, 2])
    with left:
        rgb = image_panel(shown, pred, truth, settings)
    with right:
        if session is not None:
            review_panel.review_section(shown, session, pred, config.data_root, config.pacs)
        else:
            lesion_panel(shown, nav, settings)
    tabs = ["Readouts", "Downloads"] + (["Lesion navigation"] if session is not None else [])
    readouts_tab, downloads_tab, *lesions_tab = st.tabs(tabs)
    with readouts_tab:
        metrics = readouts_panel(shown, pred, truth)
    with downloads_tab:
        downloads_panel(shown, pred, truth, rgb, settings, metrics)
    for tab in lesions_tab:
        with tab:
            lesion_panel(shown, nav, settings)
    st.caption(RESEARCH_USE_NOTICE)


if __name__ == "__main__":
    main()
