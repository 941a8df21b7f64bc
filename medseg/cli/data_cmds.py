"""CLI commands (data). Placeholder until its issue lands: registers nothing yet."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this module's subcommands to the medseg app."""
