"""Review and push back: `medseg view --dicomweb URL --study UID` against a real Orthanc, the
viewer's launch replaced by a stand-in that runs the real page (an AppTest) on the downloaded
series with the ViewerConfig the CLI built. A lesion is brushed, the review saved with "Push
the DICOM-SEG to the PACS" ticked; the PACS then holds one SEG, SEMIAUTOMATIC, referencing the
source series, that re-reads onto the source grid. A server that is down at push time gives
one error and keeps the saved files. No patient identifier reaches stdout, stderr or the log.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from streamlit.testing.v1 import AppTest

from medseg.io import read_dicom_seg, read_volume
from medseg.io.dicomweb import Credentials, DicomwebServer
from medseg.viewer import launch as launch_module
from tests.inference.infer_factory import run_cli, write_tiny_checkpoint
from tests.inference.test_no_identifiers_in_outputs import NAME_PARTS, OTHER, PATIENT_ID, _found
from tests.io.dicom_factory import edit, write_series
from tests.pacs.conftest import _free_port, upload

APP = Path(__file__).resolve().parents[2] / "apps" / "viewer.py"
PUSH_BOX = "Push the DICOM-SEG to the PACS"


def _store(server, tmp_path) -> tuple[str, str]:
    """A small CT series carrying patient identifiers, on the emptied ``server``."""
    server.clear()
    series, _ = write_series(tmp_path / "patient" / "ct", n=6, shape=(24, 20))
    for path in series.glob("*.dcm"):
        edit(path, PatientName="^".join(NAME_PARTS), PatientID=PATIENT_ID, **OTHER)
    return upload(server, series.glob("*.dcm"))


@pytest.fixture
def stored(orthanc, tmp_path) -> tuple[str, str]:
    return _store(orthanc, tmp_path)


def _client(server) -> DicomwebServer:
    credentials = Credentials("basic", server.auth[1], user=server.auth[0]) if server.auth else None
    return DicomwebServer(server.url, credentials=credentials, retries=0)


def _ok(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def _review_and_save(config, out: Path, model: Path, push: bool | None) -> AppTest:
    """The page on ``config``: review mode, a brushed block of 'lesion', saved into ``out``
    (``push``: tick or untick the push box; ``None``: leave it alone)."""
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["medseg_config"] = dataclasses.replace(
        config, model=model, device="cpu", runs_dir=out.parent / "no-runs"
    )
    _ok(at.run())
    _ok(at.toggle(key="review_mode").set_value(True).run())
    session = at.session_state["_review_session"][1]
    block = np.argwhere(np.ones((6, 6, 3), bool)) + np.array([4, 5, 1])
    session.paint(block, 1)  # a non-empty reviewed mask, whatever the random model predicted
    at.text_input(key="rv_folder").set_value(str(out))
    if push is not None:
        at.checkbox(key="rv_push_pacs").set_value(push)
    _ok(at.run())
    _ok(at.button(key="rv_save").click().run())
    assert any("Saved:" in s.value for s in at.success), [e.value for e in at.error]
    return at


@pytest.fixture
def viewer(monkeypatch, tmp_path) -> list[dict]:
    """Stand-in launch: the page runs (review, save, push) while the download exists."""
    seen: list[dict] = []
    model = write_tiny_checkpoint(tmp_path / "ct.pt", modality="ct")

    def stand_in(config, port=None, open_browser=True, host="127.0.0.1", token=None):
        launch_module.check_config(config)
        # the page gets the origin from its own command line, never the credentials
        args = launch_module.app_arguments(config)
        assert launch_module.parse_app_args(args).pacs == config.pacs
        run = seen[-1]
        run.update(config=config, args=args, volume=read_volume(config.path))
        if "down" not in run:
            run["at"] = _review_and_save(config, run["out"], model, push=True)
            return 0
        # the PACS is unreachable at push time, then back for the retry
        dead = dataclasses.replace(config, pacs=dataclasses.replace(config.pacs, url=run["down"]))
        at = _review_and_save(dead, run["out"], model, push=True)
        run["errors"] = [e.value for e in at.error]
        run["pushed_before_retry"] = [s.value for s in at.success if "Pushed" in s.value]
        run["files"] = sorted(p.name for p in run["out"].iterdir())
        run["record"] = json.loads(next(run["out"].glob("*_review.json")).read_text())
        run["segs_before_retry"] = len(_segs(run["orthanc"], config.pacs.study))
        at.session_state["medseg_config"] = dataclasses.replace(
            at.session_state["medseg_config"], pacs=config.pacs
        )
        _ok(at.run())
        _ok(at.button(key="rv_push_retry").click().run())
        run["at"] = at
        return 0

    monkeypatch.setattr(launch_module, "launch", stand_in)
    return seen


def _segs(server, study: str) -> list[dict]:
    return _client(server).client.search_for_series(study, search_filters={"Modality": "SEG"})


def test_saved_review_is_pushed_as_a_semiautomatic_seg_of_the_source_series(
    orthanc_auth_server, scratch, viewer, tmp_path, capsys, caplog, monkeypatch
):
    """Basic authentication from the environment, as the CLI reads it: the page's process
    reads it too (the launch hands the origin over, never the password)."""
    pacs = orthanc_auth_server
    study, ct = _store(pacs, tmp_path)
    monkeypatch.setenv("MEDSEG_DICOMWEB_USER", pacs.auth[0])
    monkeypatch.setenv("MEDSEG_DICOMWEB_PASSWORD", pacs.auth[1])
    caplog.set_level(logging.DEBUG)
    viewer.append({"out": tmp_path / "out", "orthanc": pacs})
    args = ["--verbose", "view", "--dicomweb", pacs.medseg_url, "--study", study,
            "--no-browser", "--retries", "1"]  # fmt: skip
    assert run_cli(args) == 0
    seen = viewer[0]
    origin = seen["config"].pacs
    assert (origin.url, origin.study, origin.series) == (pacs.medseg_url, study, ct)
    assert not any(pacs.auth[1] in arg for arg in seen["args"])
    at = seen["at"]
    assert not at.error, [e.value for e in at.error]
    pushed = [s.value for s in at.success if "Pushed to the PACS" in s.value]
    assert len(pushed) == 1
    # the PACS now holds one SEG in the study, the series the page named
    found = _segs(pacs, study)
    assert len(found) == 1
    seg_uid = found[0]["0020000E"]["Value"][0]
    assert seg_uid in pushed[0]
    record = json.loads((tmp_path / "out" / f"{study}_review.json").read_text())
    assert record["pushed"] == {
        "server": pacs.medseg_url, "study_uid": study, "series_uid": seg_uid,
    }  # fmt: skip
    [seg] = _client(pacs).client.retrieve_series(study, seg_uid)
    assert seg.Modality == "SEG"
    assert [r.SeriesInstanceUID for r in seg.ReferencedSeriesSequence] == [ct]
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"SEMIAUTOMATIC"}
    # the pushed SEG re-reads onto the source grid as exactly the saved reviewed mask
    seg.save_as(tmp_path / "pulled.dcm")
    labels, _ = read_dicom_seg(tmp_path / "pulled.dcm", reference=seen["volume"])
    saved = read_volume(tmp_path / "out" / f"{study}_reviewed.nii.gz")
    np.testing.assert_allclose(labels.affine, seen["volume"].affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(labels.array), np.asarray(saved.array))
    assert np.asarray(saved.array).any()
    # no identifier in what the run printed or logged; the download is gone
    captured = capsys.readouterr()
    assert _found((captured.out + captured.err + caplog.text).encode()) == []
    assert list(scratch.iterdir()) == []


def test_pacs_down_at_push_time_one_error_files_kept_then_retry(
    orthanc, stored, scratch, viewer, tmp_path
):
    study, ct = stored
    down = f"dicomweb+http://127.0.0.1:{_free_port()}/dicom-web"
    viewer.append({"out": tmp_path / "out", "down": down, "orthanc": orthanc})
    args = ["view", "--dicomweb", orthanc.medseg_url, "--study", study, "--no-browser",
            "--retries", "0", "--timeout", "5"]  # fmt: skip
    assert run_cli(args) == 0
    run = viewer[0]
    assert len(run["errors"]) == 1
    assert run["errors"][0].startswith("Not pushed to the PACS (the saved files are kept): ")
    assert "server unreachable" in run["errors"][0]
    assert run["pushed_before_retry"] == []
    assert run["files"] == sorted(
        f"{study}{end}" for end in ("_review.json", "_reviewed.nii.gz", "_reviewed_seg.dcm")
    )
    assert "pushed" not in run["record"]
    assert run["segs_before_retry"] == 0
    # the retry button pushes the saved SEG once the server is back
    at = run["at"]
    assert not at.error, [e.value for e in at.error]
    assert len([s for s in at.success if "Pushed to the PACS" in s.value]) == 1
    [found] = _segs(orthanc, study)
    record = json.loads((tmp_path / "out" / f"{study}_review.json").read_text())
    assert record["pushed"]["series_uid"] == found["0020000E"]["Value"][0]
    seg = pydicom.dcmread(tmp_path / "out" / f"{study}_reviewed_seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == ct


def test_push_box_only_for_the_pacs_case(tmp_path):
    """A local case gets no push box, nor does one whose series is not the PACS origin's;
    the PACS case's box is off by default."""
    from medseg.viewer.launch import PacsOrigin, ViewerConfig

    folder, _ = write_series(tmp_path / "local", n=6, shape=(24, 20))
    model = write_tiny_checkpoint(tmp_path / "ct.pt", modality="ct")
    at = _review_and_save(ViewerConfig(path=folder), tmp_path / "o1", model, None)
    assert not [c for c in at.checkbox if c.label == PUSH_BOX]
    other = PacsOrigin("dicomweb+http://127.0.0.1:9/dicom-web", "1.2.3", "1.2.3.4")
    at = _review_and_save(ViewerConfig(path=folder, pacs=other), tmp_path / "o2", model, None)
    assert not [c for c in at.checkbox if c.label == PUSH_BOX]
    series = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True)
    mine = dataclasses.replace(other, series=str(series.SeriesInstanceUID))
    at = _review_and_save(ViewerConfig(path=folder, pacs=mine), tmp_path / "o3", model, None)
    [box] = [c for c in at.checkbox if c.label == PUSH_BOX]
    assert box.value is False
    assert not at.error  # nothing pushed, so no error from the dead URL


def test_a_review_of_another_series_is_refused_before_sending(tmp_path):
    """The page only offers the push for the PACS series; the library checks it again: a
    SEG of another study/series is refused without contacting the server (here none runs)."""
    from medseg.errors import DicomwebError
    from medseg.viewer.core.review import (
        ReviewError,
        ReviewSession,
        push_saved_review,
        review_record,
        save_reviewed_case,
    )

    folder, _ = write_series(tmp_path / "local", n=4, shape=(12, 10))
    volume = read_volume(folder)
    mask = np.zeros(volume.shape, np.uint8)
    mask[2:6, 2:6, 1:3] = 1
    session = ReviewSession(mask, volume.voxel_volume_ml, num_classes=2)
    record = review_record(session, case_name="c", class_names=["bg", "x"], model="m",
                           model_sha256=None)  # fmt: skip
    saved = save_reviewed_case(volume.with_array(mask), record, tmp_path / "out", "c",
                               channels=[volume], class_names=["bg", "x"])  # fmt: skip
    dead = f"dicomweb+http://127.0.0.1:{_free_port()}/dicom-web"
    study = str(pydicom.dcmread(saved.dicom_seg).StudyInstanceUID)
    with pytest.raises(DicomwebError, match=r"not series 1\.2\.3 of study"):
        push_saved_review(saved, dead, study, "1.2.3", retries=0)
    with pytest.raises(ReviewError, match="no DICOM-SEG was saved"):
        push_saved_review(dataclasses.replace(saved, dicom_seg=None), dead, study, "1.2.3")
    assert "pushed" not in json.loads(saved.record.read_text())


@pytest.fixture
def with_seg(orthanc, tmp_path) -> tuple[str, str, str, np.ndarray]:
    """A study holding a CT series and a SEG drawn on part of it (frames of slices 2-3 of 6
    only): (study, CT series, SEG series, the SEG's mask on the CT grid)."""
    from medseg.inference.dicom_seg import write_dicom_seg

    folder, _ = write_series(tmp_path / "study" / "ct", n=6, shape=(24, 20))
    volume = read_volume(folder)
    mask = np.zeros(volume.shape, np.uint8)
    mask[3:8, 4:9, 2:4] = 1
    seg = write_dicom_seg(volume.with_array(mask), volume.metadata["dicom_files"], ["bg", "x"],
                          tmp_path / "study" / "seg.dcm")  # fmt: skip
    study, ct = upload(orthanc, [*folder.glob("*.dcm")])
    upload(orthanc, [seg])
    return study, ct, str(pydicom.dcmread(seg).SeriesInstanceUID), mask


@pytest.fixture
def opened(monkeypatch) -> list:
    """Stand-in launch: the case the page would open (with its ground truth), read while
    the downloads exist."""
    from medseg.viewer.core import cases, loading

    seen: list = []

    def stand_in(config, **_):
        launch_module.check_config(config)
        ref = cases.command_line_case([config.path], None, config.gt)
        seen.append((config, loading.load_case(ref)))
        return 0

    monkeypatch.setattr(launch_module, "launch", stand_in)
    return seen


def test_a_seg_series_of_the_study_is_the_ground_truth(orthanc, with_seg, opened, scratch):
    study, ct, seg, mask = with_seg
    base = ["view", "--dicomweb", orthanc.medseg_url, "--study", study, "--no-browser"]
    assert run_cli([*base, "--with-seg"]) == 0
    assert run_cli([*base, "--series", ct, "--gt-series", seg]) == 0
    assert len(opened) == 2
    for config, case in opened:
        assert config.pacs.series == ct
        assert case.truth is not None  # on the CT grid although the SEG has 2 frames of 6
        np.testing.assert_array_equal(np.asarray(case.truth.array), mask)
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--gt-series", "CT"], "expected a SEG series of the study"),
        (["--gt-series", "1.2.3"], "--gt-series 1.2.3: no such series"),
        (["--gt-series", "1.2.3", "--with-seg"], "pass one"),
    ],
)
def test_ground_truth_series_errors(orthanc, with_seg, opened, scratch, capsys, extra, message):
    study, ct, _, _ = with_seg
    args = ["view", "--dicomweb", orthanc.medseg_url, "--study", study, "--no-browser"]
    assert run_cli([*args, *(ct if e == "CT" else e for e in extra)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert message in errors[0]
    assert opened == []
    assert list(scratch.iterdir()) == []


def test_with_seg_needs_a_seg_series(orthanc, stored, opened, capsys):
    args = ["view", "--dicomweb", orthanc.medseg_url, "--study", stored[0], "--with-seg"]
    assert run_cli([*args, "--no-browser"]) == 2
    assert "holds 0 SEG series; --with-seg needs exactly one" in capsys.readouterr().err
    assert run_cli(["view", "--with-seg", "--no-browser"]) == 2
    assert "add --dicomweb" in capsys.readouterr().err
    assert opened == []
