"""``medseg view``: never prompts, loopback by default, token on non-local binds, and a
server that fails to start is explained (its last stderr lines)."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import ClassVar

import nibabel as nib
import numpy as np
import pytest

from medseg.cli.main import main
from medseg.viewer import launch


class FakePopen:
    """Records the command and environment; exits with ``code`` after writing ``stderr``."""

    code = 0
    stderr_text = ""
    seen: ClassVar[dict] = {}

    def __init__(self, command, env, **kwargs):
        FakePopen.seen = {"command": command, "env": env, **kwargs}
        self.stderr = io.StringIO(self.stderr_text)

    def wait(self, timeout=None):
        return self.code

    def poll(self):
        return self.code


@pytest.fixture
def fake_popen(monkeypatch):
    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    monkeypatch.delenv(launch.TOKEN_ENV, raising=False)
    FakePopen.code, FakePopen.stderr_text = 0, ""
    return FakePopen


def test_default_bind_is_loopback_headless_and_without_token(fake_popen, capsys):
    main(["view", "--no-browser", "--port", "9123"])
    command, env = fake_popen.seen["command"], fake_popen.seen["env"]
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[command.index("--server.headless") + 1] == "true"
    assert fake_popen.seen["stdin"] is subprocess.DEVNULL
    assert launch.TOKEN_ENV not in env
    assert "open http://127.0.0.1:9123/\n" in capsys.readouterr().err


def test_non_local_bind_generates_a_token_passed_by_environment(fake_popen, capsys, caplog):
    main(["view", "--host", "0.0.0.0", "--port", "9124", "--no-browser"])
    command, env = fake_popen.seen["command"], fake_popen.seen["env"]
    assert command[command.index("--server.address") + 1] == "0.0.0.0"
    token = env[launch.TOKEN_ENV]
    assert len(token) >= 30
    assert all(token not in part for part in command)  # not visible in `ps`
    err = capsys.readouterr().err
    assert f"open http://127.0.0.1:9124/?token={token}" in err
    assert "reachable from other machines" in caplog.text
    main(["view", "--host", "0.0.0.0", "--port", "9124", "--no-browser"])
    assert fake_popen.seen["env"][launch.TOKEN_ENV] != token  # fresh per launch


def test_given_token_and_environment_token(fake_popen, monkeypatch):
    main(["view", "--host", "10.1.2.3", "--token", "abc", "--port", "9", "--no-browser"])
    assert fake_popen.seen["env"][launch.TOKEN_ENV] == "abc"
    monkeypatch.setenv(launch.TOKEN_ENV, "from-env")
    main(["view", "--host", "10.1.2.3", "--port", "9", "--no-browser"])
    assert fake_popen.seen["env"][launch.TOKEN_ENV] == "from-env"
    main(["view", "--port", "9", "--no-browser"])  # loopback: an explicit token still applies
    assert fake_popen.seen["env"][launch.TOKEN_ENV] == "from-env"


def test_server_failure_is_explained_with_its_last_stderr_lines(fake_popen, capsys):
    fake_popen.code = 1
    fake_popen.stderr_text = "starting\nError: Port 9125 is already in use\n"
    with pytest.raises(SystemExit) as exc:
        main(["view", "--port", "9125", "--no-browser"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error: the viewer server (streamlit) exited with code 1" in err
    assert "  Error: Port 9125 is already in use" in err


def test_loopback_detection():
    assert launch.is_loopback("127.0.0.1")
    assert launch.is_loopback("localhost")
    assert launch.is_loopback("::1")
    assert not launch.is_loopback("0.0.0.0")
    assert not launch.is_loopback("192.168.1.5")
    assert not launch.is_loopback("viewer.hospital.org")


def _listening_addresses(port: int) -> set[str]:
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(address)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/net/tcp"), reason="needs Linux /proc/net/tcp")
def test_real_server_starts_without_terminal_or_streamlit_profile(tmp_path):
    """A fresh HOME (Streamlit never ran), no stdin, browser opening requested: it serves."""
    image = tmp_path / "scan.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)), image)
    port = launch.free_port("127.0.0.1", 0)
    env = dict(os.environ, HOME=str(tmp_path / "home"), BROWSER="true")
    env.pop(launch.TOKEN_ENV, None)
    (tmp_path / "home").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "medseg", "view", str(image), "--port", str(port)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        cwd=tmp_path, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        for _ in range(120):
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the viewer did not start")
        assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1 only
        assert not (tmp_path / "home" / ".streamlit" / "credentials.toml").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
def test_real_server_that_cannot_bind_reports_why(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "medseg", "view", "--port", str(port), "--no-browser"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=tmp_path, timeout=120,
        )  # fmt: skip
    assert result.returncode == 2
    assert "error: the viewer server (streamlit) exited with code" in result.stderr
    assert f"Port {port} is not available" in result.stderr  # streamlit's own words
