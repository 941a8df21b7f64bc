"""Patient-level train/validation splits and k-fold cross-validation.

Splits are made over *patients*, never slices, so no patient contributes slices to both
sides. By default every case is its own patient; pass ``groups`` (case id -> patient id) when
a patient has several cases (time points, several scans).
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import ConfigError, DatasetError
from medseg.io.atomic import write_json

logger = logging.getLogger(__name__)


def split_cases(
    case_ids: Sequence[str],
    val_fraction: float = 0.2,
    fold: int | None = None,
    num_folds: int = 5,
    seed: int = 0,
    groups: Mapping[str, str] | None = None,
) -> tuple[list[str], list[str]]:
    """Split case ids into ``(train, val)`` at patient level, deterministically for ``seed``.

    With ``fold`` set, patients are shuffled once and dealt into ``num_folds`` folds; fold
    ``fold`` is validation. Otherwise ``round(val_fraction * patients)`` patients (at least 1
    when ``val_fraction > 0`` and there are >= 2 patients) are validation.
    """
    if len(set(case_ids)) != len(case_ids):
        raise DatasetError("case ids are not unique; a patient-level split needs unique case ids")
    patient_of = {c: (groups or {}).get(c, c) for c in case_ids}
    patients = sorted(set(patient_of.values()))
    order = np.random.default_rng(seed).permutation(len(patients))
    shuffled = [patients[i] for i in order]
    if fold is not None:
        if not 0 <= fold < num_folds:
            raise ConfigError(f"fold {fold} out of range; expected 0..{num_folds - 1}")
        if len(patients) < num_folds:
            raise DatasetError(
                f"{len(patients)} patient(s) cannot make {num_folds} folds; lower num_folds"
            )
        val_patients = set(shuffled[fold::num_folds])
    else:
        n_val = round(val_fraction * len(patients))
        if val_fraction > 0 and len(patients) >= 2:
            n_val = min(max(n_val, 1), len(patients) - 1)
        val_patients = set(shuffled[:n_val])
    train = [c for c in case_ids if patient_of[c] not in val_patients]
    val = [c for c in case_ids if patient_of[c] in val_patients]
    return train, val


def split_from_spec(
    cases: Sequence[object],
    val_fraction: float = 0.2,
    fold: int | None = None,
    num_folds: int = 5,
    seed: int = 0,
    val_cases: Sequence[str] | None = None,
) -> tuple[list[str], list[str]]:
    """Split cases, honouring explicit ``val_cases`` or a manifest's ``split`` column.

    ``val_cases`` (case ids, e.g. fixed held-out patients) wins over everything else.

    Cases marked ``test`` are left out. Without ``fold``, when any case is marked ``val``
    (or ``validation``) those are the validation cases and all others train; otherwise (or
    with ``fold`` set) :func:`split_cases` splits the remaining cases at patient level.
    """
    given = {c.case_id: (getattr(c, "split", None) or "").lower() for c in cases}  # type: ignore[attr-defined]
    usable = [i for i, s in given.items() if s != "test"]
    if val_cases:
        unknown = sorted(set(val_cases) - set(usable))
        if unknown:
            raise DatasetError(
                f"val_cases {unknown} are not (non-test) cases of the dataset; "
                f"valid case ids include {usable[:10]}"
            )
        return [i for i in usable if i not in set(val_cases)], list(val_cases)
    if fold is None and any(given[i] in ("val", "validation") for i in usable):
        val = [i for i in usable if given[i] in ("val", "validation")]
        return [i for i in usable if i not in set(val)], val
    return split_cases(usable, val_fraction, fold, num_folds, seed)


# ----------------------------------------------------------------------------- stable plans
#: Where a new case (one not in the split file yet) goes: ``train`` (default) or ``val``.
NEW_CASE_SIDES = ("train", "val")
SPLIT_FORMAT = "medseg-split/1"


@dataclass(frozen=True)
class Split:
    """The train/validation case ids a run uses and where they came from.

    ``source``: ``data.val_cases``, ``manifest`` (its ``split`` column), ``split file``
    (a stable plan, ``path``) or ``recorded`` (a resumed run's own split). ``added``: case
    ids that joined the split file in this call, per side (``train`` / ``val``).
    """

    train: list[str]
    val: list[str]
    source: str
    path: Path | None = None
    fold: int | None = None
    added: dict[str, list[str]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "split_file": None if self.path is None else str(self.path),
            "fold": self.fold,
            "train": list(self.train),
            "val": list(self.val),
            "added_in_this_run": {k: list(v) for k, v in self.added.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> Split:
        """The inverse of :meth:`as_dict` (e.g. from a checkpoint's ``data_split``);
        ``source`` replaces the recorded one (and drops its file)."""
        path = data.get("split_file") if source is None else None
        return cls(
            list(data["train"]),
            list(data["val"]),
            source or str(data.get("source", "recorded")),
            None if path is None else Path(path),
            data.get("fold"),
        )


def default_split_path(cache_dir: Path, kfold: bool) -> Path:
    """The split file kept with a dataset's preprocessed data (``data.cache_dir``), one per
    kind: ``splits_holdout.json`` (``val_fraction``) and ``splits_kfold.json`` (``fold``)."""
    return Path(cache_dir) / ("splits_kfold.json" if kfold else "splits_holdout.json")


def plan_split(
    case_ids: Sequence[str],
    path: Path,
    *,
    num_folds: int | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    new_cases: str = "train",
    groups: Mapping[str, str] | None = None,
    write: bool = True,
    inherit: Split | None = None,
) -> dict[str, Any]:
    """The split plan recorded in ``path``: created when absent, then kept stable.

    ``num_folds`` set: k folds, each ``folds[k]["val"]`` (cross-validation, ``data.fold``);
    else one hold-out split of ``val_fraction`` of the patients (``folds[0]["val"]``). Every
    case of the plan that is not in a fold's ``val`` trains in that fold.

    Re-planning with more cases never moves a recorded case: the new ones join training in
    every fold (listed under ``added_cases``), or with ``new_cases="val"`` validation (hold-out)
    or the fold with the fewest validation cases (k-fold). A new case of a patient already in
    validation (``groups``: case id -> patient id) joins that patient's side whatever
    ``new_cases`` says. A plan made with other settings (``val_fraction``, ``num_folds``,
    ``seed``) is refused with :class:`~medseg.errors.ConfigError` rather than re-shuffled.
    Cases of the plan missing from ``case_ids`` stay recorded (they may come back).
    ``write=False`` computes the same plan without touching the file (DDP ranks > 0).

    ``inherit`` (hold-out only, when ``path`` does not exist yet): start from another run's
    recorded split instead of a fresh shuffle, e.g. the model a fine-tune starts from
    (``train.init_from``), so its validation cases stay validation on a copy of its dataset;
    the cases that split did not know are then new cases.
    """
    if new_cases not in NEW_CASE_SIDES:
        raise ConfigError(f"new_cases {new_cases!r}: expected one of {NEW_CASE_SIDES}")
    path = Path(path)
    ids = list(case_ids)
    if path.is_file():
        plan = read_split_file(path)
        _check_settings(plan, path, num_folds, val_fraction, seed)
        added = _add_cases(plan, ids, new_cases, groups)
        if added and write:
            write_json(path, plan)
        return plan
    if inherit is not None and not num_folds:
        plan = _inherited_plan(ids, inherit, val_fraction, seed)
        _add_cases(plan, ids, new_cases, groups)
    else:
        plan = _new_plan(ids, num_folds, val_fraction, seed, groups)
    if write:
        write_json(path, plan)
        logger.info(
            "recorded a new %s split of %d case(s) (%d validation)%s in %s",
            plan["method"],
            len(ids),
            sum(len(f["val"]) for f in plan["folds"]),
            f", inherited from {plan['inherited_from']}" if "inherited_from" in plan else "",
            path,
        )
    return plan


def plan_sides(
    plan: Mapping[str, Any], case_ids: Sequence[str], fold: int = 0
) -> tuple[list, list]:
    """``(train, val)`` of ``case_ids`` in fold ``fold`` of ``plan`` (input order kept)."""
    if not 0 <= fold < len(plan["folds"]):
        raise ConfigError(
            f"fold {fold} out of range; the split has folds 0..{len(plan['folds']) - 1}"
        )
    val = set(plan["folds"][fold]["val"])
    return [c for c in case_ids if c not in val], [c for c in case_ids if c in val]


def read_split_file(path: Path) -> dict[str, Any]:
    """A split file's plan; a file that is not one is a :class:`~medseg.errors.DatasetError`."""
    try:
        plan = json.loads(Path(path).read_text(encoding="utf-8"))
        folds = plan["folds"]
        if not all(isinstance(f["val"], list) for f in folds):
            raise TypeError("a fold's 'val' is not a list")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DatasetError(
            f"{path}: not a readable split file ({type(err).__name__}: {err}); expected JSON "
            "with 'folds': [{'fold': 0, 'val': [case ids]}, ...]. Restore it, or point "
            "data.split_file to a new file to plan a new split"
        ) from err
    plan.setdefault("added_cases", [])
    plan.setdefault("method", "kfold" if plan.get("num_folds") else "holdout")
    plan.setdefault("log", [])
    return plan


def _describe(method: str, num_folds: Any, val_fraction: Any, seed: Any) -> str:
    if method == "kfold":
        return f"{num_folds} folds, split_seed {seed}"
    return f"val_fraction {val_fraction}, split_seed {seed}"


def _check_settings(
    plan: Mapping[str, Any], path: Path, num_folds: int | None, val_fraction: float, seed: int
) -> None:
    method = "kfold" if num_folds else "holdout"
    have = _describe(
        plan["method"], plan.get("num_folds"), plan.get("val_fraction"), plan.get("seed")
    )
    want = _describe(method, num_folds, val_fraction, seed)
    fix = (
        "The recorded split is kept so that no case moves between training and validation: "
        f"set the config back to {have}, or point data.split_file to a new file to plan a new "
        "split (validation scores of runs on different splits are not comparable)"
    )
    if plan["method"] != method:
        raise ConfigError(
            f"{path}: holds a {plan['method']} split ({have}) but a {method} split "
            f"({want}) was asked for. {fix}"
        )
    if method == "kfold" and plan.get("num_folds") != num_folds:
        raise ConfigError(
            f"{path}: holds {plan.get('num_folds')} folds but {num_folds} were asked for; use the "
            "same data.num_folds, or a new --output folder / data.split_file for a new split"
        )
    same_fraction = (
        method == "kfold" or abs(float(plan.get("val_fraction", -1)) - val_fraction) < 1e-9
    )
    if not same_fraction or ("seed" in plan and int(plan["seed"]) != int(seed)):
        raise ConfigError(
            f"{path}: records a split made with {have}, but the config asks for {want}. {fix}"
        )


def _patients(ids: Sequence[str], groups: Mapping[str, str] | None) -> dict[str, str]:
    return {c: (groups or {}).get(c, c) for c in ids}


def _new_plan(
    ids: list[str],
    num_folds: int | None,
    val_fraction: float,
    seed: int,
    groups: Mapping[str, str] | None,
) -> dict[str, Any]:
    plan: dict[str, Any] = {"format": SPLIT_FORMAT, "seed": int(seed)}
    if num_folds:
        patient_of = _patients(ids, groups)
        patients = list(dict.fromkeys(patient_of.values()))
        if len(patients) < num_folds:
            raise DatasetError(
                f"{len(patients)} patient(s) cannot make {num_folds} folds; lower num_folds"
            )
        order = np.random.default_rng(seed).permutation(len(patients))
        shuffled = [patients[i] for i in order]
        folds = []
        for k in range(num_folds):
            chosen = set(shuffled[k::num_folds])
            folds.append({"fold": k, "val": sorted(c for c in ids if patient_of[c] in chosen)})
        plan.update(method="kfold", num_folds=num_folds)
    else:
        _, val = split_cases(ids, val_fraction, seed=seed, groups=groups)
        folds = [{"fold": 0, "val": sorted(val)}]
        plan.update(method="holdout", val_fraction=val_fraction)
    plan.update(cases=sorted(ids), folds=folds, added_cases=[], log=[])
    return plan


def _inherited_plan(
    ids: list[str], inherit: Split, val_fraction: float, seed: int
) -> dict[str, Any]:
    known = set(inherit.train) | set(inherit.val)
    return {
        "format": SPLIT_FORMAT,
        "seed": int(seed),
        "method": "holdout",
        "val_fraction": val_fraction,
        "inherited_from": str(inherit.path or inherit.source),
        "cases": sorted(c for c in ids if c in known),
        "folds": [{"fold": 0, "val": sorted(c for c in ids if c in set(inherit.val))}],
        "added_cases": [],
        "log": [],
    }


def _add_cases(
    plan: dict[str, Any], ids: list[str], new_cases: str, groups: Mapping[str, str] | None
) -> dict[str, list[str]]:
    """Put the cases of ``ids`` the plan does not know yet on a side (in place)."""
    folds = plan["folds"]
    # "cases": every case planned at the start (k-fold plans written before it was recorded
    # hold each of them in some fold's val)
    known = set(plan.get("cases", [])) | {c for f in folds for c in f["val"]}
    known |= set(plan["added_cases"])
    new = [c for c in ids if c not in known]
    if not new:
        return {}
    patient_of = _patients([*known, *new], groups)
    val_fold = {patient_of[c]: int(f["fold"]) for f in folds for c in f["val"]}
    trains = {patient_of[c] for c in known} - set(val_fold) if len(folds) == 1 else set()
    trains |= {patient_of[c] for c in plan["added_cases"]}
    added: dict[str, list[str]] = {}
    for case in new:
        patient = patient_of[case]
        if patient in val_fold:  # a patient's scans stay on one side
            fold = val_fold[patient]
        elif patient in trains or new_cases == "train":
            plan["added_cases"].append(case)
            trains.add(patient)
            added.setdefault("train", []).append(case)
            continue
        else:
            fold = min(range(len(folds)), key=lambda k: (len(folds[k]["val"]), k))
            val_fold[patient] = fold
        folds[fold]["val"] = sorted([*folds[fold]["val"], case])
        added.setdefault("val", []).append(case)
        if len(folds) > 1:
            logger.info("new case %s joins the validation cases of fold %d", case, fold)
    for side, cases in added.items():
        where = {"train": "training", "val": "validation"}[side]
        where += " in every fold" if side == "train" and len(folds) > 1 else ""
        logger.info("%d new case(s) join %s: %s", len(cases), where, cases)
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    plan["log"] = [*plan.get("log", []), {"time_utc": stamp, "added": added}]
    return added


def stable_split(
    cases: Sequence[object],
    split_file: Path,
    *,
    val_fraction: float = 0.2,
    fold: int | None = None,
    num_folds: int = 5,
    seed: int = 0,
    val_cases: Sequence[str] | None = None,
    new_cases: str = "train",
    write: bool = True,
    inherit: Split | None = None,
) -> Split:
    """The labelled, non-test cases of a dataset split for one run, kept stable over time.

    ``val_cases`` and a manifest's ``split`` column win, as in :func:`split_from_spec`;
    otherwise the plan in ``split_file`` (:func:`plan_split`; k folds when ``fold`` is set)
    decides, so adding cases to the dataset never moves the recorded ones. ``inherit``: see
    :func:`plan_split`.
    """
    labelled = [
        c.case_id  # type: ignore[attr-defined]
        for c in cases
        if getattr(c, "label", None) is not None
        and (getattr(c, "split", None) or "").lower() != "test"
    ]
    explicit = bool(val_cases) or (
        fold is None
        and any((getattr(c, "split", None) or "").lower() in ("val", "validation") for c in cases)
    )
    if explicit:
        train, val = split_from_spec(cases, val_fraction, fold, num_folds, seed, val_cases)
        keep = set(labelled)
        source = "data.val_cases" if val_cases else "manifest"
        return Split([c for c in train if c in keep], [c for c in val if c in keep], source)
    before = read_split_file(split_file) if Path(split_file).is_file() else None
    plan = plan_split(
        labelled,
        split_file,
        num_folds=num_folds if fold is not None else None,
        val_fraction=val_fraction,
        seed=seed,
        new_cases=new_cases,
        write=write,
        inherit=inherit,
    )
    added: dict[str, list[str]] = {}
    if plan["log"] and (before is None or len(plan["log"]) > len(before["log"])):
        added = plan["log"][-1]["added"]
    train, val = plan_sides(plan, labelled, fold or 0)
    return Split(train, val, "split file", Path(split_file), fold, added)
