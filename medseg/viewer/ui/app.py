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

import dataclasses
import hashlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from medseg import RESEARCH_USE_NOTICE
from medseg.errors import MedsegError
from medseg.viewer.core import cases, jobs, loading, render, services, warmup
from medseg.viewer.core.state import (
    DisplayCase,
    LRUStore,
    MaskLayer,
    make_layer,
    prepare_case,
    truth_layer,
)
from medseg.viewer.launch import ViewerConfig, config_case, parse_app_args
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
FAVICON = services.ASSETS / "favicon.png"


# ----------------------------------------------------------------------------- caches
@st.cache_resource(max_entries=6, show_spinner="Loading case…")
def _load_case(key: str, _ref: loading.CaseRef) -> DisplayCase:
    # the server may have read it already, before this page connected (``medseg view``)
    return warmup.take(_ref) or prepare_case(loading.load_case(_ref))


@st.cache_resource(max_entries=4, show_spinner="Reading upload…")
def _load_upload(key: str, name: str, _data: bytes, gt_name: str, _gt: bytes | None) -> DisplayCase:
    image = loading.read_upload(name, _data)
    truth = None
    if _gt is not None:
        truth = loading.attach_truth(image, loading.read_upload(gt_name, _gt))
    case = loading.Case(name, [image], [Path(name).name], truth)
    return prepare_case(case)


# no spinner: the job queue's worker thread loads the model too (a spinner needs a script run)
@st.cache_resource(max_entries=4, show_spinner=False)
def _predictor(path: str, mtime: float, device: str, tta: bool | None) -> Any:
    # the server may have loaded it already, to open a case in the model's channel order
    kept = warmup.take_model(warmup.model_key(path, mtime, device, tta))
    return kept or services.load_predictor(Path(path), device=device, tta=tta)


@st.cache_resource
def _prediction_jobs() -> jobs.JobQueue:
    """Predictions of this server process, running or done, keyed by (case hash, model,
    mtime, settings)."""
    return jobs.JobQueue(capacity=8)


@st.cache_resource
def _model_class_names() -> LRUStore:
    """The class names of each model this server has loaded, by (path, mtime): the ground
    truth is named with them while that model's prediction is still running."""
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


def _reset_on_new_case(digest: str) -> None:
    if st.session_state.get(keys.CASE_DIGEST) != digest:
        for key in [k for k in st.session_state if str(k).startswith(keys.PER_CASE_PREFIXES)]:
            del st.session_state[key]
        st.session_state[keys.CASE_DIGEST] = digest


# ----------------------------------------------------------------------------- sidebar: case
ModelChannels = Callable[[], tuple[str, ...]]


def _open(ref: loading.CaseRef, model_channels: ModelChannels) -> DisplayCase:
    """Load ``ref`` with the model's channels first (the first image shown is what the model
    reads, e.g. FLAIR for a FLAIR model, whatever order the files were given in). The model
    is asked only for a case of several images: loading it (torch included) takes seconds
    that a one-image case's first image should not wait for."""
    if len(ref.images) > 1:
        channels = model_channels()
        if channels:
            ref = cases.model_first(ref, channels)
    return _load_case(warmup.case_key(ref), ref)


def _case_from_refs(
    refs: list[loading.CaseRef], label: str, key: str, model_channels: ModelChannels
) -> DisplayCase | None:
    if not refs:
        st.sidebar.info("No cases found in this folder.")
        return None
    names = [r.name for r in refs]
    default = loading.default_case(refs)
    index = names.index(default.name) if default else 0
    name = st.sidebar.selectbox(label, names, index=index, key=key)
    return _open(refs[names.index(name)], model_channels)


def _data_root_case(root: Path, model_channels: ModelChannels) -> DisplayCase | None:
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


def sidebar_case(config: ViewerConfig, model_channels: ModelChannels = tuple) -> DisplayCase | None:
    """Case picker (command line / sample data / data root / upload); None when nothing.
    ``model_channels()``: the model's input channels, shown first (:func:`_open`)."""
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
            return _open(config_case(config), model_channels)
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


WAIT_FOR_SCAN = (
    "Lesions, readouts and downloads follow once the canvas shows the scan (if it cannot "
    "draw, pick the static image area in the sidebar)."
)

#: seconds a model waits for the canvas to show the scan (it would slow the drawing on a
#: shared CPU) before it starts anyway, e.g. when the browser cannot draw at all
MODEL_HOLD_SECONDS = 15.0

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


@dataclasses.dataclass
class Prediction:
    """What the model section gives the page: the prediction on screen, or why there is none
    yet (``pending``: the model is running beside the page)."""

    layer: MaskLayer | None = None
    pending: bool = False
    model_names: tuple[str, ...] = ()  # the model's class names, once it is loaded


def sidebar_prediction(
    config: ViewerConfig, shown: DisplayCase, choices: dict[str, Path]
) -> Prediction:
    """Model picker and inference. The model runs in the server's job queue
    (:mod:`medseg.viewer.core.jobs`), so the canvas gets the scan first and the prediction
    with a rerun when it is done; the static images (and AppTest, scripts) wait for it."""
    st.sidebar.header("Model")
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
        return Prediction()
    queue = _prediction_jobs()
    model_file = (str(path), path.stat().st_mtime)
    key = (shown.digest, *model_file, device, tta)
    job = queue.get(key)
    clicked = st.sidebar.button("Run inference", key=keys.RUN_INFERENCE, type="primary")
    # A click retries a failed run; otherwise a running or finished one (or its error) is used.
    failed = job is not None and job.done() and not isinstance(job.result(), MaskLayer)
    beside = canvas.canvas_in_browser()
    if (job is None and auto) or (clicked and (job is None or failed)):
        work = _inference_work(shown, path, device, tta, name)
        hold = MODEL_HOLD_SECONDS if beside else 0.0
        job = queue.submit(key, work, f"{name} on {shown.case.name}", again=True, hold=hold)
    if job is None:
        return Prediction()
    if not beside or canvas.shows_case(shown):
        job.release()
    if not job.done():
        if not beside:
            # no browser (nothing to draw first), or server-drawn images: wait for it
            job.future.exception()
        else:
            st.session_state[keys.PREDICTION_AWAITED] = key
            _inference_progress(key)
            names = _model_class_names().get(model_file)
            return Prediction(pending=True, model_names=names or ())
    awaited = st.session_state.pop(keys.PREDICTION_AWAITED, None) == key
    entry = job.result()
    if isinstance(entry, str):
        st.error(entry)
        return Prediction()
    if awaited:
        st.toast(f"Prediction ready ({name})")
    return Prediction(entry, model_names=tuple(entry.class_names))


@st.fragment(run_every=1.0)
def _inference_progress(key: tuple) -> None:
    """The running job's progress, polled every second (only this fragment reruns); when
    it is done, the whole page runs again and draws the prediction."""
    job = _prediction_jobs().get(key)
    if job is None or job.done():
        st.rerun()
    if not job.running:
        text = f"{job.label}: the model starts once the scan is drawn."
    else:
        steps = f"batch {job.done_steps}/{job.total_steps}" if job.total_steps else "starting"
        text = (
            f"Running {job.label}: {steps}, {job.seconds:.0f} s. The prediction is drawn when "
            "it is done; the scan can be read meanwhile."
        )
    st.progress(job.fraction, text=text)


def _inference_work(
    shown: DisplayCase, path: Path, device: str, tta: bool | None, name: str
) -> jobs.Work:
    """The job that predicts ``shown`` with the model at ``path`` (loaded there too, off the
    page's path to its first image): a :class:`MaskLayer`, or the failure explained as a
    string (kept like a result, so a rerun does not retry it)."""

    def work(progress: services.Progress) -> MaskLayer | str:
        try:
            mtime = path.stat().st_mtime
            predictor = _predictor(str(path), mtime, device, tta)
            _model_class_names().put((str(path), mtime), tuple(predictor.class_names))
            case = shown.case
            picks = cases.match_channels(
                case.channel_names, case.named_channels, predictor.channel_names
            )
            channels = [case.channels[i] for i in picks]
            result = services.run_inference(predictor, channels, name, progress)
            return make_layer(
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
        except (RuntimeError, ValueError, OSError) as err:  # e.g. trained for other channels
            logger.exception("inference failed")
            return _failure(err)

    return work


def _failure(err: Exception) -> str:
    return (
        f"Inference failed ({type(err).__name__}: {str(err).splitlines()[0][:300]}). "
        "Check that the model was trained for this kind of scan and channel count."
    )


# ----------------------------------------------------------------------------- sidebar: display
def sidebar_display(
    shown: DisplayCase, layers: list[MaskLayer], pending: bool = False
) -> dict[str, Any]:
    """View, channel, window and overlay settings (``pending``: a prediction is on its way)."""
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
    settings.update(_overlay_settings(layers, pending))
    return settings


def _overlay_settings(layers: list[MaskLayer], pending: bool = False) -> dict[str, Any]:
    pred = next((layer for layer in layers if layer.model), None)
    truth = next((layer for layer in layers if not layer.model), None)
    st.sidebar.header("Overlay")
    # A pending prediction is offered (and picked) already: a list that grew on its arrival
    # would keep the page's earlier pick, the ground truth, in place of the prediction.
    predicted = pred is not None or pending
    if predicted and truth is not None:
        modes = list(OVERLAY_MODES)
    else:
        modes = (
            ["prediction" if predicted else "ground truth", "none"]
            if layers or pending
            else ["none"]
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
    config: ViewerConfig,
    shown: DisplayCase,
    pred: MaskLayer | None,
    model_names: tuple[str, ...] = (),
) -> MaskLayer | None:
    """The ground truth for display, its values mapped onto the model's when the user says
    how (``--gt-map`` or the sidebar box); warns when the two label schemes differ.
    ``model_names``: the model's class names, known once it is loaded (before its prediction),
    which name the ground truth when neither ``--labels`` nor dataset.json does."""
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
    if pred is not None:
        model_names = tuple(pred.class_names)
    truth = truth_layer(shown, model_names, mapping)
    if pred is not None and not mapping:
        present = sorted({*truth.present, *pred.present})
        warning = cases.label_scheme_warning(truth.class_names, model_names, present)
        if warning:
            st.warning(
                f"{warning}; or map the ground truth onto the model's values with --gt-map "
                "FROM=TO,... (e.g. 1=2,4=3) or the sidebar box *Map ground-truth labels*."
            )
    return truth


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
    shown = sidebar_case(config, lambda: expected_channels(config, choices))
    if shown is None:
        return
    _reset_on_new_case(shown.digest)
    # Everything above the image in one container: a message that comes and goes (the
    # running model's progress, a label-scheme warning) must not move the image area, or
    # the canvas's iframe is rebuilt and its volumes are sent again.
    with st.container():
        identifiers_panel(shown)
        prediction = sidebar_prediction(config, shown, choices)
        pred = prediction.layer
        session, edit_settings = review_panel.sidebar_review(shown, pred)
        if session is not None:
            pred = review_panel.reviewed_layer(session, shown, pred)
        truth = sidebar_truth(config, shown, pred, prediction.model_names)
        layers = [layer for layer in (pred, truth) if layer is not None]
        settings = sidebar_display(shown, layers, prediction.pending)
        settings.update(review_panel.uncertainty_settings(pred))
        settings.update(edit_settings)
        spacing = " × ".join(f"{s:.2f}" for s in shown.case.channels[0].spacing)
        st.caption(
            f"**{shown.case.name}** · {' × '.join(map(str, shown.case.channels[0].shape))} "
            f"voxels · {spacing} mm · stored {shown.stored_orientation}"
        )
        nav = navigation_layer(pred, truth, prediction.pending)
    if settings["image_area"] == "canvas":
        canvas.take_click(shown)  # a click in the canvas moves FOCUS, and the sliders follow
    sync_focus(shown, nav)
    if settings["layout"] == "three planes" and settings["image_area"] != "canvas":
        three_plane_panel(shown, pred, truth, settings)
    # The lesion list and readouts (seconds on a large mask) wait until the canvas shows the
    # scan: on a shared CPU they would slow its first drawing. Its report reruns the page.
    scan_first = canvas.canvas_in_browser() and not canvas.shows_case(shown)
    # Reviewing: the review list beside the image, so each decision is seen where it lands.
    left, right = st.columns([3, 2])
    with left:
        rgb = image_panel(shown, pred, truth, settings)
    with right:
        if session is not None:
            review_panel.review_section(shown, session, pred, config.data_root, config.pacs)
        elif scan_first:
            st.caption(WAIT_FOR_SCAN)
        else:
            lesion_panel(shown, nav, settings)
    tabs = ["Readouts", "Downloads"] + (["Lesion navigation"] if session is not None else [])
    readouts_tab, downloads_tab, *lesions_tab = st.tabs(tabs)
    with readouts_tab:
        metrics = None if scan_first else readouts_panel(shown, pred, truth)
        if scan_first:
            st.caption(WAIT_FOR_SCAN)
    with downloads_tab:
        if scan_first:
            st.caption(WAIT_FOR_SCAN)
        else:
            downloads_panel(shown, pred, truth, rgb, settings, metrics)
    for tab in lesions_tab:
        with tab:
            lesion_panel(shown, nav, settings)
    st.caption(RESEARCH_USE_NOTICE)


if __name__ == "__main__":
    main()
