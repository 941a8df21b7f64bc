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
    # (ten cases: with fewer, "largest component" is not even tried)
    specky = [
        _case(f"specks{i}", _main_lesion(), _add_cubes(_main_lesion(), 4, 5, row=30))
        for i in range(9)
    ]
    rules, decision = choose_postprocessing([_satellite_case(), *specky], [TUMOUR])
    table = decision["tumour"]["candidates"]
    largest = table["largest component"]
    # on Dice alone "largest component" would have won (the old rule)
    assert largest["mean_dice"] > table["none"]["mean_dice"] + 1e-4
    assert largest["mean_dice"] == max(fig["mean_dice"] for fig in table.values())
    # pooled: 13 reference lesions, the 3 satellites lost
    assert largest["lesion_sensitivity"] == pytest.approx(10 / 13)
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
    # four cases cannot show that the tumour is one object in every patient
    assert "largest component" not in decision["tumour"]["candidates"]
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
        "tumour: drop < 0.0081 mL",
        "tumour: drop < 0.1 mL",
        "tumour: largest component",
    ]
    assert [r.rule for r in candidate_rules(TUMOUR, (0.1,), largest=False)] == ["min_ml"]


def test_equal_rules_prefer_the_smaller_threshold_over_largest_component():
    # one 125-voxel speck per case, 0.125 mL: "drop < 0.5 mL" and "largest" remove it alike
    cases = [
        _case(f"c{i}", _main_lesion(), _add_cubes(_main_lesion(), 5, 1, row=30)) for i in range(10)
    ]
    rules, decision = choose_postprocessing(cases, [TUMOUR])
    table = decision["tumour"]["candidates"]
    assert table["largest component"]["score"] == pytest.approx(table["drop < 0.5 mL"]["score"])
    assert rules[0].rule == "min_ml"
    assert decision["tumour"]["chosen"] == "drop < 0.13 mL"  # just above the speck


def test_reference_fragments_do_not_block_speck_removal():
    # the reference carries a 2-voxel fragment that the prediction also marks; 40 specks of
    # 8 voxels elsewhere. Counting the fragment as a lesion, removing the specks "loses" it
    fragment = _main_lesion()
    fragment[30, 30, 5:7] = 1
    cases = [_case(f"c{i}", fragment, _add_cubes(fragment, 2, 6, row=34)) for i in range(3)]
    rules, decision = choose_postprocessing(cases, [TUMOUR])
    chosen = decision["tumour"]["candidates"][decision["tumour"]["chosen"]]
    assert decision["tumour"]["candidates"]["none"]["lesion_sensitivity"] == 1.0
    assert chosen["mean_fp_lesions"] == 0
    assert chosen["lesion_sensitivity"] == 1.0  # the main lesion, the only one counted
    assert rules
    assert rules[0].rule == "min_ml"


def test_a_class_never_detected_still_loses_its_specks():
    # the model never finds class 2 (Dice 0 under every rule) but sprays 8-voxel specks of it
    truth = _main_lesion()
    truth[20:30, 20:30, 20:30] = 2
    pred = np.where(truth == 2, 0, truth).astype(np.uint8)
    pred = np.where(_add_cubes(np.zeros(SHAPE, np.uint8), 2, 4, row=34) > 0, 2, pred)
    other = Structure(name="other", values=(2,))
    rules, decision = choose_postprocessing(
        [_case(f"c{i}", truth, pred.astype(np.uint8)) for i in range(3)], [other]
    )
    table = decision["other"]["candidates"]
    assert table["none"]["score"] == pytest.approx(0.0)
    assert table["none"]["mean_fp_lesions"] == 4
    assert decision["other"]["candidates"][decision["other"]["chosen"]]["mean_fp_lesions"] == 0
    assert rules
    assert rules[0].structure == other


def test_softmax_models_clean_up_every_class_together_first():
    from types import SimpleNamespace

    from medseg.inference.postprocess import ALL_CLASSES, postprocessing_structures

    names = ["background", "necrosis", "oedema", "enhancing"]
    structures = postprocessing_structures(SimpleNamespace(regions=None), names)
    assert [s.name for s in structures] == [ALL_CLASSES, "necrosis", "oedema", "enhancing"]
    assert structures[0].values == (1, 2, 3)
    assert structures[0].fill == 0
    single = postprocessing_structures(SimpleNamespace(regions=None), ["background", "liver"])
    assert [s.name for s in single] == ["liver"]
    # a speck made of two classes: per class each half is tiny, together it is one component
    truth = _main_lesion()
    pred = truth.copy()
    pred[30:33, 30:33, 30:32] = 2
    pred[30:33, 30:33, 32:34] = 3
    cases = [_case(f"c{i}", truth, pred) for i in range(3)]
    rules, decision = choose_postprocessing(cases, structures)
    assert decision[ALL_CLASSES]["candidates"]["none"]["mean_fp_lesions"] == 1
    assert rules[0].structure.name == ALL_CLASSES
    assert (
        decision[ALL_CLASSES]["candidates"][decision[ALL_CLASSES]["chosen"]]["mean_fp_lesions"] == 0
    )
