"""``medseg predict --channel N`` and 4D inputs holding a model's channel stack (MSD layout)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.io import read_volume, write_volume
from tests.inference.infer_factory import blob_volume, run_cli, write_tiny_checkpoint


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    one = write_tiny_checkpoint(folder / "one.pt")
    two = write_tiny_checkpoint(folder / "two.pt", channel_names=("flair", "t1c"), context=0)
    return one, two


def _stack(path: Path, volumes) -> Path:
    data = np.stack([v.array for v in volumes], axis=-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, volumes[0].affine), str(path))
    return path


def _predict(inputs, out, model, *extra) -> int:
    return run_cli(
        ["predict", *inputs, "-o", out, "--model", model, "--device", "cpu", "-q", *extra]
    )


def test_4d_file_with_the_models_channels_is_the_channel_stack(models, tmp_path):
    _, two = models
    vols = [blob_volume(seed=1), blob_volume(seed=2)]
    separate = tmp_path / "sep"
    for c, vol in enumerate(vols):
        write_volume(vol, separate / f"case_{c:04d}.nii.gz")
    stacked = _stack(tmp_path / "msd" / "case.nii.gz", vols)
    assert _predict([separate], tmp_path / "o1", two) == 0
    assert _predict([stacked], tmp_path / "o2", two) == 0
    a = read_volume(tmp_path / "o1" / "case.nii.gz")
    b = read_volume(tmp_path / "o2" / "case.nii.gz")
    assert a.same_grid(b)
    np.testing.assert_array_equal(a.array, b.array)
    swapped = _stack(tmp_path / "swap" / "case.nii.gz", vols[::-1])
    assert _predict([swapped], tmp_path / "o3", two) == 0  # channel order reaches the model
    assert not np.array_equal(read_volume(tmp_path / "o3" / "case.nii.gz").array, a.array)
    assert 0 < np.count_nonzero(a.array) < a.array.size


def test_channel_option_picks_one_channel_of_a_4d_file(models, tmp_path, capsys):
    one, _ = models
    vols = [blob_volume(seed=s) for s in (3, 4, 5)]
    stacked = _stack(tmp_path / "in" / "case.nii.gz", vols)
    write_volume(vols[1], tmp_path / "ref" / "case.nii.gz")
    assert _predict([stacked], tmp_path / "o", one) == 1
    err = capsys.readouterr().err
    assert "failed: case" in err
    assert "--channel N" in err
    assert _predict([stacked], tmp_path / "o", one, "--channel", "1") == 0
    assert _predict([tmp_path / "ref"], tmp_path / "r", one) == 0
    np.testing.assert_array_equal(
        read_volume(tmp_path / "o" / "case.nii.gz").array,
        read_volume(tmp_path / "r" / "case.nii.gz").array,
    )
    assert _predict([stacked], tmp_path / "o4", one, "--channel", "7") == 1
    assert "channel 7 out of range 0..2" in capsys.readouterr().err


def test_4d_file_with_the_wrong_channel_count_names_both(models, tmp_path, capsys):
    _, two = models
    stacked = _stack(tmp_path / "in" / "case.nii.gz", [blob_volume(seed=s) for s in (1, 2, 3)])
    assert _predict([stacked], tmp_path / "o", two) == 1
    err = capsys.readouterr().err
    assert "has 3 channels but the model expects 2 (flair, t1c)" in err
    assert not (tmp_path / "o" / "case.nii.gz").exists()
