"""Every session-state key of the viewer page: the one module that names them.

A widget's ``key=`` is a session-state key too (Streamlit keeps the widget's value under it),
so widget keys live here as well. Other modules use these names only: a raw string key
elsewhere under ``medseg/viewer/ui`` fails ``tests/viewer/test_viewer_keys.py``. The string
values are stable: AppTests and the canvas find widgets by them. Keys starting with ``_`` are
the page's own bookkeeping, never a widget.
"""

from __future__ import annotations

# ----------------------------------------------------------------------------- page
CONFIG = "medseg_config"  # the ViewerConfig (AppTests put one here before the first run)
ACCESS_OK = "_medseg_access_ok"  # this browser session has shown the right token
CASE_DIGEST = "_case_digest"  # digest of the case on screen; a new one resets per-case keys

# ----------------------------------------------------------------------------- case (sidebar)
SOURCE = "source"  # command line / sample data / data folder / upload
SAMPLE_CASE = "sample_case"
ROOT_CASE = "root_case"
ROOT_PATH = "root_path"
UPLOAD_IMAGE = "upload_image"
UPLOAD_GT = "upload_gt"
GT_MAP = "gt_map"  # "1=2,4=3": ground-truth labels mapped onto the model's scheme

# ----------------------------------------------------------------------------- model
MODEL_CHOICE = "model_choice"
DEVICE = "device"
TTA = "tta"
AUTO_PREDICT = "auto_predict"
RUN_INFERENCE = "run_inference"
PREDICTION_AWAITED = "_prediction_awaited"  # the job this page showed running: toast its end

# ----------------------------------------------------------------------------- display
LAYOUT = "layout"
VIEW = "view"
CHANNEL = "channel"
OVERLAY_MODE = "overlay_mode"
OVERLAY_STYLE = "overlay_style"
OPACITY = "opacity"
UNCERTAINTY = "uncertainty"


def preset(channel: int) -> str:
    """Window preset of one channel (each channel keeps its own)."""
    return f"preset_{channel}"


def window_width(channel: int) -> str:
    return f"ww_{channel}"


def window_level(channel: int) -> str:
    return f"wl_{channel}"


def show_label(label: int) -> str:
    return f"show_label_{label}"


# ----------------------------------------------------------------------------- position
#: The canvas position: voxel index ``(x, y, z)`` of the display volume (L, P, S axes, see
#: ``core.render``), 0-based. The NiiVue canvas reads and writes it; a new value moves the
#: slice sliders at the start of the next run (``ui.focus.sync_focus``); lesion lists set it.
FOCUS = "viewer.focus"
FOCUS_SEEN = "_focus_seen"  # the FOCUS the sliders were last synced to
#: (opened on a prediction, the position it chose): a prediction that arrives while nobody has
#: moved from there opens its own largest slice ("slice_" prefix: reset with the case)
OPENED_ON = "slice_opened_on"
PREV_SLICE = "prev_slice"
NEXT_SLICE = "next_slice"


SHOW_CROSSHAIR = "show_crosshair"


def slice_of(view: str) -> str:
    """The 0-based slice index along ``view`` (the FOCUS coordinate on that view's axis)."""
    return f"slice_{view}"


def slider_of(view: str) -> str:
    """The slice slider of ``view``: the same slice, numbered from 1 as on screen."""
    return f"slider_{view}"


def crosshair_click(view: str) -> str:
    """Last click in ``view`` of the three-plane layout."""
    return f"xhair_{view}"


def crosshair_seen(view: str) -> str:
    """Time stamp of the last click in ``view`` already applied."""
    return f"_xhair_seen_{view}"


# ----------------------------------------------------------------------------- canvas
# The NiiVue canvas (``ui/canvas``): its component state and its bookkeeping, same values as
# that module used before the keys moved here.
CANVAS = "viewer.canvas"  # what the page holds, its last crosshair, queued strokes
IMAGE_AREA = "viewer.image_area"  # canvas or static images
CANVAS_FILL = "viewer.canvas_fill"  # the brush fills each stroke's outline
CANVAS_DRAG = "viewer.canvas_drag"  # what a right-button drag does: window/level, ruler, ROI
CANVAS_SEEN = "_canvas_seen"
CANVAS_ACK = "_canvas_ack"
CANVAS_DRAWING_ALIAS = "_canvas_drawing_alias"

# ----------------------------------------------------------------------------- lesions
LESION_SOURCE = "lesion_source"  # list lesions of the prediction or the ground truth
LESION_PICK = "lesion_pick"
LESION_GO = "lesion_go"
LESION_PREV = "lesion_prev"
LESION_NEXT = "lesion_next"
AREA_PICK = "area_pick"
#: keys removed when another case opens (position, slices, lesion and area picks, ROI)
PER_CASE_PREFIXES = ("slice_", "lesion_", "area_", FOCUS, FOCUS_SEEN, "roi_")

# ----------------------------------------------------------------------------- measurements
ROI_SHAPE = "roi_shape"
ROI_ROW = "roi_row"
ROI_COL = "roi_col"
ROI_HEIGHT = "roi_height"
ROI_WIDTH = "roi_width"

# ----------------------------------------------------------------------------- downloads
DL_PNG = "dl_png"
DL_CSV = "dl_csv"
DL_JSON = "dl_json"
DL_MASK = "dl_mask"
SHOW_IDS = "show_ids"

# ----------------------------------------------------------------------------- review
REVIEW_MODE = "review_mode"
REVIEW_SESSION = "_review_session"  # (case and model key, ReviewSession)
REVIEW_LAYER = "_review_layer"  # (session, version, MaskLayer): the reviewed mask on screen
BRUSH_CONTEXT = "_brush_ctx"  # view and slice the clickable image was drawn for
BRUSH_CLICK = "rv_click"  # last click on the clickable image
BRUSH_LAST_CLICK = "_rv_last_click"  # time stamp of the last click already painted
TOOL = "rv_tool"
PAINT_LABEL = "rv_label"
RADIUS = "rv_radius"
FILL = "rv_fill"
UNDO = "rv_undo"
REDO = "rv_redo"
REVIEW_PICK = "rv_pick"
REVIEW_JUMP = "rv_jump"
MIN_VOXELS = "rv_min_voxels"  # list filter: hide lesions smaller than this
REJECT_BELOW = "rv_reject_below"  # bulk: reject every lesion under N voxels
REJECT_BELOW_GO = "rv_reject_below_go"
ACCEPT_ML = "rv_accept_ml"  # bulk: accept every lesion over M mL ...
ACCEPT_CONFIDENCE = "rv_accept_conf"  # ... and confidence over p
ACCEPT_GO = "rv_accept_go"
REVIEWER = "rv_reviewer"
CASE_ID = "rv_case_id"
SAVE_TARGET = "rv_target"
SAVE_FOLDER = "rv_folder"
SAVE = "rv_save"
DL_REVIEWED_MASK = "rv_dl_mask"
DL_RECORD = "rv_dl_record"
DL_SEG = "rv_dl_seg"
PUSH_PACS = "rv_push_pacs"  # push the saved DICOM-SEG to the PACS the case came from
PUSH_RETRY = "rv_push_retry"
PUSH_PENDING = "_rv_push_pending"  # the SavedReview whose push failed (retry button)


def decision(lesion_id: int) -> str:
    return f"rv_decision_{lesion_id}"


def relabel(lesion_id: int) -> str:
    return f"rv_label_{lesion_id}"


def note(lesion_id: int) -> str:
    return f"rv_note_{lesion_id}"


#: per-lesion widget keys, dropped when the review session is replaced (new case or model)
PER_SESSION_PREFIXES = ("rv_decision_", "rv_label_", "rv_note_", REVIEW_PICK)
