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
    from medseg.data.preview import preview_dataset
    from medseg.io.atomic import check_not_input

    check_not_input(output, [dataset] + ([config] if config else []))
    cfg, train_seed, train_batch = _preview_config(dataset, config)
    if no_augment:
        cfg = cfg.model_copy(
            update={"augmentation": cfg.augmentation.model_copy(update={"enabled": False})}
        )
    seed = train_seed if seed is None else seed
    batch_size = train_batch if batch_size is None else batch_size
    path = preview_dataset(cfg, output, n=n, seed=seed, batch_size=batch_size)
    typer.echo(f"wrote {path}")


def _preview_config(dataset: Path, config: Path | None) -> tuple[object, int, int]:
    """``(DataConfig, seed, batch size)``: a training config (with a ``data:`` section) gives
    its own seed and batch size, so the preview draws what ``medseg train`` will."""
    from medseg.data.config import DataConfig, load_data_config, read_yaml_mapping
    from medseg.engine.config import TrainConfig, build_config

    defaults = TrainConfig.model_fields
    default_batch = defaults["train"].default_factory().batch_size
    if config is None:
        return DataConfig(dataset=str(dataset)), 0, default_batch
    if not config.is_file() or not isinstance(read_yaml_mapping(config).get("data"), dict):
        return load_data_config(config, {"dataset": str(dataset)}), 0, default_batch
    train_cfg = build_config(read_yaml_mapping(config), {"data.dataset": str(dataset)}, str(config))
    return train_cfg.data, train_cfg.seed, train_cfg.train.batch_size


def register(app: typer.Typer) -> None:
    """Add this module's subcommands to the medseg app."""
    app.command("validate-data")(validate_data)
    app.command("preview-data")(preview_data)
