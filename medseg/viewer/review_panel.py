"""The viewer's review-and-edit controls (Streamlit). All logic is in :mod:`medseg.viewer.review`.

Streamlit reruns the page top to bottom on every interaction, so the pending actions of the
previous interaction (a decision picked, a click on the image) are applied at the *start* of
the run (:func:`sidebar_review`), before the image and the readouts are drawn from the
reviewed mask: they therefore update on the same click.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from medseg.errors import MedsegError
from medseg.viewer import render, services
from medseg.viewer.review import (
    DECISIONS,
    REVIEW_ORDER_RULE,
    ReviewSession,
    brush_plane_pixels,
    dicom_source_files,
    display_to_source,
    fill_holes_on_slice,
    review_record,
    save_reviewed_case,
)
from medseg.viewer.state import DisplayCase, MaskLayer, make_layer
from medseg.viewer.ui import canvas

SESSION_KEY = "_review_session"
CLICK_KEY = "rv_click"
TOOLS = ("navigate", "brush", "eraser")
UNCERTAINTY = ("off", "foreground probability", "entropy")
SAVE_TARGETS = ("output folder", "dataset folder (new training case)")


# ----------------------------------------------------------------------------- sidebar
def uncertainty_settings(pred: MaskLayer | None) -> dict[str, Any]:
    """Sidebar choice of the uncertainty overlay; ``heat`` (display array) when on."""
    if pred is None or not pred.uncertainty:
        return {}
    choice = st.sidebar.radio(
        "Uncertainty overlay",
        UNCERTAINTY,
        key="uncertainty",
        help="From the model's probabilities (averaged over TTA flips / ensemble folds when "
        "those are on). Entropy is scaled to 0..1 (1 = the classes are equally likely).",
    )
    if choice == "off":
        return {}
    return {"heat": pred.display_uncertainty(choice), "heat_name": choice}


def _session_for(shown: DisplayCase, pred: MaskLayer) -> ReviewSession:
    key = (shown.digest, pred.model, pred.model_sha256, pred.source.shape)
    held = st.session_state.get(SESSION_KEY)
    if held is None or held[0] != key:
        fg = pred.uncertainty.get("foreground probability")
        session = ReviewSession(
            pred.source.array,
            pred.source.voxel_volume_ml,
            None if fg is None else fg.astype(np.float32),
            num_classes=len(pred.class_names),
        )
        st.session_state[SESSION_KEY] = (key, session)
        stale = ("rv_decision_", "rv_label_", "rv_note_", "rv_pick")
        for name in [k for k in st.session_state if str(k).startswith(stale)]:
            del st.session_state[name]
    return st.session_state[SESSION_KEY][1]


def _sync_decisions(session: ReviewSession) -> None:
    """Apply the decision widgets' current values (set by the previous interaction)."""
    state = st.session_state
    for lesion_id in session.lesions:
        decision = state.get(f"rv_decision_{lesion_id}")
        if decision is None:
            continue
        new_label = state.get(f"rv_label_{lesion_id}") if decision == "relabel" else None
        session.decide(lesion_id, decision, new_label, state.get(f"rv_note_{lesion_id}", ""))


def _apply_click(session: ReviewSession, shown: DisplayCase) -> None:
    """Paint at the last click on the image (once per click, keyed by its time stamp)."""
    click = st.session_state.get(CLICK_KEY)
    tool = st.session_state.get("rv_tool", "navigate")
    if (
        not click
        or tool == "navigate"
        or click.get("unix_time") == st.session_state.get("_rv_last_click")
    ):
        return
    st.session_state["_rv_last_click"] = click.get("unix_time")
    ctx = st.session_state.get("_brush_ctx") or {}
    view = ctx.get("view", st.session_state.get("view", "axial"))
    index = int(ctx.get("index", st.session_state.get(f"slice_{view}", 0)))
    plane_shape = render.extract_slice(shown.images[0], view, index).shape
    pixel_mm = render.pixel_spacing(shown.spacing, view)
    size = render.display_size(plane_shape, pixel_mm)
    shown_size = (click.get("height") or size[0], click.get("width") or size[1])
    centre = render.screen_to_plane(click["x"], click["y"], shown_size, plane_shape)
    radius = float(st.session_state.get("rv_radius", 2.0))
    pixels = brush_plane_pixels(plane_shape, pixel_mm, centre, radius)
    voxels = render.plane_to_volume(view, index, pixels, shown.shape)
    source = display_to_source(voxels, shown.affine, shown.case.channels[0].affine)
    label = int(st.session_state.get("rv_label", 1))
    session.paint(source, label, erase=tool == "eraser")


def _fill(session: ReviewSession, shown: DisplayCase) -> None:
    view = st.session_state.get("view", "axial")
    index = int(st.session_state.get(f"slice_{view}", 0))
    label = int(st.session_state.get("rv_label", 1))
    fill_holes_on_slice(session, label, view, index, shown.case.channels[0].affine)


def sidebar_review(
    shown: DisplayCase, pred: MaskLayer | None
) -> tuple[ReviewSession | None, dict[str, Any]]:
    """Review-mode toggle and editing tools; the session (pending actions applied)."""
    if pred is None:
        return None, {}
    st.sidebar.header("Review")
    if not st.sidebar.toggle("Review and edit the prediction", key="review_mode"):
        return None, {}
    session = _session_for(shown, pred)
    _sync_decisions(session)
    _apply_click(session, shown)
    canvas.apply_edits(session, shown)  # strokes drawn in the NiiVue canvas
    tool = st.sidebar.radio("Tool", TOOLS, key="rv_tool", horizontal=True)
    labels = list(range(1, max(len(pred.class_names), 2)))
    st.sidebar.selectbox(
        "Label to paint / erase",
        labels,
        key="rv_label",
        format_func=lambda v: pred.class_names[v] if v < len(pred.class_names) else f"label {v}",
    )
    st.sidebar.slider("Brush radius (mm)", 0.5, 20.0, 2.0, 0.5, key="rv_radius")
    st.sidebar.button(
        "Fill enclosed areas (this slice)",
        key="rv_fill",
        on_click=_fill,
        args=(session, shown),
        help="Fills every area enclosed by the chosen label on the current slice of the "
        "current view: draw a closed outline with the brush, then fill it.",
    )
    undo, redo = st.sidebar.columns(2)
    undo.button("Undo", key="rv_undo", on_click=session.undo, disabled=not session.edits)
    redo.button("Redo", key="rv_redo", on_click=session.redo, disabled=not session.redo_stack)
    st.sidebar.caption(
        "Brush/eraser: click the image (a stroke = several clicks) on the current slice of any "
        "view; the eraser clears only the chosen label. Undo/redo apply to brush strokes "
        "and fills."
    )
    edit = {"review": session, "tool": tool, "label": st.session_state.get("rv_label", 1)}
    edit["radius"] = st.session_state.get("rv_radius", 2.0)
    return session, edit | ({"click_key": CLICK_KEY} if tool != "navigate" else {})


def reviewed_layer(session: ReviewSession, shown: DisplayCase, pred: MaskLayer) -> MaskLayer:
    """The prediction after review as a display layer (rebuilt when the review changes)."""
    if session.version == 0:
        return pred
    held = st.session_state.get("_review_layer")
    if held is not None and held[0] is session and held[1] == session.version:
        return held[2]
    mask = pred.source.with_array(np.array(session.working()))
    layer = make_layer(
        mask,
        shown,
        pred.class_names,
        None,
        f"{pred.model} (reviewed)",
        uncertainty=pred.uncertainty,
        model_sha256=pred.model_sha256,
        channels_used=pred.channels_used,
    )
    st.session_state["_review_layer"] = (session, session.version, layer)
    return layer


# ----------------------------------------------------------------------------- main area
def _jump(shown: DisplayCase, session: ReviewSession, lesion_id: int) -> None:
    les = session.lesions[lesion_id]
    centre = np.array([[(s.start + s.stop - 1) / 2 for s in les.box]])
    display = display_to_source(centre, shown.case.channels[0].affine, shown.affine)[0]
    view = st.session_state.get("view", "axial")
    st.session_state[f"slice_{view}"] = int(display[render.VIEW_AXIS[view]])


def review_section(
    shown: DisplayCase, session: ReviewSession, layer: MaskLayer, data_root: Path | None
) -> None:
    """Lesion table in review order, per-lesion decision, and saving."""
    names = layer.class_names
    st.subheader("Review")
    st.caption(REVIEW_ORDER_RULE)
    rows = session.decisions(names)
    table = pd.DataFrame(rows).drop(columns=["bbox_voxel", "label", "new_label"], errors="ignore")
    st.dataframe(table, hide_index=True)
    if rows:
        _decision_controls(shown, session, rows, names)
    st.caption(
        f"Changed voxels vs prediction: {session.changed_voxels()}"
        f" · brush/eraser strokes: {len(session.edits)}"
    )
    _save_controls(shown, session, layer, data_root)


def _decision_controls(
    shown: DisplayCase, session: ReviewSession, rows: list[dict[str, Any]], names: list[str]
) -> None:
    by_id = {r["lesion"]: r for r in rows}

    def title(lesion_id: int) -> str:
        r = by_id[lesion_id]
        conf = "n/a" if r["confidence"] is None else f"{r['confidence']:.2f}"
        return f"#{lesion_id} {r['class']}, {r['volume_ml']:.3f} mL, confidence {conf}"

    pick = st.selectbox("Lesion to review", list(by_id), key="rv_pick", format_func=title)
    lesion = session.lesions[pick]
    cols = st.columns([3, 2, 3, 1], vertical_alignment="bottom")
    cols[0].radio(
        "Decision",
        DECISIONS,
        index=DECISIONS.index(lesion.decision),
        key=f"rv_decision_{pick}",
        horizontal=True,
    )
    labels = [v for v in range(1, len(names)) if v != lesion.label] or [lesion.label]
    cols[1].selectbox(
        "Relabel as",
        labels,
        index=labels.index(lesion.new_label) if lesion.new_label in labels else 0,
        key=f"rv_label_{pick}",
        format_func=lambda v: names[v] if v < len(names) else f"label {v}",
    )
    cols[2].text_input("Note", value=lesion.note, key=f"rv_note_{pick}")
    cols[3].button("Jump", key="rv_jump", on_click=_jump, args=(shown, session, pick))


def _safe_stem(name: str) -> str:
    stem = Path(name).name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        stem = stem.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9._-]", "_", stem) or "case"


def _record(shown: DisplayCase, session: ReviewSession, layer: MaskLayer) -> dict[str, Any]:
    sources = [str(vol.metadata.get("source", "")) for vol in shown.case.channels]
    return review_record(
        session,
        case_name=shown.case.name,
        class_names=layer.class_names,
        model=layer.model.removesuffix(" (reviewed)"),
        model_sha256=layer.model_sha256,
        reviewer=st.session_state.get("rv_reviewer", ""),
        sources=sources,
    )


def _check_inside(folder: Path, data_root: Path | None) -> Path:
    folder = folder.expanduser().resolve()
    if data_root is not None:
        root = Path(data_root).resolve()
        if folder != root and root not in folder.parents:
            raise MedsegError(
                f"{folder} is outside the data root {root}; save inside the folder given with "
                "--data-root, or use the download buttons"
            )
    return folder


def _save_controls(
    shown: DisplayCase, session: ReviewSession, layer: MaskLayer, data_root: Path | None
) -> None:
    st.markdown("**Save the reviewed case** (never overwrites)")
    left, right = st.columns(2)
    left.text_input("Reviewer name", key="rv_reviewer")
    case_id = right.text_input("Case id", value=_safe_stem(shown.case.name), key="rv_case_id")
    target = st.radio("Save to", SAVE_TARGETS, key="rv_target", horizontal=True)
    folder = st.text_input(
        "Folder on the server" if target == SAVE_TARGETS[0] else "nnU-Net dataset folder",
        key="rv_folder",
        help="A dataset folder needs dataset.json, imagesTr/ and labelsTr/; the case's "
        "channels are copied to imagesTr in the model's channel order.",
    )

    # Built only when saving or downloading: on a large CT a full-volume copy and diff on
    # every slider move would eat the slice-change budget.
    def mask() -> Any:
        return layer.source.with_array(np.array(session.working()))

    def record_bytes() -> bytes:
        return json.dumps(_record(shown, session, layer), indent=2, default=float).encode()

    if st.button("Save reviewed case", key="rv_save", type="primary", disabled=not folder):
        try:
            picks = layer.channels_used or tuple(range(len(shown.case.channels)))
            saved = save_reviewed_case(
                mask(),
                _record(shown, session, layer),
                _check_inside(Path(folder), data_root),
                case_id,
                channels=[shown.case.channels[i] for i in picks],
                as_training_case=target == SAVE_TARGETS[1],
                class_names=layer.class_names,
            )
        except MedsegError as err:
            st.error(f"Not saved: {err}")
        else:
            files = [saved.mask, saved.record, *saved.images]
            files += [saved.dicom_seg] if saved.dicom_seg else []
            st.success("Saved: " + ", ".join(str(p) for p in files))
    st.download_button(
        "Reviewed mask (NIfTI)",
        data=lambda: services.mask_nifti_bytes(mask()),
        file_name=f"{case_id}_reviewed.nii.gz",
        mime="application/gzip",
        key="rv_dl_mask",
    )
    st.download_button(
        "Review record (JSON)",
        data=record_bytes,
        file_name=f"{case_id}_review.json",
        mime="application/json",
        key="rv_dl_record",
    )
    dicom = dicom_source_files(shown.case.channels)
    if dicom:
        st.download_button(
            "Reviewed mask (DICOM-SEG)",
            data=lambda: services.dicom_seg_bytes(mask(), dicom, layer.class_names, layer.model),
            file_name=f"{case_id}_reviewed_seg.dcm",
            mime="application/dicom",
            key="rv_dl_seg",
        )
    elif shown.case.channels[0].metadata.get("dicom_files"):
        st.caption(
            "DICOM-SEG: not available, the series' files are no longer on the server; open "
            "the series folder with `medseg view FOLDER` to get one."
        )
