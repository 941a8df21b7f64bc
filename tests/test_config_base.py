"""One strict-config base: every typed config refuses unknown keys with a did-you-mean, is
read-only once parsed, and every YAML file (config or manifest) goes through one reader."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from medseg.config_base import StrictConfig
from medseg.data.config import DataConfig, parse_data_config
from medseg.data.datasets import load_dataset
from medseg.engine.config import ModelConfig, TrainConfig, build_config
from medseg.errors import ConfigError, DatasetError


def test_data_and_training_configs_share_the_base_and_are_frozen() -> None:
    assert issubclass(DataConfig, StrictConfig)
    assert issubclass(TrainConfig, StrictConfig)
    cfg = build_config({"data": {"dataset": "x"}})
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.train.epochs = 3  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        ModelConfig().name = "deeplab"  # type: ignore[misc]


def test_data_config_says_did_you_mean_like_the_training_config() -> None:
    with pytest.raises(ConfigError) as err:
        parse_data_config({"dataset": "x", "augmentation": {"elastc": {}}}, source="d.yaml")
    message = str(err.value)
    assert message.startswith("1 problem(s) in the data config: ")
    assert "unknown key 'augmentation.elastc' in d.yaml" in message
    assert "did you mean 'augmentation.elastic'?" in message
    assert "valid keys here: backend, blur" in message
    assert message.endswith("see docs/data.md for the keys and their defaults")
    with pytest.raises(ConfigError, match=r"did you mean 'data\.augmentation\.elastic'\?"):
        build_config({"data": {"dataset": "x", "augmentation": {"elastc": {}}}})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"- a\n- b\n", r"m\.yaml: expected a YAML mapping.*found a list; see docs/data\.md"),
        (b"\xe4\xff: 1", r"m\.yaml: not a UTF-8 text file"),
        (b"cases: [\n", r"m\.yaml: not valid YAML"),
    ],
)
def test_yaml_manifest_goes_through_the_config_reader(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)
