"""Device-resident training data: cached volumes as tensors on the training device, and
training batches cut from them with batched tensor ops in the training process.

The worker pipeline (:class:`~medseg.data.sampling.SliceDataset` in DataLoader workers) spends
Python per sample and, on a CPU, competes with the model for the same cores. Here every case
lives once in one flat buffer on the device (GPU memory, or RAM on a CPU) and a batch is a
handful of tensor ops: draw the slices, pick the crop centres (foreground pixels from
per-slice tables on the CPU), read the 2.5D crops row by row. The draw follows
:class:`SliceDataset` exactly in distribution (share ``foreground_ratio`` from foreground
slices, the crop centred near a uniformly chosen foreground pixel with the same jitter and
clipping, smaller slices placed at a random offset and padded with each plane's minimum,
edge-replicated 2.5D neighbours), and the random stream is a function of
``(seed, epoch, rank)`` only, so a resumed run draws what an uninterrupted one would.
Augmentation then runs on the whole batch (:class:`~medseg.data.augmentation.BatchAugmenter`).

Why not MONAI's ``ThreadDataLoader`` + GPU transforms: those still run per sample in Python;
on the 2-core CPU this project targets the per-sample cost is what stalls the model.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from medseg.data.cache import CachedCase
from medseg.data.seeds import RESIDENT_STREAM, epoch_seed
from medseg.data.slicing import channel_major, neighbour_indices, plane_axes
from medseg.device import DistInfo
from medseg.errors import ConfigError

logger = logging.getLogger(__name__)

#: share of the free device memory (GPU) or available RAM (CPU) the volumes may take in
#: ``pipeline: auto``; the rest is for the model, activations and the augmentation buffers
FIT_SHARE = {"cuda": 0.4, "cpu": 0.25}


def resident_bytes(cases: Sequence[CachedCase]) -> int:
    """Bytes the cases take on the device (float32 images, uint8/int16 labels)."""
    return sum(c.image.size * 4 + c.label.size * 2 for c in cases)  # labels: int16 at most


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device`` that the volumes could use."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def fits_on_device(cases: Sequence[CachedCase], device: torch.device) -> tuple[bool, str]:
    """Whether ``pipeline: auto`` keeps the data resident, and the figures behind it."""
    need, free = resident_bytes(cases), available_bytes(device)
    limit = FIT_SHARE.get(device.type, 0.25) * free
    why = (
        f"{need / 2**20:.0f} MiB of volumes vs {limit / 2**20:.0f} MiB allowed "
        f"({FIT_SHARE.get(device.type, 0.25):.0%} of {free / 2**20:.0f} MiB free on {device.type})"
    )
    return need <= limit, why


class ResidentSlices:
    """Training batches drawn on ``device`` from cases held there.

    Args:
        cases: cached cases (``image`` ``(C, X, Y, Z)``, ``label`` ``(X, Y, Z)``).
        axes: canonical axes to slice along (axis drawn per sample when several).
        context: 2.5D half-context ``k``.
        crop_size: crop ``(H, W)`` in pixels (required: batches must stack).
        foreground_ratio, samples_per_epoch, seed: as for :class:`SliceDataset`.
        batch_size: samples per batch.
        device: where the volumes and the batches live.
        info: the distributed context; each rank draws its own share of the epoch.

    Iterating yields ``{"image": float32 [B, C*(2k+1), H, W], "label": int64 [B, H, W],
    "case_index": int64 [B], "index": int64 [B], "axis": int64 [B], "foreground": bool [B],
    "origin": int64 [B, 2]}`` (``origin``: the slice pixel at the crop's top-left corner,
    negative when the slice is padded), all on ``device``. Call :meth:`set_epoch` before each
    epoch.
    """

    def __init__(
        self,
        cases: Sequence[CachedCase],
        axes: Sequence[int],
        context: int,
        crop_size: tuple[int, int] | None,
        foreground_ratio: float,
        samples_per_epoch: int | None,
        batch_size: int,
        seed: int = 0,
        device: torch.device | str = "cpu",
        info: DistInfo | None = None,
    ) -> None:
        if not cases:
            raise ConfigError("the device-resident pipeline needs at least one training case")
        if crop_size is None:
            raise ConfigError(
                "data.pipeline: resident needs data.crop_size (batches of whole slices of "
                "different sizes cannot stack); set a crop size or use data.pipeline: workers"
            )
        self.device = torch.device(device)
        self.info = info or DistInfo()
        self.case_ids = [c.case_id for c in cases]
        self.axes = tuple(int(a) for a in axes)
        self.context, self.crop = int(context), (int(crop_size[0]), int(crop_size[1]))
        self.foreground_ratio, self.seed, self.batch_size = foreground_ratio, seed, batch_size
        num_slices = sum(c.label.shape[self.axes[0]] for c in cases)
        total = samples_per_epoch or num_slices
        self.per_rank = -(-total // self.info.world_size)  # DistributedSampler pads up
        # BatchNorm needs > 1 sample: drop the last partial batch unless it is all there is
        self.num_batches = (
            self.per_rank // batch_size
            if self.per_rank > batch_size
            else -(-self.per_rank // batch_size)
        )
        self.generator = torch.Generator()
        self._load(cases)

    # ------------------------------------------------------------------ layout
    def _load(self, cases: Sequence[CachedCase]) -> None:
        """One flat image buffer and one flat label buffer for all cases, plus per-case
        shapes/offsets and, per axis, the foreground slices, their foreground pixels and each
        plane's minimum."""
        dev = self.device
        self.num_channels = int(cases[0].image.shape[0])
        shapes = np.array([c.label.shape for c in cases], dtype=np.int64)  # (N, 3)
        voxels = shapes.prod(axis=1)
        small = all(int(np.min(c.label)) >= 0 and int(np.max(c.label)) < 256 for c in cases)
        label_dtype = torch.uint8 if small else torch.int16
        # one training axis: store each case with that axis first, so a crop's rows are
        # contiguous runs of memory (the gather is 3x faster than across the canonical
        # layout's strided columns); several axes share the canonical (X, Y, Z) layout
        a = self.axes[0]
        perm = (a, *plane_axes(a)) if len(self.axes) == 1 else (0, 1, 2)
        stored = shapes[:, list(perm)]
        stored_strides = np.stack(
            [stored[:, 1] * stored[:, 2], stored[:, 2], np.ones(len(cases), np.int64)], axis=1
        )
        strides = np.empty_like(stored_strides)  # per case, per canonical axis
        strides[:, list(perm)] = stored_strides
        # a crop row is read as one window of ``crop width`` elements at the row's column
        # stride (see _gather); a window may start up to a crop width before its slice row
        # or end one after it (padded crops), so both buffers carry that much slack
        slack = self.crop[1] * max(int(strides[:, plane_axes(a)[1]].max()) for a in self.axes)
        self.images = torch.zeros(
            int(voxels.sum()) * self.num_channels + 2 * slack, dtype=torch.float32, device=dev
        )
        self.labels = torch.zeros(int(voxels.sum()) + 2 * slack, dtype=label_dtype, device=dev)
        image_off = slack + np.concatenate([[0], np.cumsum(voxels * self.num_channels)[:-1]])
        label_off = slack + np.concatenate([[0], np.cumsum(voxels)[:-1]])
        for c, io, lo, n in zip(cases, image_off, label_off, voxels, strict=True):
            if c.image.shape[0] != self.num_channels:
                raise ConfigError(
                    f"case {c.case_id}: {c.image.shape[0]} channels, expected {self.num_channels}"
                )
            # np.array copies: the cache is a read-only memmap, which torch cannot wrap
            image = np.asarray(c.image).transpose(0, *(d + 1 for d in perm))
            self.images[io : io + n * self.num_channels] = torch.from_numpy(
                np.array(image, dtype=np.float32).reshape(-1)
            ).to(dev)
            self.labels[lo : lo + n] = torch.from_numpy(
                np.array(np.asarray(c.label).transpose(perm), dtype=np.int64).reshape(-1)
            ).to(dev, label_dtype)
        self.shapes = torch.from_numpy(shapes)
        self.strides = torch.from_numpy(strides)
        self.image_off, self.label_off = torch.from_numpy(image_off), torch.from_numpy(label_off)
        self.voxels = torch.from_numpy(voxels)
        # per axis: slice starts over the cases, foreground slices, per-plane channel minima
        self.slice_start, self.fg, self.plane_min, self.fg_pixels = {}, {}, {}, {}
        for a in self.axes:
            lengths = shapes[:, a]
            self.slice_start[a] = torch.from_numpy(np.concatenate([[0], np.cumsum(lengths)]))
            per_case = [np.asarray(c.foreground[a], dtype=np.int64) for c in cases]
            counts = np.array([len(f) for f in per_case], dtype=np.int64)
            self.fg[a] = (
                torch.from_numpy(np.flatnonzero(counts)),  # cases with foreground
                torch.from_numpy(np.concatenate([[0], np.cumsum(counts)[:-1]])),
                torch.from_numpy(counts),
                torch.from_numpy(np.concatenate(per_case)),  # their foreground slices
            )
            other = tuple(d + 1 for d in plane_axes(a))  # image axes: channel first
            mins = [np.asarray(c.image).min(axis=other) for c in cases]  # (C, L) each
            self.plane_min[a] = torch.from_numpy(np.concatenate(mins, axis=1)).to(dev)
            self.fg_pixels[a] = _foreground_pixels(cases, a, self.slice_start[a])

    def __len__(self) -> int:
        return self.num_batches

    def set_epoch(self, epoch: int) -> None:
        """Seed this epoch's draws from ``(seed, epoch, rank)`` only (exact resume)."""
        self.generator.manual_seed(epoch_seed(self.seed, epoch, self.info.rank, RESIDENT_STREAM))

    # ------------------------------------------------------------------ draws
    def _randint(self, high: torch.Tensor) -> torch.Tensor:
        """Uniform integers in ``[0, high)`` elementwise (``high`` >= 1)."""
        u = torch.rand(high.shape, generator=self.generator, dtype=torch.float64)
        return torch.minimum((u * high).long(), high - 1)

    def _draw_slices(self, axis: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(case, slice, foreground)`` for ``n`` samples along ``axis``, as SliceDataset."""
        fg_cases, fg_start, fg_count, fg_slices = self.fg[axis]
        coin = torch.rand(n, generator=self.generator) < self.foreground_ratio
        fg = coin & bool(len(fg_cases))
        # background draws: a uniform slice over all cases
        starts = self.slice_start[axis]
        flat = self._randint(torch.full((n,), int(starts[-1])))
        case = torch.searchsorted(starts, flat, right=True) - 1
        index = flat - starts[case]
        if bool(fg.any()):
            k = int(fg.sum())
            pick = fg_cases[self._randint(torch.full((k,), len(fg_cases)))]
            case[fg] = pick
            index[fg] = fg_slices[fg_start[pick] + self._randint(fg_count[pick])]
        return case, index, fg

    def _strides(self, case: torch.Tensor, axis: int) -> tuple[torch.Tensor, ...]:
        """Voxel strides (slice axis, plane rows, plane columns) and the plane shape."""
        size = dict(enumerate(self.shapes[case].unbind(1)))
        stride = dict(enumerate(self.strides[case].unbind(1)))
        rows_ax, cols_ax = plane_axes(axis)
        return (
            stride[axis],
            stride[rows_ax],
            stride[cols_ax],
            size[axis],
            size[rows_ax],
            size[cols_ax],
        )

    def batch(self) -> dict[str, torch.Tensor]:
        """One training batch (see the class docstring)."""
        b, (ch, cw) = self.batch_size, self.crop
        dev = self.device
        axis = (
            torch.tensor(self.axes)[self._randint(torch.full((b,), len(self.axes)))]
            if len(self.axes) > 1
            else torch.full((b,), self.axes[0])
        )
        case = torch.empty(b, dtype=torch.int64)
        index = torch.empty(b, dtype=torch.int64)
        fg = torch.empty(b, dtype=torch.bool)
        s_st, r_st, c_st, length, height, width = (
            torch.empty(b, dtype=torch.int64) for _ in range(6)
        )
        for a in self.axes:
            m = axis == a
            if not bool(m.any()):
                continue
            case[m], index[m], fg[m] = self._draw_slices(a, int(m.sum()))
            for out, value in zip(
                (s_st, r_st, c_st, length, height, width), self._strides(case[m], a), strict=True
            ):
                out[m] = value
        # a slice smaller than the crop sits at a random offset inside it
        pad_h, pad_w = (ch - height).clamp(min=0), (cw - width).clamp(min=0)
        off_h, off_w = self._randint(pad_h + 1), self._randint(pad_w + 1)
        frame_h, frame_w = height + pad_h, width + pad_w  # the padded slice
        top = self._randint(frame_h - ch + 1)
        left = self._randint(frame_w - cw + 1)
        if bool(fg.any()):
            # SliceDataset's integers(-size // 4, size // 4 + 1)
            jitter_h = self._randint(torch.full((b,), ch // 4 - (-ch // 4) + 1)) + (-ch // 4)
            jitter_w = self._randint(torch.full((b,), cw // 4 - (-cw // 4) + 1)) + (-cw // 4)
            u = torch.rand(b, generator=self.generator, dtype=torch.float64)
            py, px = self._foreground_pixel(axis, case, index, height, width, u)
            fg_top = (py + off_h - ch // 2 + jitter_h).clamp(min=0)
            fg_left = (px + off_w - cw // 2 + jitter_w).clamp(min=0)
            top = torch.where(fg, torch.minimum(fg_top, frame_h - ch), top)
            left = torch.where(fg, torch.minimum(fg_left, frame_w - cw), left)
        row0, col0 = top - off_h, left - off_w
        image, label = self._gather(
            case, index, axis, s_st, r_st, c_st, length, height, width, row0, col0
        )
        return {
            "image": image,
            "label": label,
            "case_index": to_dev(case, dev),
            "index": to_dev(index, dev),
            "axis": to_dev(axis, dev),
            "foreground": to_dev(fg, dev),
            "origin": to_dev(torch.stack([row0, col0], dim=1), dev),
        }

    def _foreground_pixel(self, axis, case, index, height, width, u):
        """A uniformly chosen foreground pixel ``(row, col)`` of each sample's slice: the
        ``floor(u * n)``-th of its ``n`` foreground pixels in raster order, looked up in the
        per-slice tables built at load (the slice centre where a slice has none)."""
        row, col = height // 2, width // 2
        for a in self.axes:
            m = axis == a
            if not bool(m.any()):
                continue
            start, count, rows, cols = self.fg_pixels[a]
            at = self.slice_start[a][case[m]] + index[m]
            n = count[at]
            kth = start[at] + torch.minimum((u[m] * n).long(), (n - 1).clamp(min=0))
            has = n > 0
            row[m] = torch.where(has, rows[kth.clamp(max=len(rows) - 1)].long(), row[m])
            col[m] = torch.where(has, cols[kth.clamp(max=len(cols) - 1)].long(), col[m])
        return row, col

    def _gather(self, case, index, axis, s_st, r_st, c_st, length, height, width, row0, col0):
        """The ``[B, C*(2k+1), H, W]`` crops and ``[B, H, W]`` labels starting at source pixel
        ``(row0, col0)`` (negative / past the edge = padding with the plane's minimum).

        Each crop row is one window of ``W`` elements at the row's column stride: the buffer
        seen through ``as_strided`` as overlapping windows, ``index_select``-ed by window
        start. That reads 1/W as many indices as a per-pixel gather (measured 1.0 vs 9.0 ms
        for a 16 x 6 x 128² batch on the 2-core CPU). The per-row starts are built on the
        CPU (a few thousand numbers), the copy runs on the device."""
        dev, (ch, cw), k = self.device, self.crop, self.context
        b, c = case.shape[0], self.num_channels
        neighbours = neighbour_indices(index, length, k)  # (B, 2k+1), as slice_stack
        rows = row0[:, None] + torch.arange(ch)  # (B, H)
        cols = col0[:, None] + torch.arange(cw)  # (B, W)
        row_ok = (rows >= 0) & (rows < height[:, None])
        col_ok = (cols >= 0) & (cols < width[:, None])
        row_at = rows.clamp(min=0) * row_ok * r_st[:, None] + col0[:, None] * c_st[:, None]
        plane_at = neighbours * s_st[:, None]  # (B, 2k+1)
        channel_at = self.image_off[case][:, None] + torch.arange(c) * self.voxels[case][:, None]
        image_starts = (
            channel_at[:, :, None, None] + plane_at[:, None, :, None] + row_at[:, None, None, :]
        )  # (B, C, 2k+1, H)
        label_starts = self.label_off[case][:, None] + index[:, None] * s_st[:, None] + row_at
        image = self._windows(self.images, image_starts, c_st).view(b, c, 2 * k + 1, ch, cw)
        label = self._windows(self.labels, label_starts, c_st).view(b, ch, cw).long()
        if bool(row_ok.all()) and bool(col_ok.all()):  # no padding in this batch
            return channel_major(image), label
        # padding: each plane's own minimum (what lies outside the body), as SliceDataset pads
        mins = torch.zeros(b, c, 2 * k + 1, device=dev)
        for a in self.axes:
            here = to_dev(axis == a, dev)[:, None, None]
            plane = to_dev(
                (self.slice_start[a][case][:, None] + neighbours).clamp(
                    max=self.plane_min[a].shape[1] - 1
                ),
                dev,
            )
            mins = torch.where(here, self.plane_min[a][:, plane].permute(1, 0, 2), mins)
        ok = to_dev(row_ok[:, :, None] & col_ok[:, None, :], dev)  # (B, H, W)
        image = torch.where(ok[:, None, None], image, mins[..., None, None])
        label = torch.where(ok, label, 0)
        return channel_major(image), label

    def _windows(self, buffer: torch.Tensor, starts: torch.Tensor, stride: torch.Tensor):
        """``buffer[start + j * stride[b]]`` for ``j < W``: ``(B, R, W)`` rows for the window
        starts ``(B, ...)`` of sample ``b`` (one column stride per sample)."""
        cw, dev = self.crop[1], buffer.device
        starts = starts.reshape(len(starts), -1)
        values = torch.unique(stride).tolist()
        out = None if len(values) == 1 else buffer.new_empty(*starts.shape, cw)
        for value in values:
            view = buffer.as_strided((buffer.numel() - (cw - 1) * value, cw), (1, value))
            m = stride == value
            rows = view.index_select(0, to_dev(starts[m].reshape(-1), dev))
            if out is None:
                return rows.view(*starts.shape, cw)
            out[to_dev(m, dev)] = rows.view(-1, starts.shape[1], cw)
        return out

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for _ in range(self.num_batches):
            yield self.batch()

    def describe(self) -> str:
        return (
            f"device-resident training data on {self.device}: {len(self.case_ids)} case(s), "
            f"{(self.images.numel() * 4 + self.labels.numel() * self.labels.element_size()) / 2**20:.0f} MiB"
        )


def to_dev(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    return t if t.device == device else t.to(device, non_blocking=True)


def _foreground_pixels(cases, axis: int, slice_start: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Per slice along ``axis`` (numbered over all cases, as ``slice_start``), its foreground
    pixels ``(row, col)`` in raster order: ``(start, count, rows, cols)`` on the CPU, so that
    a foreground crop centre is a table lookup instead of a scan of the slice's labels."""
    found = [np.nonzero(np.asarray(c.label).transpose(axis, *plane_axes(axis)) > 0) for c in cases]
    at = np.concatenate([int(s) + f[0] for s, f in zip(slice_start[:-1], found, strict=True)])
    count = np.bincount(at, minlength=int(slice_start[-1])).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    rows, cols = (np.concatenate([f[i] for f in found]).astype(np.int16) for i in (1, 2))
    return tuple(torch.from_numpy(t) for t in (start, count, rows, cols))
