"""Bootstrap intervals over cases and the out-of-fold summary built from them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medseg.engine.crossval_join import _summary, write_intervals
from medseg.engine.cv_layout import FIGURES, RAW
from medseg.engine.cv_stats import (
    MIN_TRUSTED_CASES,
    Interval,
    bootstrap_interval,
    few_cases_warning,
    pooled_ratio,
)
from medseg.inference.postprocess import Structure


def test_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(123)
    trials, hits = 300, 0
    for t in range(trials):
        sample = rng.normal(0.8, 0.1, size=40)
        ci = bootstrap_interval(sample, resamples=1000, seed=t)
        assert ci.low < ci.value < ci.high
        hits += ci.low <= 0.8 <= ci.high
    # percentile bootstrap at n=40: nominal 95 %, slightly under in practice
    assert 0.89 <= hits / trials <= 0.99


def test_two_cases_give_the_exact_resampling_distribution():
    # resampled means of (0, 1) are 0, 0.5 and 1 with probabilities 1/4, 1/2, 1/4
    ci = bootstrap_interval([0.0, 1.0])
    assert (ci.value, ci.low, ci.high, ci.cases) == (0.5, 0.0, 1.0, 2)
    same = bootstrap_interval([0.7] * 5)
    assert (same.low, same.high) == pytest.approx((0.7, 0.7))


def test_same_seed_same_interval_other_seed_other_interval():
    values = np.random.default_rng(0).uniform(0.5, 1.0, size=12)
    a, b = bootstrap_interval(values, seed=7), bootstrap_interval(values, seed=7)
    assert a == b
    c = bootstrap_interval(values, seed=8)
    assert (c.low, c.high) != (a.low, a.high)
    assert c.value == a.value


def test_one_case_has_no_interval_and_a_warning():
    ci = bootstrap_interval([0.9])
    assert ci.cases == 1
    assert ci.low is None
    assert ci.high is None
    assert ci.text() == "0.900 (1 case, no interval)"
    warning = few_cases_warning(1)
    assert warning.startswith("only 1 case: these figures cannot be trusted")
    assert bootstrap_interval([]).cases == 0


def test_warning_below_ten_cases_only():
    assert "only 4 cases" in few_cases_warning(4)
    assert "intervals are wide" in few_cases_warning(4)
    assert few_cases_warning(MIN_TRUSTED_CASES) is None


def test_undefined_cases_are_left_out_and_counted():
    ci = bootstrap_interval([1.0, np.nan, 3.0, np.nan])
    assert ci.cases == 2
    assert ci.value == 2.0


def test_text_reads_value_interval_and_cases():
    ci = Interval(0.8942, 0.8531, 0.9312, 4)
    assert ci.text() == "0.894 [0.85, 0.93] (95% CI over 4 cases)"
    assert ci.text(2) == "0.89 [0.85, 0.93] (95% CI over 4 cases)"


def test_pooled_ratio_resamples_cases_not_lesions():
    # case 0: 1 of 10 lesions found, case 1: 1 of 1
    counts = np.array([[1, 10], [1, 1]], dtype=float)
    ci = bootstrap_interval(counts, statistic=pooled_ratio)
    assert ci.value == pytest.approx(2 / 11)
    assert (ci.low, ci.high) == pytest.approx((0.1, 1.0))
    # no lesion in any resample -> undefined, no interval
    assert np.isnan(bootstrap_interval(np.zeros((3, 2)), statistic=pooled_ratio).value)


def _rows(n_cases: int) -> list[dict]:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n_cases):
        row = {"case": f"c{i}", "fold": i % 2, "structure": "tumour"}
        for suffix in ("", RAW):
            tp = int(rng.integers(0, 3))
            row.update(
                {
                    f"dice{suffix}": float(rng.uniform(0.6, 0.95)),
                    f"hd95_mm{suffix}": np.nan if i == 0 else float(rng.uniform(2, 9)),
                    f"fp_lesions{suffix}": int(rng.integers(0, 3)),
                    f"fn_lesions{suffix}": int(rng.integers(0, 2)),
                    f"tp_lesions{suffix}": tp,
                    f"lesion_sensitivity{suffix}": 0.0,
                    f"lesion_f1{suffix}": 0.0,
                }
            )
        rows.append(row)
    return rows


def test_summary_has_every_figure_with_interval_and_warns_on_few_cases(tmp_path):
    structures = [Structure(name="tumour", values=(1,))]
    rows = _rows(4)
    summary = _summary(rows, structures)
    assert summary["cases"] == 4
    assert "only 4 cases" in summary["warning"]
    figs = summary["structures"]["tumour"]
    assert set(figs) == {f + s for f in FIGURES for s in ("", RAW)}
    assert figs["dice"]["value"] == pytest.approx(np.mean([r["dice"] for r in rows]))
    assert figs["dice"]["text"].endswith("(95% CI over 4 cases)")
    assert figs["hd95_mm"]["cases"] == 3  # HD95 undefined for case 0
    tp = sum(r["tp_lesions"] for r in rows)
    fn = sum(r["fn_lesions"] for r in rows)
    assert figs["lesion_sensitivity"]["value"] == pytest.approx(tp / (tp + fn))
    path = tmp_path / "intervals.csv"
    write_intervals(path, summary)
    table = pd.read_csv(path, comment="#")
    assert len(table) == 2 * len(FIGURES)
    assert table["warning"].str.contains("only 4 cases").all()
    assert (table["ci_low"] <= table["value"]).all()
    assert _summary(_rows(12), structures)["warning"] is None
