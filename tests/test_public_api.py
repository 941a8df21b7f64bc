"""The public API at the top of the package: light to import, one name per job, errors
that name the Python parameter (the CLI maps them to flags), and docs/api.md runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import medseg
from medseg.errors import ConfigError, InputNotFoundError, OverwriteError

REPO = Path(__file__).resolve().parents[1]


def test_import_medseg_loads_no_torch() -> None:
    code = "import sys, medseg; print('torch' in sys.modules, 'nibabel' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        capture_output=True, text=True, env=env, check=True, cwd=REPO,
    )  # fmt: skip
    assert out.stdout.split() == ["False", "False"]
    imported = [line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines()]
    assert "medseg" in imported
    assert not [m for m in imported if m.split(".")[0] == "torch"]


def test_public_names_resolve_to_the_library_objects() -> None:
    from medseg.inference.batch import predict_folder
    from medseg.inference.predictor import Predictor
    from medseg.io import read_volume, write_volume

    assert medseg.Predictor is Predictor
    assert medseg.predict_folder is predict_folder
    assert (medseg.read_volume, medseg.write_volume) == (read_volume, write_volume)
    assert callable(medseg.train)
    assert callable(medseg.evaluate)
    assert callable(medseg.load_config)
    assert set(medseg.__all__) <= set(dir(medseg))
    with pytest.raises(AttributeError, match="no attribute 'Predicter'"):
        _ = medseg.Predicter


def test_api_errors_name_parameters_and_the_cli_names_flags(tmp_path: Path) -> None:
    scan = REPO / "sample_data" / "ct_abdomen" / "ct_001.nii.gz"
    if not scan.is_file():
        pytest.skip("sample_data is absent (regenerate with `medseg sample-data`)")
    with pytest.raises(ConfigError, match=r"^device 'cuda:9'") as err:
        medseg.predict_folder(scan, tmp_path / "out", device="cuda:9")
    assert err.value.for_cli().startswith("--device 'cuda:9'")
    with pytest.raises(InputNotFoundError, match=r"^model .*nope.pt does not exist") as err:
        medseg.predict_folder(scan, tmp_path / "out", model=tmp_path / "nope.pt")
    assert err.value.for_cli().startswith("--model ")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OverwriteError, match=r"^output ") as err:
        medseg.predict_folder(scan, tmp_path / "file")
    assert err.value.for_cli().startswith("--output ")
    with pytest.raises(ConfigError, match=r"^overrides: "):
        medseg.train(medseg.load_config("sample"), overrides=["train.epochs=1"])


def _code_blocks(markdown: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", markdown, flags=re.DOTALL)


@pytest.mark.slow  # predicts two sample cases and trains one tiny epoch (~15-30 s on 2 cores)
def test_docs_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ```python block of docs/api.md, run in order in one namespace (a notebook)."""
    if not (REPO / "sample_data" / "brain_mr" / "dataset.json").is_file():
        pytest.skip("sample_data is absent (regenerate with `medseg sample-data`)")
    blocks = _code_blocks((REPO / "docs" / "api.md").read_text())
    assert len(blocks) >= 4
    for folder in ("sample_data", "configs"):
        (tmp_path / folder).symlink_to(REPO / folder)
    monkeypatch.chdir(tmp_path)  # the example writes into its working folder
    namespace: dict[str, object] = {}
    for block in blocks:
        exec(compile(block, "docs/api.md", "exec"), namespace)
    assert (tmp_path / "predictions" / "summary.csv").is_file()
    assert (tmp_path / "runs" / "api-demo" / "checkpoints" / "best.pt").is_file()


def test_new_api_functions_are_public() -> None:
    for name in (
        "cross_validate",
        "export_model",
        "validate_data",
        "preview_data",
        "describe_models",
    ):
        assert getattr(medseg, name) is getattr(medseg.api, name)
        assert name in medseg.__all__


def test_dicom_functions_are_public() -> None:
    from medseg.data.dicom_import import import_dicom
    from medseg.inference.pacs import predict_dicomweb

    assert medseg.predict_dicomweb is predict_dicomweb
    assert medseg.import_dicom is import_dicom
    assert {"predict_dicomweb", "import_dicom"} <= set(medseg.__all__)


class _Called(Exception):
    """Raised by a stand-in API function: the CLI got as far as calling it."""


@pytest.mark.parametrize(
    ("argv", "function"),
    [
        (["train", "sample", "--set", "train.epochs=1", "--device", "cpu"], "train"),
        (["train", "sample", "--folds", "all", "-o", "cv"], "cross_validate"),
        (["validate-data", "ds"], "validate_data"),
        (["preview-data", "ds", "-o", "p.png", "--n", "4", "--no-augment"], "preview_data"),
        (["models", "unet"], "describe_models"),
    ],
)
def test_cli_commands_call_the_api(
    argv: list[str], function: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each command hands its parsed arguments to the one API function (no glue of its own)."""
    from medseg.cli.main import main

    seen: list[tuple[tuple, dict]] = []

    def stand_in(*args, **kwargs):
        seen.append((args, kwargs))
        raise _Called

    monkeypatch.setattr(medseg.api, function, stand_in)
    with pytest.raises(_Called):
        main(argv)
    assert len(seen) == 1
    args, kwargs = seen[0]
    if function in ("train", "cross_validate"):
        assert args[0] == "sample"  # the config as given: the API loads it
    if function == "train":
        assert kwargs["overrides"] == ["train.epochs=1"]
        assert kwargs["device"] == "cpu"
    if function == "preview_data":
        assert kwargs["augment"] is False
        assert kwargs["n"] == 4
    if function == "describe_models":
        assert args == ("unet",)


def test_api_describe_models_and_validate_data(tmp_path: Path) -> None:
    from tests.data.data_factory import nnunet_dataset

    infos = medseg.describe_models()
    assert "unet" in [info["name"] for info in infos]
    assert medseg.describe_models("unet")[0]["options"]
    root = nnunet_dataset(tmp_path / "ds", n_cases=2, shape=(20, 18, 6))
    spec, problems = medseg.validate_data(root)
    assert [c.case_id for c in spec.cases] == ["case000", "case001"]
    assert problems == []
