"""CLI commands ``medseg predict``, ``medseg evaluate`` and ``medseg export``: thin wrappers
over :mod:`medseg.inference`. Heavy imports happen inside the commands (fast ``--help``)."""

from __future__ import annotations

from pathlib import Path

import typer

from medseg import RESEARCH_USE_NOTICE
from medseg.cli import dicomweb_options


def _parse_axes(text: str | None) -> tuple[int, ...] | None:
    from medseg.data.slicing import check_axes

    return check_axes(text) if text else None


def predict(
    inputs: list[str] = typer.Argument(
        None,
        help="NIfTI/NRRD/MHA files, DICOM series folders, or folders of cases (CASE_0000.nii.gz ...); "
        "or a PACS: dicomweb+https://HOST/dicom-web with --study or --query (docs/pacs.md).",
    ),
    output: Path = typer.Option(None, "--output", "-o", help="Output folder."),
    model: Path | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Checkpoint (.pt), export (.onnx / TorchScript .pt) or model folder (model.json: "
        "the cross-validation ensemble); default: bundled demo model.",
    ),
    tta: bool | None = typer.Option(
        None,
        "--tta/--no-tta",
        help="Average over the four in-plane flips (4x slower); default: as the model was "
        "trained (on for models planned by `medseg plan`).",
    ),
    axes: str | None = typer.Option(
        None, "--axes", help="Ensemble over canonical axes, e.g. 0,1,2."
    ),
    save_probabilities: bool = typer.Option(
        False, "--save-probabilities", help="Also write <case>_probabilities.nii.gz."
    ),
    dicom_formats: str = typer.Option(
        "seg",
        "--format",
        help="DICOM output for DICOM inputs: seg (DICOM-SEG), rtstruct (RTSTRUCT) or seg,rtstruct.",
    ),
    overwrite: bool = typer.Option(
        False,
        "--overwrite",
        help="Redo cases that are already done, and replace files in OUTPUT that medseg did "
        "not write (e.g. ground-truth labels; never an input).",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Slices per forward pass."),
    series: str | None = typer.Option(
        None, "--series", help="SeriesInstanceUID when DICOM folders hold several series."
    ),
    channel: int | None = typer.Option(
        None,
        "--channel",
        min=0,
        help="Index to take from 4D/multi-channel inputs (a 4D file with as many channels "
        "as the model expects is used whole, in order).",
    ),
    min_lesion_ml: float | None = typer.Option(
        None, "--min-lesion-ml", min=0, help="Remove components smaller than this (mL)."
    ),
    largest_component: bool = typer.Option(
        False, "--largest-component", help="Keep only the largest component per class."
    ),
    no_postprocessing: bool = typer.Option(
        False,
        "--no-postprocessing",
        help="Skip the model's own postprocessing (chosen by cross-validation, in model.json).",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    num_parts: int = typer.Option(
        1, "--num-parts", help="Split the cases into N parts (a job array); see --part-id."
    ),
    part_id: int = typer.Option(
        0, "--part-id", help="Predict part K (0 to N-1) of --num-parts, e.g. $SLURM_ARRAY_TASK_ID."
    ),
    merge_parts: Path | None = typer.Option(
        None,
        "--merge-parts",
        help="Write OUT/summary.csv of a finished --num-parts run (no INPUTS needed).",
    ),
    engine: str = typer.Option(
        "local", "--engine", help="local, or ray: a Ray cluster (pip install medseg[cluster])."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster: auto, HOST:6379 or ray://HOST:10001 (default: local)."
    ),
    gpus_per_worker: float = typer.Option(
        1.0, "--gpus-per-worker", help="GPUs per Ray model worker (0.5: two share a GPU)."
    ),
    cpu_workers: int = typer.Option(
        1, "--cpu-workers", help="Ray model workers when the cluster has no GPU."
    ),
    study: str | None = dicomweb_options.STUDY,
    query: str | None = dicomweb_options.QUERY,
    limit: int | None = dicomweb_options.LIMIT,
    all_studies: bool = dicomweb_options.ALL_STUDIES,
    push: bool = typer.Option(False, "--push", help="PACS: store each DICOM-SEG back (STOW-RS)."),
    ca_bundle: Path | None = dicomweb_options.CA_BUNDLE,
    timeout: float = dicomweb_options.TIMEOUT,
    retries: int = dicomweb_options.RETRIES,
) -> int:
    """Segment scans: masks on the source grid, DICOM-SEG/RTSTRUCT for DICOM input, readouts JSON + summary.csv."""
    from medseg.device import DistInfo
    from medseg.errors import ConfigError
    from medseg.inference import PostprocessConfig
    from medseg.inference.batch import predict_folder
    from medseg.io.dicomweb import is_dicomweb_url

    if merge_parts is not None:
        if inputs or output is not None:
            raise ConfigError(
                f"--merge-parts {merge_parts}: merges the reports already in that folder and "
                "takes no INPUTS or --output; run it alone: medseg predict --merge-parts OUT"
            )
        return _merge_parts(merge_parts, overwrite)
    if not inputs or output is None:
        raise ConfigError(
            "predict: expected INPUTS and --output DIR (or --merge-parts OUT to merge the "
            "summary of a finished --num-parts run)"
        )
    pacs = {"study": study, "query": query, "limit": limit, "all_studies": all_studies,
            "push": push, "ca_bundle": ca_bundle, "timeout": timeout, "retries": retries}  # fmt: skip
    from medseg.inference.batch import check_dicom_formats

    try:
        formats = check_dicom_formats(dicom_formats)
    except ConfigError as err:  # the library names its parameter; here it is --format
        raise ConfigError(str(err).replace("dicom_formats", "--format", 1)) from err
    info = DistInfo.from_env()
    postprocess = None  # the model's own rules (a model folder's, chosen on out-of-fold data)
    if no_postprocessing or largest_component or min_lesion_ml:
        postprocess = PostprocessConfig(
            largest_component=largest_component, min_component_ml=min_lesion_ml
        )
    options = {
        "model": model,
        "device": device,
        "tta": tta,
        "axes": _parse_axes(axes),
        "batch_size": batch_size,
        "postprocess": postprocess,
        "save_probabilities": save_probabilities,
        "overwrite": overwrite,
        "series": series,
        "progress": not quiet,
        "channel": channel,
        "num_parts": num_parts,
        "part_id": part_id,
        "dicom_formats": formats,
    }
    if any(is_dicomweb_url(i) for i in inputs):
        if engine != "local":  # the PACS path downloads and predicts study by study, here
            raise ConfigError(
                f"--engine {engine}: a PACS (dicomweb+https://...) is predicted on this machine "
                "only; drop --engine, or download the studies into folders and predict those "
                f"with --engine {engine}"
            )
        return _predict_dicomweb(inputs, output, options, pacs)
    if study or query or push or limit or all_studies or ca_bundle:
        raise ConfigError(
            "--study, --query, --limit, --all, --push and --ca-bundle apply to a PACS "
            "(INPUTS: dicomweb+https://HOST/dicom-web); see docs/pacs.md"
        )
    if engine != "local":
        return _predict_ray(
            engine, [Path(i) for i in inputs], output, options, address, gpus_per_worker,
            cpu_workers,
        )  # fmt: skip
    result = predict_folder([Path(i) for i in inputs], output, info=info, **options)
    if info.is_main:
        part = f"part {part_id} of {num_parts}: " if num_parts != 1 else ""
        summary = result.summary or "written when every part has finished (or --merge-parts)"
        typer.echo(
            f"{part}{len(result.cases)} case(s): {len(result.done)} predicted, "
            f"{len(result.skipped)} already done (--overwrite to redo)"
            f"{' on rank 0' if info.enabled else ''}, {len(result.failures)} failed; "
            f"summary: {summary}"
        )
        for case, error in result.failures:
            typer.echo(f"failed: {case}: {error}", err=True)
        typer.echo(RESEARCH_USE_NOTICE)
    return 1 if result.failures else 0


def _predict_ray(engine, inputs, output, options, address, gpus_per_worker, cpu_workers) -> int:
    from medseg.errors import ConfigError
    from medseg.inference.ray_engine import format_stage_summary, predict_folder_ray

    if engine != "ray":
        raise ConfigError(f"--engine {engine}: expected local or ray")
    result = predict_folder_ray(
        inputs, output, address=address, gpus_per_worker=gpus_per_worker,
        cpu_workers=cpu_workers, **options,
    )  # fmt: skip
    summary = result.summary or "written when every part has finished (or --merge-parts)"
    typer.echo(
        f"{len(result.cases)} case(s): {len(result.done)} predicted, {len(result.skipped)} "
        f"already done (--overwrite to redo), {len(result.failures)} failed; summary: {summary}"
    )
    typer.echo("\n".join(["per stage (ray):", *format_stage_summary(result)]))
    for case, error in result.failures:
        typer.echo(f"failed: {case}: {error}", err=True)
    typer.echo(RESEARCH_USE_NOTICE)
    return 1 if result.failures else 0


def _predict_dicomweb(inputs: list[str], output: Path, options: dict, pacs: dict) -> int:
    from medseg.errors import ConfigError
    from medseg.inference.pacs import predict_dicomweb

    series = options.pop("series")
    local = {"--channel": options.pop("channel") is not None, "--num-parts": options.pop("num_parts") != 1,
             "--part-id": options.pop("part_id") != 0}  # fmt: skip
    unused = [flag for flag, given in local.items() if given]
    if len(inputs) != 1 or unused:
        raise ConfigError(
            f"predict {inputs[0]}: a PACS is one URL and takes no "
            f"{', '.join(unused) or 'other INPUTS'}; see docs/pacs.md"
        )
    link = [pacs.pop(k) for k in ("ca_bundle", "timeout", "retries")]
    result = predict_dicomweb(
        inputs[0], output, series=series, **dicomweb_options.connection(inputs[0], *link),
        **pacs, **options,
    )  # fmt: skip
    typer.echo(
        f"{len(result.studies)} study(ies): {len(result.done)} predicted, {len(result.skipped)} "
        f"already done (--overwrite to redo), {len(result.failures)} failed; summary: "
        f"{result.summary}"
    )
    for study, series_uid in result.pushed.items():
        typer.echo(f"pushed: study {study}: DICOM-SEG series {series_uid}")
    for study, error in result.failures:
        typer.echo(f"failed: {study}: {error}", err=True)
    typer.echo(RESEARCH_USE_NOTICE)
    return 1 if result.failures else 0


def _merge_parts(output: Path, overwrite: bool) -> int:
    from medseg.api import merge_prediction_parts

    summary, failures = merge_prediction_parts(output, overwrite=overwrite)
    typer.echo(f"merged {summary} ({len(failures)} failed case(s))")
    for case, error in failures:
        typer.echo(f"failed: {case}: {error}", err=True)
    typer.echo(RESEARCH_USE_NOTICE)
    return 1 if failures else 0


def evaluate(
    prediction: Path = typer.Argument(..., help="Predicted mask file or folder."),
    reference: Path = typer.Argument(..., help="Reference (ground-truth) mask file or folder."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Per-case CSV (summary beside it as *_summary.csv)."
    ),
    labels: list[str] | None = typer.Option(
        None,
        "--labels",
        help="Labels to score: 1 / 1,2,4 (separate classes) or region=1,2,3,4; repeatable.",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace existing --output tables (never an input)."
    ),
    min_lesion_ml: float = typer.Option(
        0.0,
        "--min-lesion-ml",
        min=0.0,
        help="Reference components under this volume (mL) are not lesions (neither detected "
        "nor missed): manual labels carry few-voxel fragments. Cross-validation uses 0.02.",
    ),
) -> int:
    """Dice, IoU, HD95 and ASSD (mm), volume difference and lesion detection per class.

    A reference case with no prediction counts as Dice 0 (flagged ``missing``); exit code 1.
    """
    import pandas as pd

    from medseg.api import evaluate as run

    per_case, summary = run(
        prediction, reference, labels, output, overwrite=overwrite, min_lesion_ml=min_lesion_ml
    )
    columns = [
        "case",
        "class",
        "dice",
        "iou",
        "hd95_mm",
        "assd_mm",
        "volume_diff_ml",
        "tp",
        "fn",
        "fp",
        "missing",
    ]
    with pd.option_context(
        "display.width", 160, "display.max_columns", 30, "display.float_format", "{:.4f}".format
    ):
        typer.echo(per_case[columns].to_string(index=False))
        typer.echo("\nsummary (mean over cases; nan distances excluded):")
        keep = ["class", "cases", "dice_mean", "dice_std", "iou_mean", "hd95_mm_mean", "assd_mm_mean",
                "volume_diff_ml_mean", "tp", "fn", "fp", "lesion_sensitivity"]  # fmt: skip
        typer.echo(summary[keep].to_string(index=False))
    if output is not None:
        typer.echo(f"wrote {output} and {output.name.removesuffix('.csv')}_summary.csv")
    missing = sorted(set(per_case.loc[per_case["missing"], "case"]))
    typer.echo(RESEARCH_USE_NOTICE)
    if missing:
        typer.echo(
            f"missing: {len(missing)} reference case(s) have no prediction and count as Dice 0: "
            f"{', '.join(missing[:20])}{' ...' if len(missing) > 20 else ''}",
            err=True,
        )
        return 1
    return 0


def export(
    output: Path = typer.Option(
        ..., "--output", "-o", help="Output file (.onnx, .pt for TorchScript, .zip for a package)."
    ),
    fmt: str = typer.Option(..., "--format", "-f", help="torchscript, onnx or package."),
    model: Path | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Checkpoint (.pt) or model folder (its folds become one averaged network); "
        "default: bundled demo model.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output file."),
    version: str = typer.Option(
        "1.0.0", "--package-version", help="The package's version (--format package)."
    ),
) -> None:
    """Export a checkpoint to TorchScript or ONNX with its preprocessing and class metadata,
    or as a package to ship (--format package: model, model card, metadata, checksums)."""
    from medseg.api import export_model, export_package

    if fmt == "package":
        manifest = export_package(output, model, version=version, overwrite=overwrite)
        typer.echo(
            f"wrote {output} (package {manifest['name']} {manifest['version']}, medseg "
            f"{manifest['medseg_version']}); install it with `medseg models install {output}`"
        )
        typer.echo(RESEARCH_USE_NOTICE)
        return
    meta = export_model(output, fmt, model, overwrite=overwrite)
    typer.echo(
        f"wrote {output} ({fmt}); max |logit difference| vs PyTorch on CPU: {meta['max_abs_diff']:.2e}; "
        f"classes: {', '.join(meta['class_names'])}"
    )
    typer.echo(RESEARCH_USE_NOTICE)


def register(app: typer.Typer) -> None:
    """Add this module's subcommands to the medseg app."""
    app.command("predict")(predict)
    app.command("evaluate")(evaluate)
    app.command("export")(export)
