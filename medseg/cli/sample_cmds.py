"""CLI command ``medseg sample-data``: write the synthetic sample cases (thin wrapper)."""

from __future__ import annotations

from pathlib import Path

import typer

from medseg import RESEARCH_USE_NOTICE


def register(app: typer.Typer) -> None:
    """Add this module's subcommands to the ``medseg`` app."""
    app.command("sample-data")(sample_data)


def sample_data(
    output: Path = typer.Option(
        Path("sample_data"), "--output", "-o", help="Folder to write into."
    ),
    seed: int = typer.Option(0, "--seed", help="Run seed; the same seed gives identical arrays."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace brain_mr/, ct_abdomen/ and README.md in OUTPUT."
    ),
    montage: Path | None = typer.Option(
        None, "--montage", help="Also write a PNG montage (middle tumour slices with contours)."
    ),
) -> None:
    """Generate synthetic brain-MR (8 cases, nnU-Net layout) and abdominal-CT (NIfTI + DICOM) cases."""
    from medseg.synthetic import brain_case, ct_case, save_montage, write_sample_data

    write_sample_data(output, seed=seed, overwrite=overwrite, progress=True)
    typer.echo(f"wrote synthetic sample data to {output} (seed {seed}). {RESEARCH_USE_NOTICE}")
    if montage is not None:
        cases = [(f"brain_{n:03d}", *brain_case(seed, n)) for n in range(1, 9)]
        cases.append(("ct_001", *ct_case(seed)))
        save_montage(cases, montage, columns=5)
        typer.echo(f"montage: {montage}")
