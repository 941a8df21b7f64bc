"""Viewer state prepared once per case / per prediction, so a slider move only renders.

:class:`DisplayCase` holds a loaded case reoriented for display plus per-channel automatic
windows; :class:`MaskLayer` holds a label volume (prediction or ground truth) with its
readouts, lesion targets and per-view slice areas, each computed once and memoised.
:class:`LRUStore` is the process-wide prediction cache (the app wraps it in
``st.cache_resource``), keyed by (volume hash, model, model mtime, device).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import Any

import numpy as np

from medseg.io import Volume
from medseg.viewer.core import cases, navigation, render, services
from medseg.viewer.core.loading import Case


class Memoised:
    """What a case or a layer computes once and keeps (its ``_memo`` dict): derived tables,
    ground-truth layers, download bytes, canvas tokens."""

    _memo: dict[Any, Any]

    def memo(self, key: Any, compute: Any) -> Any:
        """``compute()`` the first time ``key`` is asked for, the kept value after."""
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]


@dataclasses.dataclass(eq=False)
class DisplayCase(Memoised):
    """A case in display orientation (see :mod:`medseg.viewer.core.render`)."""

    case: Case
    digest: str
    images: list[np.ndarray]  # one (X, Y, Z) array per channel, display (L, P, S) order
    spacing: tuple[float, float, float]  # mm along display axes
    affine: np.ndarray  # display voxel -> RAS mm
    windows: list[render.Window]  # automatic window per channel
    is_ct: list[bool]
    intensity_range: list[tuple[float, float]]  # 0.1 / 99.9 percentiles per channel
    stored_orientation: str = ""  # e.g. "LPS": how the file stores its axes
    _memo: dict[Any, Any] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images[0].shape)  # type: ignore[return-value]


def axial_friendly(array: np.ndarray) -> np.ndarray:
    """The same array in Fortran order, so an axial plane ``[:, :, k]`` is one contiguous block.

    Axial is the default and most used view; C order would gather it with a stride of ``Z``
    elements (cache misses on every slider move). Coronal/sagittal planes stay affordable.
    """
    return np.asfortranarray(array)


def _looks_like_ct(volume: Volume) -> bool:
    modality = str(volume.metadata.get("modality", "")).upper()
    if modality in ("CT", "MR", "MRI"):
        return modality == "CT"
    # No modality tag (plain NIfTI): CT in HU has air near -1000.
    sample = volume.array.ravel(order="K")[:: max(1, volume.array.size // 200_000)]
    return bool(sample.size and np.percentile(sample, 1) < -500)


def prepare_case(case: Case) -> DisplayCase:
    """Reorient every channel for display and compute automatic windows (once per case)."""
    # reoriented straight into the axial-friendly layout: one copy, not two
    shown = [render.to_display(vol, order="F") for vol in case.channels]
    windows, ranges, is_ct = [], [], []
    for vol in case.channels:
        ct = _looks_like_ct(vol)
        is_ct.append(ct)
        windows.append(render.CT_PRESETS["soft tissue"] if ct else None)
        sample = vol.array.ravel(order="K")[:: max(1, vol.array.size // 500_000)].astype(np.float64)
        lo, hi = np.percentile(sample, [0.1, 99.9]) if sample.size else (0.0, 1.0)
        ranges.append((float(lo), float(max(hi, lo + 1.0))))
    windows = [
        render.Window(*w) if w is not None else render.auto_window(vol.array)
        for w, vol in zip(windows, case.channels, strict=True)
    ]
    return DisplayCase(
        case=case,
        digest=case.digest,
        images=[axial_friendly(v.array) for v in shown],
        spacing=shown[0].spacing,
        affine=shown[0].affine,
        windows=windows,
        is_ct=is_ct,
        intensity_range=ranges,
        stored_orientation="".join(case.channels[0].orientation),
    )


@dataclasses.dataclass(eq=False)
class MaskLayer(Memoised):
    """A label volume shown over the image, with memoised derived data.

    ``readouts`` and ``targets`` (lesion table, diameters) are computed on first use, so the
    page draws the first image before them: Streamlit sends each element as the script
    reaches it, and the lesion list and readouts come after the image.
    """

    source: Volume  # source grid (for downloads and readouts in true geometry)
    display: np.ndarray  # display-oriented labels (X, Y, Z)
    class_names: list[str]
    model: str = ""
    #: ``name -> float16 (I, J, K)`` uncertainty maps on the source grid (predictions only)
    uncertainty: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    model_sha256: str | None = None
    #: indices of the case's channels fed to the model, in the model's order
    channels_used: tuple[int, ...] = ()
    display_affine: np.ndarray | None = None
    _readouts: dict[str, Any] | None = None
    _targets: list[navigation.LesionTarget] | None = None
    _areas: dict[tuple[str, tuple[int, ...]], np.ndarray] = dataclasses.field(default_factory=dict)
    _memo: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def readouts(self) -> dict[str, Any]:
        """Per-class mL and lesion list on the source grid (computed on first use)."""
        if self._readouts is None:
            self._readouts = services.compute_readouts(self.source, self.class_names)
        return self._readouts

    @property
    def targets(self) -> list[navigation.LesionTarget]:
        """Where each lesion lies on screen (computed on first use, after the readouts)."""
        if self._targets is None:
            affine = self.display_affine
            if affine is None:
                affine = render.to_display(self.source).affine
            self._targets = navigation.lesion_targets(
                self.readouts.get("lesions", []), self.source.affine, affine, self.display.shape
            )
        return self._targets

    @property
    def present(self) -> list[int]:
        if "present" not in self._memo:
            self._memo["present"] = present_labels(self.display)
        return self._memo["present"]

    def areas(
        self, view: str, spacing: tuple[float, float, float], labels: tuple[int, ...]
    ) -> np.ndarray:
        """Per-slice foreground area (mm^2) along ``view`` over ``labels`` (memoised)."""
        key = (view, labels)
        if key not in self._areas:
            self._areas[key] = navigation.slice_areas_mm2(self.display, spacing, view, labels)
        return self._areas[key]

    def display_uncertainty(self, name: str) -> np.ndarray | None:
        """Uncertainty map ``name`` reoriented for display (memoised), or None."""
        if name not in self.uncertainty:
            return None

        def compute() -> np.ndarray:
            volume = self.source.with_array(self.uncertainty[name])
            return axial_friendly(render.to_display(volume, order="F").array)

        return self.memo(f"uncertainty_{name}", compute)


def initial_slice(layer: MaskLayer | None, shown: DisplayCase, view: str) -> int:
    """The slice a page opens on along ``view``: the one with the most foreground of
    ``layer`` (its per-slice areas, memoised on it), else the middle slice."""
    count = render.num_slices(shown.shape, view)
    if layer is not None and layer.present:
        areas = layer.areas(view, shown.spacing, tuple(layer.present))
        if areas.max() > 0:
            return int(np.argmax(areas))
    return count // 2


def present_labels(labels: np.ndarray) -> list[int]:
    """The foreground label values in ``labels`` (sorted).

    A few labels (the usual case): one ``max`` and one comparison per value (~15 ms each on a
    512 x 512 x 120 mask); many: ``bincount``, whose int64 copy costs ~0.2 s on the same mask.
    """
    flat = labels.ravel(order="K")
    if not flat.size:
        return []
    if flat.dtype.kind in "ui" and int(flat.min()) >= 0:
        top = int(flat.max())
        if top <= 16:
            return [v for v in range(1, top + 1) if (flat == v).any()]
        return [int(v) for v in np.flatnonzero(np.bincount(flat.astype(np.int64))) if v > 0]
    return [int(v) for v in np.unique(flat) if v > 0]


def make_layer(
    label: Volume,
    shown: DisplayCase,
    class_names: list[str],
    readouts: dict[str, Any] | None = None,
    model: str = "",
    **extras: Any,
) -> MaskLayer:
    """Prepare a prediction or ground-truth label volume for display and navigation
    (``readouts`` None: computed when first needed, see :class:`MaskLayer`)."""
    names = services.class_names_for(label, class_names)
    display = render.to_display(label, order="F")
    return MaskLayer(
        label,
        axial_friendly(display.array),
        names,
        model,
        display_affine=display.affine,
        _readouts=readouts or None,
        **extras,
    )


def truth_layer(
    shown: DisplayCase,
    model_names: tuple[str, ...] = (),
    mapping: dict[int, int] | None = None,
) -> MaskLayer:
    """The case's ground truth prepared for display (memoised on the case, per mapping).
    Label names: ``--labels``, else the case's dataset.json, else the model's
    (:func:`cases.truth_class_names`); a mapped truth uses the model's scheme."""
    mapping = mapping or {}
    names = cases.truth_class_names(shown.case.class_names, None, model_names)
    if mapping and model_names:
        names = model_names

    def compute() -> MaskLayer:
        volume = shown.case.truth
        if mapping:
            volume = volume.with_array(cases.map_labels(volume.array, mapping))
        return make_layer(volume, shown, list(names))

    return shown.memo(("truth", tuple(sorted(mapping.items())), names), compute)


class LRUStore:
    """A small thread-safe least-recently-used mapping (one per server process)."""

    def __init__(self, capacity: int = 8) -> None:
        self.capacity = capacity
        self._items: collections.OrderedDict[Any, Any] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            if key not in self._items:
                return None
            self._items.move_to_end(key)
            return self._items[key]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
