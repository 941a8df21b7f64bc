"""CLI commands for the training data pipeline: ``validate-data`` and ``preview-data``."""

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
    from medseg.data.config import load_data_config
    from medseg.data.datasets import load_dataset
    from medseg.data.validation import format_problems, validate_dataset

    params = load_data_config(config, {"dataset": str(dataset)}).preprocessing if config else None
    spec = load_dataset(dataset)
    problems = validate_dataset(spec, params, progress=True)
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
    seed: int = typer.Option(0, "--seed", help="Random seed of sampling and augmentation."),
    no_augment: bool = typer.Option(
        False, "--no-augment", help="Show samples without augmentation."
    ),
) -> None:
    """Write a PNG grid of augmented training samples with mask contours."""
    from medseg.data.config import DataConfig, load_data_config
    from medseg.data.preview import preview_dataset
    from medseg.io.atomic import check_not_input

    check_not_input(output, [dataset] + ([config] if config else []))
    overrides: dict[str, object] = {"dataset": str(dataset)}
    cfg = load_data_config(config, overrides) if config else DataConfig(dataset=str(dataset))
    if no_augment:
        cfg = cfg.model_copy(
            update={"augmentation": cfg.augmentation.model_copy(update={"enabled": False})}
        )
    path = preview_dataset(cfg, output, n=n, seed=seed)
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    """Add this module's subcommands to the medseg app."""
    app.command("validate-data")(validate_data)
    app.command("preview-data")(preview_data)
