"""Starting the viewer: app arguments, the ``streamlit run`` command line, the subprocess.

``medseg view`` runs ``python -m streamlit run <medseg/viewer/app.py> [streamlit options] --
[app arguments]``; Streamlit hands everything after ``--`` to the script as ``sys.argv[1:]``,
where :func:`parse_app_args` reads it back. The app file ships inside the package, so this
works from an editable install and from a wheel alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from medseg.errors import InputNotFoundError

logger = logging.getLogger(__name__)

APP_PATH = Path(__file__).resolve().with_name("app.py")


@dataclasses.dataclass(frozen=True)
class ViewerConfig:
    """What the viewer opens at start-up (all optional).

    ``path``: an image file / DICOM folder to open; ``gt``: its ground-truth mask;
    ``data_root``: server-side folder the user may browse (never outside it); ``model``: a
    checkpoint used instead of the bundled default; ``runs_dir``: where to list training
    checkpoints; ``sample_root``: the sample cases folder; ``device``: torch device string;
    ``more_paths``: further channel files after ``path``; ``case_id``: a case of the dataset
    at ``path`` (see :func:`medseg.viewer.cases.command_line_case`).
    """

    path: Path | None = None
    gt: Path | None = None
    data_root: Path | None = None
    model: Path | None = None
    runs_dir: Path | None = None
    sample_root: Path | None = None
    device: str = "auto"
    more_paths: tuple[Path, ...] = ()
    case_id: str | None = None


def default_sample_root() -> Path | None:
    """``sample_data/`` beside the package (editable install) or in the working directory."""
    for candidate in (
        Path(__file__).resolve().parents[2] / "sample_data",
        Path.cwd() / "sample_data",
    ):
        if candidate.is_dir():
            return candidate
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medseg viewer app", add_help=False)
    parser.add_argument("path", nargs="?", type=Path)
    parser.add_argument("--gt", type=Path)
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--model", type=Path)
    parser.add_argument("--runs-dir", type=Path)
    parser.add_argument("--sample-root", type=Path)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--channel", type=Path, action="append", default=[])
    parser.add_argument("--case")
    return parser


def parse_app_args(argv: list[str]) -> ViewerConfig:
    """Read the arguments ``medseg view`` passed after ``--`` (unknown ones are ignored)."""
    args, unknown = _parser().parse_known_args(argv)
    if unknown:
        logger.warning("viewer: ignoring unknown arguments %s", unknown)
    runs_dir = args.runs_dir or (Path.cwd() / "runs")
    return ViewerConfig(
        path=args.path,
        gt=args.gt,
        data_root=args.data_root,
        model=args.model,
        runs_dir=runs_dir,
        sample_root=args.sample_root or default_sample_root(),
        device=args.device,
        more_paths=tuple(args.channel),
        case_id=args.case,
    )


def app_arguments(config: ViewerConfig) -> list[str]:
    """The inverse of :func:`parse_app_args` (absolute paths: the server's cwd may differ)."""
    args: list[str] = []
    if config.path is not None:
        args.append(str(Path(config.path).resolve()))
    for flag, value in (
        ("--gt", config.gt),
        ("--data-root", config.data_root),
        ("--model", config.model),
        ("--runs-dir", config.runs_dir),
        ("--sample-root", config.sample_root),
    ):
        if value is not None:
            args += [flag, str(Path(value).resolve())]
    if config.device != "auto":
        args += ["--device", config.device]
    for extra in config.more_paths:
        args += ["--channel", str(Path(extra).resolve())]
    if config.case_id is not None:
        args += ["--case", config.case_id]
    return args


def check_config(config: ViewerConfig) -> None:
    """Fail early (before a server starts) on paths that do not exist."""
    if config.path is not None:
        from medseg.viewer.cases import command_line_case

        command_line_case([config.path, *config.more_paths], config.case_id, config.gt)
    for what, value in (
        ("ground-truth mask (--gt)", config.gt),
        ("checkpoint (--model)", config.model),
    ):
        if value is not None and not Path(value).exists():
            raise InputNotFoundError(f"{what} {value} does not exist; check the path")
    if config.data_root is not None and not Path(config.data_root).is_dir():
        raise InputNotFoundError(
            f"--data-root {config.data_root} is not a folder; pass the folder holding your scans"
        )


def streamlit_command(
    config: ViewerConfig, port: int | None = None, open_browser: bool = True
) -> list[str]:
    """The full ``python -m streamlit run ...`` argument list for ``config``."""
    command = [sys.executable, "-m", "streamlit", "run", str(APP_PATH)]
    if port is not None:
        command += ["--server.port", str(port)]
    command += [
        "--server.headless", "false" if open_browser else "true",
        "--browser.gatherUsageStats", "false",
        "--server.maxUploadSize", "512",
        "--theme.base", "dark",
        "--client.toolbarMode", "viewer",  # no "Deploy" button: a clinical viewer, not a dev tool
    ]  # fmt: skip
    return [*command, "--", *app_arguments(config)]


def launch(config: ViewerConfig, port: int | None = None, open_browser: bool = True) -> int:
    """Run the viewer server in a subprocess until it exits; its exit code.

    Ctrl-C and SIGTERM (a job scheduler, a test's teardown) stop the server too: without
    forwarding SIGTERM the Streamlit child would outlive ``medseg view`` and keep its port.
    """
    check_config(config)
    command = streamlit_command(config, port, open_browser)
    logger.info("starting the viewer: %s", " ".join(command))
    env = dict(os.environ, STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    process = subprocess.Popen(command, env=env)

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return process.wait()
    except KeyboardInterrupt:
        process.terminate()
        try:
            return process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
