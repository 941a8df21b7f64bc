"""Measurements on the page (PNG path): intensity at the crosshair, and ROI statistics for a
rectangle or ellipse set with number inputs. The numbers come from
:mod:`medseg.viewer.core.measure`, which the canvas calls too."""

from __future__ import annotations

import streamlit as st

from medseg.errors import MedsegError
from medseg.viewer.core import measure, render
from medseg.viewer.core.state import DisplayCase
from medseg.viewer.ui import keys

ROI_OFF = "off"
ROI_FIELDS = (keys.ROI_ROW, keys.ROI_COL, keys.ROI_HEIGHT, keys.ROI_WIDTH)


def intensity_text(shown: DisplayCase, channel: int, point: tuple[int, int, int]) -> str:
    """``crosshair (x, y, z): 412 a.u. (MR: arbitrary units)``, voxels numbered from 1."""
    value, unit = measure.intensity_at(shown.images[channel], point, shown.is_ct[channel])
    where = ", ".join(str(v + 1) for v in point)
    what = "CT: Hounsfield units" if unit == measure.CT_UNIT else "MR: arbitrary units"
    return f"crosshair ({where}): {value:.5g} {unit} ({what})"


def _defaults(plane_shape: tuple[int, int]) -> dict[str, int]:
    """A box of about a tenth of the slice, in its middle (screen rows and columns, from 1)."""
    height, width = (max(1, n // 10) for n in plane_shape)
    return {
        keys.ROI_ROW: (plane_shape[0] - height) // 2 + 1,
        keys.ROI_COL: (plane_shape[1] - width) // 2 + 1,
        keys.ROI_HEIGHT: height,
        keys.ROI_WIDTH: width,
    }


def roi_choice(plane_shape: tuple[int, int]) -> tuple[str, tuple[int, int, int, int]] | None:
    """The ROI as the number inputs hold it (they are drawn below the image, so their values
    from the last run): ``(shape, (row, col, height, width))`` 0-based, or None when off."""
    shape = st.session_state.get(keys.ROI_SHAPE, ROI_OFF)
    if shape == ROI_OFF:
        return None
    limits = (*plane_shape, *plane_shape)  # a view change can shrink the slice
    for (key, value), top in zip(_defaults(plane_shape).items(), limits, strict=True):
        st.session_state[key] = min(max(int(st.session_state.get(key, value)), 1), top)
    row, col, height, width = (int(st.session_state[k]) for k in ROI_FIELDS)
    return shape, (row - 1, col - 1, height, width)


def roi_panel(shown: DisplayCase, channel: int, view: str, index: int) -> None:
    """ROI shape and box inputs, and the ROI's mean, SD and area on the current slice."""
    plane = render.extract_slice(shown.images[channel], view, index)
    choice = roi_choice(plane.shape)
    with st.expander("Measure: ROI statistics", expanded=choice is not None):
        st.radio(
            "ROI", (ROI_OFF, *measure.ROI_SHAPES), key=keys.ROI_SHAPE, horizontal=True,
            help="A box on the current slice in screen rows and columns (1 = top / left); "
            "an ellipse fills the box. Outlined on the image in the crosshair colour.",
        )  # fmt: skip
        if choice is None:
            return
        limits = (*plane.shape, *plane.shape)
        columns = st.columns(4)
        labels = ("top row", "left column", "height (px)", "width (px)")
        for column, key, label, top in zip(columns, ROI_FIELDS, labels, limits, strict=True):
            column.number_input(label, min_value=1, max_value=int(top), step=1, key=key)
        unit = measure.intensity_unit(shown.is_ct[channel])
        try:
            stats = measure.roi_stats(
                plane, choice[1], render.pixel_spacing(shown.spacing, view), choice[0], unit
            )
        except MedsegError as err:
            st.warning(str(err))
            return
        st.caption(f"{view} slice {index + 1}: {stats.text()}")
