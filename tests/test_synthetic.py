"""Synthetic phantoms and ``medseg sample-data``: determinism, plausibility, committed files."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from medseg.cli.main import main
from medseg.data import load_dataset
from medseg.errors import OverwriteError
from medseg.io import read_volume
from medseg.synthetic import (
    BRAIN_LABELS,
    CT_LABELS,
    brain_case,
    make_brain_mr,
    make_ct_abdomen,
    write_sample_data,
)


@pytest.fixture(scope="module")
def brain():
    return make_brain_mr(7)


@pytest.fixture(scope="module")
def ct():
    return make_ct_abdomen(7)


@pytest.mark.parametrize("make", [make_brain_mr, make_ct_abdomen])
def test_same_seed_same_arrays_other_seed_differs(make) -> None:
    image_a, label_a = make(3)
    image_b, label_b = make(3)
    image_c, label_c = make(4)
    assert np.array_equal(image_a.array, image_b.array)
    assert np.array_equal(label_a.array, label_b.array)
    assert np.array_equal(image_a.affine, image_b.affine)
    assert not np.array_equal(image_a.array, image_c.array)
    assert not np.array_equal(label_a.array, label_c.array)


@pytest.mark.parametrize("make", [make_brain_mr, make_ct_abdomen])
def test_geometry_is_anisotropic_and_not_ras(make) -> None:
    image, label = make(1)
    assert image.same_grid(label)
    assert "".join(image.orientation) != "RAS"
    assert image.orientation[:2] == ("L", "P")  # stored like a DICOM axial series
    spacing = np.array(image.spacing)
    assert spacing[2] > 1.5 * spacing[0]  # thick slices
    assert not np.allclose(image.affine[:3, :3] / spacing, np.eye(3))  # not identity


def test_brain_mr_oblique_affine() -> None:
    image, _ = make_brain_mr(1)
    direction = image.affine[:3, :3] / np.array(image.spacing)
    off_diagonal = direction - np.diag(np.diag(direction))
    assert np.abs(off_diagonal).max() > 1e-3  # tilted acquisition, not just axis flips


def test_brain_labels_and_flair_contrast(brain) -> None:
    image, label = brain
    img, lab = image.array, label.array
    assert image.metadata["modality"] == "MR"
    assert img.dtype == np.int16
    assert img.min() >= 0
    assert 800 < img.max() < 2000
    assert set(np.unique(lab)) == {0, BRAIN_LABELS["tumour_core"], BRAIN_LABELS["oedema"]}
    head = img > 300
    tumour = lab > 0
    assert 0.005 < tumour.sum() / head.sum() < 0.12  # a few % of the head
    # FLAIR: oedema is hyperintense compared with the normal-appearing parenchyma.
    assert img[lab == 2].mean() > 1.3 * img[head & ~tumour].mean()
    # Oedema surrounds the core: the core's one-voxel shell is mostly oedema.
    shell = ndimage.binary_dilation(lab == 1) & (lab != 1)
    assert (lab[shell] == 2).mean() > 0.5
    # The tumour lies inside the head, away from the air.
    assert (img[tumour] > 200).mean() > 0.99


def test_brain_cases_vary(tmp_path: Path) -> None:
    sizes = {int((brain_case(0, n)[1].array > 0).sum()) for n in (1, 2, 3)}
    centres = [ndimage.center_of_mass(brain_case(0, n)[1].array > 0) for n in (1, 2, 3)]
    assert len(sizes) == 3
    assert min(np.linalg.norm(np.subtract(a, b)) for a, b in [centres[:2], centres[1:]]) > 3


def test_ct_hu_ranges_and_lesion_inside_liver(ct) -> None:
    image, label = ct
    hu, lab = image.array, label.array
    assert image.metadata["modality"] == "CT"
    assert hu.dtype == np.int16
    assert set(np.unique(lab)) == {0, CT_LABELS["lesion"], CT_LABELS["liver"]}
    assert abs(np.median(hu[0, 0, :]) + 1000) < 60  # air in the corner
    assert 45 < np.median(hu[lab == 2]) < 75  # liver
    assert 10 < np.median(hu[lab == 1]) < 40  # hypodense lesion
    assert hu.max() > 700  # bone
    assert np.any((hu > -130) & (hu < -70))  # fat
    lesion = lab == 1
    grown = ndimage.binary_dilation(lesion, iterations=1) & ~lesion
    assert (lab[grown] > 0).mean() > 0.8  # the lesion is surrounded by liver


def test_write_sample_data_refuses_to_clobber(tmp_path: Path) -> None:
    (tmp_path / "brain_mr").mkdir()
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(OverwriteError, match="--overwrite"):
        write_sample_data(tmp_path, n_brain=1)
    write_sample_data(tmp_path, n_brain=1, overwrite=True)
    assert (tmp_path / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "brain_mr" / "imagesTr").iterdir()) == [
        "brain_001_0000.nii.gz"
    ]
    assert not list(tmp_path.glob(".sample_data.*"))  # no temporary folder left


def _assert_regenerated_equal(committed: np.ndarray, regenerated: np.ndarray, rel: Path) -> None:
    """Array-equal on the machine that generated the files. Elsewhere numpy's SIMD maths
    (exp/sin differ by an ulp between AVX-512 and older CPUs) may move a rare value across a
    rounding boundary, so at most 1 in 10,000 voxels may differ, by at most 1 unit."""
    assert committed.shape == regenerated.shape, rel
    diff = np.abs(committed.astype(np.int32) - regenerated.astype(np.int32))
    assert diff.max() <= 1, f"{rel}: regenerated values differ by up to {diff.max()}"
    assert (diff > 0).mean() <= 1e-4, f"{rel}: {(diff > 0).sum()} voxels differ; regenerate"


def test_cli_sample_data_matches_committed_files(
    tmp_path: Path, sample_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not (sample_data / "brain_mr" / "dataset.json").is_file():
        pytest.skip("sample_data/ not generated (run `medseg sample-data`)")
    out = tmp_path / "regen"
    montage = tmp_path / "montage.png"
    main(["sample-data", "--output", str(out), "--seed", "0", "--montage", str(montage)])
    assert "research use only" in capsys.readouterr().out.lower()
    assert montage.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    committed = sorted(p.relative_to(sample_data) for p in sample_data.rglob("*.nii.gz"))
    regenerated = sorted(p.relative_to(out) for p in out.rglob("*.nii.gz"))
    assert committed == regenerated
    assert len(committed) == 2 * 8 + 2
    for rel in committed:
        old, new = nib.load(sample_data / rel), nib.load(out / rel)
        _assert_regenerated_equal(np.asanyarray(old.dataobj), np.asanyarray(new.dataobj), rel)
        assert np.allclose(old.affine, new.affine), rel
    meta = json.loads((out / "brain_mr" / "dataset.json").read_text())
    assert meta == json.loads((sample_data / "brain_mr" / "dataset.json").read_text())
    assert meta["channel_names"] == {"0": "FLAIR"}
    assert meta["numTraining"] == 8
    # The DICOM copy holds the same CT (same HU, same grid) as the NIfTI.
    dicom = read_volume(out / "ct_abdomen" / "ct_001_dicom")
    nifti = read_volume(out / "ct_abdomen" / "ct_001.nii.gz")
    assert np.array_equal(dicom.array, nifti.array)
    assert np.allclose(dicom.affine, nifti.affine, atol=1e-4)

    # Running again without --overwrite is a one-line error, exit 2, nothing changed.
    with pytest.raises(SystemExit) as exc:
        main(["sample-data", "--output", str(out)])
    assert exc.value.code == 2
    assert "--overwrite" in capsys.readouterr().err


def test_committed_brain_dataset_loads(sample_data: Path) -> None:
    if not (sample_data / "brain_mr" / "dataset.json").is_file():
        pytest.skip("sample_data/ not generated (run `medseg sample-data`)")
    spec = load_dataset(sample_data / "brain_mr")
    assert [c.case_id for c in spec.cases] == [f"brain_{n:03d}" for n in range(1, 9)]
    assert spec.channel_names == ["FLAIR"]
    assert spec.labels == {0: "background", 1: "tumour_core", 2: "oedema"}
    assert "synthetic" in (sample_data / "README.md").read_text().lower()
    size = sum(p.stat().st_size for p in sample_data.rglob("*") if p.is_file())
    assert size < 6 * 2**20
