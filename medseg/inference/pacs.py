"""Predict studies of a PACS over DICOMweb (``medseg predict dicomweb+https://...``).

Each study's series comes down through WADO-RS into a private temporary folder (mode 0700,
deleted afterwards, whatever happens), then goes through the same prediction as a local
DICOM folder (:func:`medseg.inference.batch.predict_cases`, one case per study named by its
StudyInstanceUID): the same masks, DICOM-SEG, reports and ``summary.csv``. A study whose
case is done is skipped before anything is downloaded (the batch skip rule). ``push`` sends
each case's DICOM-SEG back through STOW-RS and records the new series in the case's report,
so a rerun pushes only what has not been pushed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg.device import resolve_device
from medseg.errors import ConfigError, DicomwebError
from medseg.inference.batch import (
    Case,
    case_done,
    case_outputs,
    check_output_dir,
    merge_summary,
    predict_cases,
)
from medseg.inference.postprocess import PostprocessConfig
from medseg.io.atomic import make_output_dir, write_json
from medseg.io.dicomweb import (
    DEFAULT_QUERY_LIMIT,
    PREFIX,
    Credentials,
    DicomwebServer,
    SeriesInfo,
    check_selection,
    check_uid,
)

logger = logging.getLogger(__name__)

#: DICOM Modality -> the model's ``preprocessing.modality``
MODALITIES = {"CT": "ct", "MR": "mr"}


@dataclasses.dataclass
class PacsResult:
    """What :func:`predict_dicomweb` did: the studies, those predicted now, those already
    done, the failures ``(study, error)``, the summary CSV and the pushed SEG series
    ``{study: SeriesInstanceUID}``."""

    studies: list[str]
    done: list[str]
    skipped: list[str]
    failures: list[tuple[str, str]]
    summary: Path | None
    pushed: dict[str, str] = dataclasses.field(default_factory=dict)


def check_channels(channels: int) -> None:
    """A DICOM series is one channel: a model that expects several cannot use it."""
    if channels != 1:
        raise DicomwebError(
            f"the model expects {channels} channels, a DICOM series gives one; predict "
            "multi-channel models from files (one per channel), or pass a single-channel --model"
        )


def choose_series(
    where: str, series: Sequence[SeriesInfo], wanted: str | None, modality: str
) -> SeriesInfo:
    """The series to predict among a study's ``series`` (``where`` names the study in
    messages): ``wanted`` (a SeriesInstanceUID), else the one image series whose modality
    suits the model (``modality``: ``ct``, ``mr`` or ``other``)."""
    images = [s for s in series if s.is_image]
    if not images:
        raise DicomwebError(
            f"{where} has no image series (only {', '.join(sorted({s.modality for s in series}))}); "
            "pick a study with CT or MR images"
        )
    usable = [s for s in images if modality == "other" or MODALITIES.get(s.modality) == modality]
    if wanted is not None:
        hits = [s for s in series if s.uid == wanted]
        if not hits:
            raise DicomwebError(
                f"{where}: no series {wanted} (--series); it holds: "
                f"{'; '.join(s.label() for s in series)}"
            )
        usable = [s for s in hits if s in usable]
        if not usable:
            raise DicomwebError(
                f"{where}: series {hits[0].label()} cannot be used by this model (trained on "
                f"{modality.upper()} images); pick a {modality.upper()} series or another --model"
            )
    if not usable:
        raise DicomwebError(
            f"{where}: no series this model can use (it was trained on {modality.upper()}); "
            f"the study holds: {'; '.join(s.label() for s in images)}; pass --model with a "
            "model for these images"
        )
    if len(usable) > 1:
        kind = "image" if modality == "other" else modality.upper()
        raise DicomwebError(
            f"{where} holds {len(usable)} {kind} series: "
            f"{'; '.join(s.label() for s in usable)}; pick one with --study UID --series UID"
        )
    return usable[0]


def push_seg(server: DicomwebServer, output: Path, study: str) -> str | None:
    """Store the study's DICOM-SEG through STOW-RS unless its report says it was pushed;
    records the new SeriesInstanceUID in the report and returns it (``None``: nothing to do)."""
    out = case_outputs(output, study)
    if not (case_done(out) and out["dicom_seg"].is_file()):
        return None
    report = json.loads(out["json"].read_text())
    if report.get("pushed", {}).get("server") == PREFIX + server.url:
        return None
    uid = server.store(out["dicom_seg"], study)
    report["pushed"] = {"server": PREFIX + server.url, "series_uid": uid}
    write_json(out["json"], report)
    return uid


def push_reviewed_seg(
    server: DicomwebServer, seg: Path, study: str, series: str, again: str
) -> str:
    """STOW-RS: store the reviewed DICOM-SEG ``seg`` of the PACS ``series`` back in ``study``;
    returns the new SEG's SeriesInstanceUID. A SEG of another study or series is refused
    before anything is sent (``again``: how to retry, for the server's refusals)."""
    import pydicom

    ds = pydicom.dcmread(seg, stop_before_pixels=True)
    refs = [str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence") or []]
    if str(ds.get("StudyInstanceUID", "")) != study or series not in refs:
        raise DicomwebError(
            f"{seg}: this DICOM-SEG references series {', '.join(refs) or '(none)'} of study "
            f"{ds.get('StudyInstanceUID', '(none)')}, not series {series} of study {study} "
            f"on {PREFIX}{server.url}; push only a review of the series the viewer opened "
            "from the PACS"
        )
    return server.store(seg, study, again=again)


def _record_source(output: Path, study: str, series: SeriesInfo, url: str) -> None:
    """Name the PACS series as the case's input (instead of the deleted temporary folder)."""
    out = case_outputs(output, study)
    report = json.loads(out["json"].read_text())
    report["inputs"] = [f"{url}/studies/{study}/series/{series.uid}"]
    write_json(out["json"], report)


def predict_dicomweb(
    url: str,
    output: str | Path,
    *,
    study: str | None = None,
    series: str | None = None,
    query: str | None = None,
    limit: int | None = None,
    all_studies: bool = False,
    push: bool = False,
    credentials: Credentials | None = None,
    ca_bundle: str | Path | None = None,
    timeout: float = 30.0,
    retries: int = 3,
    model: str | Path | None = None,
    device: str = "auto",
    tta: bool | None = None,
    axes: Sequence[int] | None = None,
    batch_size: int = 16,
    postprocess: PostprocessConfig | None = None,
    save_probabilities: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    dicom_formats: Sequence[str] = ("seg",),
) -> PacsResult:
    """Segment one study (``study``, optionally ``series``) or every study a QIDO-RS
    ``query`` finds (``"ModalitiesInStudy=MR&StudyDate=20260101-"``; more than ``limit``
    studies, default :data:`DEFAULT_QUERY_LIMIT`, is refused unless ``all_studies``) on the
    DICOMweb server ``url`` (``dicomweb+https://HOST/dicom-web``) into the folder ``output``.

    ``push``: store each DICOM-SEG back on the server (STOW-RS). ``credentials``,
    ``ca_bundle``, ``timeout``, ``retries``: the connection
    (:class:`~medseg.io.dicomweb.DicomwebServer`). The model options are those of
    :func:`~medseg.inference.batch.predict_folder`. With a query, a study the model cannot use
    is a failure of that study; the server's errors (unreachable, credentials) stop the run.
    """
    from medseg.inference.predictor import Predictor, default_model_path
    from medseg.inference.store import resolve_model

    check_selection(study, series, query, limit, all_studies)
    if push and "seg" not in dicom_formats:
        raise ConfigError(
            "--push stores the DICOM-SEG of each study, but --format asks for "
            f"{','.join(dicom_formats)} only: add seg (--format seg,rtstruct)"
        )
    output = check_output_dir(output)
    server = DicomwebServer(
        url, credentials=credentials, ca_bundle=ca_bundle, timeout=timeout, retries=retries
    )
    known: dict[str, list[SeriesInfo]] = {}
    studies = server.select_studies(study, query, limit, all_studies, DEFAULT_QUERY_LIMIT)
    if study is not None:
        series = None if series is None else check_uid(series, "--series")
        # the server, the credentials and the study are checked before anything is written
        known[studies[0]] = server.series_of(studies[0])
    output = make_output_dir(output)
    todo = [s for s in studies if overwrite or not case_done(case_outputs(output, s))]
    result = PacsResult(studies, [], [s for s in studies if s not in todo], [], None)
    if todo:
        predictor = Predictor.load(
            resolve_model(model) or default_model_path(), device=resolve_device(device),
            tta=tta, axes=axes, batch_size=batch_size, postprocess=postprocess,
        )  # fmt: skip
        options = {
            "overwrite": overwrite,
            "save_probabilities": save_probabilities,
            "dicom_formats": dicom_formats,
        }
        todo = [(s, known.get(s)) for s in todo]
        _predict_studies(server, predictor, todo, series, output, result, progress, options)
    result.summary = merge_summary([Case(s, []) for s in studies], output, overwrite=overwrite)
    if push:
        for uid in studies:
            pushed = push_seg(server, output, uid)
            if pushed:
                result.pushed[uid] = pushed
    return result


def _predict_studies(
    server: DicomwebServer,
    predictor: Any,
    studies: list[tuple[str, list[SeriesInfo] | None]],
    series: str | None,
    output: Path,
    result: PacsResult,
    progress: bool,
    options: dict[str, Any],
) -> None:
    """Download each study's series into a private temporary folder and predict it there,
    one study at a time (one series on disk at once)."""
    modality = predictor.params.modality
    check_channels(len(predictor.channel_names))
    with tempfile.TemporaryDirectory(prefix="medseg-dicomweb-") as tmp:  # mode 0700
        for study, listed in studies:
            where = f"{PREFIX}{server.url}: study {study}"
            try:
                chosen = choose_series(where, listed or server.series_of(study), series, modality)
            except DicomwebError as err:
                if len(studies) == 1:
                    raise
                logger.error("study %s skipped: %s", study, err)
                result.failures.append((study, str(err)))
                continue
            folder = Path(tmp) / study
            server.download_series(study, chosen.uid, folder)
            try:
                batch = predict_cases(
                    predictor, [Case(study, [folder])], output, progress=progress, **options
                )
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            result.done += batch.done
            result.failures += batch.failed
            if batch.done:
                _record_source(output, study, chosen, PREFIX + server.url)
