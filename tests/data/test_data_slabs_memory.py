"""Fitting MR normalisation for a streamed case reads slabs, never a float32 copy of the
channel (issue 22: peak RSS of a prediction <= 1.5x the source + model)."""

from __future__ import annotations

import sys

import pytest

from tests.peak_memory import peak_extra

SETUP = """
import sys
import numpy as np
from medseg.data.preprocessing import PreprocessingParams
from medseg.data.slabs import SlabImage
from medseg.io.volume import Volume

shape = (512, 512, 100)
rng = np.random.default_rng(0)
source = np.empty(shape, np.int16)
for k in range(shape[2]):  # plane by plane: no full-size temporary before the baseline
    source[:, :, k] = rng.integers(-1000, 2000, shape[:2], dtype=np.int16)
    source[:150, :, k] = -1024  # air: a constant fill at the minimum (> 5 % of the voxels)
volume = Volume(source, np.diag([0.8, 0.8, 2.0, 1.0]), {"source": "ct.nii"})
spacing = None if sys.argv[1] == "native" else (1.0, 1.0)
params = PreprocessingParams(modality="mr", channel_names=["ct"], target_spacing=spacing)
SlabImage([Volume(source[:64, :64, :4], volume.affine)], params).slab(2, 0, 1)  # warm-up
"""

MEASURED = """
slabs = SlabImage([volume], params)
plan = slabs._plans[0]
found = {"source": source.nbytes, "fill": plan.fill, "zero": plan.zero}
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("grid", ["native", "resampled"])
def test_mr_fit_of_an_int16_volume_needs_no_float32_copy(grid):
    """A 512 x 512 x 100 int16 volume (a CT given to the bundled MR model): fitting its MR
    constants adds under half the source's bytes to the peak RSS (one whole float32 copy,
    as before, is twice the source)."""
    res = peak_extra(SETUP, MEASURED, grid)
    assert res["extra"] <= 0.5 * res["source"], f"{res['extra'] / res['source']:.2f}x the source"
    assert res["fill"] == -1024.0
    assert not res["zero"]
