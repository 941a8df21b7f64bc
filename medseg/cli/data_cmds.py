"""CLI commands for the training data pipeline: ``validate-data``, ``preview-data`` and
``import-dicom`` (thin wrappers over :func:`medseg.api.validate_data`,
:func:`medseg.api.preview_data` and :func:`medseg.data.dicom_import.import_dicom`)."""

from __future__ import annotations

from pathlib import Path

import typer

from medseg.cli import dicomweb_options


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


def import_dicom(
    sources: list[str] = typer.Argument(  # str: a Path would mangle a URL's '//'
        ...,
        help="Study folders (subfolders scanned): image series + DICOM-SEG or RTSTRUCT; or a "
        "PACS: dicomweb+https://HOST/dicom-web with --study or --query (docs/dicom_datasets.md).",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Dataset folder to create."),
    labels_from: str | None = typer.Option(
        None, "--labels-from", help="seg or rtstruct (default: whichever each study holds)."
    ),
    name_map: str | None = typer.Option(
        None,
        "--map",
        help='Segment/ROI name -> class, e.g. "GTV=tumour,GTVn=tumour,Liver=2" '
        "(default: sorted names -> 1..N).",
    ),
    ignore_unmapped: bool = typer.Option(
        False, "--ignore-unmapped", help="Leave names missing from --map out (background)."
    ),
    id_map: Path | None = typer.Option(
        None, "--id-map", help="Case id -> patient/study CSV (default: DATASET.id_map.csv)."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing dataset and id map."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    study: str | None = dicomweb_options.STUDY,
    query: str | None = dicomweb_options.QUERY,
    limit: int | None = dicomweb_options.LIMIT,
    all_studies: bool = dicomweb_options.ALL_STUDIES,
    ca_bundle: Path | None = dicomweb_options.CA_BUNDLE,
    timeout: float = dicomweb_options.TIMEOUT,
    retries: int = dicomweb_options.RETRIES,
) -> int:
    """Turn DICOM studies with DICOM-SEG or RTSTRUCT labels into an nnU-Net v2 dataset."""
    from medseg import RESEARCH_USE_NOTICE
    from medseg.data.dicom_import import import_dicom as run
    from medseg.data.validation import format_problems
    from medseg.io.dicomweb import is_dicomweb_url

    url = next((s for s in sources if is_dicomweb_url(s)), None)
    link = dicomweb_options.connection(url, ca_bundle, timeout, retries) if url else {}
    result = run(
        sources, output, labels_from=labels_from, name_map=name_map,
        ignore_unmapped=ignore_unmapped, id_map=id_map, overwrite=overwrite, progress=not quiet,
        study=study, query=query, limit=limit, all_studies=all_studies, **link,
    )  # fmt: skip
    labels = ", ".join(f"{v} {name}" for name, v in result.labels.items())
    how = "--map" if name_map else "sorted names; change with --map"
    typer.echo(f"labels: {labels} ({how})")
    if result.ignored:
        typer.echo(f"left out (not in --map): {', '.join(result.ignored)}")
    typer.echo(f"wrote {result.dataset}: {len(result.cases)} case(s), case ids are pseudonyms")
    typer.echo(
        f"id map: {result.id_map} links case ids to patients: keep it apart from the dataset "
        "and do not share it"
    )
    if result.problems:
        typer.echo(f"validate-data: {len(result.problems)} problem(s); fix them before training")
        typer.echo(format_problems(result.problems))
    else:
        typer.echo("validate-data: dataset OK")
    typer.echo(RESEARCH_USE_NOTICE)
    return 1 if result.problems else 0


def register(app: typer.Typer) -> None:
    """Add this module's subcommands to the medseg app."""
    app.command("validate-data")(validate_data)
    app.command("preview-data")(preview_data)
    app.command("import-dicom")(import_dicom)
