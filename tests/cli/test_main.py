"""The CLI wrapper: one-line errors with exit code 2, tracebacks only with --debug."""

from __future__ import annotations

import subprocess
import sys

import pytest

from medseg.cli.main import main
from medseg.errors import InputNotFoundError


def test_user_error_is_one_line_and_exit_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["info", str(tmp_path / "missing.nii.gz")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "missing.nii.gz" in err
    assert "Traceback" not in err


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(InputNotFoundError):
        main(["--debug", "info", str(tmp_path / "missing.nii.gz")])


def test_bad_option_value_is_a_usage_error_not_a_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "medseg", "view", "--port", "abc"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Invalid value for '--port'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_command_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    assert "No such command" in capsys.readouterr().err


def test_version(capsys):
    main(["--version"])  # returns normally: exit code 0
    assert capsys.readouterr().out.startswith("medseg 0.")
