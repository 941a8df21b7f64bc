"""What a viewer server prepares before the first page asks for it.

``medseg view CT.nii.gz`` knows its case when the server starts, seconds before a browser
connects. Without a warm-up the page's first script run imports the readers (pydicom,
highdicom, SimpleITK, pandas: ~1 s) and reads and prepares the case (~1-2 s for a 512 x 512 x
120 CT) while the user looks at an empty page. :func:`start` does that work in a background
thread of the server process as it starts; the page's case loader takes the result
(:func:`take`), or waits for it when the page came first. A one-image case's first image
needs no model (torch alone takes seconds of CPU); a case of several images opens in the
model's channel order, which the server entry reads from the model first, and the model it
loaded for that is handed to the page (:func:`keep_model`, :func:`take_model`) rather than
loaded twice.

Streamlit-free (the server entry point, :mod:`medseg.viewer.ui.server`, calls it).
Research use only.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the readers are imported in the warm-up thread, not before the server
    from medseg.viewer.core.loading import CaseRef

logger = logging.getLogger(__name__)

#: imported before the first page: what its first script run would import (readers, tables)
MODULES = (
    "medseg.io",
    "medseg.viewer.core.state",
    "medseg.viewer.core.cases",
    "medseg.viewer.core.measure",
    "medseg.viewer.core.review",
    "pandas",
    "scipy.ndimage",
)
#: seconds a page waits for the warm-up to name its case (imports included) before it reads
#: the case itself
PLAN_TIMEOUT = 30.0

_lock = threading.Lock()
_cases: dict[str, Future] = {}
_models: dict[tuple, Any] = {}
#: clear while a warm-up is finding its case (a page that comes then waits to know it)
_planned = threading.Event()
_planned.set()


def case_key(ref: CaseRef) -> str:
    """The key of a case's files (no stat calls: the page asks on every rerun)."""
    return repr(ref)


def prepare(ref: CaseRef):
    """Read and prepare ``ref`` as the page shows it first: the display case, and its ground
    truth with the slices it opens on (:func:`state.initial_slice`: per-slice areas, memoised
    on the layer)."""
    from medseg.viewer.core import loading, render, state

    shown = state.prepare_case(loading.load_case(ref))
    if shown.case.truth is not None:
        truth = state.truth_layer(shown)
        for view in render.VIEWS:
            state.initial_slice(truth, shown, view)
    return shown


def start(opening: Callable[[], CaseRef | None]) -> threading.Thread:
    """In a daemon thread: import the page's modules, then prepare the case ``opening()``
    names (None: imports only). A case that fails here is left to the page, which reads it
    again and shows why."""
    _planned.clear()

    def work() -> None:
        future: Future | None = None
        try:
            for name in MODULES:
                importlib.import_module(name)
            ref = opening()
            if ref is not None:
                future = Future()
                with _lock:
                    _cases[case_key(ref)] = future
        except Exception as err:  # the page meets the same problem and says what it is
            logger.debug("warm-up stopped: %s", err)
        finally:
            _planned.set()
        if future is None:
            return
        try:
            future.set_result(prepare(ref))
        except Exception as err:  # the page reads the case again and shows why
            logger.debug("warm-up: could not prepare %s: %s", ref.name, err)
            future.set_result(None)

    thread = threading.Thread(target=work, name="medseg-warm-up", daemon=True)
    thread.start()
    return thread


def model_key(path: str, mtime: float, device: str, tta: bool | None) -> tuple:
    """A loaded model's key, as the page's model cache has it: the file (path, mtime), the
    device and the test-time augmentation it predicts with."""
    return (path, mtime, device, tta)


def keep_model(key: tuple, model: Any) -> None:
    """Hold a model loaded before the page (key: :func:`model_key`) until the page takes it."""
    with _lock:
        _models[key] = model


def take_model(key: tuple) -> Any:
    """The model kept under ``key``, once (waiting while a warm-up is still finding its case,
    which is when it loads one: loading it again beside it would only slow both); None when
    there is none (the page loads it)."""
    _planned.wait(timeout=PLAN_TIMEOUT)
    with _lock:
        return _models.pop(key, None)


def take(ref: CaseRef):
    """The case :func:`start` prepared for ``ref`` (waiting while it is being prepared), once;
    None when it was not warmed up or failed (the caller reads it itself)."""
    _planned.wait(timeout=PLAN_TIMEOUT)
    with _lock:
        future = _cases.pop(case_key(ref), None)
    return None if future is None else future.result()
