"""CLI commands for the training data pipeline: ``validate-data`` and ``preview-data``
(thin wrappers over :func:`medseg.api.validate_data` and :func:`medseg.api.preview_data`)."""

from __future__ import annotations

from pathlib import Path

import typer


def validate_data(
    dataset: Path = typer.Argument(..., help="nnU-Net/MSD folder, .csv/.yaml manifest or folder."),
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Training/data config YAML (its label_map defines allowed labels).",
    ),
) -> None:
    """Check every case (files, grids, NaNs, label values, empty masks); exit 1 on problems."""
    from medseg.api import validate_data
    from medseg.data.validation import format_problems

    spec, problems = validate_data(dataset, config, progress=True)
    typer.echo(
        f"dataset {spec.name}: {len(spec.cases)} case(s), channels {', '.join(spec.channel_names)}"
    )
    typer.echo(format_problems(problems))
    if problems:
        cases = len({p.case_id for p in problems})
        typer.echo(
            f"{len(problems)} problem(s) in {cases} case(s); fix them before training", err=True
        )
        raise typer.Exit(code=1)
    typer.echo("dataset OK")


def preview_data(
    dataset: Path = typer.Argument(..., help="nnU-Net/MSD folder, .csv/.yaml manifest or folder."),
    output: Path = typer.Option(..., "--output", "-o", help="PNG file to write."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Training/data config YAML."),
    n: int = typer.Option(16, "--n", min=1, max=64, help="Number of samples."),
    seed: int | None = typer.Option(
        None, "--seed", help="Random seed (default: the training config's seed, else 0)."
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Default: the training config's train.batch_size."
    ),
    no_augment: bool = typer.Option(
        False, "--no-augment", help="Show samples without augmentation."
    ),
) -> None:
    """Write a PNG grid of the first samples training draws (same crops, augmentation, seed)."""
    from medseg.api import preview_data

    path = preview_data(
        dataset, output, config, n=n, seed=seed, batch_size=batch_size, augment=not no_augment
    )
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add this module's subcommands to the medseg app."""
    app.command("validate-data")(validate_data)
    app.command("preview-data")(preview_data)
