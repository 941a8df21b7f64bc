"""The viewer's server process: Streamlit's own command line, after starting the warm-up.

``medseg view`` runs ``python -m medseg.viewer.ui.server run <app.py> [streamlit options] --
[app arguments]``: the same as ``python -m streamlit run ...``, with the case the page opens on
read in the background as the server starts (:mod:`medseg.viewer.core.warmup`), so the first
page finds it ready. Research use only.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from medseg.errors import MedsegError
from medseg.viewer.core import warmup
from medseg.viewer.launch import ViewerConfig, parse_app_args

if TYPE_CHECKING:
    from medseg.viewer.core.loading import CaseRef


def opening_case(config: ViewerConfig) -> CaseRef | None:
    """The case the page opens on without a click (its first case source: the command line,
    else the sample data's default case), when its channel order does not depend on the
    model: a case of several images opens in the model's order, and only the page loads
    models (torch alone would take seconds of the first image's CPU)."""
    from medseg.viewer.core import cases, loading

    # Streamlit's declare_component (the canvas module) finds its caller's module with
    # inspect.getmodule, which resolves the path of each module loaded so far, once: ~0.2 s
    # with the readers loaded, here rather than in the first page's run
    inspect.getmodule(inspect.currentframe())
    try:
        if config.path is not None:
            ref = cases.config_case(config)
        elif config.sample_root is not None:
            found = loading.discover_cases(Path(config.sample_root), confine=False)
            ref = loading.default_case(found)
        else:
            return None
    except MedsegError:
        return None  # the page reports it
    return ref if ref is not None and len(ref.images) == 1 else None


def main() -> None:
    app_args = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    try:
        config = parse_app_args(app_args)
    except (SystemExit, MedsegError):
        config = None  # the page parses them again and says what is wrong
    if config is not None:
        warmup.start(lambda: opening_case(config))
    from streamlit.web import cli

    # the program name Streamlit's own ``python -m streamlit`` uses
    cli.main(prog_name="streamlit")


if __name__ == "__main__":
    main()
