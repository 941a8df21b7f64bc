"""CLI commands ``medseg info`` and ``medseg convert``: thin wrappers over :mod:`medseg.io`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from medseg import RESEARCH_USE_NOTICE

if TYPE_CHECKING:
    from medseg.io.volume import Volume

SERIES_HELP = "SeriesInstanceUID (a unique prefix or the description works) when a DICOM folder holds several series."
CHANNEL_HELP = "Index along the 4th axis of a 4D file (e.g. 0 for the first modality)."


def info(
    path: Path = typer.Argument(
        ..., help="NIfTI / NRRD / MHA file, DICOM folder or DICOM(-SEG) file."
    ),
    series: str | None = typer.Option(None, "--series", help=SERIES_HELP),
    channel: int | None = typer.Option(None, "--channel", help=CHANNEL_HELP),
    show_identifiers: bool = typer.Option(
        False,
        "--show-identifiers",
        help="Also print DICOM patient identifiers (hidden by default).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON object instead of text."),
    mask: Path | None = typer.Option(
        None,
        "--mask",
        help="A label map on the same grid: per-label mL and intensity inside each label.",
    ),
    align: bool = typer.Option(
        False,
        "--align",
        help="Put --mask on the image grid by geometry (flips/permutations/resampling) first.",
    ),
) -> None:
    """Shape, spacing, orientation, intensities and mask labels (mL) of a scan; no patient identifiers."""
    from medseg.io import list_dicom_series, read_volume
    from medseg.io.info import describe, format_info, format_mask_stats

    if path.is_dir() and series is None:
        found = list_dicom_series(path)
        images = [s for s in found if s["modality"] not in ("SEG", "RTSTRUCT", "SR")]
        if len(images) > 1:
            _print_series(path, found, as_json)
            return
    volume = read_volume(path, series=series, channel=channel)
    data = describe(volume, show_identifiers=show_identifiers)
    if mask is not None:
        data["mask"] = _mask_stats(volume, mask, align)
    if as_json:
        data["notice"] = RESEARCH_USE_NOTICE
        typer.echo(json.dumps(data, indent=2))
    else:
        typer.echo(format_info(data))
        if mask is not None:
            typer.echo(f"mask:         {mask} ({data['mask']['alignment']})")
            typer.echo(format_mask_stats(data["mask"]["labels"], data.get("units", "")))
        typer.echo(RESEARCH_USE_NOTICE)


def _mask_stats(image: Volume, mask_path: Path, align: bool) -> dict:
    """Per-label stats of ``mask_path`` on ``image`` (same grid, or aligned with ``align``)."""
    from medseg.errors import GeometryMismatchError
    from medseg.io import align_to_grid, check_same_grid, read_volume
    from medseg.io.info import describe_mask_on_image

    mask = read_volume(mask_path)
    if align:
        mask = align_to_grid(mask, image, interpolation="nearest")
        alignment = mask.metadata["alignment"]
    else:
        try:
            check_same_grid(image, mask, "mask")
        except GeometryMismatchError as err:
            raise GeometryMismatchError(f"{err}. To align it by geometry, add --align") from err
        alignment = "same grid"
    return {
        "source": str(mask_path),
        "alignment": alignment,
        "labels": describe_mask_on_image(image, mask),
    }


def _print_series(path: Path, found: list[dict], as_json: bool) -> None:
    if as_json:
        data = {"source": str(path), "series": found, "notice": RESEARCH_USE_NOTICE}
        typer.echo(json.dumps(data, indent=2))
        return
    typer.echo(f"{path} holds {len(found)} DICOM series:")
    for s in found:
        uid = s["uid"] or f"{s['key']} (no SeriesInstanceUID)"
        typer.echo(
            f"  {uid}  '{s['description']}'  {s['modality']}  {s['n_files']} file(s)  "
            f"{s['rows']}x{s['columns']}"
        )
    typer.echo("pick one with --series UID (a unique UID prefix or the description also works)")
    typer.echo(RESEARCH_USE_NOTICE)


def convert(
    input: Path = typer.Argument(..., help="DICOM folder/file, NIfTI, NRRD, MHA/MHD or DICOM-SEG."),
    output: Path = typer.Argument(
        ..., help="Output file: .nii.gz (default choice), .nii, .nrrd or .mha."
    ),
    series: str | None = typer.Option(None, "--series", help=SERIES_HELP),
    channel: int | None = typer.Option(None, "--channel", help=CHANNEL_HELP),
    canonical: bool = typer.Option(
        False,
        "--canonical",
        help="Reorient to RAS voxel order first (lossless axis flips/permutations).",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace OUTPUT if it exists (never the input)."
    ),
) -> None:
    """Convert a scan or mask to NIfTI (or NRRD/MHA) keeping its exact geometry."""
    from medseg.io import check_output_path, read_volume, write_volume

    check_output_path(output, overwrite=overwrite, inputs=[input])  # fail before the slow read
    volume = read_volume(input, series=series, channel=channel)
    if canonical:
        volume = volume.to_canonical()
    written = write_volume(volume, output, overwrite=overwrite)
    spacing = " x ".join(f"{s:g}" for s in volume.spacing)
    typer.echo(
        f"wrote {written}: shape {volume.shape}, spacing {spacing} mm, "
        f"orientation {''.join(volume.orientation)}, dtype {volume.array.dtype}"
    )
    typer.echo(RESEARCH_USE_NOTICE)


def register(app: typer.Typer) -> None:
    """Add ``info`` and ``convert`` to the medseg app."""
    app.command("info")(info)
    app.command("convert")(convert)
