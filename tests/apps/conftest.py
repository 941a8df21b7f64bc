"""Fixtures for the viewer app tests (data built by ``viewer_factory``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.apps.viewer_factory import write_case_folder, write_constant_checkpoint


@pytest.fixture(scope="session")
def case_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder holding ``brain_mr/`` with two labelled synthetic cases."""
    root = tmp_path_factory.mktemp("viewer_data")
    write_case_folder(root)
    return root


@pytest.fixture(scope="session")
def constant_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_constant_checkpoint(tmp_path_factory.mktemp("viewer_model") / "const.pt")
