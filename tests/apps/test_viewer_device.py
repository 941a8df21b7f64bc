"""``medseg view --device``: the viewer uses medseg's device names (``medseg.device``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from medseg.cli.main import main
from medseg.errors import ConfigError
from medseg.viewer.launch import ViewerConfig

APP = Path(__file__).resolve().parents[2] / "apps" / "viewer.py"


def test_viewer_config_normalises_and_checks_the_device() -> None:
    assert ViewerConfig(device=" CUDA:1").device == "cuda:1"
    with pytest.raises(
        ConfigError, match=r"device .gpu.: unknown device; expected one of auto\|cpu"
    ) as err:
        ViewerConfig(device="gpu")
    assert err.value.param == "device"


def test_cli_refuses_an_unknown_device_before_starting(capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    started = []
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a) or 1 / 0)
    with pytest.raises(SystemExit) as exc:
        main(["view", "--device", "gpu", "--no-browser"])
    assert exc.value.code == 2
    assert "error: --device 'gpu': unknown device" in capsys.readouterr().err
    assert started == []  # no server


def test_sidebar_shows_the_device_asked_for(case_root: Path, tmp_path: Path) -> None:
    """``--device cuda:1`` was shown (and run) as "auto" before: the sidebar knew three names."""
    at = AppTest.from_file(str(APP), default_timeout=120)
    config = ViewerConfig(sample_root=case_root, model=tmp_path / "absent.pt", device="cuda:1")
    at.session_state["medseg_config"] = config
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    box = at.sidebar.selectbox(key="device")
    assert box.value == "cuda:1"
    assert list(box.options) == ["auto", "cpu", "cuda", "cuda:1"]
