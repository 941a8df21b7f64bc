"""``medseg view``: arguments reach the app unchanged; bad paths fail before a server starts."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.cli.main import main
from medseg.viewer import launch


def test_app_arguments_roundtrip(tmp_path: Path) -> None:
    config = launch.ViewerConfig(
        path=tmp_path / "scan.nii.gz", gt=tmp_path / "gt.nii.gz", data_root=tmp_path,
        model=tmp_path / "m.pt", runs_dir=tmp_path / "runs", sample_root=tmp_path, device="cpu",
    )  # fmt: skip
    assert launch.parse_app_args(launch.app_arguments(config)) == config


def test_streamlit_command_runs_packaged_app(tmp_path: Path) -> None:
    command = launch.streamlit_command(launch.ViewerConfig(data_root=tmp_path), port=8765,
                                       open_browser=False)  # fmt: skip
    assert command[:4] == [sys.executable, "-m", "medseg.viewer.ui.server", "run"]
    assert Path(command[4]) == launch.APP_PATH
    assert launch.APP_PATH.is_file()
    assert command[command.index("--server.port") + 1] == "8765"
    assert command[command.index("--server.headless") + 1] == "true"
    # no per-run source watching or full garbage collection: they held the first image back
    assert command[command.index("--server.fileWatcherType") + 1] == "none"
    assert command[command.index("--runner.postScriptGC") + 1] == "false"
    assert command[command.index("--") + 1 :] == ["--data-root", str(tmp_path.resolve())]


def test_shim_imports_packaged_app() -> None:
    shim = Path(__file__).resolve().parents[2] / "apps" / "viewer.py"
    assert "from medseg.viewer.ui.app import main" in shim.read_text()


def test_cli_passes_arguments_to_streamlit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scan = tmp_path / "scan.nii.gz"
    scan.write_bytes(b"x")
    seen = {}

    class FakePopen:
        def __init__(self, command, env, **kwargs):
            seen["command"] = command
            seen["env"] = env
            self.stderr = __import__("io").StringIO("")

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    main(["view", str(scan), "--port", "9999", "--data-root", str(tmp_path), "--no-browser"])
    command = seen["command"]
    app_args = command[command.index("--") + 1 :]
    assert app_args[0] == str(scan.resolve())
    assert app_args[app_args.index("--data-root") + 1] == str(tmp_path.resolve())
    assert command[command.index("--server.port") + 1] == "9999"
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--server.headless") + 1] == "true"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["view", "missing.nii.gz"], "missing.nii.gz does not exist"),
        (["view", "--data-root", "no_such_dir"], "is not a folder"),
        (["view", "--gt", "gt.nii.gz"], "given without a scan"),
    ],
)
def test_cli_errors_exit_2(argv, message, capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_to_medseg_view_stops_the_streamlit_server(tmp_path: Path) -> None:
    """A scheduler or test teardown terminates ``medseg view``: its server must go too."""

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    image = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)), image)
    proc = subprocess.Popen(
        [sys.executable, "-m", "medseg", "view", str(image), "--port", str(port), "--no-browser"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/_stcore/health"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the viewer did not start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) is not None
        time.sleep(1)
        with pytest.raises(OSError):  # nothing listens on the port any more
            urllib.request.urlopen(url, timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_view_takes_a_model_file_without_the_model_store(tmp_path: Path) -> None:
    """``medseg view --model FILE`` passes the file on without importing the model store
    (and torch, ~2 s before the server starts); a name still goes to the store."""
    model = tmp_path / "model.pt"
    model.write_bytes(b"not read here")
    code = (
        "import sys; from pathlib import Path; from medseg.cli import view_cmds;"
        f"print(view_cmds._installed_or_path(Path({str(model)!r})));"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(model), "False"]
