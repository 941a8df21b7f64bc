"""CLI command ``medseg view``: start the Streamlit viewer (a thin wrapper over
:func:`medseg.viewer.launch.launch`)."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from medseg.cli import dicomweb_options

if TYPE_CHECKING:
    from medseg.io.dicomweb import SeriesInfo
    from medseg.viewer.launch import PacsOrigin


def view(
    paths: list[Path] | None = typer.Argument(
        None,
        help="Case to open: one scan (NIfTI, DICOM series folder, NRRD/MHA); several files "
        "= the channels in order; a case folder (nnU-Net _000N files or named sequences such "
        "as flair.nii.gz, t1c.nii.gz); or a dataset with --case. "
        "Default: the last sample brain case with its ground truth.",
    ),
    case: str | None = typer.Option(
        None, "--case", help="Case id to open from the dataset folder/manifest given as PATH."
    ),
    port: int | None = typer.Option(
        None, "--port", help="Port (default: 8501, or a free one when that is taken)."
    ),
    host: str = typer.Option(
        "127.0.0.1",
        "--host",
        help="Address to listen on (default 127.0.0.1: this machine only). Any other, e.g. "
        "0.0.0.0, requires an access token; see docs/security.md.",
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        help="Access token for the page (default: $MEDSEG_VIEW_TOKEN; generated and printed "
        "for a non-local --host).",
    ),
    data_root: Path | None = typer.Option(
        None, "--data-root", help="Server-side folder users may browse; never left."
    ),
    gt: Path | None = typer.Option(None, "--gt", help="Ground-truth mask for PATH (same grid)."),
    labels: str | None = typer.Option(
        None,
        "--labels",
        help="Names of the ground truth's label values, NAME=VALUE,... (e.g. "
        "necrosis=1,oedema=2,enhancing=4); default: the case's dataset.json, else the model's.",
    ),
    gt_map: str | None = typer.Option(
        None,
        "--gt-map",
        help="Map ground-truth values onto the model's, FROM=TO,... (e.g. 1=2,4=3) when the "
        "two use different label schemes.",
    ),
    model: Path | None = typer.Option(
        None,
        "--model",
        help="Checkpoint, export or model folder (cross-validation ensemble) to predict with "
        "(default: the bundled model).",
    ),
    runs_dir: Path | None = typer.Option(
        None,
        "--runs-dir",
        help="Folder of training runs whose checkpoints are offered (default: ./runs).",
    ),
    device: str = typer.Option(
        "auto", "--device", help="Inference device: auto, cpu, cuda, cuda:1."
    ),
    no_browser: bool = typer.Option(
        False, "--no-browser", help="Do not open a browser tab (servers, SSH sessions)."
    ),
    dicomweb: str | None = typer.Option(
        None,
        "--dicomweb",
        help="A PACS (dicomweb+https://HOST/dicom-web): list its studies, or open one with "
        "--study UID [--series UID].",
    ),
    show_identifiers: bool = typer.Option(
        False, "--show-identifiers", help="With --dicomweb: show patient names and IDs."
    ),
    study: str | None = dicomweb_options.STUDY,
    series: str | None = typer.Option(
        None, "--series", help="PACS: the SeriesInstanceUID (default: the study's image series)."
    ),
    gt_series: str | None = typer.Option(
        None, "--gt-series", help="PACS: a SEG series of the study, shown as the ground truth."
    ),
    with_seg: bool = typer.Option(
        False, "--with-seg", help="PACS: show the study's one SEG series as the ground truth."
    ),
    ca_bundle: Path | None = dicomweb_options.CA_BUNDLE,
    timeout: float = dicomweb_options.TIMEOUT,
    retries: int = dicomweb_options.RETRIES,
) -> None:
    """Open the viewer: scans with predicted masks, slice by slice, in your browser.

    Research use only. Stop the server with Ctrl-C. Serves on 127.0.0.1 unless --host is
    given; a non-local --host requires the printed access token (docs/security.md).
    """
    from medseg.errors import MedsegError
    from medseg.viewer.launch import ViewerConfig, default_sample_root, launch

    link = (ca_bundle, timeout, retries)
    if dicomweb is None and (study or series):
        raise MedsegError(
            "--study and --series name a study of a PACS; add --dicomweb "
            "dicomweb+https://HOST/dicom-web (docs/pacs.md)"
        )
    if dicomweb is not None and paths:
        raise MedsegError(
            f"--dicomweb {dicomweb} opens a study of the PACS, not {paths[0]}; pass one of them"
        )
    if (gt_series is not None or with_seg) and (dicomweb is None or study is None):
        raise MedsegError(
            "--gt-series and --with-seg load a SEG series of a PACS study; add --dicomweb "
            "dicomweb+https://HOST/dicom-web --study UID (docs/pacs.md)"
        )
    if gt_series is not None and with_seg:
        raise MedsegError("--gt-series UID names the SEG series, --with-seg finds it; pass one")
    if dicomweb is not None and study is None:
        if series is not None:
            raise MedsegError("--series UID needs --study UID (the study that holds it)")
        return _list_dicomweb(dicomweb, show_identifiers, link)
    path = paths[0] if paths else None
    if case is not None and path is None:
        raise MedsegError(
            f"--case {case} given without a dataset; medseg view DATASET --case {case}"
        )
    config = ViewerConfig(
        path=path,
        more_paths=tuple(paths[1:]) if paths else (),
        case_id=case,
        gt=gt,
        labels=labels,
        gt_map=gt_map,
        data_root=data_root,
        model=_installed_or_path(model),
        runs_dir=runs_dir if runs_dir is not None else Path.cwd() / "runs",
        sample_root=default_sample_root(),
        device=device,
    )
    if gt is not None and path is None:
        raise MedsegError(
            f"--gt {gt} given without a scan; pass the scan too: medseg view SCAN --gt {gt}"
        )
    with contextlib.ExitStack() as stack:
        if dicomweb is not None:  # removed when the viewer process has exited
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="medseg-dicomweb-"))
            truth = gt_series if gt_series is not None else ("" if with_seg else None)
            path, origin, seg = _download_series(dicomweb, study, series, Path(folder), link, truth)
            config = dataclasses.replace(config, path=path, pacs=origin, gt=seg)
        code = launch(config, port=port, open_browser=not no_browser, host=host, token=token)
    if code not in (0, -2, 130):  # Ctrl-C is a normal way to stop the server
        raise typer.Exit(code)


def _download_series(
    url: str,
    study: str | None,
    series: str | None,
    folder: Path,
    link: tuple,
    truth: str | None = None,
) -> tuple[Path, PacsOrigin, Path | None]:
    """WADO-RS: the study's chosen series (``series``, else its one image series) into
    ``folder/STUDY_UID`` (mode 0700); returns that folder, a case the viewer opens, where it
    came from (for pushing the reviewed DICOM-SEG back) and the ground truth: the SEG series
    ``truth`` (``""``: the study's one SEG series; ``None``: none) in ``folder/seg``."""
    from medseg.errors import DicomwebError
    from medseg.inference.pacs import choose_series
    from medseg.io.dicomweb import PREFIX, DicomwebServer, check_uid
    from medseg.viewer.launch import PacsOrigin

    server = DicomwebServer(url, **dicomweb_options.connection(url, *link))
    study = check_uid(study or "", "--study")
    series = None if series is None else check_uid(series, "--series")
    where = f"{PREFIX}{server.url}: study {study}"
    listed = server.series_of(study)
    asked = next((s for s in listed if s.uid == series), None)
    if asked is not None and not asked.is_image:
        raise DicomwebError(
            f"{where}: series {asked.label()} holds no images (--series); pick an image "
            f"series: {'; '.join(s.label() for s in listed if s.is_image) or '(none)'}"
        )
    chosen = choose_series(where, listed, series, "other")
    seg = None if truth is None else _seg_series(where, listed, truth or None)
    server.download_series(study, chosen.uid, folder / study)
    gt = None
    if seg is not None:
        gt = server.download_series(study, seg.uid, folder / "seg")[0]
    return folder / study, PacsOrigin(url, study, chosen.uid, *link), gt


def _seg_series(where: str, listed: list[SeriesInfo], wanted: str | None) -> SeriesInfo:
    """The SEG series to show as the ground truth: ``wanted`` (--gt-series), else the
    study's only one (--with-seg)."""
    from medseg.errors import DicomwebError

    segs = [s for s in listed if s.modality.upper() == "SEG"]
    if wanted is not None:
        hit = next((s for s in listed if s.uid == wanted), None)
        if hit is None or hit not in segs:
            found = hit.label() if hit else "no such series"
            raise DicomwebError(
                f"{where}: --gt-series {wanted}: {found}; expected a SEG series of the study: "
                f"{'; '.join(s.label() for s in segs) or '(none)'}"
            )
        return hit
    if len(segs) != 1:
        raise DicomwebError(
            f"{where} holds {len(segs)} SEG series"
            f"{': ' + '; '.join(s.label() for s in segs) if segs else ''}; --with-seg needs "
            "exactly one: pick it with --gt-series UID" + ("" if segs else ", or drop --with-seg")
        )
    return segs[0]


def _list_dicomweb(url: str, show_identifiers: bool, link: tuple) -> None:
    """The PACS's studies, one line each (docs/pacs.md); patients as pseudonyms by default."""
    from medseg import RESEARCH_USE_NOTICE
    from medseg.io.dicomweb import DicomwebServer, list_studies

    server = DicomwebServer(url, **dicomweb_options.connection(url, *link))
    rows = list_studies(server, show_identifiers=show_identifiers)
    if rows:
        widths = {k: max(len(k), *(len(r[k] or "-") for r in rows)) for k in rows[0]}
        for row in [{k: k for k in widths}, *rows]:
            typer.echo("  ".join(f"{row[k] or '-':<{w}}" for k, w in widths.items()).rstrip())
    typer.echo(
        f"{len(rows)} study(ies); open one: medseg view --dicomweb {url} --study UID; "
        f"predict one: medseg predict {url} --study UID -o OUT"
    )
    typer.echo(RESEARCH_USE_NOTICE)


def _installed_or_path(model: Path | None) -> Path | None:
    """``--model``, or the installed model it names (imports torch only for a name)."""
    if model is None:
        return None
    if model.exists():  # a checkpoint or model folder: the store (and torch, ~2 s) not needed
        return model
    from medseg.inference.store import resolve_model

    return resolve_model(model)


def register(app: typer.Typer) -> None:
    """Add ``medseg view`` to the medseg app."""
    app.command("view")(view)
