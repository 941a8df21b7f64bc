"""Lesion review and mask editing (pure numpy, no Streamlit): the viewer page only calls this.

A :class:`ReviewSession` starts from a predicted label volume on the **source grid**. Every
lesion (a 26-connected component of one class, as in :mod:`medseg.inference.readouts`) gets a
decision: ``pending``, ``accept``, ``reject`` (its voxels become background) or ``relabel``
(its voxels take another class). Brush / eraser strokes are recorded as edits that can be
undone and redone. :meth:`ReviewSession.working` replays prediction -> decisions -> edits, so
the order of actions never leaves a stale mask.

Uncertainty maps come from the model's probabilities (softmax per class, or sigmoid per
region), averaged over TTA flips / ensemble folds by the predictor before they arrive here.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medseg.data.append import append_case, refuse_existing, undo_on_error
from medseg.errors import MedsegError
from medseg.io import Volume, write_mask
from medseg.io.atomic import write_json

DECISIONS = ("pending", "accept", "reject", "relabel")
#: The review order, as stated on the page.
REVIEW_ORDER_RULE = (
    "Review order: least confident first (mean foreground probability inside the lesion, "
    "rounded to 0.01, ascending), then largest first (volume, descending)."
)


class ReviewError(MedsegError):
    """A review action refers to a lesion, label or decision that does not exist."""


# ----------------------------------------------------------------------------- uncertainty
def foreground_probability(probabilities: np.ndarray, regions: bool = False) -> np.ndarray:
    """P(any foreground) per voxel, float32 ``(I, J, K)`` from ``(C, I, J, K)`` probabilities.

    Softmax models: ``1 - p(background)``. Region models (one sigmoid per nested region):
    the largest region probability (the outermost region contains the others).
    """
    probs = np.asarray(probabilities, dtype=np.float32)
    if regions:
        return probs.max(axis=0)
    return np.clip(1.0 - probs[0], 0.0, 1.0)


def normalised_entropy(probabilities: np.ndarray, regions: bool = False) -> np.ndarray:
    """Predictive entropy scaled to 0..1 (1 = maximally unsure), float32 ``(I, J, K)``.

    Softmax: Shannon entropy over the C classes divided by ``log C``. Regions: the binary
    entropy (bits) of each region's probability, maximum over regions.
    """
    probs = np.clip(np.asarray(probabilities, dtype=np.float32), 1e-7, 1.0)
    if regions:
        q = 1.0 - probs
        bits = -(probs * np.log2(probs) + q * np.log2(np.clip(q, 1e-7, 1.0)))
        return np.clip(bits.max(axis=0), 0.0, 1.0)
    classes = probs.shape[0]
    if classes < 2:
        return np.zeros(probs.shape[1:], np.float32)
    entropy = -(probs * np.log(probs)).sum(axis=0) / np.log(classes)
    return np.clip(entropy, 0.0, 1.0).astype(np.float32)


# ----------------------------------------------------------------------------- lesions
@dataclasses.dataclass
class ReviewLesion:
    """One lesion of the prediction and the reviewer's decision about it."""

    id: int  # 1-based, stable for the session (order of discovery)
    label: int
    voxels: int
    volume_ml: float
    confidence: float | None  # mean foreground probability inside; None without probabilities
    box: tuple[slice, slice, slice]
    decision: str = "pending"
    new_label: int | None = None
    note: str = ""

    def as_dict(self, class_names: Sequence[str]) -> dict[str, Any]:
        def name(value: int | None) -> str | None:
            if value is None:
                return None
            return class_names[value] if value < len(class_names) else f"label {value}"

        return {
            "lesion": self.id,
            "class": name(self.label),
            "label": self.label,
            "voxels": self.voxels,
            "volume_ml": round(self.volume_ml, 4),
            "confidence": None if self.confidence is None else round(self.confidence, 4),
            "decision": self.decision,
            "new_label": self.new_label,
            "new_class": name(self.new_label),
            "note": self.note,
            "bbox_voxel": [[s.start for s in self.box], [s.stop - 1 for s in self.box]],
        }


def find_components(label: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, tuple]]]:
    """Lesion ids ``(I, J, K)`` int32 (0 = none) and ``(id, label, bbox)`` per lesion."""
    # Imported here: medseg.inference pulls in torch, which the page must not wait for
    # before its first image.
    from medseg.inference.readouts import CONNECTIVITY_26

    components = np.zeros(label.shape, np.int32)
    found: list[tuple[int, int, tuple]] = []
    for cls in (int(c) for c in np.unique(label) if c > 0):
        ids, count = ndimage.label(label == cls, structure=CONNECTIVITY_26)
        if count == 0:
            continue
        offset = len(found)
        inside = ids > 0
        components[inside] = ids[inside] + offset
        for n, box in enumerate(ndimage.find_objects(ids), start=1):
            found.append((offset + n, cls, box))
    return components, found


@dataclasses.dataclass
class Edit:
    """One brush/eraser application: ``indices`` ``(N, 3)`` source voxels set to ``value``."""

    indices: np.ndarray
    value: int
    label: int  # the label painted (brush) or erased (eraser)
    erase: bool


class ReviewSession:
    """Decisions and edits on one prediction; see the module docstring."""

    def __init__(
        self,
        prediction: np.ndarray,
        voxel_ml: float,
        foreground: np.ndarray | None = None,
        num_classes: int | None = None,
    ) -> None:
        self.original = np.asarray(prediction)
        if foreground is not None and foreground.shape != self.original.shape:
            raise ReviewError(
                f"foreground probability shape {foreground.shape} differs from the mask's "
                f"{self.original.shape}; both must be on the source grid"
            )
        self.voxel_ml = float(voxel_ml)
        self.num_classes = int(num_classes or int(self.original.max(initial=0)) + 1)
        self.components, found = find_components(self.original)
        ids = [i for i, _, _ in found]
        sizes = np.bincount(self.components.ravel(), minlength=len(ids) + 1)[1:]
        means = (
            ndimage.mean(foreground, self.components, ids)
            if foreground is not None and ids
            else [None] * len(ids)
        )
        self.lesions = {
            i: ReviewLesion(
                i, cls, int(n), float(n) * self.voxel_ml, None if m is None else float(m), box
            )
            for (i, cls, box), n, m in zip(found, sizes, means, strict=True)
        }
        self.edits: list[Edit] = []
        self.redo_stack: list[Edit] = []
        self.version = 0
        self._cache: tuple[int, np.ndarray] | None = None
        self._changed: tuple[int | None, int] = (None, 0)

    # -------------------------------------------------------------- order and decisions
    def review_order(self) -> list[ReviewLesion]:
        """Lesions least confident first, then largest first (:data:`REVIEW_ORDER_RULE`)."""

        def key(les: ReviewLesion) -> tuple[float, float, int]:
            conf = 2.0 if les.confidence is None else round(les.confidence, 2)
            return (conf, -les.voxels, les.id)

        return sorted(self.lesions.values(), key=key)

    def decide(
        self, lesion_id: int, decision: str, new_label: int | None = None, note: str = ""
    ) -> None:
        """Record ``decision`` for a lesion (``relabel`` needs ``new_label``)."""
        if lesion_id not in self.lesions:
            raise ReviewError(f"no lesion {lesion_id}; lesions are 1..{len(self.lesions)}")
        if decision not in DECISIONS:
            raise ReviewError(f"unknown decision {decision!r}; expected one of {DECISIONS}")
        if decision == "relabel":
            self._check_label(new_label, "relabel")
        lesion = self.lesions[lesion_id]
        changed = (lesion.decision, lesion.new_label) != (
            decision,
            new_label if decision == "relabel" else None,
        )
        lesion.decision = decision
        lesion.new_label = new_label if decision == "relabel" else None
        lesion.note = note
        if changed:
            self.version += 1

    # -------------------------------------------------------------- review at scale
    def progress(self) -> tuple[int, int]:
        """``(reviewed, total)``: lesions with a decision other than ``pending``, and all."""
        done = sum(les.decision != "pending" for les in self.lesions.values())
        return done, len(self.lesions)

    def smaller_than(self, voxels: int, pending_only: bool = True) -> list[int]:
        """Ids of the lesions under ``voxels`` voxels (still pending ones by default)."""
        return [
            les.id
            for les in self.lesions.values()
            if les.voxels < voxels and (les.decision == "pending" or not pending_only)
        ]

    def larger_and_surer(
        self, volume_ml: float, confidence: float, pending_only: bool = True
    ) -> list[int]:
        """Ids of the lesions over ``volume_ml`` mL whose confidence is over ``confidence``
        (a lesion without one, when the model gave no probabilities, passes only at 0)."""

        def sure(les: ReviewLesion) -> bool:
            return confidence <= 0 if les.confidence is None else les.confidence > confidence

        return [
            les.id
            for les in self.lesions.values()
            if les.volume_ml > volume_ml
            and sure(les)
            and (les.decision == "pending" or not pending_only)
        ]

    def decide_all(self, lesion_ids: Sequence[int], decision: str) -> int:
        """Give every lesion of ``lesion_ids`` the same ``decision`` (not ``relabel``: that
        needs a label per lesion); returns how many lesions changed."""
        if decision == "relabel":
            raise ReviewError("relabel lesions one at a time; bulk actions accept or reject")
        before = self.version
        for lesion_id in lesion_ids:
            self.decide(lesion_id, decision, note=self.lesions[lesion_id].note)
        return self.version - before

    def _check_label(self, label: int | None, what: str) -> None:
        if label is None or not 1 <= int(label) < self.num_classes:
            raise ReviewError(
                f"{what}: label {label} is not a foreground class; expected 1..{self.num_classes - 1}"
            )

    # -------------------------------------------------------------- editing
    def paint(self, indices: np.ndarray, label: int, erase: bool = False) -> int:
        """Brush ``label`` onto (or, with ``erase``, clear ``label`` from) source voxels.

        ``indices`` is ``(N, 3)`` integer ``(i, j, k)`` on the source grid; indices outside the
        volume are dropped. The eraser only clears voxels carrying ``label`` (other classes
        stay). Returns the number of voxels the edit changed (0: nothing recorded).
        """
        self._check_label(label, "eraser" if erase else "brush")
        idx = np.asarray(indices, dtype=np.int64).reshape(-1, 3)
        inside = np.all((idx >= 0) & (idx < np.array(self.original.shape)), axis=1)
        idx = np.unique(idx[inside], axis=0)
        current = self.working()
        values = current[tuple(idx.T)]
        keep = values == label if erase else values != label
        idx = idx[keep]
        if not len(idx):
            return 0
        self.edits.append(Edit(idx, 0 if erase else int(label), int(label), erase))
        self.redo_stack.clear()
        self.version += 1
        return len(idx)

    def undo(self) -> bool:
        if not self.edits:
            return False
        self.redo_stack.append(self.edits.pop())
        self.version += 1
        return True

    def redo(self) -> bool:
        if not self.redo_stack:
            return False
        self.edits.append(self.redo_stack.pop())
        self.version += 1
        return True

    # -------------------------------------------------------------- results
    def working(self) -> np.ndarray:
        """The reviewed mask (source grid): prediction -> decisions -> edits (memoised)."""
        if self._cache is not None and self._cache[0] == self.version:
            return self._cache[1]
        mask = self.original.copy()
        for les in self.lesions.values():
            if les.decision not in ("reject", "relabel"):
                continue
            inside = self.components[les.box] == les.id
            mask[les.box][inside] = 0 if les.decision == "reject" else les.new_label
        for edit in self.edits:
            mask[tuple(edit.indices.T)] = edit.value
        mask.flags.writeable = False
        self._cache = (self.version, mask)
        return mask

    def changed_voxels(self) -> int:
        """Voxels whose label differs from the prediction (memoised per review state)."""
        if self._changed[0] != self.version:
            count = (
                0 if self.version == 0 else int(np.count_nonzero(self.working() != self.original))
            )
            self._changed = (self.version, count)
        return self._changed[1]

    def edited_voxels(self, class_names: Sequence[str]) -> dict[str, dict[str, int]]:
        """Per class: voxels ``added`` to and ``removed`` from it, reviewed vs predicted."""
        work = self.working()
        changed = work != self.original
        before, after = self.original[changed], work[changed]
        out = {}
        for cls in range(1, max(self.num_classes, int(work.max(initial=0)) + 1)):
            name = class_names[cls] if cls < len(class_names) else f"label {cls}"
            added, removed = int(np.sum(after == cls)), int(np.sum(before == cls))
            if added or removed:
                out[name] = {"added": added, "removed": removed}
        return out

    def brushed_voxels(self) -> int:
        """Voxels touched by the (not undone) brush/eraser edits."""
        if not self.edits:
            return 0
        return len(np.unique(np.concatenate([e.indices for e in self.edits]), axis=0))

    def decisions(self, class_names: Sequence[str]) -> list[dict[str, Any]]:
        """Per-lesion rows (review order) for the lesion table and the review record."""
        return [les.as_dict(class_names) for les in self.review_order()]


# ----------------------------------------------------------------------------- brush geometry
def brush_plane_pixels(
    plane_shape: tuple[int, int],
    pixel_mm: tuple[float, float],
    centre: tuple[float, float],
    radius_mm: float,
) -> np.ndarray:
    """``(N, 2)`` plane ``(row, col)`` pixels whose centres lie within ``radius_mm`` of ``centre``.

    ``centre`` is in plane pixel units (row, col, fractional); ``pixel_mm`` the physical
    (row height, column width), so a round brush stays round on anisotropic voxels. The
    pixel under the centre is always included.
    """
    rows, cols = plane_shape
    r_mm, c_mm = pixel_mm
    r0, c0 = centre
    dr, dc = radius_mm / r_mm, radius_mm / c_mm
    r_lo, r_hi = max(0, int(np.floor(r0 - dr))), min(rows - 1, int(np.ceil(r0 + dr)))
    c_lo, c_hi = max(0, int(np.floor(c0 - dc))), min(cols - 1, int(np.ceil(c0 + dc)))
    rr, cc = np.mgrid[r_lo : r_hi + 1, c_lo : c_hi + 1]
    dist = np.hypot((rr + 0.5 - r0) * r_mm, (cc + 0.5 - c0) * c_mm)
    inside = dist <= radius_mm
    hit = (min(rows - 1, max(0, int(r0))), min(cols - 1, max(0, int(c0))))
    pixels = np.stack([rr[inside], cc[inside]], axis=1)
    return np.unique(np.vstack([pixels, np.array([hit])]), axis=0)


def fill_holes_on_slice(
    session: ReviewSession, label: int, view: str, index: int, source_affine: np.ndarray
) -> int:
    """Fill the areas enclosed by ``label`` on one display slice (a contour drawn with the
    brush becomes a filled region); recorded as an undoable edit. Returns voxels changed.

    ``view``/``index`` name the slice as the viewer shows it (display orientation, see
    :mod:`medseg.viewer.core.render`); ``source_affine`` is the mask's own grid.
    """
    from medseg.viewer.core import render

    shown = render.to_display(Volume(np.asarray(session.working()), source_affine))
    plane = np.asarray(render.extract_slice(shown.array, view, index)) == label
    inside = ndimage.binary_fill_holes(plane) & ~plane
    if not inside.any():
        return 0
    voxels = render.plane_to_volume(view, index, np.argwhere(inside), shown.shape)
    return session.paint(display_to_source(voxels, shown.affine, source_affine), label)


def display_to_source(
    indices: np.ndarray, display_affine: np.ndarray, source_affine: np.ndarray
) -> np.ndarray:
    """Display-oriented voxel indices ``(N, 3)`` -> the same voxels' source-grid indices.

    The display volume is a lossless axis permutation/flip of the source
    (:func:`medseg.viewer.core.render.to_display`), so the affines map voxel centres onto voxel
    centres and rounding only removes float noise.
    """
    idx = np.asarray(indices, dtype=np.float64).reshape(-1, 3)
    to_source = np.linalg.inv(np.asarray(source_affine, float)) @ np.asarray(display_affine, float)
    mapped = idx @ to_source[:3, :3].T + to_source[:3, 3]
    return np.rint(mapped).astype(np.int64)


# ----------------------------------------------------------------------------- saving
CASE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclasses.dataclass(frozen=True)
class SavedReview:
    """Files written by :func:`save_reviewed_case` (``images`` empty for a plain folder;
    ``dicom_seg`` only for a case read from a DICOM series whose files are still there)."""

    mask: Path
    record: Path
    images: tuple[Path, ...] = ()
    dataset_json: Path | None = None
    dicom_seg: Path | None = None


def dicom_source_files(channels: Sequence[Volume], mask: Volume | None = None) -> list[Any]:
    """What a DICOM-SEG of the case references: the DICOM files it was read from (first
    channel, else ``mask``), or the headers an upload kept in memory (its temporary files
    are gone, see :func:`medseg.viewer.core.loading.read_upload`); ``[]`` when not DICOM."""
    for volume in [*channels[:1], *([mask] if mask is not None else [])]:
        files = [str(f) for f in volume.metadata.get("dicom_files") or []]
        if files and all(Path(f).is_file() for f in files):
            return files
        if volume.metadata.get("dicom_headers"):
            return list(volume.metadata["dicom_headers"])
    return []


def review_record(
    session: ReviewSession,
    *,
    case_name: str,
    class_names: Sequence[str],
    model: str,
    model_sha256: str | None,
    reviewer: str = "",
    sources: Sequence[str] = (),
) -> dict[str, Any]:
    """The review record saved beside the mask (JSON-ready dict)."""
    import medseg

    return {
        "notice": medseg.RESEARCH_USE_NOTICE,
        "medseg_version": medseg.__version__,
        "time_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "reviewer": reviewer,
        "case": case_name,
        "sources": list(sources),
        "model": model,
        "model_sha256": model_sha256,
        "review_order_rule": REVIEW_ORDER_RULE,
        "lesions": session.decisions(class_names),
        "edited_voxels": session.edited_voxels(class_names),
        "brushed_voxels": session.brushed_voxels(),
        "changed_voxels": session.changed_voxels(),
    }


def _check_case_id(case_id: str) -> None:
    if not CASE_ID.fullmatch(case_id or ""):
        raise ReviewError(
            f"case id {case_id!r}: use letters, digits, '.', '_' or '-' (e.g. patient_017), "
            "no path separators or spaces"
        )


def save_reviewed_case(
    mask: Volume,
    record: dict[str, Any],
    destination: Path,
    case_id: str,
    *,
    channels: Sequence[Volume] = (),
    as_training_case: bool = False,
    class_names: Sequence[str] = (),
) -> SavedReview:
    """Save a reviewed mask (on ``mask``'s source grid) and its review record; never overwrite.

    * Folder (default): ``destination/<case_id>_reviewed.nii.gz`` and
      ``destination/<case_id>_review.json``.
    * ``as_training_case``: ``destination`` is an nnU-Net dataset folder (``dataset.json``);
      ``channels`` go to ``imagesTr/<case_id>_000N<ending>``, the mask to
      ``labelsTr/<case_id><ending>``, the record to ``reviews/<case_id>.json``, and
      ``dataset.json``'s ``numTraining`` is recounted and rewritten atomically. An existing
      case id is refused (:class:`~medseg.errors.OverwriteError`); see
      :func:`medseg.data.append.append_case`.

    * A case read from a DICOM series (``channels[0]``'s ``dicom_files``) also gets a DICOM-SEG
      of the reviewed mask referencing that series (segments named by ``class_names``,
      algorithm type SEMIAUTOMATIC): ``<case_id>_reviewed_seg.dcm`` beside the mask, or
      ``reviews/<case_id>_seg.dcm`` in a dataset (nnU-Net folders hold NIfTI only).

    Every file goes through a temporary file renamed into place; when a later file fails,
    the ones already written for this case are removed again.
    """
    _check_case_id(case_id)
    destination = Path(destination)
    dicom = dicom_source_files(channels, mask)
    if not as_training_case:
        targets = [
            destination / f"{case_id}_reviewed.nii.gz",
            destination / f"{case_id}_review.json",
        ]
        seg = destination / f"{case_id}_reviewed_seg.dcm" if dicom else None
        refuse_existing([*targets, *([seg] if seg else [])], f"saving case {case_id}")
        with undo_on_error([*targets, *([seg] if seg else [])]):
            write_mask(mask.array, mask, targets[0])
            if seg is not None:
                write_reviewed_seg(mask, dicom, class_names, record, seg)
            extra = {"dicom_seg": seg.name} if seg else {}
            write_json(targets[1], {**record, "mask": targets[0].name, **extra})
        return SavedReview(targets[0], targets[1], dicom_seg=seg)
    attachment = None
    if dicom:
        attachment = (
            f"{case_id}_seg.dcm",
            lambda path: write_reviewed_seg(mask, dicom, class_names, record, path),
        )
    added = append_case(destination, case_id, channels, mask, record, attachment=attachment)
    return SavedReview(
        added.label, added.review, added.images, added.dataset_json, added.attachment
    )


def write_reviewed_seg(
    mask: Volume,
    files: Sequence[Any],
    class_names: Sequence[str],
    record: dict[str, Any],
    path: Path,
) -> None:
    """The reviewed ``mask`` as a DICOM-SEG referencing the series ``files`` (SEMIAUTOMATIC
    segments named by ``class_names``; the model named from ``record["model"]``)."""
    # imported here: the DICOM-SEG writer pulls in highdicom, needed only when saving
    from medseg.inference.dicom_seg import write_dicom_seg

    top = int(np.asarray(mask.array).max(initial=0))
    names = [*class_names, *[f"label {i}" for i in range(len(class_names), top + 1)]]
    model = Path(str(record.get("model") or "medseg")).name
    write_dicom_seg(mask, files, names, path, model_name=f"medseg {model}", reviewed=True)


# ----------------------------------------------------------------------------- PACS
def push_saved_review(
    saved: SavedReview,
    url: str,
    study: str,
    series: str,
    *,
    credentials: Any = None,
    ca_bundle: Path | None = None,
    timeout: float = 30.0,
    retries: int = 3,
) -> str:
    """Store the DICOM-SEG of a saved review of the PACS ``series`` (in ``study``, on the
    DICOMweb server ``url``) back on that server through STOW-RS, and record the new series
    in the review record (``"pushed"``); returns its SeriesInstanceUID.

    ``credentials``: :func:`medseg.io.dicomweb.credentials_from` (never in the record). A
    failure (server unreachable or refusing, credentials refused) raises one
    :class:`~medseg.errors.DicomwebError` and leaves the saved files as they are.
    """
    # imported here: the DICOMweb client is needed only when pushing
    from medseg.inference.pacs import push_reviewed_seg
    from medseg.io.dicomweb import PREFIX, DicomwebServer

    if saved.dicom_seg is None:
        raise ReviewError(
            f"{saved.record}: no DICOM-SEG was saved (the case's DICOM files are gone), so "
            "there is nothing to push; open the series again with medseg view --dicomweb URL "
            "--study UID and save the review"
        )
    server = DicomwebServer(
        url, credentials=credentials, ca_bundle=ca_bundle, timeout=timeout, retries=retries
    )
    again = "push again from the viewer (the saved files are kept)"
    uid = push_reviewed_seg(server, saved.dicom_seg, study, series, again)
    record = json.loads(saved.record.read_text())
    record["pushed"] = {"server": PREFIX + server.url, "study_uid": study, "series_uid": uid}
    write_json(saved.record, record)
    return uid
