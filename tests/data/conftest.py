"""Data-pipeline tests work on small tensors: one torch thread is faster than two contended
ones on the shared 2-core machine (and leaves the other core to other work)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
