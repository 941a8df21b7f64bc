"""Training config: strict keys (file and --set), did-you-mean, YAML-typed overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from medseg.engine.config import (
    TrainConfig,
    apply_overrides,
    config_to_yaml,
    load_config,
    parse_overrides,
    valid_keys,
)
from medseg.errors import ConfigError, InputNotFoundError

REPO = Path(__file__).resolve().parents[2]


def _write(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def test_minimal_config_fills_defaults(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path / "c.yaml", {"data": {"dataset": "x"}}))
    assert cfg.train.epochs == 50
    assert cfg.optim.name == "adamw"
    assert cfg.data.preprocessing.slice_axis == 2
    again = TrainConfig.model_validate(yaml.safe_load(config_to_yaml(cfg)))
    assert again == cfg


def test_misspelt_key_in_file_lists_valid_keys(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", {"data": {"dataset": "x"}, "train": {"epocs": 3}})
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert "train.epocs" in msg
    assert "did you mean 'train.epochs'" in msg
    assert "batch_size" in msg
    assert "early_stopping_patience" in msg
    assert str(path) in msg


def test_misspelt_nested_data_key(tmp_path: Path) -> None:
    raw = {"data": {"dataset": "x", "preprocessing": {"slice_axes": 1}}}
    with pytest.raises(ConfigError, match=r"data\.preprocessing\.slice_axes.*slice_axis"):
        load_config(_write(tmp_path / "c.yaml", raw))


def test_unknown_top_level_key_and_bad_value_reported_together(tmp_path: Path) -> None:
    raw = {"data": {"dataset": "x"}, "optimiser": {}, "optim": {"name": "adam"}}
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path / "c.yaml", raw))
    msg = str(info.value)
    assert msg.startswith("2 problem(s)")
    assert "'optimiser'" in msg
    assert "did you mean 'optim'" in msg
    assert "optim.name" in msg
    assert "'adam'" in msg


def test_set_overrides_are_yaml_typed(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", {"data": {"dataset": "x"}})
    cfg = load_config(
        path,
        ["train.epochs=3", "train.amp=off", "data.crop_size=[64, 48]", "model.options.depth=2"],
    )
    assert cfg.train.epochs == 3
    assert cfg.train.amp == "off"
    assert cfg.data.crop_size == (64, 48)
    assert cfg.model.options == {"depth": 2}


def test_set_misspelt_key_names_the_override(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", {"data": {"dataset": "x"}})
    with pytest.raises(
        ConfigError, match=r"--set train\.batchsize.*did you mean 'train\.batch_size'"
    ):
        load_config(path, ["train.batchsize=4"])


@pytest.mark.parametrize("item", ["train.epochs", "=3", "train..epochs=3"])
def test_malformed_set_rejected(item: str) -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides([item])


def test_set_into_a_value_rejected() -> None:
    with pytest.raises(ConfigError, match="'name' is a value"):
        apply_overrides({"name": "x"}, {"name.sub": 1})


def test_missing_dataset_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing required key 'data'"):
        load_config(_write(tmp_path / "c.yaml", {"name": "x"}))
    with pytest.raises(InputNotFoundError, match="sample"):
        load_config(tmp_path / "nope.yaml")


def test_valid_keys_walks_nested_models() -> None:
    assert "epochs" in valid_keys(("train", "x"))
    assert "augmentation" in valid_keys(("data", "x"))
    assert "prob" in valid_keys(("data", "augmentation", "elastic", "x"))


@pytest.mark.parametrize("name", ["sample.yaml", "brats_2d.yaml"])
def test_reference_configs_parse_and_packaged_copy_matches(name: str) -> None:
    cfg = load_config(REPO / "configs" / name)
    assert cfg.name == name.removesuffix(".yaml")
    packaged = REPO / "medseg" / "configs" / name
    assert packaged.read_text() == (REPO / "configs" / name).read_text()


def test_packaged_config_found_by_name() -> None:
    assert load_config("sample").name == "sample"
