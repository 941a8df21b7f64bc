"""Multi-case prediction runner behind ``medseg predict`` (also used under ``torchrun``).

Outputs per case in ``DIR``: ``<case>.nii.gz`` (mask on the source grid), ``<case>_seg.dcm``
(DICOM-SEG) and/or ``<case>_rtstruct.dcm`` (RTSTRUCT) for DICOM input (``dicom_formats``),
``<case>_probabilities.nii.gz`` (optional, 4D float32 ``(I, J, K, classes)``), ``<case>.json`` (readouts and settings; written last, so its
presence means the case is complete). A failed case gets ``<case>.failed.json`` instead and
never stops the others. ``summary.csv`` (one row per case) and ``lesions.csv`` (one row per
lesion) merge the per-case JSONs.

Entry point: :func:`predict_folder`. Scale-out under ``torchrun``: each rank takes cases
``rank::world_size`` (no communication needed), then the ranks meet at a barrier
(:mod:`medseg.device`'s process group) and rank 0 merges the summary.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medseg import RESEARCH_USE_NOTICE
from medseg.device import DistInfo, barrier, process_group, resolve_device
from medseg.errors import (
    ConfigError,
    DatasetError,
    DimensionError,
    InputNotFoundError,
    MedsegError,
    OutputWriteError,
    OverwriteError,
)
from medseg.inference.parts import (
    case_list_sha256,
    check_part,
    check_same_run,
    merged_case_ids,
    missing_parts,
    write_record,
)
from medseg.inference.postprocess import PostprocessConfig
from medseg.io.atomic import (
    atomic_group,
    check_output,
    make_output_dir,
    partial_leftovers,
    remove_partials,
    write_json,
)
from medseg.io.cases import group_channels, is_dicom_folder, is_image_file, is_label_file
from medseg.io.tables import is_medseg_table, write_csv

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Case:
    """One case to predict: ``inputs`` are one file/folder per channel, in channel order."""

    case_id: str
    inputs: list[Path]


@dataclasses.dataclass
class BatchResult:
    done: list[str] = dataclasses.field(default_factory=list)
    skipped: list[str] = dataclasses.field(default_factory=list)
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def discover_cases(inputs: Sequence[str | Path]) -> list[Case]:
    """Cases from files, DICOM series folders and folders of cases (nnU-Net channel naming
    ``CASE_0000.nii.gz``, ``CASE_0001.nii.gz`` ... grouped into one multi-channel case by
    :func:`medseg.io.cases.group_channels`). Files inside a folder that are named like a
    mask (:func:`medseg.io.cases.is_label_file`) are not inputs."""
    files: list[Path] = []
    cases: list[Case] = []
    for raw in inputs:
        path = Path(raw)
        if not path.exists():
            raise InputNotFoundError(f"input {path} does not exist; check the path")
        if path.is_file():
            files.append(path)
        elif is_dicom_folder(path):
            cases.append(Case(path.name, [path]))
        else:
            for entry in sorted(path.iterdir()):
                if is_image_file(entry) and not is_label_file(entry.name):
                    files.append(entry)
                elif is_dicom_folder(entry):
                    cases.append(Case(entry.name, [entry]))
    groups = group_channels(files, unnumbered=True, where=", ".join(str(i) for i in inputs))
    cases += [Case(case_id, channels) for case_id, channels in groups.items()]
    ids = [c.case_id for c in cases]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise DatasetError(
            f"case ids {duplicates} occur more than once among the inputs; rename the "
            "files/folders so every case id is unique"
        )
    if not cases:
        raise InputNotFoundError(
            f"no cases found in {', '.join(str(i) for i in inputs)}; expected NIfTI/NRRD/MHA "
            "files, DICOM series folders or a folder of such cases"
        )
    return sorted(cases, key=lambda c: c.case_id)


def case_outputs(output_dir: Path, case_id: str) -> dict[str, Path]:
    return {
        "mask": output_dir / f"{case_id}.nii.gz",
        "json": output_dir / f"{case_id}.json",
        "failed": output_dir / f"{case_id}.failed.json",
        "dicom_seg": output_dir / f"{case_id}_seg.dcm",
        "rtstruct": output_dir / f"{case_id}_rtstruct.dcm",
        "probabilities": output_dir / f"{case_id}_probabilities.nii.gz",
    }


DICOM_FORMATS = ("seg", "rtstruct")


def check_dicom_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """``"seg"``, ``"rtstruct"``, ``"seg,rtstruct"`` (or a sequence) checked, as a tuple."""
    names = formats.split(",") if isinstance(formats, str) else list(formats)
    names = [n.strip().lower() for n in names if n.strip()]
    bad = [n for n in names if n not in DICOM_FORMATS]
    if bad or not names:
        raise ConfigError(
            f"dicom_formats {','.join(bad) or '(none)'}: expected seg, rtstruct or "
            "seg,rtstruct (the DICOM outputs written for DICOM inputs)",
            param="dicom_formats",
        )
    return tuple(dict.fromkeys(names))


def read_case(
    case: Case,
    channel_names: Sequence[str] | None,
    series: str | None = None,
    channel: int | None = None,
) -> list:
    """The channel Volumes of ``case`` for a model with ``channel_names``.

    ``channel`` picks that index of every 4D / multi-component input. Without it, a single
    4D input with as many channels as the model expects is the channel stack (Medical
    Segmentation Decathlon layout: ``BRATS_001.nii.gz`` holding FLAIR, T1, T1c, T2 in order).
    """
    from medseg.io import channel_count, read_volume

    expected = len(channel_names or ())
    if channel is None and expected > 1 and len(case.inputs) == 1:
        path = case.inputs[0]
        found = channel_count(path)
        if found == expected:
            return [read_volume(path, series=series, channel=c) for c in range(found)]
        if found > 1:
            raise DimensionError(
                f"{path}: has {found} channels but the model expects {expected} "
                f"({', '.join(channel_names or ())}); give a 4D file with {expected} channels "
                f"in that order, or one file per channel ({case.case_id}_0000 ... "
                f"{case.case_id}_{expected - 1:04d})"
            )
    return [read_volume(p, series=series, channel=channel) for p in case.inputs]


def predict_case(
    predictor,
    case: Case,
    output_dir: Path,
    *,
    series: str | None,
    save_probabilities: bool,
    worker: dict[str, Any] | None = None,
    channel: int | None = None,
    dicom_formats: Sequence[str] = ("seg",),
) -> dict[str, Any]:
    """Predict one case and write its outputs; returns the JSON report written.

    The three steps are the per-case stages every engine runs (local, torchrun, Ray):
    :func:`read_case`, ``predictor.predict`` and :func:`write_case`.
    ``channel``: index to take from 4D inputs (see :func:`read_case`); ``dicom_formats``:
    the DICOM outputs of a DICOM input (``seg``, ``rtstruct``)."""
    # <case>.json marks a complete case: drop an older one before its outputs are replaced,
    # so an interrupted redo (--overwrite) never pairs a new mask with an old report
    case_outputs(output_dir, case.case_id)["json"].unlink(missing_ok=True)
    t0 = time.perf_counter()
    channels = read_case(case, getattr(predictor, "channel_names", None), series, channel)
    read_s = time.perf_counter() - t0
    prediction = predictor.predict(channels, return_probabilities=save_probabilities)
    folds = getattr(predictor, "provenance", {}).get("fold_checkpoint_sha256")
    dicom_files = channels[0].metadata.get("dicom_files")
    return write_case(
        case, prediction, output_dir, dicom_files=dicom_files, read_s=read_s, worker=worker,
        folds=folds, dicom_formats=dicom_formats,
    )  # fmt: skip


def write_case(
    case: Case,
    prediction,
    output_dir: Path,
    *,
    dicom_files: Sequence[Any] | None,
    read_s: float,
    worker: dict[str, Any] | None = None,
    folds: Sequence[str] | None = None,
    dicom_formats: Sequence[str] = ("seg",),
) -> dict[str, Any]:
    """Write one case's mask (on the source grid, ``prediction.label``'s), its DICOM outputs
    (``dicom_formats``: DICOM-SEG and/or RTSTRUCT, for DICOM input: ``dicom_files``, the
    series read), probabilities (when predicted) and, last, its report; returns the report.

    ``folds``: each fold checkpoint's SHA-256 of a model folder, recorded in the report."""
    from medseg.inference.dicom_seg import write_dicom_seg
    from medseg.io import write_mask, write_probabilities
    from medseg.io.rtstruct import write_rtstruct

    out = case_outputs(output_dir, case.case_id)
    t0 = time.perf_counter()
    order = (
        "mask",
        "dicom_seg",
        "rtstruct",
        "probabilities",
        "json",
    )  # the report last: it commits
    for name in order:  # the same guard as before the run: inputs are never outputs
        check_output(out[name], overwrite=True, inputs=case.inputs)
    # Every file is complete before the first rename, and a failed rename takes the others
    # back: a full disk never leaves a mask without its report (or the reverse).
    with atomic_group([out[name] for name in order]) as staged:
        tmp = dict(zip(order, staged, strict=True))
        write_mask(prediction.label.array, prediction.label, tmp["mask"], overwrite=True)
        written = {"mask": out["mask"].name}
        model_name = (prediction.settings.get("model") or {}).get("name", "medseg")
        writers = {"seg": ("dicom_seg", write_dicom_seg), "rtstruct": ("rtstruct", write_rtstruct)}
        for key, writer in (writers[f] for f in dicom_formats if dicom_files):
            writer(
                prediction.label,
                dicom_files,
                prediction.class_names,
                tmp[key],
                model_name=f"medseg {model_name}",
                overwrite=True,
            )
            written[key] = out[key].name
        if prediction.probabilities is not None:
            write_probabilities(
                prediction.probabilities, prediction.label, tmp["probabilities"], overwrite=True
            )
            written["probabilities"] = out["probabilities"].name
        report = {
            "case": case.case_id,
            "status": "ok",
            "inputs": [str(p) for p in case.inputs],
            "outputs": written,
            **prediction.report(),
            "worker": worker or {"rank": 0, "world_size": 1},
        }
        if folds:  # a model folder: each fold's own hash, verified against model.json
            report["settings"]["fold_checkpoint_sha256"] = list(folds)
        report["timing_s"]["read"] = round(read_s, 4)
        report["timing_s"]["write"] = round(time.perf_counter() - t0, 4)
        write_json(tmp["json"], report)
    out["failed"].unlink(missing_ok=True)
    return report


def case_done(out: dict[str, Path]) -> bool:
    """The skip rule of a rerun: a case whose report and mask (:func:`case_outputs`) are both
    there is done."""
    return out["json"].is_file() and out["mask"].is_file()


def write_failure(output_dir: Path, case: Case, message: str) -> Path:
    """Record a failed case in ``<case>.failed.json`` (it never stops the others)."""
    logger.error("case %s failed: %s", case.case_id, message)
    return write_json(
        case_outputs(output_dir, case.case_id)["failed"],
        {
            "case": case.case_id,
            "status": "failed",
            "error": message,
            "inputs": [str(p) for p in case.inputs],
            "notice": RESEARCH_USE_NOTICE,
        },
    )


def case_to_do(output_dir: Path, case: Case, overwrite: bool) -> bool:
    """Whether ``case`` still needs predicting: not when its report and mask are there
    (unless ``overwrite``). Clears what an interrupted write left of its outputs first (the
    caller must own the case: one rank, part or driver per case), and drops the report of a
    case about to be redone."""
    out = case_outputs(output_dir, case.case_id)
    if not out["json"].is_file() and partial_leftovers(output_dir, out["mask"].name):
        for name in ("mask", "dicom_seg", "rtstruct", "probabilities"):  # a killed commit's
            out[name].unlink(missing_ok=True)
    for path in out.values():
        remove_partials(output_dir, path.name)
    if not overwrite and case_done(out):
        return False
    # <case>.json marks a complete case: drop an older one before its outputs are replaced,
    # so an interrupted redo (--overwrite) never pairs a new mask with an old report
    out["json"].unlink(missing_ok=True)
    return True


def check_output_dir(output_dir: str | Path) -> Path:
    """``output_dir`` as a Path; it must be a folder (existing or not), never an existing file."""
    output_dir = Path(output_dir)
    existing = next((p for p in (output_dir, *output_dir.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise OverwriteError(
            f"output {output_dir}: {existing} is an existing file, but the output must be a "
            "folder (one mask, JSON report and CSV per case go there); pass a new or existing "
            "folder path instead",
            param="output",
        )
    return output_dir


def _owned_by_medseg(out: dict[str, Path]) -> bool:
    """Whether a case's existing outputs were written by ``medseg predict``: its report (or
    failure record) is there, or a commit of its outputs was interrupted (``kill -9``)."""
    folder = out["json"].parent
    return (
        out["json"].is_file()
        or out["failed"].is_file()
        or bool(partial_leftovers(folder, out["mask"].name))
    )


def check_case_outputs(cases: Sequence[Case], output_dir: Path, overwrite: bool) -> None:
    """The output guard for every case before any work: no output may be an input of the
    command, a folder, or a file ``medseg predict`` did not write (unless ``overwrite``).

    A case counts as written by medseg only through its own record (``<case>.json`` or
    ``<case>.failed.json``): a ``labelsTr/<case>.nii.gz`` with no report beside it is the
    user's ground truth, and predicting into ``labelsTr`` must not replace it.
    """
    inputs = [p for case in cases for p in case.inputs]
    known = {_identity(p) for p in inputs} - {None}  # one stat per input, not per pair
    taken: list[str] = []
    for case in cases:
        out = case_outputs(output_dir, case.case_id)
        ours = overwrite or _owned_by_medseg(out)
        for name in ("mask", "dicom_seg", "rtstruct", "probabilities", "json", "failed"):
            path, same = out[name], _identity(out[name])
            clash = [p for p in inputs if _identity(p) == same] if same in known else []
            check_output(path, overwrite=True, inputs=[*case.inputs, *clash])
            if not ours and os.path.lexists(path):
                taken.append(str(path))
    if taken:
        more = f" and {len(taken) - 5} more" if len(taken) > 5 else ""
        raise OverwriteError(
            f"output {output_dir}: {', '.join(taken[:5])}{more} already exist and were not "
            "written by `medseg predict` (no <case>.json report beside them; e.g. ground-truth "
            "labels); pass --overwrite to replace them, or choose another output folder",
            param="output",
        )


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def predict_cases(
    predictor,
    cases: Sequence[Case],
    output_dir: str | Path,
    *,
    overwrite: bool = False,
    save_probabilities: bool = False,
    series: str | None = None,
    rank: int = 0,
    world_size: int = 1,
    progress: bool = True,
    channel: int | None = None,
    dicom_formats: Sequence[str] = ("seg",),
) -> BatchResult:
    """Predict this rank's share of ``cases`` (``cases[rank::world_size]``) into ``output_dir``.

    ``channel`` picks one index of 4D inputs (CLI ``--channel``); see :func:`read_case`.

    Done cases (``<case>.json`` and mask present) are skipped unless ``overwrite``, so a
    rerun after an interruption (even ``kill -9``) finishes the rest; what an interrupted
    write left of a case's outputs is removed first. A case that fails is logged, recorded
    in ``<case>.failed.json`` and skipped.
    """
    from tqdm import tqdm

    output_dir = make_output_dir(check_output_dir(output_dir))
    result = BatchResult()
    mine = list(cases)[rank::world_size]
    check_case_outputs(mine, output_dir, overwrite)
    bar = tqdm(mine, desc="predict", unit="case", disable=not progress or rank != 0)
    for case in bar:
        bar.set_postfix_str(case.case_id)
        if not case_to_do(output_dir, case, overwrite):  # each case has one owner (rank)
            result.skipped.append(case.case_id)
            continue
        try:
            predict_case(
                predictor,
                case,
                output_dir,
                series=series,
                save_probabilities=save_probabilities,
                worker={"rank": rank, "world_size": world_size},
                channel=channel,
                dicom_formats=dicom_formats,
            )
            result.done.append(case.case_id)
        except OutputWriteError:
            raise  # the output disk (full, read-only), not the case: every case would fail
        except Exception as err:  # one bad case must never abort the others
            message = f"{type(err).__name__}: {err}"
            logger.debug("case %s traceback", case.case_id, exc_info=True)
            result.failed.append((case.case_id, message))
            write_failure(output_dir, case, message)
    return result


def collect_failures(cases: Sequence[Case], output_dir: str | Path) -> list[tuple[str, str]]:
    """``(case, error)`` of every case in ``cases`` that has a failure record and no result."""
    failures = []
    for case in cases:
        out = case_outputs(Path(output_dir), case.case_id)
        if out["failed"].is_file() and not out["json"].is_file():
            failures.append((case.case_id, json.loads(out["failed"].read_text())["error"]))
    return failures


def merge_summary(
    cases: Sequence[Case], output_dir: str | Path, *, overwrite: bool = False
) -> Path:
    """Merge the per-case JSONs of ``cases`` into ``summary.csv`` and ``lesions.csv`` (an
    existing one is replaced when medseg wrote it, or with ``overwrite``)."""
    import pandas as pd

    output_dir = Path(output_dir)
    rows, lesion_rows = [], []
    for case in cases:
        out = case_outputs(output_dir, case.case_id)
        if out["json"].is_file():
            report = json.loads(out["json"].read_text())
        elif out["failed"].is_file():
            report = json.loads(out["failed"].read_text())
        else:
            rows.append({"case": case.case_id, "status": "missing"})
            continue
        row: dict[str, Any] = {"case": case.case_id, "status": report.get("status")}
        if report.get("status") == "ok":
            for name, info in report["readouts"]["classes"].items():
                row[f"{name}_volume_ml"] = info["volume_ml"]
                row[f"{name}_lesions"] = info["lesions"]
                row[f"{name}_max_diameter_mm"] = info["largest_lesion_diameter_mm"]
            row["seconds"] = report["timing_s"].get("total")
            row["model"] = (report["settings"].get("model") or {}).get("name")
            row["checkpoint_sha256"] = report["settings"].get("checkpoint_sha256")
            for k, digest in enumerate(report["settings"].get("fold_checkpoint_sha256") or ()):
                row[f"fold_{k}_sha256"] = digest
            row["tta"] = report["settings"].get("tta")
            for lesion in report["readouts"]["lesions"]:
                lesion_rows.append({"case": case.case_id, **lesion})
        else:
            row["error"] = report.get("error")
        rows.append(row)
    summary, lesions = output_dir / "summary.csv", output_dir / "lesions.csv"
    for path in (summary, lesions):  # rewritten on every run, but never over a user's file
        remove_partials(output_dir, path.name)
        check_output(path, overwrite=overwrite or is_medseg_table(path))
    write_csv(pd.DataFrame(rows), summary)
    write_csv(pd.DataFrame(lesion_rows), lesions)
    return summary


def merge_parts(output: str | Path, *, overwrite: bool = False) -> tuple[Path, list[str]]:
    """Write ``output/summary.csv`` and ``lesions.csv`` of a finished parts run from the
    per-case reports (``medseg predict --merge-parts OUT``); returns the summary's path and
    the case ids. Refused while a part has no record or when the parts disagree."""
    ids = merged_case_ids(output)
    return merge_summary([Case(i, []) for i in ids], output, overwrite=overwrite), ids


def finish_part(
    output: Path, part_id: int, num_parts: int, cases: Sequence[Case], all_ids: Sequence[str],
    model_sha256: str | None, *, overwrite: bool = False,
) -> tuple[Path | None, list[tuple[str, str]]]:  # fmt: skip
    """Record this part, then merge the summary if it is the last part to finish (every
    record present); returns ``(summary or None, this part's failures)``."""
    failures = collect_failures(cases, output)
    done = [c.case_id for c in cases if case_outputs(output, c.case_id)["json"].is_file()]
    write_record(
        output, part_id, num_parts, model_sha256=model_sha256, all_ids=all_ids,
        cases=[c.case_id for c in cases], done=done, failed=failures,
    )  # fmt: skip
    # Each part writes its record before looking at the others', so the last one to finish
    # sees them all; two finishing together both merge the same reports (atomic renames).
    if missing_parts(output)[1]:
        return None, failures
    try:
        return merge_parts(output, overwrite=overwrite)[0], failures
    except MedsegError as err:  # e.g. a stale record: leave it to --merge-parts to report
        logger.warning("not merging the parts' summary: %s", err)
        return None, failures


@dataclasses.dataclass
class FolderResult:
    """What :func:`predict_folder` did: every case found, this rank's share of the work, the
    whole run's failures and the summary CSV (written by rank 0; ``None`` on other ranks)."""

    cases: list[Case]
    done: list[str]
    skipped: list[str]
    failures: list[tuple[str, str]]
    summary: Path | None
    rank: int = 0
    world_size: int = 1


def predict_folder(
    inputs: str | Path | Sequence[str | Path],
    output: str | Path,
    *,
    model: str | Path | None = None,
    device: str = "auto",
    tta: bool | None = None,
    axes: Sequence[int] | None = None,
    batch_size: int = 16,
    postprocess: PostprocessConfig | None = None,
    save_probabilities: bool = False,
    overwrite: bool = False,
    series: str | None = None,
    info: DistInfo | None = None,
    progress: bool = True,
    channel: int | None = None,
    num_parts: int = 1,
    part_id: int = 0,
    dicom_formats: str | Sequence[str] = ("seg",),
) -> FolderResult:
    """Segment every case in ``inputs`` into the folder ``output`` (what ``medseg predict`` runs).

    Args:
        inputs: NIfTI/NRRD/MHA files, DICOM series folders, or folders of such cases
            (nnU-Net channel files ``CASE_0000.nii.gz`` ... form one multi-channel case).
        output: folder for the masks, reports and ``summary.csv`` (created if missing).
        model: checkpoint or export; ``None``: the bundled demo model.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (:mod:`medseg.device`).
        tta, axes, batch_size, postprocess: passed to :class:`~medseg.inference.Predictor`
            (``postprocess=None``: the model's own rules).
        save_probabilities: also write ``<case>_probabilities.nii.gz``.
        overwrite: redo cases that already have results.
        series: the SeriesInstanceUID to read when a DICOM folder holds several.
        channel: index to take from 4D inputs; without it a 4D input with the model's
            channel count is its channel stack (:func:`read_case`).
        info: this process's place in a torchrun job (``DistInfo.from_env()`` at the entry
            point); ranks share the cases and rank 0 writes the summary.
        num_parts, part_id: predict only part ``part_id`` of ``num_parts`` (a job array;
            :mod:`medseg.inference.parts`): record it in ``output/parts/``; the last part
            to finish writes the summary.
        dicom_formats: DICOM outputs of DICOM inputs: ``seg`` (DICOM-SEG), ``rtstruct``, or
            both (``"seg,rtstruct"``).

    Errors name the parameter at fault (``output ...``, ``device ...``); nothing is loaded
    before the output folder and the device are checked.
    """
    from medseg.inference.predictor import Predictor, default_model_path

    info = info or DistInfo()
    dicom_formats = check_dicom_formats(dicom_formats)
    plan = plan_run(
        inputs, output, model, overwrite=overwrite, num_parts=num_parts, part_id=part_id,
        device=device, info=info,
    )  # fmt: skip
    predictor = Predictor.load(
        plan.model or default_model_path(), device=plan.device, tta=tta, axes=axes,
        batch_size=batch_size, postprocess=postprocess,
    )  # fmt: skip
    model_sha256 = predictor.provenance.get("checkpoint_sha256")
    check_plan_model(plan, model_sha256)
    with process_group(info, plan.device):
        result = predict_cases(
            predictor, plan.cases, plan.output, overwrite=overwrite,
            save_probabilities=save_probabilities, series=series, rank=info.rank,
            world_size=info.world_size, progress=progress, channel=channel,
            dicom_formats=dicom_formats,
        )  # fmt: skip
        barrier()
        summary = finish_run(plan, model_sha256, overwrite=overwrite) if info.is_main else None
        barrier()  # rank 0's summary is complete before anyone reads failures
        failures = collect_failures(plan.cases, plan.output)
    return FolderResult(
        plan.cases, result.done, result.skipped, failures, summary, info.rank, info.world_size
    )


@dataclasses.dataclass
class RunPlan:
    """A checked ``medseg predict`` run, before any model is loaded: the output folder,
    the model path (``None``: the demo model), this part's cases and the whole case list."""

    output: Path
    model: Path | None
    cases: list[Case]
    all_ids: list[str]
    num_parts: int = 1
    part_id: int = 0
    device: Any = None

    @property
    def parted(self) -> bool:
        return self.num_parts != 1 or self.part_id != 0


def plan_run(
    inputs: str | Path | Sequence[str | Path],
    output: str | Path,
    model: str | Path | None,
    *,
    overwrite: bool,
    num_parts: int = 1,
    part_id: int = 0,
    device: str | None = None,
    info: DistInfo | None = None,
) -> RunPlan:
    """Every check of a run that needs no model, in the order the user sees them: the
    output folder, the model path, the part, the device (unless ``None``), the cases and
    the output guard of every case (which creates the output folder)."""
    from medseg.inference.store import resolve_model

    output = check_output_dir(output)
    model = resolve_model(model)
    if model is not None and not Path(model).exists():
        raise InputNotFoundError(
            f"model {model} does not exist; pass a checkpoint (.pt), an export (.onnx, "
            "TorchScript .pt), a model folder or the name of an installed model (`medseg "
            "models list`), or leave it out for the bundled demo model",
            param="model",
        )
    plan = RunPlan(output, model, [], [], num_parts, part_id)
    if plan.parted:
        check_part(output, part_id, num_parts)
    if device is not None:
        plan.device = resolve_device(device, info or DistInfo())
    cases = discover_cases([inputs] if isinstance(inputs, (str, Path)) else list(inputs))
    plan.all_ids = [c.case_id for c in cases]
    # discover_cases sorts by case id, so this is parts.part_share
    plan.cases = cases[part_id::num_parts] if plan.parted else cases
    # fail before the model loads (every rank, the same answer): a read-only disk, a user's
    # file in the way
    check_case_outputs(plan.cases, make_output_dir(output), overwrite)
    return plan


def check_plan_model(plan: RunPlan, model_sha256: str | None) -> None:
    """Before any case of a part: one model and one case list across the parts."""
    if plan.parted:
        check_same_run(plan.output, model_sha256, case_list_sha256(plan.all_ids))


def finish_run(plan: RunPlan, model_sha256: str | None, *, overwrite: bool) -> Path | None:
    """The summary of a finished run (``None`` while other parts are still running)."""
    if plan.parted:
        return finish_part(
            plan.output, plan.part_id, plan.num_parts, plan.cases, plan.all_ids, model_sha256,
            overwrite=overwrite,
        )[0]  # fmt: skip
    return merge_summary(plan.cases, plan.output, overwrite=overwrite)
