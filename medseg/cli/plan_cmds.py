"""CLI command ``medseg plan``: a commented training config planned from the dataset."""

from __future__ import annotations

from pathlib import Path

import typer


def plan_command(
    dataset: Path = typer.Argument(
        ..., help="nnU-Net/MSD folder, .csv/.yaml manifest or folder (what validate-data reads)."
    ),
    time_budget: str = typer.Option(
        "30m", "--time-budget", help="Wall time for the whole training command, e.g. 30m, 2h."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the plan (a training config YAML) here."
    ),
    single: bool = typer.Option(
        False, "--single", help="Plan one model (holdout validation) instead of cross-validation."
    ),
    explain: bool = typer.Option(False, "--explain", help="Print the decisions as a table."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --output."),
) -> None:
    """Fingerprint the dataset, time the planned network here and write a training config
    whose every planned value carries the figure behind it as a comment."""
    from medseg import RESEARCH_USE_NOTICE
    from medseg.api import plan

    result = plan(dataset, time_budget=time_budget, device=device, cross_validation=not single)
    if output is not None:
        from medseg.engine.planner import write_plan

        write_plan(result, output, inputs=[dataset], overwrite=overwrite)
        typer.echo(f"plan written to {output}; train with: medseg train {output} --folds all")
    from medseg.engine.planner import explain as explain_table
    from medseg.engine.planner import plan_to_yaml, summary

    if explain:
        typer.echo(explain_table(result))
    elif output is None:
        typer.echo(plan_to_yaml(result), nl=False)
    typer.echo(summary(result))
    typer.echo(RESEARCH_USE_NOTICE)


def register(app: typer.Typer) -> None:
    """Add this module's subcommands to the medseg app."""
    app.command("plan")(plan_command)
