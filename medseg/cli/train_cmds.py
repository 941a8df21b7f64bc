"""CLI command ``medseg train`` (a thin wrapper over :func:`medseg.api.train`, and
:func:`medseg.api.cross_validate` with ``--folds``).

Multi-GPU / multi-node: ``torchrun --nproc_per_node=N -m medseg train CONFIG.yaml ...``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from medseg.errors import ConfigError

RESUME_LAST = "__last__"


def train_command(
    ctx: typer.Context,
    config: str = typer.Argument(
        ...,
        help="Training config YAML (or a shipped config name: sample, brats_2d), or a dataset "
        "(nnU-Net folder, manifest): then medseg plans the config first (see `medseg plan`).",
    ),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Run folder (default: runs/<name>-<timestamp>)."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a config key, e.g. --set train.epochs=2 (repeatable)."
    ),
    device: str | None = typer.Option(
        None, "--device", help="auto, cpu, cuda, cuda:N or mps (default: the config's device)."
    ),
    folds: str | None = typer.Option(
        None,
        "--folds",
        help="Cross-validation: 'all' or fold numbers (0,2) of data.num_folds into "
        "OUTPUT/fold_<k>; when every fold is finished, out-of-fold evaluation, postprocessing "
        "choice and OUTPUT/model.json (the ensemble).",
    ),
    time_budget: str | None = typer.Option(
        None,
        "--time-budget",
        help="With a dataset: wall time the planned run fills, e.g. 30m (default 30m).",
    ),
    init_from: Path | None = typer.Option(
        None,
        "--init-from",
        help="Start from this checkpoint's (or model folder's) weights, e.g. to fine-tune on "
        "corrected cases (same channels and classes).",
    ),
) -> int:
    """Train a segmentation model; writes config, metrics, curves, overlays and checkpoints.

    --resume [PATH]: continue a run from PATH (a run folder or a checkpoint file); alone, from
    the --output folder's checkpoints/last.pt. Ctrl-C / SIGTERM save last.pt (exit code 130).
    """
    from medseg import RESEARCH_USE_NOTICE
    from medseg.api import train
    from medseg.device import DistInfo

    resume = _resume_argument(list(ctx.args))
    if resume == RESUME_LAST:
        if output is None:
            raise ConfigError(
                "--resume without a path needs --output RUN_DIR (the run to continue); "
                "or pass --resume RUN_DIR"
            )
        resume = str(output)
    info = DistInfo.from_env()
    if not info.is_main:  # only rank 0 talks to the user
        logging.getLogger().setLevel(logging.WARNING)
    if init_from is not None:
        from medseg.inference.store import resolve_model

        overrides = [*overrides, f"train.init_from={resolve_model(init_from)}"]  # or a name
    planned = _planned(config, overrides, time_budget, device, folds, output, info)
    # a planned config already holds the --set overrides
    source, extra = (planned, ()) if planned is not None else (config, overrides)
    if folds is not None:
        return _cross_validate(source, extra, config, output, folds, device, info, resume)
    result = train(source, output, overrides=extra, resume=resume, device=device, info=info)
    if not info.is_main:
        return 0
    if result.interrupted:
        typer.echo(
            f"interrupted after {result.epochs_completed} complete epoch(s); saved "
            f"{result.run_dir / 'checkpoints' / 'last.pt'}; continue with "
            f"`medseg train {config} --resume {result.run_dir}`",
            err=True,
        )
        return 130  # the conventional "interrupted" status; main() exits with it
    best = (
        "n/a (no validation cases)"
        if result.best_epoch == 0
        else (f"{result.best_metric:.4f} at epoch {result.best_epoch}")
    )
    typer.echo(
        f"run folder: {result.run_dir}\nepochs: {result.epochs_completed}"
        f"{' (early stopping)' if result.stopped_early else ''}\n"
        f"best validation mean Dice (per volume, 3D): {best}\n{RESEARCH_USE_NOTICE}"
    )
    return 0


def _planned(config, overrides, time_budget, device, folds, output, info):
    """The training config planned for the dataset ``config`` names (printed, and saved as
    ``OUTPUT/plan.yaml``), or ``None`` when ``config`` is a config file."""
    from medseg.engine.config import build_config, parse_overrides
    from medseg.engine.planner import is_dataset_argument, plan_to_yaml, summary

    if not is_dataset_argument(config):
        if time_budget is not None:
            raise ConfigError(
                f"--time-budget plans a dataset, but {config} is a training config; set "
                "train.epochs / data.samples_per_epoch in it, or pass the dataset instead",
                param="time_budget",
            )
        return None
    from medseg.api import plan

    result = plan(
        config,
        time_budget=time_budget or "30m",
        device=device or "auto",
        cross_validation=folds is not None,
    )
    typer.echo(summary(result))
    for note in result.notes:
        typer.echo(f"note: {note}")
    cfg = build_config(result.raw, parse_overrides(overrides), source="the plan")
    if output is not None and info.is_main:  # the plan beside the folds, to edit and re-run
        from medseg.io.atomic import write_text

        output.mkdir(parents=True, exist_ok=True)
        write_text(output / "plan.yaml", plan_to_yaml(result))
    return cfg


def _cross_validate(source, overrides, config, output, folds, device, info, resume) -> int:
    from medseg import RESEARCH_USE_NOTICE
    from medseg.api import cross_validate

    if resume is not None:
        raise ConfigError(
            "--folds resumes by itself: re-run the same command and unfinished folds continue "
            "from their last.pt (drop --resume)"
        )
    result = cross_validate(source, output, folds, overrides=overrides, device=device, info=info)
    output = result.output
    if not info.is_main:
        return 0
    if result.interrupted:
        typer.echo(
            f"interrupted; finished folds are kept. Continue with the same command "
            f"(`medseg train {config} --folds {folds} --output {output}`)",
            err=True,
        )
        return 130
    if not result.joined:
        typer.echo(
            f"{output}: trained fold(s) {result.trained or 'none'}; waiting for fold(s) "
            f"{result.missing} (train them, then any `--folds` run joins)"
        )
        return 0
    lines = [
        f"cross-validation folder (a model folder): {output}",
        f"wall time: {result.wall_seconds / 60:.1f} min",
    ]
    from medseg.engine.cv_layout import FIGURE_LABELS, FIGURES, RAW

    summary = result.summary
    if summary["warning"]:
        lines.append(f"warning: {summary['warning']}")
    for name, figs in summary["structures"].items():
        lines.append(f"{name}, out of fold (after the chosen postprocessing; raw: before it):")
        for key in FIGURES:
            lines.append(
                f"  {FIGURE_LABELS[key]}: {figs[key]['text']}; raw {figs[key + RAW]['text']}"
            )
    lines.append(f"predict with: medseg predict --model {output} SCANS -o OUT")
    typer.echo("\n".join([*lines, RESEARCH_USE_NOTICE]))
    return 0


def _resume_argument(extra: list[str]) -> str | None:
    """``--resume [PATH]`` from the arguments Typer left over.

    Parsed by hand because Typer options cannot take an optional value (``--resume`` alone
    and ``--resume PATH`` must both work, in any position).
    """
    if not extra:
        return None
    if extra[0] != "--resume" or len(extra) > 2 or (len(extra) == 2 and extra[1].startswith("-")):
        raise ConfigError(
            f"unexpected argument(s) {' '.join(extra)}; see `medseg train --help` "
            "(--resume takes at most one path)"
        )
    return extra[1] if len(extra) == 2 else RESUME_LAST


def register(app: typer.Typer) -> None:
    """Add this module's subcommands to the medseg app."""
    app.command(
        "train",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    )(train_command)
