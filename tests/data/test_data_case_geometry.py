"""Training runs the per-case geometry check of ``validate-data`` where it reads a case: a label
(or channel) on another grid is one error naming the case and both shapes, before any
statistics are fitted or a case is cached, never a numpy traceback."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.data.config import DataConfig
from medseg.data.pipeline import prepare_data
from medseg.data.validation import check_case_grids, validate_dataset
from medseg.errors import GeometryMismatchError
from tests.data.data_factory import RAS, nnunet_dataset, save


@pytest.fixture
def dataset(tmp_path):
    root = nnunet_dataset(tmp_path / "ds", n_cases=3, shape=(20, 18, 6))
    # every label one slice short, so the bad case is on the training side whatever the split
    for i in range(3):
        save(np.ones((20, 18, 5), np.uint8), RAS, root / "labelsTr" / f"case{i:03d}.nii.gz")
    return root


@pytest.mark.parametrize("modality", ["ct", "mr"])  # CT fits statistics first, MR caches
def test_prepare_data_refuses_a_label_of_another_shape(dataset, tmp_path, modality):
    cfg = DataConfig.model_validate(
        {
            "dataset": str(dataset),
            "cache_dir": str(tmp_path / "cache"),
            "preprocessing": {"modality": modality},
            "val_fraction": 0.34,
        }
    )
    with pytest.raises(GeometryMismatchError) as err:
        prepare_data(cfg, progress=False)
    msg = str(err.value)
    assert msg.startswith("case case00")
    assert "(20, 18, 5)" in msg
    assert "(20, 18, 6)" in msg
    assert "labelsTr" in msg
    assert "validate-data" in msg


def test_check_is_the_one_validate_data_reports(dataset):
    from medseg.data.datasets import load_dataset
    from medseg.data.preprocessing import load_case

    spec = load_dataset(dataset)
    problem = next(p for p in validate_dataset(spec) if p.kind == "geometry")
    with pytest.raises(GeometryMismatchError) as err:
        load_case(spec.case(problem.case_id))
    assert problem.message in str(err.value)


def test_cases_on_one_grid_pass(tmp_path):
    from medseg.io import Volume

    a = Volume(np.zeros((4, 5, 6), np.float32), RAS)
    check_case_grids("c1", [a, Volume(np.ones((4, 5, 6), np.float32), RAS)], a.with_array(a.array))
    with pytest.raises(GeometryMismatchError, match=r"case c1: .*channel grid \(shape \(4, 5, 7\)"):
        check_case_grids("c1", [a, Volume(np.ones((4, 5, 7), np.float32), RAS)], None)
