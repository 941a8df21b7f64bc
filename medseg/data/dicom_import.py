"""Build an nnU-Net v2 training dataset from DICOM studies labelled by DICOM-SEG or RTSTRUCT.

Each label object (a SEG or RTSTRUCT file) and the image series it references become one
case: ``imagesTr/case_0001_0000.nii.gz`` (the series on its own grid, exactly as
:func:`medseg.io.dicom.read_dicom_series` reads it: no resampling) and
``labelsTr/case_0001.nii.gz`` (the SEG on that grid, or the RTSTRUCT contours rasterised onto
it by :mod:`medseg.io.rtstruct`), then ``dataset.json``. Segment / ROI names become label
values through a name map (default: the sorted names -> 1..N).

Case ids are pseudonyms (``case_0001`` ...); which patient and study each one is goes into a
separate CSV outside the dataset (the id map), never into the dataset, logs or stdout. The
dataset is built in a hidden temporary folder beside it and renamed into place; inputs are
only read.

Entry point: :func:`import_dicom` (CLI ``medseg import-dicom``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from tqdm.auto import tqdm

from medseg import RESEARCH_USE_NOTICE
from medseg.data.datasets import load_dataset
from medseg.data.validation import Problem, validate_dataset
from medseg.errors import (
    ConfigError,
    DatasetError,
    GeometryMismatchError,
    InputNotFoundError,
    UnsupportedFormatError,
)
from medseg.io import Volume, read_dicom_seg, write_mask, write_volume
from medseg.io.atomic import atomic_path, check_output, remove_partials, write_json
from medseg.io.dicom import read_dicom_series
from medseg.io.dicom_series import DicomSeries, scan_folder
from medseg.io.dicomweb import (
    DEFAULT_QUERY_LIMIT,
    PREFIX,
    Credentials,
    DicomwebServer,
    SeriesInfo,
    check_selection,
    is_dicomweb_url,
)
from medseg.io.rtstruct import rasterise, read_rtstruct, referenced_series
from medseg.io.tables import write_csv

logger = logging.getLogger(__name__)

LABEL_KINDS = {"SEG": "seg", "RTSTRUCT": "rtstruct"}
ID_MAP_SUFFIX = ".id_map.csv"
ID_MAP_NOTE = (
    "ID map: it links the pseudonymised case ids to patients; keep it apart from the dataset"
)
# loggers that name source folders or files while reading (folder names may be names of people)
_READ_LOGGERS = ("medseg.io.dicom", "medseg.io.dicom_series", "medseg.io.dicom_seg",
                 "medseg.io.rtstruct", "highdicom")  # fmt: skip


@dataclasses.dataclass
class LabelledSeries:
    """One case to build: an image series and the label object drawn on it."""

    image: DicomSeries
    image_folder: Path
    kind: str  # "seg" or "rtstruct"
    label_file: Path
    names: list[str]  # segment labels / ROI names, from the header

    def id_row(self, case_id: str, origins: dict[Path, str] | None = None) -> dict[str, str]:
        """The id map's row: what links the pseudonym back to the patient and study
        (``origins``: series folders downloaded from a PACS -> their URL)."""
        first = self.image.headers[0]
        origins = origins or {}
        return {
            "case_id": case_id,
            "patient_id": str(first.get("PatientID", "") or ""),
            "study_instance_uid": str(first.get("StudyInstanceUID", "") or ""),
            "series_instance_uid": self.image.uid,
            "label_kind": self.kind,
            "label_file": origins.get(self.label_file.parent, str(self.label_file)),
            "image_folder": origins.get(self.image.files[0].parent, str(self.image_folder)),
        }


@dataclasses.dataclass
class ImportResult:
    """What :func:`import_dicom` wrote: the dataset, the id map, the case ids, the label
    values (``{class name: value}``), the names dropped as unmapped and the validation
    problems (:func:`medseg.data.validation.validate_dataset`; empty: ready to train)."""

    dataset: Path
    id_map: Path
    cases: list[str]
    labels: dict[str, int]
    ignored: list[str]
    problems: list[Problem]


def resolve_sources(sources: Sequence[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """The SRC arguments, checked: ``(local folders, DICOMweb URLs)``. The one place that
    tells sources apart; the studies of a URL are fetched by :func:`fetch_studies`."""
    folders, urls = [], []
    for raw in sources:
        text = os.fspath(raw)
        if is_dicomweb_url(text):
            urls.append(text)
            continue
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
            raise UnsupportedFormatError(
                f"source {text}: import-dicom reads local folders only, or a DICOMweb server "
                "named dicomweb+https://HOST/dicom-web with --study or --query (found another "
                "URL); give the server's DICOMweb root, or download the study into a folder"
            )
        path = Path(text)
        if not path.is_dir():
            what = "a file" if path.exists() else "missing"
            raise InputNotFoundError(
                f"source {path} is {what}; expected a study folder holding a DICOM image series "
                "and its DICOM-SEG or RTSTRUCT (subfolders are scanned too)"
            )
        folders.append(path)
    if not folders and not urls:
        raise InputNotFoundError("no source given; pass one or more study folders")
    return folders, urls


def _label_names(series: DicomSeries, path: Path, kind: str) -> list[str]:
    ds = series.headers[series.files.index(path)]
    if kind == "seg":
        items = ds.get("SegmentSequence", ())
        return [str(it.get("SegmentLabel", "") or it.SegmentNumber) for it in items]
    items = ds.get("StructureSetROISequence", ())
    return [str(it.get("ROIName", "") or f"ROI {it.ROINumber}") for it in items]


def _referenced(series: DicomSeries, path: Path, kind: str) -> list[str]:
    return references(series.headers[series.files.index(path)], kind)


def references(ds: Any, kind: str) -> list[str]:
    """The SeriesInstanceUIDs a SEG / RTSTRUCT dataset ``ds`` is drawn on."""
    if kind == "rtstruct":
        return referenced_series(ds)
    return [str(s.SeriesInstanceUID) for s in ds.get("ReferencedSeriesSequence", ())]


def _study_of(series: DicomSeries) -> str:
    return str(series.headers[0].get("StudyInstanceUID", "") or "")


def find_labelled_series(folders: Sequence[Path], labels_from: str | None) -> list[LabelledSeries]:
    """Every (image series, label object) pair in ``folders``; headers only, no pixels.

    ``labels_from``: ``"seg"``, ``"rtstruct"`` or ``None`` (whichever a study holds; a study
    holding both must choose). Raises :class:`DatasetError` for a study without a label
    object, a label object whose series is not among the inputs, or two objects on one series.
    """
    entries = [(s, folder) for folder in folders for s in scan_folder(folder)]
    images = {s.uid: (s, folder) for s, folder in entries if s.is_image and s.uid}
    studies: dict[str, list[tuple[DicomSeries, Path]]] = {}
    for series, folder in entries:  # a study may be split over several sources
        studies.setdefault(_study_of(series), []).append((series, folder))
    pairs: list[LabelledSeries] = []
    for study in studies.values():
        pairs += _study_pairs(study, labels_from, images)
    seen: dict[str, Path] = {}
    for pair in pairs:
        if pair.image.uid in seen:
            raise DatasetError(
                f"{pair.label_file} and {seen[pair.image.uid]} both label the series "
                f"{pair.image.uid}; keep one label object per series (move the other out of "
                "the source folders)"
            )
        seen[pair.image.uid] = pair.label_file
    return pairs


def _study_pairs(
    study: list[tuple[DicomSeries, Path]],
    labels_from: str | None,
    images: dict[str, tuple[DicomSeries, Path]],
) -> list[LabelledSeries]:
    objects: dict[str, list[tuple[DicomSeries, Path]]] = {"seg": [], "rtstruct": []}
    for series, _ in study:
        kind = LABEL_KINDS.get(series.modality.upper())
        if kind:
            objects[kind] += [(series, path) for path in series.files]
    folder = study[0][0].files[0].parent  # the study's own folder, not the whole SRC
    if not any(s.is_image for s, _ in study) and not any(objects.values()):
        return []  # neither images nor labels (e.g. a report): nothing to import
    kinds = [labels_from] if labels_from else [k for k in ("seg", "rtstruct") if objects[k]]
    flag = f"--labels-from {labels_from}" if labels_from else "--labels-from"
    if len(kinds) > 1:
        raise DatasetError(
            f"{folder}: a study holds both DICOM-SEG and RTSTRUCT labels; choose one with "
            "--labels-from seg or --labels-from rtstruct"
        )
    if not kinds or not objects[kinds[0]]:
        wanted = {"seg": "DICOM-SEG", "rtstruct": "RTSTRUCT"}.get(
            labels_from or "", "DICOM-SEG or RTSTRUCT"
        )
        descriptions = ", ".join(f"'{s.description}' {s.modality}" for s, _ in study)
        raise DatasetError(
            f"{folder}: a study ({descriptions}) holds no {wanted} label object ({flag}); "
            "expected one beside its image series: add it, or leave this study out of SRC"
        )
    pairs = []
    for series, path in objects[kinds[0]]:
        refs = _referenced(series, path, kinds[0])
        hit = next((images[uid] for uid in refs if uid in images), None)
        if hit is None:
            raise DatasetError(
                f"{path}: references the image series {', '.join(refs) or '(none)'}, which is "
                "not among the sources; add the folder holding that series to SRC (or "
                "`medseg info FOLDER` to list a folder's series)"
            )
        names = _label_names(series, path, kinds[0])
        pairs.append(LabelledSeries(hit[0], hit[1], kinds[0], path, names))
    return pairs


def parse_name_map(text: str | None) -> dict[str, str]:
    """``"GTV=tumour,CTV=tumour,Liver=2"`` -> ``{source name: class}``; a class is a name or a
    label value."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, target = (x.strip() for x in part.partition("="))
        if not sep or not name or not target:
            raise DatasetError(
                f'--map entry {part!r} is not NAME=CLASS; write e.g. --map "GTV=tumour,Liver=2"'
            )
        mapping[name] = target
    return mapping


def label_values(
    names: Sequence[str], mapping: dict[str, str], ignore_unmapped: bool = False
) -> tuple[dict[str, int], dict[str, int], list[str]]:
    """``(source name -> value, class name -> value, unmapped names)``.

    Without ``mapping`` the sorted names are 1..N. With it, a class given as a number is that
    value (named after its first source name), a class given by name takes the next free value
    in order of appearance. Unmapped names raise unless ``ignore_unmapped``.
    """
    names = sorted(set(names))
    if not mapping:
        return {n: v for v, n in enumerate(names, 1)}, {n: v for v, n in enumerate(names, 1)}, []
    unmapped = [n for n in names if n not in mapping]
    if unmapped and not ignore_unmapped:
        raise DatasetError(
            f"--map leaves {len(unmapped)} name(s) found in the label objects unmapped: "
            f"{', '.join(repr(n) for n in unmapped)}; add them (NAME=CLASS) or pass "
            "--ignore-unmapped to leave them out as background"
        )
    classes: dict[str, int] = {}
    for name, target in mapping.items():
        if target.isdigit() and int(target) > 0:
            classes.setdefault(
                next((c for c, v in classes.items() if v == int(target)), name), int(target)
            )
    for target in mapping.values():
        if not target.isdigit() and target not in classes:
            classes[target] = max(classes.values(), default=0) + 1
    by_name = {n: int(t) if t.isdigit() else classes[t] for n, t in mapping.items() if n in names}
    return by_name, dict(sorted(classes.items(), key=lambda kv: kv[1])), unmapped


@contextlib.contextmanager
def _quiet_readers() -> Iterator[None]:
    """The readers log source paths (at INFO, a SEG's overlap at WARNING); here only case ids
    may reach the log: :func:`read_labels` reports overlaps itself."""
    saved = [(logging.getLogger(n), logging.getLogger(n).level) for n in _READ_LOGGERS]
    for log, level in saved:
        log.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        for log, level in saved:
            log.setLevel(level)


def _check_frame(pair: LabelledSeries, image: Volume, frame_uid: str) -> None:
    ours = str(image.metadata.get("frame_of_reference_uid", "") or "")
    if frame_uid and ours and frame_uid != ours:
        raise GeometryMismatchError(
            f"{pair.label_file}: its FrameOfReferenceUID differs from the series it references "
            f"({pair.image.label()}); the label was drawn in another patient frame (mixed "
            "geometry): export the label object again from the series it was drawn on"
        )


def read_labels(
    pair: LabelledSeries, image: Volume, values: dict[str, int], case_id: str = ""
) -> np.ndarray:
    """The label array of ``pair`` on ``image``'s grid (uint8/uint16), names mapped by
    ``values`` (names not in it stay background; on overlap the higher value wins, logged
    with ``case_id``)."""
    overlap = 0
    if pair.kind == "seg":
        seg, segments = read_dicom_seg(pair.label_file, reference=image)
        _check_frame(pair, image, seg.metadata.get("frame_of_reference_uid", ""))
        if seg.metadata.get("alignment") != "exact":
            raise GeometryMismatchError(
                f"{pair.label_file}: its frames do not lie on the voxel grid of the series it "
                f"references ({pair.image.label()}); expected a SEG on the source grid (mixed "
                "geometry): export the SEG again from that series"
            )
        overlap = int(seg.metadata.get("overlapping_voxels", 0))  # segments merged on reading
        masks = {}
        for segment in segments:
            name = segment["label"] or str(segment["number"])
            masks[name] = masks.get(name, False) | (seg.array == segment["number"])
    else:
        structure = read_rtstruct(pair.label_file)
        _check_frame(pair, image, structure.frame_of_reference_uid)
        masks = rasterise(structure, image)
    top = max(values.values(), default=0)
    labels = np.zeros(image.shape, dtype=np.uint8 if top < 256 else np.uint16)
    covered = np.zeros(image.shape, dtype=np.int16)
    for name in sorted((n for n in masks if n in values), key=lambda n: values[n]):
        labels[masks[name]] = values[name]
        covered += masks[name]
    overlap += int(np.count_nonzero(covered > 1))
    if overlap:
        logger.warning(
            "%s: %d voxel(s) lie in several structures; the higher label value was kept",
            case_id or "a case",
            overlap,
        )
    return labels


def dataset_json(
    name: str, modality: str, classes: dict[str, int], n_cases: int, kinds: set[str]
) -> dict:
    """nnU-Net v2 ``dataset.json``; no source paths or identifiers."""
    return {
        "name": name,
        "description": f"Imported from DICOM ({', '.join(sorted(kinds))} labels) by medseg "
        f"import-dicom; case ids are pseudonyms. {RESEARCH_USE_NOTICE}",
        "channel_names": {"0": modality},
        "labels": {"background": 0, **classes},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }


def _write_case(pair: LabelledSeries, root: Path, case_id: str, values: dict[str, int]) -> None:
    image = read_dicom_series(pair.image, pair.image_folder)
    labels = read_labels(pair, image, values, case_id)
    write_volume(image, root / "imagesTr" / f"{case_id}_0000.nii.gz")
    write_mask(labels, image, root / "labelsTr" / f"{case_id}.nii.gz")


def default_id_map(dataset: Path) -> Path:
    """``DATASET.id_map.csv`` beside the dataset folder (never inside it)."""
    return dataset.parent / f"{dataset.name}{ID_MAP_SUFFIX}"


def _check_id_map(id_map: Path, dataset: Path, folders: Sequence[Path], overwrite: bool) -> None:
    inside = id_map.resolve().is_relative_to(dataset.resolve())
    if inside:
        raise DatasetError(
            f"id_map {id_map} lies inside the dataset {dataset}; the id map links case ids "
            "to patients and must be kept apart: choose a path outside it",
            param="id_map",
        )
    check_output(id_map, overwrite=overwrite, inputs=list(folders))


def import_dicom(
    sources: Sequence[str | os.PathLike],
    dataset: str | os.PathLike,
    *,
    labels_from: str | None = None,
    name_map: str | dict[str, str] | None = None,
    ignore_unmapped: bool = False,
    id_map: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = False,
    study: str | None = None,
    query: str | None = None,
    limit: int | None = None,
    all_studies: bool = False,
    credentials: Credentials | None = None,
    ca_bundle: str | os.PathLike | None = None,
    timeout: float = 30.0,
    retries: int = 3,
) -> ImportResult:
    """Build the nnU-Net v2 dataset ``dataset`` from the DICOM studies in ``sources``.

    Args:
        sources: study folders (subfolders are scanned), or one DICOMweb server
            (``dicomweb+https://HOST/dicom-web``); each label object and the series it
            references becomes a case.
        dataset: the output folder (``imagesTr``, ``labelsTr``, ``dataset.json``).
        labels_from: ``"seg"`` or ``"rtstruct"``; ``None``: whichever each study holds.
        name_map: ``"NAME=CLASS,..."`` or a dict; ``None``: sorted names -> 1..N.
        ignore_unmapped: leave names missing from ``name_map`` out instead of raising.
        id_map: CSV linking case ids to patient/study/series UIDs; default
            ``DATASET.id_map.csv`` beside the dataset, never inside it.
        overwrite: replace an existing dataset / id map.
        study, query, limit, all_studies: a DICOMweb source's studies, as for
            :func:`medseg.inference.pacs.predict_dicomweb` (more than ``limit``, default
            :data:`DEFAULT_QUERY_LIMIT`, is refused unless ``all_studies``).
        credentials, ca_bundle, timeout, retries: the connection
            (:class:`~medseg.io.dicomweb.DicomwebServer`).
    """
    if labels_from not in (None, *LABEL_KINDS.values()):
        raise DatasetError(
            f"labels_from {labels_from!r} is not one of seg, rtstruct", param="labels_from"
        )
    folders, urls = resolve_sources(sources)
    _check_remote(urls, study, query, limit, all_studies)
    dataset = check_output(Path(dataset), overwrite=overwrite, inputs=folders, folder=True)
    id_map = Path(id_map) if id_map is not None else default_id_map(dataset)
    _check_id_map(id_map, dataset, folders, overwrite)
    origins: dict[Path, str] = {}
    with contextlib.ExitStack() as stack:
        if urls:  # studies come down into a private folder (mode 0700), deleted afterwards
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="medseg-dicomweb-")))
            server = DicomwebServer(
                urls[0], credentials=credentials, ca_bundle=ca_bundle, timeout=timeout,
                retries=retries,
            )  # fmt: skip
            uids = server.select_studies(study, query, limit, all_studies, DEFAULT_QUERY_LIMIT)
            folders += fetch_studies(server, uids, tmp, labels_from, origins)
        with _quiet_readers():
            pairs = find_labelled_series(folders, labels_from)
            if not pairs:
                raise DatasetError(
                    f"{', '.join(map(str, folders))}: no image series with a DICOM-SEG or "
                    "RTSTRUCT found; expected study folders holding both"
                )
            mapping = parse_name_map(name_map) if not isinstance(name_map, dict) else name_map
            values, classes, ignored = label_values(
                [n for p in pairs for n in p.names], mapping, ignore_unmapped
            )
            if ignored:
                logger.warning("left out as background (not in --map): %s", ", ".join(ignored))
            case_ids = _build(dataset, id_map, pairs, (values, classes), progress, origins)
    logger.info("imported %d case(s) into %s", len(pairs), dataset)
    return ImportResult(dataset, id_map, case_ids, classes, ignored, _validate(dataset))


def _check_remote(
    urls: list[str], study: str | None, query: str | None, limit: int | None, every: bool
) -> None:
    if len(urls) > 1:
        raise ConfigError(
            f"sources {', '.join(urls)}: one DICOMweb server per import (--study / --query "
            "apply to it); import each server into its own dataset"
        )
    if urls:
        check_selection(study, None, query, limit, every)
    elif study or query or limit or every:
        raise ConfigError(
            "--study, --query, --limit and --all apply to a DICOMweb source "
            "(SRC: dicomweb+https://HOST/dicom-web); see docs/dicom_datasets.md"
        )


def fetch_studies(
    server: DicomwebServer,
    studies: Sequence[str],
    folder: Path,
    labels_from: str | None,
    origins: dict[Path, str],
) -> list[Path]:
    """WADO-RS: each study's label objects (SEG / RTSTRUCT, ``labels_from`` only when given)
    and the image series they are drawn on, into ``folder/study_NNNN/SERIES_UID/``; returns
    the study folders. ``origins`` gets each series folder's URL (for the id map).
    Checked on the server's listing first, so messages name the study, not a temporary
    path: a study without a label object, or with both kinds and no ``labels_from``."""
    found = []
    for n, study in enumerate(studies, 1):
        where = f"{PREFIX}{server.url}: study {study}"
        listed = server.series_of(study)
        kinds = sorted({LABEL_KINDS[s.modality.upper()] for s in listed
                        if s.modality.upper() in LABEL_KINDS})  # fmt: skip
        _check_study_kinds(where, listed, kinds, labels_from)
        kind = labels_from or kinds[0]
        target = folder / f"study_{n:04d}"
        target.mkdir(mode=0o700)

        def get(series: str, study: str = study, target: Path = target) -> list[Path]:
            origins[target / series] = f"{PREFIX}{server.url}/studies/{study}/series/{series}"
            return server.download_series(study, series, target / series)

        images = {s.uid for s in listed if s.is_image}
        wanted: list[str] = []
        for labels in (s for s in listed if LABEL_KINDS.get(s.modality.upper()) == kind):
            for path in get(labels.uid):
                refs = references(pydicom.dcmread(path, stop_before_pixels=True), kind)
                if not images.intersection(refs):
                    raise DatasetError(
                        f"{where}: the {kind.upper()} series {labels.label()} references the "
                        f"image series {', '.join(refs) or '(none)'}, which the study does not "
                        "hold; store that series on the server, or leave this study out"
                    )
                wanted += [r for r in refs if r in images and r not in wanted]
        for series in wanted:
            get(series)
        found.append(target)
    return found


def _check_study_kinds(
    where: str, listed: Sequence[SeriesInfo], kinds: list[str], labels_from: str | None
) -> None:
    if labels_from is None and len(kinds) > 1:
        raise DatasetError(
            f"{where} holds both DICOM-SEG and RTSTRUCT labels; choose one with "
            "--labels-from seg or --labels-from rtstruct"
        )
    if labels_from not in kinds if labels_from else not kinds:
        wanted = {"seg": "DICOM-SEG", "rtstruct": "RTSTRUCT"}.get(
            labels_from or "", "DICOM-SEG or RTSTRUCT"
        )
        flag = f"--labels-from {labels_from}" if labels_from else "--labels-from"
        raise DatasetError(
            f"{where} ({'; '.join(s.label() for s in listed)}) holds no {wanted} label object "
            f"({flag}); expected one beside its image series: add it on the server, or leave "
            'the study out (e.g. --query "ModalitiesInStudy=SEG&...")'
        )


def _build(
    dataset: Path,
    id_map: Path,
    pairs: list[LabelledSeries],
    labels: tuple[dict[str, int], dict[str, int]],
    progress: bool,
    origins: dict[Path, str],
) -> list[str]:
    """Write every case, ``dataset.json`` and the id map; the dataset appears whole or not at
    all (built in a temporary folder beside it). ``labels``: (source name -> value, class ->
    value); ``origins``: the URL of each downloaded series folder, named in the id map instead
    of the temporary path. Returns the case ids."""
    values, classes = labels
    modalities = sorted({p.image.modality.upper() for p in pairs})
    if len(modalities) > 1:
        raise DatasetError(
            f"the sources mix modalities {modalities}; one dataset channel holds one modality: "
            "import each modality into its own dataset"
        )
    case_ids = [f"case_{n:04d}" for n in range(1, len(pairs) + 1)]
    dataset.parent.mkdir(parents=True, exist_ok=True)
    remove_partials(dataset.parent, dataset.name)
    with atomic_path(dataset) as root:
        root.mkdir()
        steps = list(zip(pairs, case_ids, strict=True))
        for pair, case_id in tqdm(steps, desc="import", unit="case", disable=not progress):
            _write_case(pair, root, case_id, values)
        kinds = {p.kind for p in pairs}
        meta = dataset_json(dataset.name, modalities[0], classes, len(pairs), kinds)
        write_json(root / "dataset.json", meta)
        rows = [pair.id_row(case_id, origins) for pair, case_id in steps]
        write_csv(rows, id_map, note=ID_MAP_NOTE)  # before the dataset: never one without it
        if dataset.exists():  # overwrite: the old dataset goes into the temporary folder
            os.replace(dataset, root.parent / f"replaced-{dataset.name}")
    return case_ids


def _validate(dataset: Path) -> list[Problem]:
    return validate_dataset(load_dataset(dataset))
