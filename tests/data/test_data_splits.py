"""Stable splits: recorded once with the preprocessed data, new cases never move old ones."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from medseg.data.config import parse_data_config
from medseg.data.datasets import load_dataset
from medseg.data.pipeline import split_specs
from medseg.data.splits import Split, plan_sides, plan_split, split_cases, stable_split
from medseg.errors import ConfigError, DatasetError
from tests.data.data_factory import nnunet_dataset

IDS = [f"p{i:02d}" for i in range(10)]


def _sides(plan, ids, fold=0):
    train, val = plan_sides(plan, ids, fold)
    return set(train), set(val)


def test_holdout_plan_keeps_old_cases_and_new_ones_train(tmp_path):
    path = tmp_path / "split.json"
    first = plan_split(IDS, path, val_fraction=0.2, seed=1)
    train0, val0 = _sides(first, IDS)
    # the first plan is the seeded patient-level split single runs always made
    assert val0 == set(split_cases(IDS, 0.2, seed=1)[1])
    assert len(val0) == 2
    more = [*IDS, "new_a", "new_b", "new_c"]
    again = plan_split(more, path, val_fraction=0.2, seed=1)
    train1, val1 = _sides(again, more)
    assert val1 == val0  # nobody moved, and the new cases did not dilute validation
    assert train1 == train0 | {"new_a", "new_b", "new_c"}
    on_disk = json.loads(path.read_text())
    assert on_disk["added_cases"] == ["new_a", "new_b", "new_c"]
    assert on_disk["log"][-1]["added"] == {"train": ["new_a", "new_b", "new_c"]}
    # a removed case stays recorded: when it comes back it returns to its old side
    gone = sorted(val0)[0]
    _, val2 = _sides(plan_split([c for c in more if c != gone], path, seed=1), more)
    assert val2 == val0


def test_new_cases_val_and_a_known_patients_new_scan(tmp_path):
    path = tmp_path / "split.json"
    plan = plan_split(IDS, path, val_fraction=0.2, seed=0, new_cases="val")
    _, val0 = _sides(plan, IDS)
    again = plan_split([*IDS, "extra"], path, val_fraction=0.2, seed=0, new_cases="val")
    assert _sides(again, [*IDS, "extra"])[1] == val0 | {"extra"}
    # a second scan of a validation patient validates too, even with new_cases="train"
    patient = sorted(val0)[0]
    groups = {f"{patient}_t2": patient}
    ids = [*IDS, "extra", f"{patient}_t2", "fresh"]
    third = plan_split(ids, path, val_fraction=0.2, seed=0, groups=groups)
    train, val = _sides(third, ids)
    assert f"{patient}_t2" in val
    assert "fresh" in train


def test_kfold_new_validation_case_joins_the_smallest_fold(tmp_path):
    path = tmp_path / "folds.json"
    plan = plan_split(IDS[:7], path, num_folds=3, seed=0)
    sizes = [len(f["val"]) for f in plan["folds"]]
    assert sorted(sizes) == [2, 2, 3]
    again = plan_split([*IDS[:7], "late"], path, num_folds=3, seed=0, new_cases="val")
    smallest = min(range(3), key=lambda k: (sizes[k], k))
    assert "late" in again["folds"][smallest]["val"]
    for k in range(3):
        assert set(plan["folds"][k]["val"]) <= set(again["folds"][k]["val"])


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"val_fraction": 0.3, "seed": 1}, "val_fraction 0.2, split_seed 1, but the config"),
        ({"val_fraction": 0.2, "seed": 2}, "set the config back to val_fraction 0.2, split_seed 1"),
        ({"num_folds": 5, "seed": 1}, "holds a holdout split"),
    ],
)
def test_other_settings_on_an_existing_file_are_refused(tmp_path, settings, message):
    path = tmp_path / "split.json"
    plan_split(IDS, path, val_fraction=0.2, seed=1)
    before = path.read_text()
    with pytest.raises(ConfigError, match=message) as err:
        plan_split([*IDS, "x"], path, **settings)
    assert "data.split_file" in str(err.value)
    assert path.read_text() == before  # nothing was re-planned


def test_unreadable_split_file_names_the_file(tmp_path):
    path = tmp_path / "split.json"
    path.write_text("{not json")
    with pytest.raises(DatasetError, match=r"split\.json: not a readable split file"):
        plan_split(IDS, path)


def test_stable_split_skips_unlabelled_and_test_and_write_false_leaves_no_file(tmp_path):
    cases = [SimpleNamespace(case_id=c, label="l", split=None) for c in IDS]
    cases += [
        SimpleNamespace(case_id="unlabelled", label=None, split=None),
        SimpleNamespace(case_id="held", label="l", split="test"),
    ]
    path = tmp_path / "s.json"
    split = stable_split(cases, path, val_fraction=0.2, seed=0, write=False)
    assert not path.exists()
    assert set(split.train) | set(split.val) == set(IDS)
    assert split.source == "split file"
    # explicit val_cases win and write nothing
    explicit = stable_split(cases, path, val_cases=["p01"])
    assert (explicit.val, explicit.source) == (["p01"], "data.val_cases")
    assert not path.exists()
    assert Split.from_dict(split.as_dict()).train == split.train


def test_dataset_split_lives_in_the_cache_and_survives_added_cases(tmp_path):
    root = nnunet_dataset(tmp_path / "ds", n_cases=5, shape=(8, 8, 3))
    cache = tmp_path / "cache"
    cfg = parse_data_config({"dataset": str(root), "cache_dir": str(cache), "val_fraction": 0.4})
    _, _, first = split_specs(load_dataset(root), cfg, cache)
    assert (cache / "splits_holdout.json").is_file()
    assert not list(root.glob("*split*"))  # never written into the dataset
    nnunet_dataset(root, n_cases=7, shape=(8, 8, 3))  # two cases added (same first five)
    train, val, second = split_specs(load_dataset(root), cfg, cache)
    assert second.val == first.val
    assert set(second.train) == {*first.train, "case005", "case006"}
    assert second.added == {"train": ["case005", "case006"]}
    assert [c.case_id for c in val] == second.val
    assert [c.case_id for c in train] == second.train
    # a split file pinned inside the dataset folder is refused (inputs are never modified)
    inside = cfg.model_copy(update={"split_file": str(root / "split.json")})
    with pytest.raises(DatasetError, match="inside the dataset folder"):
        split_specs(load_dataset(root), inside, cache)
    # a pinned file elsewhere is used and created there
    pinned = cfg.model_copy(update={"split_file": str(tmp_path / "mine.json")})
    assert split_specs(load_dataset(root), pinned, cache)[2].path == tmp_path / "mine.json"
    assert (tmp_path / "mine.json").is_file()


def test_a_fine_tune_on_a_new_dataset_copy_inherits_its_models_split(tmp_path):
    model_split = Split(train=IDS[2:], val=IDS[:2], source="train.init_from best.pt")
    ids = [*IDS, "reviewed_1"]
    plan = plan_split(ids, tmp_path / "copy.json", val_fraction=0.2, seed=0, inherit=model_split)
    train, val = _sides(plan, ids)
    assert val == set(IDS[:2])  # the model's validation cases stay validation
    assert train == set(IDS[2:]) | {"reviewed_1"}
    assert plan["added_cases"] == ["reviewed_1"]
    assert plan["inherited_from"] == "train.init_from best.pt"
    # once the file exists it rules; a later case is new again
    again = plan_split([*ids, "late"], tmp_path / "copy.json", new_cases="val", inherit=None)
    assert _sides(again, [*ids, "late"])[1] == set(IDS[:2]) | {"late"}
