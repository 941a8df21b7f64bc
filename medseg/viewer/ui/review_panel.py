"""The viewer's review-and-edit controls (Streamlit). All logic is in :mod:`medseg.viewer.core.review`.

Streamlit reruns the page top to bottom on every interaction, so the pending actions of the
previous interaction (a decision picked, a click on the image) are applied at the *start* of
the run (:func:`sidebar_review`), before the image and the readouts are drawn from the
reviewed mask: they therefore update on the same click.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from medseg.errors import MedsegError
from medseg.viewer.core import render, services
from medseg.viewer.core.review import (
    DECISIONS,
    REVIEW_ORDER_RULE,
    ReviewSession,
    SavedReview,
    brush_plane_pixels,
    dicom_source_files,
    display_to_source,
    fill_holes_on_slice,
    push_saved_review,
    review_record,
    save_reviewed_case,
)
from medseg.viewer.core.state import DisplayCase, MaskLayer, make_layer
from medseg.viewer.launch import PacsOrigin
from medseg.viewer.ui import canvas, focus, keys

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
        key=keys.UNCERTAINTY,
        help="From the model's probabilities (averaged over TTA flips / ensemble folds when "
        "those are on). Entropy is scaled to 0..1 (1 = the classes are equally likely).",
    )
    if choice == "off":
        return {}
    return {"heat": pred.display_uncertainty(choice), "heat_name": choice}


def _session_for(shown: DisplayCase, pred: MaskLayer) -> ReviewSession:
    key = (shown.digest, pred.model, pred.model_sha256, pred.source.shape)
    held = st.session_state.get(keys.REVIEW_SESSION)
    if held is None or held[0] != key:
        fg = pred.uncertainty.get("foreground probability")
        session = ReviewSession(
            pred.source.array,
            pred.source.voxel_volume_ml,
            None if fg is None else fg.astype(np.float32),
            num_classes=len(pred.class_names),
        )
        st.session_state[keys.REVIEW_SESSION] = (key, session)
        for name in [k for k in st.session_state if str(k).startswith(keys.PER_SESSION_PREFIXES)]:
            del st.session_state[name]
    return st.session_state[keys.REVIEW_SESSION][1]


def _sync_decisions(session: ReviewSession) -> None:
    """Apply the decision widgets' current values (set by the previous interaction)."""
    state = st.session_state
    for lesion_id in session.lesions:
        decision = state.get(keys.decision(lesion_id))
        if decision is None:
            continue
        new_label = state.get(keys.relabel(lesion_id)) if decision == "relabel" else None
        session.decide(lesion_id, decision, new_label, state.get(keys.note(lesion_id), ""))


def _apply_click(session: ReviewSession, shown: DisplayCase) -> None:
    """Paint at the last click on the image (once per click, keyed by its time stamp)."""
    click = st.session_state.get(keys.BRUSH_CLICK)
    tool = st.session_state.get(keys.TOOL, "navigate")
    if (
        not click
        or tool == "navigate"
        or click.get("unix_time") == st.session_state.get(keys.BRUSH_LAST_CLICK)
    ):
        return
    st.session_state[keys.BRUSH_LAST_CLICK] = click.get("unix_time")
    ctx = st.session_state.get(keys.BRUSH_CONTEXT) or {}
    view = ctx.get("view", st.session_state.get(keys.VIEW, "axial"))
    index = int(ctx.get("index", st.session_state.get(keys.slice_of(view), 0)))
    plane_shape = render.extract_slice(shown.images[0], view, index).shape
    pixel_mm = render.pixel_spacing(shown.spacing, view)
    size = render.display_size(plane_shape, pixel_mm)
    shown_size = (click.get("height") or size[0], click.get("width") or size[1])
    centre = render.screen_to_plane(click["x"], click["y"], shown_size, plane_shape)
    radius = float(st.session_state.get(keys.RADIUS, 2.0))
    pixels = brush_plane_pixels(plane_shape, pixel_mm, centre, radius)
    voxels = render.plane_to_volume(view, index, pixels, shown.shape)
    source = display_to_source(voxels, shown.affine, shown.case.channels[0].affine)
    label = int(st.session_state.get(keys.PAINT_LABEL, 1))
    session.paint(source, label, erase=tool == "eraser")


def _fill(session: ReviewSession, shown: DisplayCase) -> None:
    view = st.session_state.get(keys.VIEW, "axial")
    index = int(st.session_state.get(keys.slice_of(view), 0))
    label = int(st.session_state.get(keys.PAINT_LABEL, 1))
    fill_holes_on_slice(session, label, view, index, shown.case.channels[0].affine)


def sidebar_review(
    shown: DisplayCase, pred: MaskLayer | None
) -> tuple[ReviewSession | None, dict[str, Any]]:
    """Review-mode toggle and editing tools; the session (pending actions applied)."""
    if pred is None:
        return None, {}
    st.sidebar.header("Review")
    if not st.sidebar.toggle("Review and edit the prediction", key=keys.REVIEW_MODE):
        return None, {}
    session = _session_for(shown, pred)
    _sync_decisions(session)
    _apply_click(session, shown)
    canvas.apply_edits(session, shown)  # strokes drawn in the NiiVue canvas
    tool = st.sidebar.radio("Tool", TOOLS, key=keys.TOOL, horizontal=True)
    labels = list(range(1, max(len(pred.class_names), 2)))
    st.sidebar.selectbox(
        "Label to paint / erase",
        labels,
        key=keys.PAINT_LABEL,
        format_func=lambda v: pred.class_names[v] if v < len(pred.class_names) else f"label {v}",
    )
    st.sidebar.slider("Brush radius (mm)", 0.5, 20.0, 2.0, 0.5, key=keys.RADIUS)
    st.sidebar.button(
        "Fill enclosed areas (this slice)",
        key=keys.FILL,
        on_click=_fill,
        args=(session, shown),
        help="Fills every area enclosed by the chosen label on the current slice of the "
        "current view: draw a closed outline with the brush, then fill it.",
    )
    undo, redo = st.sidebar.columns(2)
    undo.button("Undo", key=keys.UNDO, on_click=session.undo, disabled=not session.edits)
    redo.button("Redo", key=keys.REDO, on_click=session.redo, disabled=not session.redo_stack)
    st.sidebar.caption(
        "Brush/eraser: click the image (a stroke = several clicks) on the current slice of any "
        "view; the eraser clears only the chosen label. Undo/redo apply to brush strokes "
        "and fills."
    )
    edit = {"review": session, "tool": tool, "label": st.session_state.get(keys.PAINT_LABEL, 1)}
    edit["radius"] = st.session_state.get(keys.RADIUS, 2.0)
    return session, edit | ({"click_key": keys.BRUSH_CLICK} if tool != "navigate" else {})


def reviewed_layer(session: ReviewSession, shown: DisplayCase, pred: MaskLayer) -> MaskLayer:
    """The prediction after review as a display layer (rebuilt when the review changes)."""
    if session.version == 0:
        return pred
    held = st.session_state.get(keys.REVIEW_LAYER)
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
    st.session_state[keys.REVIEW_LAYER] = (session, session.version, layer)
    return layer


# ----------------------------------------------------------------------------- main area
def _jump(shown: DisplayCase, session: ReviewSession, lesion_id: int | None = None) -> None:
    """Move the position (FOCUS) to a lesion's centre (the picked one by default)."""
    if lesion_id is None:
        lesion_id = st.session_state.get(keys.REVIEW_PICK)
    if lesion_id not in session.lesions:
        return
    les = session.lesions[lesion_id]
    centre = np.array([[(s.start + s.stop - 1) / 2 for s in les.box]])
    display = display_to_source(centre, shown.case.channels[0].affine, shown.affine)[0]
    focus.focus_on(display, shown.shape)


def _bulk(session: ReviewSession, decision: str, lesion_ids: list[int]) -> None:
    """One decision for many lesions; their decision widgets are set to it so that the next
    run does not put the old choice back (:func:`_sync_decisions`). Dropping the key is not
    enough: the browser still holds the shown widget's old value and sends it back."""
    changed = session.decide_all(lesion_ids, decision)
    for lesion_id in lesion_ids:
        st.session_state[keys.decision(lesion_id)] = decision
    st.toast(f"{decision}: {len(lesion_ids)} lesion(s), {changed} changed")


def _reject_small(session: ReviewSession) -> None:
    below = int(st.session_state.get(keys.REJECT_BELOW, 0))
    _bulk(session, "reject", session.smaller_than(below))


def _accept_large(session: ReviewSession) -> None:
    volume = float(st.session_state.get(keys.ACCEPT_ML, 0.0))
    confidence = float(st.session_state.get(keys.ACCEPT_CONFIDENCE, 0.0))
    _bulk(session, "accept", session.larger_and_surer(volume, confidence))


def _bulk_controls(session: ReviewSession) -> None:
    """Bulk decisions (pending lesions only: a decision already taken is never overwritten)."""
    left, right = st.columns(2)
    left.number_input("Reject all under (voxels)", 0, None, 10, 1, key=keys.REJECT_BELOW)
    left.button(
        "Reject small lesions",
        key=keys.REJECT_BELOW_GO,
        on_click=_reject_small,
        args=(session,),
        help="Every pending lesion with fewer voxels is rejected (specks, noise).",
    )
    right.number_input("Accept all over (mL)", 0.0, None, 0.5, 0.1, key=keys.ACCEPT_ML)
    right.number_input("… and confidence over", 0.0, 1.0, 0.5, 0.05, key=keys.ACCEPT_CONFIDENCE)
    right.button(
        "Accept large lesions",
        key=keys.ACCEPT_GO,
        on_click=_accept_large,
        args=(session,),
        help="Every pending lesion over both thresholds is accepted (confidence: mean "
        "foreground probability inside; a model without probabilities passes only at 0).",
    )


def review_section(
    shown: DisplayCase,
    session: ReviewSession,
    layer: MaskLayer,
    data_root: Path | None,
    pacs: PacsOrigin | None = None,
) -> None:
    """Progress, bulk decisions, the size-filtered lesion list (review order) with the
    per-lesion decision, and saving (and pushing to ``pacs``, the PACS series the case
    was downloaded from)."""
    names = layer.class_names
    st.subheader("Review")
    done, total = session.progress()
    st.progress(done / total if total else 1.0, text=f"{done} / {total} reviewed")
    _bulk_controls(session)
    st.number_input(
        "List lesions of at least (voxels)", 0, None, 0, 1, key=keys.MIN_VOXELS,
        help="Hides smaller lesions from the list and the picker (they keep their decision).",
    )  # fmt: skip
    smallest = int(st.session_state.get(keys.MIN_VOXELS, 0))
    rows = [r for r in session.decisions(names) if r["voxels"] >= smallest]
    st.caption(f"{REVIEW_ORDER_RULE} Showing {len(rows)} of {total}.")
    table = pd.DataFrame(rows).drop(columns=["bbox_voxel", "label", "new_label"], errors="ignore")
    st.dataframe(table, hide_index=True, height=min(38 + 35 * len(rows), 280))
    if rows:
        _decision_controls(shown, session, rows, names)
    st.caption(
        f"Changed voxels vs prediction: {session.changed_voxels()}"
        f" · brush/eraser strokes: {len(session.edits)}"
    )
    if pacs is not None and shown.case.channels[0].metadata.get("series_uid") != pacs.series:
        pacs = None  # another case (sample data, upload) is on screen
    _save_controls(shown, session, layer, data_root, pacs)


def _decision_controls(
    shown: DisplayCase, session: ReviewSession, rows: list[dict[str, Any]], names: list[str]
) -> None:
    by_id = {r["lesion"]: r for r in rows}

    def title(lesion_id: int) -> str:
        r = by_id[lesion_id]
        conf = "n/a" if r["confidence"] is None else f"{r['confidence']:.2f}"
        return f"#{lesion_id} {r['class']}, {r['volume_ml']:.3f} mL, confidence {conf}"

    if st.session_state.get(keys.REVIEW_PICK) not in by_id:  # filtered out of the list
        st.session_state.pop(keys.REVIEW_PICK, None)
    pick = st.selectbox(
        "Lesion to review (picking one moves the crosshair to it)",
        list(by_id),
        key=keys.REVIEW_PICK,
        format_func=title,
        on_change=_jump,
        args=(shown, session),
    )
    lesion = session.lesions[pick]
    # stacked, not side by side: the review column is narrow (it sits beside the image)
    decision = st.radio(
        "Decision",
        DECISIONS,
        index=DECISIONS.index(lesion.decision),
        key=keys.decision(pick),
        horizontal=True,
    )
    labels = [v for v in range(1, len(names)) if v != lesion.label] or [lesion.label]
    relabel, note = st.columns(2)
    relabel.selectbox(
        "Relabel as",
        labels,
        index=labels.index(lesion.new_label) if lesion.new_label in labels else 0,
        key=keys.relabel(pick),
        format_func=lambda v: names[v] if v < len(names) else f"label {v}",
        disabled=decision != "relabel",
        help="Used when the decision is relabel.",
    )
    note.text_input("Note", value=lesion.note, key=keys.note(pick))
    st.button(
        "Jump to this lesion", key=keys.REVIEW_JUMP, on_click=_jump, args=(shown, session, pick)
    )


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
        reviewer=st.session_state.get(keys.REVIEWER, ""),
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


def _push(saved: SavedReview, pacs: PacsOrigin) -> None:
    """STOW-RS of the saved DICOM-SEG (credentials from this process's environment or
    ~/.netrc, as for the CLI); a failure keeps the files and offers a retry."""
    from medseg.io.dicomweb import credentials_from

    try:
        with st.spinner("Pushing the DICOM-SEG to the PACS…"):
            uid = push_saved_review(
                saved, pacs.url, pacs.study, pacs.series,
                credentials=credentials_from(os.environ, pacs.url),
                ca_bundle=pacs.ca_bundle, timeout=pacs.timeout, retries=pacs.retries,
            )  # fmt: skip
    except MedsegError as err:
        if saved.dicom_seg is not None:
            st.session_state[keys.PUSH_PENDING] = saved
        st.error(f"Not pushed to the PACS (the saved files are kept): {err}")
    else:
        st.session_state.pop(keys.PUSH_PENDING, None)
        st.success(f"Pushed to the PACS: DICOM-SEG series {uid} in study {pacs.study}")


def _retry_push(pacs: PacsOrigin | None) -> None:
    """After a failed push, a button that pushes the saved DICOM-SEG again (saving again
    would be refused: the files exist)."""
    pending = st.session_state.get(keys.PUSH_PENDING)
    if (
        pacs is not None
        and pending is not None
        and st.button(f"Retry the push of {pending.dicom_seg.name}", key=keys.PUSH_RETRY)
    ):
        _push(pending, pacs)


def _push_box(pacs: PacsOrigin | None) -> bool:
    """The push checkbox (PACS cases only, off by default): whether to push at the save."""
    if pacs is None:
        return False
    return st.checkbox(
        "Push the DICOM-SEG to the PACS",
        value=False,
        key=keys.PUSH_PACS,
        help=f"After saving, store the reviewed DICOM-SEG (SEMIAUTOMATIC, referencing series "
        f"{pacs.series}) in study {pacs.study} on the PACS the case came from (STOW-RS), "
        "with the PACS credentials of whoever started the viewer.",
    )


def _save_controls(
    shown: DisplayCase,
    session: ReviewSession,
    layer: MaskLayer,
    data_root: Path | None,
    pacs: PacsOrigin | None = None,
) -> None:
    st.markdown("**Save the reviewed case** (never overwrites)")
    left, right = st.columns(2)
    left.text_input("Reviewer name", key=keys.REVIEWER)
    case_id = right.text_input("Case id", value=_safe_stem(shown.case.name), key=keys.CASE_ID)
    target = st.radio("Save to", SAVE_TARGETS, key=keys.SAVE_TARGET, horizontal=True)
    folder = st.text_input(
        "Folder on the server" if target == SAVE_TARGETS[0] else "nnU-Net dataset folder",
        key=keys.SAVE_FOLDER,
        help="A dataset folder needs dataset.json, imagesTr/ and labelsTr/; the case's "
        "channels are copied to imagesTr in the model's channel order.",
    )

    # Built only when saving or downloading: on a large CT a full-volume copy and diff on
    # every slider move would eat the slice-change budget.
    def mask() -> Any:
        return layer.source.with_array(np.array(session.working()))

    def record_bytes() -> bytes:
        return json.dumps(_record(shown, session, layer), indent=2, default=float).encode()

    push = _push_box(pacs)
    if st.button("Save reviewed case", key=keys.SAVE, type="primary", disabled=not folder):
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
            if push and pacs is not None:
                _push(saved, pacs)
    _retry_push(pacs)
    st.download_button(
        "Reviewed mask (NIfTI)",
        data=lambda: services.mask_nifti_bytes(mask()),
        file_name=f"{case_id}_reviewed.nii.gz",
        mime="application/gzip",
        key=keys.DL_REVIEWED_MASK,
    )
    st.download_button(
        "Review record (JSON)",
        data=record_bytes,
        file_name=f"{case_id}_review.json",
        mime="application/json",
        key=keys.DL_RECORD,
    )
    dicom = dicom_source_files(shown.case.channels)
    if dicom:
        st.download_button(
            "Reviewed mask (DICOM-SEG)",
            data=lambda: services.dicom_seg_bytes(mask(), dicom, layer.class_names, layer.model),
            file_name=f"{case_id}_reviewed_seg.dcm",
            mime="application/dicom",
            key=keys.DL_SEG,
        )
    elif shown.case.channels[0].metadata.get("dicom_files"):
        st.caption(
            "DICOM-SEG: not available, the series' files are no longer on the server; open "
            "the series folder with `medseg view FOLDER` to get one."
        )
