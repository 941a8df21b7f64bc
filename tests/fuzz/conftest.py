"""Fuzz profiles: ``quick`` runs in the default suite; ``long`` (marked ``fuzz``) only when
asked for with ``pytest -m fuzz tests/fuzz`` (thousands of mutated inputs)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config, items):
    if "fuzz" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="long fuzz profile: run with `pytest -m fuzz tests/fuzz`")
    for item in items:
        if item.get_closest_marker("fuzz") is not None:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter):
    from tests.fuzz.seeds import COUNTS

    if COUNTS:
        terminalreporter.write_line("fuzz inputs per format (valid result / MedsegError):")
        for fmt, counts in sorted(COUNTS.items()):
            terminalreporter.write_line(f"  {fmt}: {counts['ok']} / {counts['error']}")
