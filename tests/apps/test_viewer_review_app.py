"""Review -> correct -> save in the real viewer page (streamlit.testing AppTest).

A two-channel case given as two files, a two-channel random checkpoint, the uncertainty
overlay, one lesion rejected, one brush stroke (two clicks), saved as a new training case
into a copy of an nnU-Net dataset; the saved mask differs from the prediction exactly at
the rejected lesion's voxels and the brushed voxels.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from medseg.io import Volume, write_mask, write_volume
from medseg.viewer.core import services
from medseg.viewer.launch import ViewerConfig
from tests.apps.viewer_factory import CLASS_NAMES, SHAPE, synthetic_brain, write_constant_checkpoint
from tests.inference.infer_factory import write_tiny_checkpoint

APP = Path(__file__).resolve().parents[2] / "apps" / "viewer.py"
#: RAS-stored (i -> patient's right): the display flips i and j, so the page must map back.
RAS_AFFINE = np.array([[1.0, 0, 0, -30.0], [0, 1.0, 0, -25.0], [0, 0, 3.0, -30.0], [0, 0, 0, 1]])


@pytest.fixture
def two_channel_case(tmp_path: Path) -> tuple[Path, Path]:
    image, _ = synthetic_brain(seed=3)
    flair = write_volume(
        Volume(image, RAS_AFFINE, {"modality": "MR"}), tmp_path / "pat_0000.nii.gz"
    )
    t1c = write_volume(Volume(image * 0.5 + 20, RAS_AFFINE), tmp_path / "pat_0001.nii.gz")
    return flair, t1c


@pytest.fixture
def dataset_copy(tmp_path: Path) -> Path:
    root = tmp_path / "Dataset001_copy"
    image, label = synthetic_brain(seed=1)
    vol = Volume(image, RAS_AFFINE)
    for i in range(2):
        write_volume(vol, root / "imagesTr" / f"old_{i:04d}.nii.gz")
    write_mask(label, vol, root / "labelsTr" / "old.nii.gz")
    meta = {
        "channel_names": {"0": "flair", "1": "t1c"},
        "labels": {name: i for i, name in enumerate(CLASS_NAMES)},
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def _two_channel_app(tmp_path: Path, flair: Path, t1c: Path) -> AppTest:
    """The page opened on a flair + t1c case given as two files, with a tiny 2-channel model."""
    ckpt = write_tiny_checkpoint(
        tmp_path / "two.pt", channel_names=("flair", "t1c"), class_names=tuple(CLASS_NAMES)
    )
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["medseg_config"] = ViewerConfig(
        path=flair, more_paths=(t1c,), model=ckpt, device="cpu", runs_dir=tmp_path / "none"
    )
    return at


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


@pytest.mark.slow  # ~8 s: real inference, eight page runs
def test_review_reject_brush_save_into_dataset(
    tmp_path: Path,
    two_channel_case: tuple[Path, Path],
    dataset_copy: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import streamlit as st

    downloads: dict[str, object] = {}
    original_button = st.download_button

    def capture(label, data, *args, **kwargs):
        downloads[kwargs.get("key", label)] = data
        return original_button(label, data, *args, **kwargs)

    monkeypatch.setattr(st, "download_button", capture)
    flair, t1c = two_channel_case
    at = _two_channel_app(tmp_path, flair, t1c)
    _ok(at.run())
    assert at.selectbox(key="channel").options == ["pat_0000", "pat_0001"]
    # uncertainty overlay with its own colour bar
    _ok(at.radio(key="uncertainty").set_value("entropy").run())
    assert any("entropy (0..1)" in c for img in at.get("image") for c in img.captions)
    _ok(at.toggle(key="review_mode").set_value(True).run())
    assert any("least confident first" in c.value for c in at.caption)
    session = at.session_state["_review_session"][1]
    predicted = session.original.copy()
    assert predicted.shape == SHAPE
    first = session.review_order()[0]
    assert first.confidence is not None
    lesions_before = len(session.lesions)
    # reject the first lesion in review order
    _ok(at.radio(key=f"rv_decision_{first.id}").set_value("reject").run())
    assert session.lesions[first.id].decision == "reject"
    # the readouts update at once (they list the largest lesions of each class and count all)
    lesion_table = next(df.value for df in at.dataframe if "slice_range" in df.value.columns)
    class_table = next(df.value for df in at.dataframe if "listed" in df.value.columns)
    assert class_table["lesions"].sum() == lesions_before - 1
    assert len(lesion_table) == class_table["listed"].sum()
    # one brush stroke of two clicks on the current axial slice, radius 0.5 mm = one voxel each
    _ok(at.radio(key="rv_tool").set_value("brush").run())
    _ok(at.slider(key="rv_radius").set_value(0.5).run())
    _ok(at.selectbox(key="rv_label").set_value(2).run())
    k = int(at.session_state["slice_axial"])
    rows, cols = SHAPE[1], SHAPE[0]  # axial plane: rows = display j, cols = display i
    work = session.working()
    targets = [
        (r, c) for r in range(rows) for c in range(cols)
        if work[SHAPE[0] - 1 - c, SHAPE[1] - 1 - r, k] != 2
    ][:2]  # fmt: skip
    for stamp, (r, c) in enumerate(targets, start=1):
        at.session_state["rv_click"] = {
            "x": c + 0.5, "y": r + 0.5, "width": cols, "height": rows, "unix_time": stamp,
        }  # fmt: skip
        _ok(at.run())
    brushed = {(SHAPE[0] - 1 - c, SHAPE[1] - 1 - r, k) for r, c in targets}
    assert len(brushed) == 2
    assert len(session.edits) == 2
    # save as a new training case into the dataset copy
    at.text_input(key="rv_reviewer").set_value("Dr Review")
    at.radio(key="rv_target").set_value("dataset folder (new training case)")
    at.text_input(key="rv_folder").set_value(str(dataset_copy))
    _ok(at.run())
    _ok(at.button(key="rv_save").click().run())
    assert any("Saved:" in s.value for s in at.success)
    saved = nib.load(dataset_copy / "labelsTr" / "pat.nii.gz")
    np.testing.assert_allclose(saved.affine, RAS_AFFINE)
    mask = np.asarray(saved.dataobj)
    assert mask.shape == SHAPE
    differs = {tuple(v) for v in np.argwhere(mask != predicted)}
    rejected = {tuple(v) for v in np.argwhere(session.components == first.id)}
    assert rejected
    assert differs == rejected | brushed
    assert all(mask[v] == 0 for v in rejected - brushed)
    assert all(mask[v] == 2 for v in brushed)
    for i, source in enumerate((flair, t1c)):
        copied = nib.load(dataset_copy / "imagesTr" / f"pat_{i:04d}.nii.gz")
        np.testing.assert_allclose(copied.get_fdata(), nib.load(source).get_fdata(), rtol=1e-6)
    meta = json.loads((dataset_copy / "dataset.json").read_text())
    assert meta["numTraining"] == 2
    record = json.loads((dataset_copy / "reviews" / "pat.json").read_text())
    assert record["reviewer"] == "Dr Review"
    assert record["model_sha256"]
    decisions = {r["lesion"]: r["decision"] for r in record["lesions"]}
    assert decisions[first.id] == "reject"
    assert list(decisions.values()).count("reject") == 1
    assert record["brushed_voxels"] == 2
    # the download buttons give the same mask and decisions
    blob = downloads["rv_dl_mask"]
    blob = blob() if callable(blob) else blob
    (tmp_path / "dl.nii.gz").write_bytes(blob)
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "dl.nii.gz").dataobj), mask)
    data = downloads["rv_dl_record"]
    listed = json.loads(data() if callable(data) else data)
    assert {r["lesion"]: r["decision"] for r in listed["lesions"]} == decisions
    # saving again under the same id is refused on the page
    _ok(at.run())
    at.button(key="rv_save").click().run()
    assert any("already exists" in e.value for e in at.error)


@pytest.mark.slow  # ~10 s: two models, inference twice
def test_named_sequence_folder_matched_to_the_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A BraTS-style folder: sequences picked by name for the model; a missing one is named."""
    image, label = synthetic_brain(seed=2)
    folder = tmp_path / "BraTS-007"
    for name, scale in (("BraTS-007-t2w", 0.3), ("BraTS-007-t1c", 0.5), ("BraTS-007-flair", 1.0)):
        write_volume(Volume(image * scale, RAS_AFFINE), folder / f"{name}.nii.gz")
    write_mask(label, Volume(image, RAS_AFFINE), folder / "BraTS-007-seg.nii.gz")
    ckpt = write_tiny_checkpoint(
        tmp_path / "two.pt", channel_names=("flair", "t1c"), class_names=tuple(CLASS_NAMES)
    )
    fed: list[list[float]] = []
    original = services.run_inference

    def spy(predictor, channels, *args, **kwargs):
        fed.append([float(np.abs(c.array).max()) for c in channels])
        return original(predictor, channels, *args, **kwargs)

    monkeypatch.setattr(services, "run_inference", spy)
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["medseg_config"] = ViewerConfig(
        path=folder, model=ckpt, device="cpu", runs_dir=tmp_path / "none"
    )
    _ok(at.run())
    assert len(at.selectbox(key="channel").options) == 3
    assert at.radio(key="overlay_mode").options[0] == "prediction"  # prediction and truth
    top = float(np.abs(image).max())
    assert fed == [pytest.approx([top, top * 0.5], rel=1e-4)]  # flair, then t1c

    def metrics() -> dict[str, float]:
        table = next(df.value for df in at.dataframe if "dice" in df.value.columns)
        return dict(zip(table["class"], table["pred_ml"], strict=True))

    before = metrics()
    _ok(at.toggle(key="review_mode").set_value(True).run())
    session = at.session_state["_review_session"][1]
    largest = max(session.lesions.values(), key=lambda les: les.voxels)
    _ok(at.selectbox(key="rv_pick").set_value(largest.id).run())
    _ok(at.radio(key=f"rv_decision_{largest.id}").set_value("reject").run())
    after = metrics()  # Dice/volumes vs ground truth follow the review at once
    name = CLASS_NAMES[largest.label]
    assert after[name] == pytest.approx(before[name] - largest.volume_ml, abs=0.01)
    missing = ckpt.with_name("other.pt")
    write_tiny_checkpoint(missing, channel_names=("flair", "t2f"), class_names=tuple(CLASS_NAMES))
    at.session_state["medseg_config"] = ViewerConfig(
        path=folder, model=missing, device="cpu", runs_dir=tmp_path / "none"
    )
    at.run()
    message = at.error[0].value
    assert "(flair, t2f)" in message
    assert "no file named like t2f" in message
    assert "BraTS-007-t1c" in message


def test_three_planes_linked_crosshair(tmp_path: Path, two_channel_case) -> None:
    flair, t1c = two_channel_case
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["medseg_config"] = ViewerConfig(
        path=flair, more_paths=(t1c,), model=tmp_path / "none.pt", device="cpu",
        runs_dir=tmp_path / "none",
    )  # fmt: skip
    _ok(at.run())
    _ok(at.radio(key="layout").set_value("three planes").run())
    k = int(at.session_state["slice_axial"])
    # a click on the axial plane at row 10, col 40 (plane shown at its own pixel size)
    rows, cols = SHAPE[1], SHAPE[0]
    at.session_state["xhair_axial"] = {
        "x": 40.5, "y": 10.5, "width": cols, "height": rows, "unix_time": 7,
    }  # fmt: skip
    _ok(at.run())
    assert int(at.session_state["slice_sagittal"]) == 40  # display i = column
    assert int(at.session_state["slice_coronal"]) == 10  # display j = row
    assert int(at.session_state["slice_axial"]) == k  # the clicked plane stays
    # a click on the coronal plane moves the axial slice: row r -> k = Z - 1 - r
    at.session_state["xhair_coronal"] = {
        "x": 5.5, "y": 3.5, "width": SHAPE[0], "height": SHAPE[2], "unix_time": 8,
    }  # fmt: skip
    _ok(at.run())
    assert int(at.session_state["slice_axial"]) == SHAPE[2] - 1 - 3
    assert int(at.session_state["slice_sagittal"]) == 5
    assert int(at.session_state["slice_coronal"]) == 10


def test_fill_button_fills_an_outline_on_the_current_slice(
    tmp_path: Path, two_channel_case: tuple[Path, Path]
) -> None:
    from medseg.viewer.core import render
    from medseg.viewer.core.review import display_to_source

    flair, t1c = two_channel_case
    at = _two_channel_app(tmp_path, flair, t1c)
    _ok(at.run())
    _ok(at.toggle(key="review_mode").set_value(True).run())
    _ok(at.radio(key="view").set_value("coronal").run())
    _ok(at.selectbox(key="rv_label").set_value(2).run())
    session = at.session_state["_review_session"][1]
    j = int(at.session_state["slice_coronal"])
    shape_display = SHAPE  # RAS -> L,P,S keeps the axis order
    ring = np.zeros((SHAPE[2], SHAPE[0]), bool)  # coronal plane: rows = S->I, cols = R->L
    ring[5:15, 20:40] = True
    ring[6:14, 21:39] = False
    source = display_to_source(
        render.plane_to_volume("coronal", j, np.argwhere(ring), shape_display),
        render.to_display(Volume(np.zeros(SHAPE), RAS_AFFINE)).affine,
        RAS_AFFINE,
    )
    session.paint(source, 2)  # the outline, as brush clicks would draw it
    outlined = np.array(session.working())
    _ok(at.button(key="rv_fill").click().run())
    shown = render.to_display(Volume(np.asarray(session.working()), RAS_AFFINE))
    plane = render.extract_slice(shown.array, "coronal", j)
    assert (plane[5:15, 20:40] == 2).all()
    assert len(session.edits) == 2  # outline + fill, both undoable
    assert (np.asarray(session.working()) != outlined).any()
    _ok(at.button(key="rv_undo").click().run())
    np.testing.assert_array_equal(session.working(), outlined)  # the fill is undone


def test_reviewed_dicom_case_saves_and_downloads_a_dicom_seg(
    tmp_path: Path, sample_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    import pydicom
    import streamlit as st

    downloads: dict[str, object] = {}
    original_button = st.download_button

    def capture(label, data, *args, **kwargs):
        downloads[kwargs.get("key", label)] = data
        return original_button(label, data, *args, **kwargs)

    monkeypatch.setattr(st, "download_button", capture)
    series = sample_data / "ct_abdomen" / "ct_001_dicom"
    ckpt = write_constant_checkpoint(tmp_path / "const.pt", label=1, channels=("ct",))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["medseg_config"] = ViewerConfig(
        path=series, model=ckpt, device="cpu", runs_dir=tmp_path / "none"
    )
    _ok(at.run())
    _ok(at.toggle(key="review_mode").set_value(True).run())
    out = tmp_path / "out"
    at.text_input(key="rv_folder").set_value(str(out))
    _ok(at.run())
    _ok(at.button(key="rv_save").click().run())
    assert any("_reviewed_seg.dcm" in s.value for s in at.success)
    (seg_path,) = out.glob("*_reviewed_seg.dcm")
    seg = pydicom.dcmread(seg_path)
    uids = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in series.iterdir()}
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert {r.ReferencedSOPInstanceUID for r in referenced} == uids
    blob = downloads["rv_dl_seg"]
    blob = blob() if callable(blob) else blob
    assert pydicom.dcmread(io.BytesIO(blob)).Modality == "SEG"
