"""Patient-level train/validation splits and k-fold cross-validation.

Splits are made over *patients*, never slices, so no patient contributes slices to both
sides. By default every case is its own patient; pass ``groups`` (case id -> patient id) when
a patient has several cases (time points, several scans).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from medseg.errors import ConfigError, DatasetError


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
