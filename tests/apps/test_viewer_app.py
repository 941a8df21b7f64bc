"""Drive the real Streamlit viewer with ``streamlit.testing.v1.AppTest``.

The flow follows a user: open the default case -> change slice and axis -> window preset ->
toggle overlays -> comparison mode -> jump to lesion -> run inference -> downloads; plus bad
uploads and data-root escapes that must give a readable error on the page.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from medseg import RESEARCH_USE_NOTICE
from medseg.viewer.core import services
from medseg.viewer.launch import ViewerConfig

APP = Path(__file__).resolve().parents[2] / "apps" / "viewer.py"


def _app(config: ViewerConfig) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["medseg_config"] = config
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _config(case_root: Path, model: Path | None = None, **kwargs) -> ViewerConfig:
    return ViewerConfig(sample_root=case_root, model=model, device="cpu", **kwargs)


def _texts(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [w.value for w in at.warning] + [i.value for i in at.info]
    parts += [cap for img in at.get("image") for cap in img.captions]
    return "\n".join(str(p) for p in parts)


@pytest.fixture
def counting_inference(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count real inference runs (the app calls ``services.run_inference``)."""
    calls: list[int] = []
    original = services.run_inference

    def wrapped(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(services, "run_inference", wrapped)
    return calls


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """What the app passes to ``st.download_button`` (bytes, or a callable for deferred data)."""
    import streamlit as st

    seen: dict[str, object] = {}
    original = st.download_button

    def capture(label, data, *args, **kwargs):
        seen[kwargs.get("key", label)] = data
        return original(label, data, *args, **kwargs)

    monkeypatch.setattr(st, "download_button", capture)
    return seen


def _resolve(data: object) -> bytes:
    return data() if callable(data) else data  # type: ignore[return-value]


def test_full_review_flow(
    case_root: Path, constant_checkpoint: Path, counting_inference, downloads, tmp_path: Path
) -> None:
    # Open: default (last brain) case, predicted automatically with the given model.
    at = _app(_config(case_root, constant_checkpoint))
    assert at.sidebar.selectbox(key="sample_case").value == "brain_mr/brain_002"
    assert RESEARCH_USE_NOTICE in _texts(at)
    assert len(at.get("image")) == 1
    runs_after_open = len(counting_inference)
    assert runs_after_open <= 1  # 0 when an earlier test already cached this prediction
    assert at.radio(key="overlay_mode").options == [
        "prediction", "ground truth", "both", "comparison", "none"
    ]  # fmt: skip

    # Slice: opens on the slice with the most tumour; next button and slider move it.
    # The slider and the caption number slices from 1; the position is a 0-based index.
    start = at.slider(key="slider_axial").value
    at.button(key="next_slice").click().run()
    assert at.slider(key="slider_axial").value == start + 1
    at.slider(key="slider_axial").set_value(3).run()
    assert at.slider(key="slider_axial").value == 3
    assert at.slider(key="slider_axial").min == 1
    assert at.session_state["slice_axial"] == 2
    assert at.session_state["viewer.focus"][2] == 2
    assert "axial 3/20" in _texts(at)
    assert len(counting_inference) == runs_after_open  # moving the slider never re-infers

    # Axis: coronal has its own slider over the A-P axis (56 voxels).
    at.radio(key="view").set_value("coronal").run()
    assert at.slider(key="slider_coronal").max == 56
    assert "coronal" in _texts(at)

    # Window preset: MR defaults to automatic percentiles; pick the CT brain window.
    assert at.sidebar.selectbox(key="preset_0").value.startswith("auto")
    at.sidebar.selectbox(key="preset_0").set_value("brain").run()
    assert "W 80 / L 40" in _texts(at)
    at.sidebar.selectbox(key="preset_0").set_value("manual").run()
    assert at.sidebar.slider(key="ww_0") is not None

    # Overlays: ground truth, contour style, hide a label, opacity.
    at.radio(key="overlay_mode").set_value("ground truth").run()
    at.radio(key="overlay_style").set_value("contour").run()
    at.checkbox(key="show_label_2").uncheck().run()
    at.slider(key="opacity").set_value(0.8).run()
    legend = _texts(at)
    assert "tumour_core" in legend
    assert "oedema" not in legend.split("tumour_core")[-1][:40]
    at.checkbox(key="show_label_2").check().run()

    # Comparison mode: legend lists TP / FP / FN.
    at.radio(key="overlay_mode").set_value("comparison").run()
    assert "false positive" in _texts(at)
    assert "false negative" in _texts(at)

    # Jump to lesion (ground-truth lesions: the 2nd oedema spot lies on its own slices).
    at.radio(key="view").set_value("axial").run()
    at.radio(key="lesion_source").set_value("ground truth").run()
    lesions = at.selectbox(key="lesion_pick")
    assert len(lesions.options) == 3
    lesions.set_value(3).run()
    at.button(key="lesion_go").click().run()
    assert at.slider(key="slider_axial").value == 7  # the small oedema spot is centred at k=6
    at.button(key="lesion_next").click().run()
    assert at.slider(key="slider_axial").value == 11  # the main lesion (k=10)
    at.button(key="lesion_prev").click().run()
    assert at.slider(key="slider_axial").value == 7

    # Per-slice tumour area: choosing a slice from the ranked list moves the slider.
    at.selectbox(key="area_pick").set_value(10).run()
    assert at.slider(key="slider_axial").value == 11

    # Readouts: per-class mL, lesion table, Dice/HD95 against the ground truth.
    frames = [df.value for df in at.dataframe]
    metrics = frames[-1]
    assert {"dice", "hd95_mm"} <= set(metrics.columns)
    core = metrics.set_index("class").loc["tumour_core"]
    assert 0 < core["dice"] < 0.1  # the constant model labels the whole head "tumour_core"

    # Downloads: mask NIfTI on the source grid, CSV/JSON report, PNG of the current view.
    keys = {b.key for b in at.get("download_button")}
    assert {"dl_png", "dl_csv", "dl_json", "dl_mask"} <= keys
    mask_path = tmp_path / "pred.nii.gz"
    mask_path.write_bytes(_resolve(downloads["dl_mask"]))
    source = nib.load(case_root / "brain_mr" / "imagesTr" / "brain_002_0000.nii.gz")
    mask = nib.load(mask_path)
    np.testing.assert_allclose(mask.affine, source.affine)
    assert np.unique(np.asarray(mask.dataobj)).tolist() == [1]  # the constant model's label
    report = json.loads(_resolve(downloads["dl_json"]))
    assert report["notice"] == RESEARCH_USE_NOTICE
    assert report["metrics_vs_ground_truth"][0]["class"] == "tumour_core"
    csv_text = _resolve(downloads["dl_csv"]).decode()
    assert "tumour_core" in csv_text
    assert csv_text.startswith("# ")
    png = Image.open(io.BytesIO(_resolve(downloads["dl_png"])))
    assert png.format == "PNG"
    assert png.size[0] >= 384
    assert not at.exception
    assert len(counting_inference) == runs_after_open


def test_run_inference_button_uses_cache(
    case_root: Path, constant_checkpoint: Path, counting_inference
) -> None:
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["medseg_config"] = _config(case_root, constant_checkpoint)
    at.session_state["auto_predict"] = False
    at.run()
    at.sidebar.selectbox(key="sample_case").set_value("brain_mr/brain_001").run()
    assert at.radio(key="overlay_mode").options == ["ground truth", "none"]
    at.sidebar.button(key="run_inference").click().run()
    assert not at.exception
    assert "prediction" in at.radio(key="overlay_mode").options
    runs = len(counting_inference)
    at.slider(key="slider_axial").set_value(2).run()
    at.radio(key="view").set_value("sagittal").run()
    assert len(counting_inference) == runs


def test_missing_model_is_explained(case_root: Path, tmp_path: Path) -> None:
    at = _app(_config(case_root, tmp_path / "absent.pt"))
    at.sidebar.selectbox(key="model_choice").set_value("absent.pt (--model)").run()
    assert any("absent.pt" in i.value for i in at.sidebar.info)
    assert not at.error
    assert len(at.get("image")) == 1


def test_model_for_other_channels_gives_readable_error(case_root: Path, tmp_path: Path) -> None:
    from tests.apps.viewer_factory import write_constant_checkpoint

    model = write_constant_checkpoint(tmp_path / "two.pt", channels=("flair", "t1c"))
    at = _app(_config(case_root, model))
    assert at.error
    message = at.error[0].value
    assert "the model expects 2 channel(s) (flair, t1c)" in message
    assert "the case has 1 (FLAIR)" in message  # the files found are named
    assert len(at.get("image")) == 1  # the scan and ground truth still show


def _zip_bytes(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("broken.nii.gz", b"not a nifti file at all", "broken.nii.gz"),
        ("notes.gz", b"hello", "unsupported upload"),
        ("evil.zip", _zip_bytes({"../../escape.dcm": b"x"}), "outside the archive"),
        ("junk.zip", b"PK\x03\x04 truncated", "not a valid zip"),
    ],
    ids=["corrupt-nifti", "wrong-type", "zip-traversal", "corrupt-zip"],
)
def test_bad_upload_gives_readable_error(
    case_root: Path, name: str, data: bytes, expected: str
) -> None:
    at = _app(_config(case_root))
    at.sidebar.radio(key="source").set_value("upload").run()
    at.sidebar.file_uploader(key="upload_image").set_value((name, data, "application/octet-stream"))
    at.run()
    assert not at.exception
    assert at.error, "a bad upload must show an error"
    assert expected in at.error[0].value


def test_upload_nifti_opens(case_root: Path) -> None:
    image = next((case_root / "brain_mr" / "imagesTr").glob("*.nii.gz")).read_bytes()
    at = _app(_config(case_root))
    at.sidebar.radio(key="source").set_value("upload").run()
    at.sidebar.file_uploader(key="upload_image").set_value(
        ("scan.nii.gz", image, "application/gzip")
    )
    at.run()
    assert not at.exception
    assert not at.error
    assert len(at.get("image")) == 1
    assert "scan.nii.gz" in _texts(at)


def test_data_root_cannot_be_left(case_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.nii.gz"
    outside.write_bytes(b"x")
    at = _app(_config(case_root, data_root=case_root / "brain_mr"))
    at.sidebar.radio(key="source").set_value("data folder").run()
    assert at.sidebar.selectbox(key="root_case").value == "brain_002"
    at.sidebar.text_input(key="root_path").set_value(f"../../{tmp_path.name}/secret.nii.gz").run()
    assert not at.exception
    assert at.error
    assert "outside the data root" in at.error[0].value
    at.sidebar.text_input(key="root_path").set_value("imagesTr/brain_001_0000.nii.gz").run()
    assert not at.error
    assert len(at.get("image")) == 1


def test_data_root_case_list_hides_symlinks_to_outside(case_root: Path, tmp_path: Path) -> None:
    """The case picker offers no file that resolve_in_root would refuse to open."""
    root = tmp_path / "root"
    shutil.copytree(case_root / "brain_mr", root / "brain_mr")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(case_root / "brain_mr" / "imagesTr" / "brain_001_0000.nii.gz", outside / "s.nii.gz")
    os.symlink(outside / "s.nii.gz", root / "link.nii.gz")
    at = _app(_config(case_root, data_root=root))
    at.sidebar.radio(key="source").set_value("data folder").run()
    options = list(at.sidebar.selectbox(key="root_case").options)
    assert "brain_mr/brain_002" in options
    assert not any("link" in o for o in options), options
    assert not at.exception


def test_identifiers_hidden_by_default(
    case_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medseg.viewer.core import loading

    original = loading.load_case

    def with_ids(ref):
        case = original(ref)
        case.channels[0].identifiers = {"PatientName": "DOE^JANE", "PatientID": "X123"}
        return case

    monkeypatch.setattr(loading, "load_case", with_ids)
    # A copy: the app caches cases by path, and other tests open the original files.
    image = tmp_path / "identified.nii.gz"
    image.write_bytes((case_root / "brain_mr" / "imagesTr" / "brain_001_0000.nii.gz").read_bytes())
    at = _app(ViewerConfig(path=image, device="cpu", model=case_root / "none.pt"))
    assert at.sidebar.radio(key="source").value == "command line"
    shown = str([el.value for el in at.sidebar.get("json")]) + _texts(at)
    assert "DOE^JANE" not in shown
    assert any("hidden" in c.value for c in at.sidebar.caption)
    at.sidebar.checkbox(key="show_ids").check().run()
    assert "DOE^JANE" in str([el.value for el in at.sidebar.get("json")])


def test_multichannel_case_has_channel_switch(tmp_path: Path) -> None:
    from medseg.io import Volume, write_mask, write_volume
    from tests.apps.viewer_factory import LPS_AFFINE, synthetic_brain

    image, label = synthetic_brain(seed=5)
    folder = tmp_path / "two_channel"
    flair = Volume(image, LPS_AFFINE)
    write_volume(flair, folder / "imagesTr" / "case_001_0000.nii.gz")
    write_volume(
        flair.with_array(image.max() - image), folder / "imagesTr" / "case_001_0001.nii.gz"
    )
    write_mask(label, flair, folder / "labelsTr" / "case_001.nii.gz")
    (folder / "dataset.json").write_text(
        '{"channel_names": {"0": "FLAIR", "1": "T1c"}, '
        '"labels": {"background": 0, "core": 1, "oedema": 2}}'
    )
    at = _app(ViewerConfig(sample_root=tmp_path, device="cpu", model=tmp_path / "none.pt"))
    channel = at.sidebar.selectbox(key="channel")
    assert channel.options == ["FLAIR", "T1c"]
    before = at.get("image")[0].value
    channel.set_value(1).run()
    assert not at.exception
    assert at.get("image")[0].value != before


def test_default_launch_opens_sample_brain_case(sample_data: Path) -> None:
    """``medseg view`` with no argument: the last sample brain case with its ground truth and,
    when the bundled model is built, its prediction."""
    if not (sample_data / "brain_mr").is_dir():
        pytest.skip("sample_data/brain_mr not generated yet (`medseg sample-data`)")
    from medseg.viewer.launch import parse_app_args

    config = parse_app_args(["--device", "cpu"])
    assert config.sample_root == sample_data.resolve()
    at = _app(config)
    picker = at.sidebar.selectbox(key="sample_case")
    brain_cases = [o for o in picker.options if o.startswith("brain_mr/")]
    assert picker.value == brain_cases[-1]
    assert len(at.get("image")) == 1
    assert not at.error
    modes = at.radio(key="overlay_mode").options
    assert "ground truth" in modes
    if services.default_model_path().is_file():
        assert "comparison" in modes  # the bundled model's prediction is shown with the GT
        # the lesion list is the bundled model's prediction: the oedema around the tumour
        lesions = at.selectbox(key="lesion_pick").options
        assert any("oedema" in option for option in lesions), lesions
