"""Starting the viewer: app arguments, the ``streamlit run`` command line, the subprocess.

``medseg view`` runs ``python -m medseg.viewer.ui.server run <medseg/viewer/ui/app.py>
[streamlit options] -- [app arguments]`` (Streamlit's own command line, after the server starts
reading the case the page opens on: :mod:`medseg.viewer.ui.server`); Streamlit hands
everything after ``--`` to the script as ``sys.argv[1:]``, where :func:`parse_app_args` reads
it back. The app file ships inside the package, so this
works from an editable install and from a wheel alike.

Never interactive: the server always runs headless (no first-run e-mail prompt, which
would stop a run without a terminal) and the browser tab is opened from here once the
server answers. It binds 127.0.0.1 unless a host is asked for; a non-loopback bind needs an
access token (:mod:`medseg.viewer.ui.access`), generated and printed when none is given. The
server's stderr is passed through and its last lines are reported when it fails.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import ipaddress
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.device import check_device_name
from medseg.errors import InputNotFoundError, MedsegError

if TYPE_CHECKING:
    from medseg.viewer.core.loading import CaseRef

SERVER_MODULE = "medseg.viewer.ui.server"  # Streamlit's command line plus the warm-up
TOKEN_ENV = "MEDSEG_VIEW_TOKEN"  # as in medseg.viewer.ui.access (no streamlit import here)
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8501
STDERR_TAIL_LINES = 20

logger = logging.getLogger(__name__)

APP_PATH = Path(__file__).resolve().parent / "ui" / "app.py"


@dataclasses.dataclass(frozen=True)
class PacsOrigin:
    """Where a case opened with ``medseg view --dicomweb URL --study UID`` came from: the
    server ``url`` (``dicomweb+https://HOST/dicom-web``), the ``study`` and ``series`` UIDs,
    and the connection settings (``ca_bundle``, ``timeout`` s, ``retries``). Never
    credentials: the viewer process reads them from the environment or ``~/.netrc``, as the
    CLI does, so they stay off its command line."""

    url: str
    study: str
    series: str
    ca_bundle: Path | None = None
    timeout: float = 30.0
    retries: int = 3


@dataclasses.dataclass(frozen=True)
class ViewerConfig:
    """What the viewer opens at start-up (all optional).

    ``path``: an image file / DICOM folder to open; ``gt``: its ground-truth mask;
    ``data_root``: server-side folder the user may browse (never outside it); ``model``: a
    checkpoint used instead of the bundled default; ``runs_dir``: where to list training
    checkpoints; ``sample_root``: the sample cases folder; ``device``: torch device string;
    ``more_paths``: further channel files after ``path``; ``case_id``: a case of the dataset
    at ``path`` (see :func:`medseg.viewer.core.cases.command_line_case`); ``labels``: the
    ground truth's label names, ``NAME=VALUE,...``; ``gt_map``: ground-truth values mapped
    onto the model's, ``FROM=TO,...`` (see :mod:`medseg.viewer.core.cases`); ``pacs``: the
    PACS series ``path`` was downloaded from (the page then offers to push the reviewed
    DICOM-SEG back).
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
    labels: str | None = None
    gt_map: str | None = None
    pacs: PacsOrigin | None = None

    def __post_init__(self) -> None:
        # medseg's one device vocabulary: "CUDA:1" -> "cuda:1"; a typo fails before the server
        object.__setattr__(self, "device", check_device_name(self.device))


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
    parser.add_argument("--labels")
    parser.add_argument("--gt-map")
    parser.add_argument("--dicomweb")
    parser.add_argument("--study")
    parser.add_argument("--series")
    parser.add_argument("--ca-bundle", type=Path)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--retries", type=int, default=3)
    return parser


def parse_app_args(argv: list[str]) -> ViewerConfig:
    """Read the arguments ``medseg view`` passed after ``--`` (unknown ones are ignored)."""
    args, unknown = _parser().parse_known_args(argv)
    if unknown:
        logger.warning("viewer: ignoring unknown arguments %s", unknown)
    runs_dir = args.runs_dir or (Path.cwd() / "runs")
    pacs = None
    if args.dicomweb and args.study and args.series:
        pacs = PacsOrigin(
            args.dicomweb, args.study, args.series, args.ca_bundle, args.timeout, args.retries
        )
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
        labels=args.labels,
        gt_map=args.gt_map,
        pacs=pacs,
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
    for flag, text in (
        ("--case", config.case_id),
        ("--labels", config.labels),
        ("--gt-map", config.gt_map),
    ):
        if text is not None:
            args += [flag, text]
    if config.pacs is not None:
        origin = config.pacs
        args += ["--dicomweb", origin.url, "--study", origin.study, "--series", origin.series]
        if origin.ca_bundle is not None:
            args += ["--ca-bundle", str(Path(origin.ca_bundle).resolve())]
        args += ["--timeout", f"{origin.timeout:g}", "--retries", str(origin.retries)]
    return args


def config_case(config: ViewerConfig) -> CaseRef:
    """The case ``config`` names on the command line (``config.path`` set): checked before the
    server starts, warmed by the server, opened by the page's "command line" source."""
    from medseg.viewer.core.cases import command_line_case

    return command_line_case(
        [config.path, *config.more_paths], config.case_id, config.gt, labels=config.labels
    )


def check_config(config: ViewerConfig) -> None:
    """Fail early (before a server starts) on paths that do not exist."""
    from medseg.viewer.core.cases import parse_label_map, parse_labels

    if config.path is not None:
        config_case(config)
    if config.labels:
        parse_labels(config.labels)
    if config.gt_map:
        parse_label_map(config.gt_map)
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


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.x, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str, preferred: int = DEFAULT_PORT) -> int:
    """``preferred`` when nothing listens there on ``host``, else a free port the OS picks."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    return preferred


def resolve_token(host: str, token: str | None) -> str | None:
    """The access token to require: ``token``, else ``$MEDSEG_VIEW_TOKEN``, else (non-loopback
    binds only) a new random one; ``None`` for a loopback bind without either."""
    token = token or os.environ.get(TOKEN_ENV) or None
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
    return token


def streamlit_command(
    config: ViewerConfig,
    port: int | None = None,
    open_browser: bool = True,
    host: str = DEFAULT_HOST,
) -> list[str]:
    """The full ``python -m medseg.viewer.ui.server run ...`` argument list for ``config``
    (``streamlit run`` plus the server's warm-up).

    Always headless (``open_browser`` is handled by :func:`launch`, not by Streamlit, whose
    non-headless mode asks for an e-mail address on first run).
    """
    del open_browser  # kept for callers; the launcher opens the tab itself
    command = [sys.executable, "-m", SERVER_MODULE, "run", str(APP_PATH)]
    if port is not None:
        command += ["--server.port", str(port)]
    command += [
        "--server.address", host,
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.maxUploadSize", "512",
        "--theme.base", "dark",
        "--client.toolbarMode", "viewer",  # no "Deploy" button: a clinical viewer, not a dev tool
        # no source-file watcher: after every script run it resolves the path of each loaded
        # module (~0.5 s of the server's event loop with torch loaded), for edits to the app
        "--server.fileWatcherType", "none",
        # no full garbage collection after every script run: 0.2-0.4 s holding the GIL with the
        # readers and torch loaded, during which the page's new elements wait to be sent (the
        # arrays are freed by reference counting; Python's own collector still runs)
        "--runner.postScriptGC", "false",
    ]  # fmt: skip
    return [*command, "--", *app_arguments(config)]


def _pump(stream, sink, tail: collections.deque) -> None:
    """Copy the server's stderr to ours line by line, keeping the last lines."""
    for line in iter(stream.readline, ""):
        tail.append(line.rstrip("\n"))
        sink.write(line)
        sink.flush()
    stream.close()


def _open_when_ready(url: str, health: str, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(health, timeout=2) as response:
                if response.status == 200:
                    webbrowser.open(url)
                    return
        except OSError:
            time.sleep(0.5)


def _announce(host: str, port: int, token: str | None) -> str:
    """Log where the viewer is served (with the token, as Jupyter does); the URL to open."""
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}/"
    if token:
        url += f"?token={token}"
    if not is_loopback(host):
        logger.warning(
            "the viewer listens on %s:%d, reachable from other machines; anyone with the token "
            "can see the scans it opens. Prefer a loopback bind behind your hospital's reverse "
            "proxy/SSO (docs/security.md)",
            host,
            port,
        )
    sys.stderr.write(f"medseg viewer: open {url}\n")
    sys.stderr.flush()
    return url


def launch(
    config: ViewerConfig,
    port: int | None = None,
    open_browser: bool = True,
    host: str = DEFAULT_HOST,
    token: str | None = None,
) -> int:
    """Run the viewer server in a subprocess until it exits; its exit code.

    ``host`` is the bind address (loopback by default); a non-loopback one requires
    ``token`` (or ``$MEDSEG_VIEW_TOKEN``), generated when neither is given. Ctrl-C and
    SIGTERM (a job scheduler, a test's teardown) stop the server too: without forwarding
    SIGTERM the Streamlit child would outlive ``medseg view`` and keep its port.

    Raises:
        MedsegError: the server exited with an error; the message holds its last stderr lines.
    """
    check_config(config)
    port = port if port is not None else free_port(host)
    token = resolve_token(host, token)
    command = streamlit_command(config, port, open_browser, host=host)
    logger.info("starting the viewer: %s", " ".join(command))
    env = dict(
        os.environ,
        STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
        STREAMLIT_SERVER_HEADLESS="true",
    )
    env.pop(TOKEN_ENV, None)
    if token:
        env[TOKEN_ENV] = token
    process = subprocess.Popen(
        command, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    tail: collections.deque = collections.deque(maxlen=STDERR_TAIL_LINES)
    pump = threading.Thread(target=_pump, args=(process.stderr, sys.stderr, tail), daemon=True)
    pump.start()
    url = _announce(host, port, token)
    if open_browser:
        health = (
            f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/_stcore/health"
        )
        threading.Thread(
            target=_open_when_ready, args=(url, health, process, 60.0), daemon=True
        ).start()
    code = _wait(process)
    pump.join(timeout=5)
    if code not in (0, -2, -15, 130):  # Ctrl-C / SIGTERM are normal ways to stop it
        last = "\n".join(f"  {line}" for line in tail) or "  (no output on stderr)"
        raise MedsegError(
            f"the viewer server (streamlit) exited with code {code}; its last messages:\n{last}\n"
            f"Fix the cause above (e.g. port {port} in use: pass --port; a missing package: "
            "pip install medseg again) and run `medseg view` again"
        )
    return code


def _wait(process: subprocess.Popen) -> int:
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
