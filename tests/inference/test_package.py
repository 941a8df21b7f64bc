"""Models you can ship: ``medseg export --format package``, ``medseg models install/list``
and ``--model NAME``."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from medseg import RESEARCH_USE_NOTICE, __version__
from medseg.checkpoint import file_sha256
from medseg.inference.model_folder import write_model_folder
from medseg.inference.store import resolve_model
from medseg.io import write_volume
from tests.inference.infer_factory import blob_volume, run_cli, write_tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "medseg" / "assets" / "default_model.pt"


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "store"
    monkeypatch.setenv("MEDSEG_MODELS", str(folder))
    return folder


@pytest.fixture(scope="module")
def default_package(tmp_path_factory) -> Path:
    """The bundled model as a package (run from the repository root, where its training
    data's dataset.json is)."""
    out = tmp_path_factory.mktemp("pkg") / "demo.zip"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        args = ["export", "--model", DEFAULT_MODEL, "--format", "package", "-o", out]
        assert run_cli(args) == 0
    return out


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """A two-fold model folder with out-of-fold figures, built without training."""
    folder = tmp_path_factory.mktemp("cv")
    folds = []
    for k in range(2):
        ckpt = write_tiny_checkpoint(folder / f"fold_{k}" / "checkpoints" / "best.pt", seed=k)
        folds.append({"fold": k, "checkpoint": f"fold_{k}/checkpoints/best.pt",
                      "sha256": file_sha256(ckpt)})  # fmt: skip
    (folder / "oof_predictions").mkdir()  # not part of the model: stays out of the package
    (folder / "oof_predictions" / "c1.nii.gz").write_bytes(b"x")
    dice = {"value": 0.81, "low": 0.7, "high": 0.9, "cases": 6, "confidence": 0.95,
            "text": "0.810 [0.70, 0.90] (95% CI over 6 cases)"}  # fmt: skip
    summary = {"cases": 6, "warning": "only 6 cases", "structures": {"lesion": {"dice": dice}}}
    from medseg.checkpoint import load_record

    record, _ = load_record(folder / "fold_0" / "checkpoints" / "best.pt")
    write_model_folder(folder, record, folds, cross_validation={"summary": summary})
    return folder


def _members(package: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(package) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _rewrite(package: Path, out: Path, changes: dict[str, bytes], resum: bool = False) -> Path:
    """A copy of ``package`` with ``changes``; ``resum``: checksums made to match again."""
    members = {**_members(package), **changes}
    if resum:
        lines = [f"{hashlib.sha256(data).hexdigest()}  {name}\n"
                 for name, data in sorted(members.items()) if name != "checksums.sha256"]  # fmt: skip
        members["checksums.sha256"] = "".join(lines).encode()
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return out


def _error(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_package_holds_model_card_metadata_and_checksums(default_package):
    members = _members(default_package)
    assert set(members) == {"model/default_model.pt", "model_card.md", "metadata.json",
                            "medseg_package.json", "checksums.sha256"}  # fmt: skip
    listed = dict(
        reversed(line.split("  ")) for line in members["checksums.sha256"].decode().splitlines()
    )
    assert set(listed) == set(members) - {"checksums.sha256"}
    for name, digest in listed.items():
        assert hashlib.sha256(members[name]).hexdigest() == digest
    card = members["model_card.md"].decode()
    for text in ("tumour_core", "oedema", "FLAIR", "SyntheticBrainFLAIR", "CC0-1.0",
                 "## Intended use", RESEARCH_USE_NOTICE, "not a cross-validation",
                 "val_mean_dice (one split, no interval): 0.857"):  # fmt: skip
        assert text in card
    meta = json.loads(members["metadata.json"])
    assert meta["version"] in meta["changelog"]
    assert meta["medseg_version"] == __version__
    assert meta["data_licence"] == "CC0-1.0"
    assert RESEARCH_USE_NOTICE in meta["intended_use"]
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == meta["medseg_record"]["in_channels"]
    assert pred["channel_def"] == {"0": "background", "1": "tumour_core", "2": "oedema"}
    manifest = json.loads(members["medseg_package.json"])
    assert manifest["name"] == "demo"
    assert manifest["requires_medseg"] == __version__
    assert manifest["model_sha256"] == file_sha256(DEFAULT_MODEL)


def test_install_list_and_predict_by_name(default_package, store, tmp_path, capsys):
    assert run_cli(["models", "install", default_package, "--name", "brain"]) == 0
    assert (store / "brain" / "model" / "default_model.pt").is_file()
    capsys.readouterr()
    assert run_cli(["models", "list"]) == 0
    listed = capsys.readouterr().out
    assert "brain" in listed
    assert "tumour_core, oedema" in listed
    assert "FLAIR" in listed
    scan = tmp_path / "scan.nii.gz"
    write_volume(blob_volume(shape=(24, 20, 4)), scan)
    args = ["predict", scan, "-o", tmp_path / "out", "--model", "brain", "--device", "cpu", "-q"]
    assert run_cli(args) == 0
    report = json.loads((tmp_path / "out" / "scan.json").read_text())
    assert report["settings"]["checkpoint_sha256"] == file_sha256(DEFAULT_MODEL)
    # an existing path always wins over an installed name
    assert resolve_model(scan) == scan


def test_model_folder_package_carries_its_out_of_fold_figures(tiny_folder, store, tmp_path):
    import medseg

    out = tmp_path / "cv.zip"
    manifest = medseg.export_package(out, tiny_folder, version="2.1.0")
    assert manifest["model_kind"] == "model_folder"
    members = _members(out)
    assert "model/fold_1/checkpoints/best.pt" in members
    assert not any(name.startswith("model/oof") for name in members)
    card = members["model_card.md"].decode()
    assert "0.810 [0.70, 0.90] (95% CI over 6 cases)" in card
    assert "Warning: only 6 cases" in card
    assert json.loads(members["metadata.json"])["eval_metrics"] == {"lesion": 0.81}
    entry = medseg.install_model(out)
    assert entry["name"] == "cv"
    assert entry["version"] == "2.1.0"
    assert [e["name"] for e in medseg.installed_models()] == ["cv"]
    predictor = medseg.Predictor.load("cv", device="cpu")
    assert len(predictor.networks) == 2


def test_checksum_mismatch_is_refused_naming_the_file(default_package, store, tmp_path, capsys):
    card = _members(default_package)["model_card.md"] + b"\nedited"
    bad = _rewrite(default_package, tmp_path / "bad.zip", {"model_card.md": card})
    assert run_cli(["models", "install", bad]) == 2
    error = _error(capsys)
    assert "model_card.md has SHA-256" in error
    assert not store.exists() or not any(store.iterdir())


def test_a_package_needing_a_newer_medseg_is_refused(default_package, store, tmp_path, capsys):
    manifest = json.loads(_members(default_package)["medseg_package.json"])
    manifest["requires_medseg"] = "99.0.0"
    newer = _rewrite(default_package, tmp_path / "newer.zip",
                     {"medseg_package.json": json.dumps(manifest).encode()}, resum=True)  # fmt: skip
    assert run_cli(["models", "install", newer]) == 2
    assert f"needs medseg 99.0.0 or newer, this is medseg {__version__}" in _error(capsys)
    assert not (store / "demo").exists()


def test_zip_slip_is_refused(default_package, store, tmp_path, capsys):
    evil = _rewrite(default_package, tmp_path / "evil.zip", {"../escaped.txt": b"x"}, resum=True)
    assert run_cli(["models", "install", evil]) == 2
    assert "'../escaped.txt' would be written outside" in _error(capsys)
    assert not (store / "escaped.txt").exists()
    assert not (store.parent / "escaped.txt").exists()


def test_an_installed_name_needs_overwrite(default_package, store, capsys):
    assert run_cli(["models", "install", default_package]) == 0
    before = json.loads((store / "demo" / "installed.json").read_text())
    (store / "demo" / "stale.txt").write_text("from the old install")
    assert run_cli(["models", "install", default_package]) == 2
    error = _error(capsys)
    assert error.startswith("error: --name 'demo':")
    assert "already installed; pass --overwrite" in error
    assert run_cli(["models", "install", default_package, "--overwrite"]) == 0
    assert not (store / "demo" / "stale.txt").exists()
    assert json.loads((store / "demo" / "installed.json").read_text())["name"] == before["name"]
    assert [p.name for p in store.iterdir()] == ["demo"]  # no staging or old copy left


def test_a_zip_that_is_no_package_is_refused(store, tmp_path, capsys):
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("readme.txt", "hello")
    assert run_cli(["models", "install", other]) == 2
    error = _error(capsys)
    assert "not a valid medseg model package manifest" in error
    assert "medseg export --model DIR --format package" in error
