"""Fixtures for fast CPU training tests: a tiny synthetic nnU-Net dataset and its config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.data.data_factory import write_tiny_dataset
from tests.engine.engine_factory import tiny_raw_config


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny") / "Dataset001_Tiny")


@pytest.fixture
def tiny_raw(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return tiny_raw_config(tiny_dataset, tmp_path_factory.getbasetemp() / "tiny_cache")


@pytest.fixture(scope="session")
def make_tiny_raw():
    """The :func:`tiny_raw_config` builder (for module-scoped fixtures)."""
    return tiny_raw_config
