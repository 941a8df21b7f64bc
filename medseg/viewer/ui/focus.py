"""The viewer's position, ``keys.FOCUS``: one display voxel ``(x, y, z)`` shared by the slice
sliders, the lesion lists, the crosshair and the canvas.

Whoever moves it (a lesion jump, a click in the three planes, the canvas) writes FOCUS;
:func:`sync_focus`, run once before the image, moves the sliders to a FOCUS they have not
seen, and otherwise takes FOCUS from the sliders (the user moved one).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import streamlit as st

from medseg.viewer.core import render
from medseg.viewer.core.state import DisplayCase, MaskLayer, initial_slice
from medseg.viewer.ui import keys

Point = tuple[int, int, int]


def focus_on(point: Sequence[int], shape: Sequence[int]) -> Point:
    """Move the position to display voxel ``point`` (clipped to ``shape``); the sliders
    follow at once. Safe in widget callbacks (they run before the page)."""
    clipped: Point = tuple(int(np.clip(v, 0, n - 1)) for v, n in zip(point, shape, strict=True))  # type: ignore[assignment]
    st.session_state[keys.FOCUS] = clipped
    st.session_state[keys.FOCUS_SEEN] = clipped
    for view in render.VIEWS:
        st.session_state[keys.slice_of(view)] = clipped[render.VIEW_AXIS[view]]
    return clipped


def move_slice(view: str, index: int, shape: Sequence[int]) -> Point:
    """Move along ``view`` only (slider, previous/next, area chart picks)."""
    point = list(current(shape))
    point[render.VIEW_AXIS[view]] = int(index)
    return focus_on(point, shape)


def current(shape: Sequence[int]) -> Point:
    """The position as the sliders hold it (the middle of any axis not set yet)."""
    point = [int(n) // 2 for n in shape]
    for view in render.VIEWS:
        axis = render.VIEW_AXIS[view]
        point[axis] = int(st.session_state.get(keys.slice_of(view), point[axis]))
    return tuple(point)  # type: ignore[return-value]


def sync_focus(shown: DisplayCase, nav: MaskLayer | None) -> Point:
    """Reconcile FOCUS and the sliders at the start of the main area (module doc)."""
    state = st.session_state
    focus = state.get(keys.FOCUS)
    if focus is not None and tuple(focus) != state.get(keys.FOCUS_SEEN):
        return focus_on(focus, shown.shape)
    predicted = bool(getattr(nav, "model", ""))
    opened = state.get(keys.OPENED_ON)
    if opened is not None and not opened[0] and predicted and opened[1] == current(shown.shape):
        # the page opened before the prediction came (it runs beside the page) and nobody
        # moved since: open where the new mask is largest, as if it had been there at once
        for view in render.VIEWS:
            state.pop(keys.slice_of(view), None)
    if any(keys.slice_of(view) not in state for view in render.VIEWS):
        for view in render.VIEWS:
            state.setdefault(keys.slice_of(view), initial_slice(nav, shown, view))
        state[keys.OPENED_ON] = (predicted, current(shown.shape))
    return focus_on(current(shown.shape), shown.shape)
