"""How far an out-of-fold figure can be trusted: a percentile bootstrap over cases.

The cases are what varies from one cohort to the next, so the cases are resampled (with
replacement, ``resamples`` times, from a seeded generator) and the figure recomputed on each
resample; the interval is the central ``confidence`` share of those figures. A case is the
unit even for lesion counts, because the lesions of one patient are not independent.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

#: below this many cases the summary says the figures cannot be trusted to carry over
MIN_TRUSTED_CASES = 10
RESAMPLES = 2000
CONFIDENCE = 0.95
SEED = 0


@dataclasses.dataclass(frozen=True)
class Interval:
    """A figure over ``cases`` cases and its bootstrap interval (``low``/``high`` are None
    when there are too few cases to resample)."""

    value: float
    low: float | None
    high: float | None
    cases: int
    confidence: float = CONFIDENCE

    def text(self, digits: int = 3) -> str:
        """``0.894 [0.85, 0.93] (95% CI over 4 cases)``, or ``0.894 (1 case, no interval)``."""
        value = _fmt(self.value, digits)
        if self.low is None or self.high is None:
            return f"{value} ({_cases(self.cases)}, no interval)"
        pct = f"{self.confidence * 100:g}%"
        # bounds one decimal coarser from 3 decimals on: the interval is rarely that sharp
        bound_digits = digits - 1 if digits >= 3 else digits
        low, high = _fmt(self.low, bound_digits), _fmt(self.high, bound_digits)
        return f"{value} [{low}, {high}] ({pct} CI over {_cases(self.cases)})"

    def as_dict(self, digits: int = 3) -> dict[str, float | int | str | None]:
        return {
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "cases": self.cases,
            "confidence": self.confidence,
            "text": self.text(digits),
        }


def mean_of_cases(samples: np.ndarray) -> np.ndarray:
    """Mean over axis 1 of ``(resamples, cases)``: the statistic of per-case figures."""
    return samples.mean(axis=1)


def pooled_ratio(samples: np.ndarray) -> np.ndarray:
    """Sum of column 0 over sum of column 1, over axis 1 of ``(resamples, cases, 2)``: a
    pooled rate such as lesion sensitivity (detected / reference lesions); NaN where the
    denominator is 0."""
    num, den = samples[..., 0].sum(axis=1), samples[..., 1].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def bootstrap_interval(
    values: np.ndarray | list,
    statistic: Callable[[np.ndarray], np.ndarray] = mean_of_cases,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> Interval:
    """Percentile bootstrap of ``statistic`` over the cases (rows) of ``values``.

    ``values``: ``(cases,)`` per-case figures, or ``(cases, k)`` per-case counts for a pooled
    statistic. Rows holding a NaN (a figure undefined for that case, e.g. HD95 with an empty
    mask) are left out, and ``cases`` counts the rest. ``statistic`` maps a
    ``(resamples, cases[, k])`` stack of resampled rows to ``(resamples,)`` figures; it is
    also applied once to the data as drawn (``value``). With fewer than 2 cases there is
    nothing to resample: ``low`` and ``high`` are None.
    """
    data = np.asarray(values, dtype=np.float64)
    if data.ndim == 1:
        keep = np.isfinite(data)
    else:
        keep = np.isfinite(data).all(axis=tuple(range(1, data.ndim)))
    data = data[keep]
    n = len(data)
    if n == 0:
        return Interval(math.nan, None, None, 0, confidence)
    value = float(statistic(data[None])[0])
    if n < 2:
        return Interval(value, None, None, n, confidence)
    rng = np.random.default_rng(seed)
    figures = statistic(data[rng.integers(0, n, size=(resamples, n))])
    figures = figures[np.isfinite(figures)]
    if len(figures) == 0:
        return Interval(value, None, None, n, confidence)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(figures, [tail, 100.0 - tail])
    return Interval(value, float(low), float(high), n, confidence)


def few_cases_warning(cases: int, minimum: int = MIN_TRUSTED_CASES) -> str | None:
    """The plain warning shown next to out-of-fold figures over fewer than ``minimum``
    cases, or None."""
    if cases >= minimum:
        return None
    return (
        f"only {_cases(cases)}: these figures cannot be trusted to carry over to new "
        f"patients; intervals are wide{' or missing' if cases < 2 else ''} (at least "
        f"{minimum} cases are needed for a figure worth quoting)"
    )


def _fmt(x: float, digits: int) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.{max(digits, 1)}f}"


def _cases(n: int) -> str:
    return f"{n} case{'' if n == 1 else 's'}"
