"""Fixtures for inference tests (helpers in ``infer_factory.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.inference.infer_factory import write_tiny_checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """1-channel, 2-class, 2.5D (k=1) random unet checkpoint."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def checkpoint_factory(tmp_path_factory) -> Callable[..., Path]:
    def make(**kwargs) -> Path:
        folder = tmp_path_factory.mktemp("ckpt")
        return write_tiny_checkpoint(folder / "model.pt", **kwargs)

    return make
