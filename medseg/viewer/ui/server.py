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
from medseg.viewer.launch import ViewerConfig, config_case, parse_app_args

if TYPE_CHECKING:
    from medseg.viewer.core.loading import CaseRef


def opening_case(config: ViewerConfig) -> CaseRef | None:
    """The case the page opens on without a click: its first case source (the command line,
    else the sample data's default case), in the channel order the page gives it. A case of
    several images opens with the model's channels first, so for one the model's channel
    names are read here as the page reads them (:func:`model_channels`): torch is imported
    now rather than in the page's first run."""
    from medseg.viewer.core import cases, loading

    try:
        if config.path is not None:
            ref = config_case(config)
        elif config.sample_root is not None:
            found = loading.discover_cases(Path(config.sample_root), confine=False)
            ref = loading.default_case(found)
        else:
            return None
    except MedsegError:
        return None  # the page reports it
    if ref is not None and len(ref.images) > 1:
        channels = model_channels(config)
        ref = cases.model_first(ref, channels) if channels else ref
    return ref


def model_channels(config: ViewerConfig) -> tuple[str, ...]:
    """The input channels of the model the page runs when it opens: its first choice, the
    ``--model`` checkpoint or else the bundled model (as
    :func:`medseg.viewer.ui.app.expected_channels` reads them; empty when it does not load).
    The model is loaded as the page's first run loads it (its device, test-time augmentation
    "as trained") and kept for the page (:func:`warmup.keep_model`)."""
    from medseg.viewer.core import services

    path = Path(config.model) if config.model is not None else services.default_model_path()
    try:
        predictor = services.load_predictor(path, device=config.device, tta=None)
        key = warmup.model_key(str(path), path.stat().st_mtime, config.device, None)
        warmup.keep_model(key, predictor)
        return tuple(predictor.channel_names)
    except Exception:  # the page loads the model again and says why it does not load
        return ()


def _warm_page(config: ViewerConfig) -> CaseRef | None:
    """The warm-up's own step (its imports done): :func:`opening_case`, after Streamlit's
    declare_component has been spared its slow first lookup. The canvas module calls it; it
    finds its caller's module with inspect.getmodule, which resolves the path of each module
    loaded so far, once: ~0.2 s with the readers loaded, here rather than in the first page's
    run."""
    inspect.getmodule(inspect.currentframe())
    return opening_case(config)


def main() -> None:
    app_args = sys.argv[sys.argv.index("--") + 1 :] if "--" in sys.argv else []
    try:
        config = parse_app_args(app_args)
    except (SystemExit, MedsegError):
        config = None  # the page parses them again and says what is wrong
    if config is not None:
        warmup.start(lambda: _warm_page(config))
    from streamlit.web import cli

    # the program name Streamlit's own ``python -m streamlit`` uses
    cli.main(prog_name="streamlit")


if __name__ == "__main__":
    main()
