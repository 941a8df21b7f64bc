"""The postprocessing chosen out of fold may not delete true lesions to remove specks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from medseg.engine.crossval_join import choose_postprocessing, score_cases
from medseg.inference.postprocess import Structure, candidate_rules, fp_size_thresholds

TUMOUR = Structure(name="tumour", values=(1,))
SHAPE = (40, 40, 40)


def _main_lesion() -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[5:15, 5:15, 5:15] = 1  # 1000 voxels = 1 mL at 1 mm
    return mask


def _add_cubes(mask: np.ndarray, side: int, count: int, row: int) -> np.ndarray:
    """``count`` separate cubes of ``side`` voxels along one row, far from the main lesion."""
    out = mask.copy()
    for i in range(count):
        x = 2 + i * (side + 2)
        out[x : x + side, row : row + side, 30 : 30 + side] = 1
    return out


def _case(name: str, truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    return {"case_id": name, "fold": 0, "truth": truth, "pred": pred, "spacing": (1.0, 1.0, 1.0)}


def _satellite_case() -> dict[str, Any]:
    """Three true 27-voxel satellites, all found."""
    truth = _add_cubes(_main_lesion(), 3, 3, row=20)
    return _case("satellites", truth, truth.copy())


def test_largest_component_loses_when_it_deletes_true_satellites():
    # specks (64 voxels) larger than the satellites (27): no size rule removes the specks
    # and keeps the satellites
    specky = [
        _case(f"specks{i}", _main_lesion(), _add_cubes(_main_lesion(), 4, 5, row=30))
        for i in range(3)
    ]
    rules, decision = choose_postprocessing([_satellite_case(), *specky], [TUMOUR])
    table = decision["tumour"]["candidates"]
    largest = table["largest component"]
    # on Dice alone "largest component" would have won (the old rule)
    assert largest["mean_dice"] > table["none"]["mean_dice"] + 1e-4
    assert largest["mean_dice"] == max(fig["mean_dice"] for fig in table.values())
    # pooled: 7 reference lesions, the 3 satellites lost
    assert largest["lesion_sensitivity"] == pytest.approx(4 / 7)
    assert table["none"]["lesion_sensitivity"] == 1.0
    assert not largest["keeps_lesions"]
    assert decision["tumour"]["chosen"] == "none"
    assert rules == []
    assert "lesion sensitivity" in decision["tumour"]["rule"]


def test_size_threshold_removes_specks_and_keeps_satellites():
    # specks (8 voxels) smaller than every true lesion (27)
    satellites = _satellite_case()
    specky = [
        _case(f"specks{i}", satellites["truth"], _add_cubes(satellites["truth"], 2, 6, row=32))
        for i in range(3)
    ]
    rules, decision = choose_postprocessing([satellites, *specky], [TUMOUR])
    chosen = decision["tumour"]["chosen"]
    assert chosen.startswith("drop < ")
    assert len(rules) == 1
    assert rules[0].rule == "min_ml"
    assert 0.008 < rules[0].min_ml <= 0.027
    fig = decision["tumour"]["candidates"][chosen]
    assert fig["lesion_sensitivity"] == 1.0
    assert fig["mean_fp_lesions"] == 0
    assert fig["lesion_f1"] == 1.0
    assert not decision["tumour"]["candidates"]["largest component"]["keeps_lesions"]
    rows = score_cases([satellites, *specky], [TUMOUR], rules)
    assert [r["fp_lesions_raw"] for r in rows] == [0, 6, 6, 6]
    assert [r["fp_lesions"] for r in rows] == [0, 0, 0, 0]
    assert all(r["lesion_sensitivity"] == 1.0 for r in rows)
    assert rows[1]["lesion_f1_raw"] == pytest.approx(2 * 4 / (2 * 4 + 6))


def test_fp_size_thresholds_never_reach_a_detected_lesion():
    assert fp_size_thresholds([0.008, 0.008, 0.064], tp_ml=[0.027]) == [0.0081]
    assert fp_size_thresholds([0.008, 0.064], tp_ml=[]) == [0.0081, 0.065]
    assert fp_size_thresholds([], tp_ml=[1.0]) == []
    names = [r.describe() for r in candidate_rules(TUMOUR, (0.1,), [0.008], [0.027])]
    assert names == [
        "tumour: largest component",
        "tumour: drop < 0.0081 mL",
        "tumour: drop < 0.1 mL",
    ]
