"""`medseg view --dicomweb URL --study UID [--series UID]` against a real Orthanc, without a
browser: the viewer's launch is replaced by a stand-in that checks what the server would get
(the downloaded series folder as the case, private) and the folder is gone once it returns,
also when the viewer fails."""

from __future__ import annotations

import stat
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.io import read_volume
from medseg.viewer import launch as launch_module
from tests.inference.infer_factory import run_cli
from tests.pacs.conftest import upload

SERIES = "dcmqi/ct-3slice"


@pytest.fixture
def stored(orthanc, shared_data) -> tuple[str, str, str]:
    """The CT series and its SEG on the emptied Orthanc: (study, CT series, SEG series)."""
    import pydicom

    seg = shared_data / "dcmqi" / "liver.dcm"
    study, ct = upload(orthanc, [*(shared_data / SERIES).glob("*.dcm"), seg])
    return study, ct, str(pydicom.dcmread(seg, stop_before_pixels=True).SeriesInstanceUID)


@pytest.fixture
def launched(monkeypatch) -> list[dict]:
    """What each (stand-in) viewer launch received, checked while the server would run."""
    seen: list[dict] = []

    def stand_in(config, port=None, open_browser=True, host="127.0.0.1", token=None):
        launch_module.check_config(config)  # the app accepts the folder as a case
        folder = Path(config.path)
        seen.append({
            "folder": folder,
            "modes": (stat.S_IMODE(folder.parent.stat().st_mode),
                      stat.S_IMODE(folder.stat().st_mode)),
            "volume": read_volume(folder),
            "app_args": launch_module.app_arguments(config),
            "open_browser": open_browser,
        })  # fmt: skip
        return 0

    monkeypatch.setattr(launch_module, "launch", stand_in)
    return seen


def test_view_opens_the_study_series(orthanc, stored, scratch, launched, shared_data):
    study, ct, _ = stored
    base = ["view", "--dicomweb", orthanc.medseg_url, "--study", study, "--no-browser"]
    assert run_cli(base) == 0  # the study's one image series, chosen by itself
    assert run_cli([*base, "--series", ct]) == 0
    expected = read_volume(shared_data / SERIES)
    for seen in launched:
        assert seen["folder"].name == study
        assert seen["modes"] == (0o700, 0o700)
        np.testing.assert_array_equal(seen["volume"].array, expected.array)  # the series itself
        np.testing.assert_allclose(seen["volume"].affine, expected.affine, atol=1e-6)
        assert seen["app_args"][0] == str(seen["folder"].resolve())
        assert seen["open_browser"] is False
        assert not seen["folder"].exists()  # removed once the viewer has exited
    assert len(launched) == 2
    assert list(scratch.iterdir()) == []


def test_downloaded_series_removed_when_the_viewer_fails(
    orthanc, stored, scratch, monkeypatch, capsys
):
    def failing(config, **_):
        assert Path(config.path).is_dir()
        raise MedsegError("the viewer server (streamlit) exited with code 1")

    monkeypatch.setattr(launch_module, "launch", failing)
    args = ["view", "--dicomweb", orthanc.medseg_url, "--study", stored[0], "--no-browser"]
    assert run_cli(args) == 2
    assert "exited with code 1" in capsys.readouterr().err
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--series", "SEG"], "holds no images (--series); pick an image series: "),
        (["--series", "1.2.3.4"], "no series 1.2.3.4 (--series)"),
        (["--study", "1.2.3.4"], "study 1.2.3.4 not found"),
    ],
)
def test_view_pacs_errors(orthanc, stored, scratch, launched, capsys, extra, message):
    study, _, seg = stored
    args = ["view", "--dicomweb", orthanc.medseg_url, "--study", study, "--no-browser"]
    args += [seg if e == "SEG" else e for e in extra]
    assert run_cli(args) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert message in errors[0]
    assert launched == []
    assert list(scratch.iterdir()) == []


def test_view_pacs_options_need_dicomweb(capsys, launched):
    assert run_cli(["view", "--study", "1.2.3", "--no-browser"]) == 2
    assert "add --dicomweb" in capsys.readouterr().err
    url = "dicomweb+http://127.0.0.1:9/dicom-web"
    assert run_cli(["view", "--dicomweb", url, "--series", "1.2.3"]) == 2
    assert "--series UID needs --study UID" in capsys.readouterr().err
    assert launched == []
