"""`medseg info` and `medseg convert` on every real file/folder of ../shared/data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg import RESEARCH_USE_NOTICE
from medseg.cli.main import main
from medseg.io import read_volume

DICOM_FOLDERS = ["totalseg/example_ct_dicom", "vs_seg_dicom", "dcmqi/ct-3slice"]
DICOM_SEG = ["dcmqi/liver.dcm", "dcmqi/partial_overlaps.dcm"]
NRRD = [
    "dcmqi/heart_seg.nrrd",
    "dcmqi/liver_seg.nrrd",
    "dcmqi/liver_spine_seg.nrrd",
    "dcmqi/partial_overlaps-1.nrrd",
    "dcmqi/spine_seg.nrrd",
    "pyradiomics/brain1_image.nrrd",
    "pyradiomics/brain1_label.nrrd",
    "pyradiomics/brain2_image.nrrd",
    "pyradiomics/brain2_label.nrrd",
    "pyradiomics/breast1_image.nrrd",
    "pyradiomics/breast1_label.nrrd",
    "pyradiomics/lung1_label.nrrd",
    "pyradiomics/lung2_label.nrrd",
]
NIFTI = [
    *(
        f"brats2015/pat000{p}/{m}.nii.gz"
        for p in range(1, 5)
        for m in ("brainmask", "flair", "seg", "t1c")
    ),
    *(f"tcga_du_7294/{m}.nii.gz" for m in ("flair", "seg_model_fusion", "t1", "t1c", "t2")),
    "totalseg/example_ct_sm.nii.gz",
    "totalseg/example_mr_sm.nii.gz",
    "totalseg/example_seg.nii.gz",
    "totalseg/example_seg_dicom.nii.gz",
    "totalseg/example_seg_mr.nii.gz",
]
ALL = DICOM_FOLDERS + DICOM_SEG + NRRD + NIFTI
MASKS = {
    *DICOM_SEG,
    *(p for p in NRRD if any(w in p.rsplit("/", 1)[1] for w in ("label", "seg", "overlaps"))),
    *(p for p in NIFTI if any(w in p.rsplit("/", 1)[1] for w in ("seg", "brainmask"))),
}
# one item per reader for the default run; every item runs under the `slow` marker
QUICK = {
    "dcmqi/ct-3slice",
    "dcmqi/liver.dcm",
    "pyradiomics/breast1_label.nrrd",
    "totalseg/example_mr_sm.nii.gz",
    "brats2015/pat0001/seg.nii.gz",
}


def _params(items: list[str]) -> list:
    return [
        pytest.param(rel, id=rel, marks=() if rel in QUICK else pytest.mark.slow) for rel in items
    ]


def test_every_shared_item_is_listed(shared_data):
    """The parametrized lists below cover every scan in ../shared/data."""
    on_disk = {
        str(p.relative_to(shared_data))
        for p in shared_data.rglob("*")
        if (p.is_file() and p.suffix in (".gz", ".nrrd"))
        or p.name.endswith(("liver.dcm", "overlaps.dcm"))
    }
    assert on_disk == set(NRRD + NIFTI + DICOM_SEG)


def _convert_target(rel: str) -> str:
    if rel.startswith(("brats2015", "tcga")):
        return ".nii"  # big brain volumes: skip compression to keep the run short
    return ".nrrd" if rel.endswith(".nii.gz") else ".nii.gz"


@pytest.mark.parametrize("rel", _params(ALL))
def test_info_and_convert(shared_data, tmp_path, capsys, rel):
    """`info --json` describes the item; `convert` keeps its geometry and every voxel."""
    main(["info", str(shared_data / rel), "--json"])
    info = json.loads(capsys.readouterr().out)
    src = read_volume(shared_data / rel)
    assert info["shape"] == list(src.shape)
    assert info["orientation"] == "".join(src.orientation)
    np.testing.assert_allclose(info["spacing_mm"], src.spacing, atol=1e-5)
    assert info["notice"] == RESEARCH_USE_NOTICE
    assert info["is_mask"] == (rel in MASKS)
    if info["is_mask"]:
        assert sum(lab["voxels"] for lab in info["labels"]) == int(np.prod(src.shape))
    assert "identifiers" not in info

    out = tmp_path / f"out{_convert_target(rel)}"
    main(["convert", str(shared_data / rel), str(out)])
    assert f"wrote {out}" in capsys.readouterr().out
    dst = read_volume(out)
    np.testing.assert_allclose(dst.affine, src.affine, atol=1e-4)
    np.testing.assert_array_equal(dst.array, src.array)


def test_info_text_has_no_identifiers(shared_data, capsys):
    main(["info", str(shared_data / "vs_seg_dicom")])
    out = capsys.readouterr().out
    assert "VS-SEG-001" not in out
    assert "shape:        512 x 512 x 120" in out
    assert "orientation:  LPS" in out
    assert RESEARCH_USE_NOTICE in out
    main(["info", str(shared_data / "vs_seg_dicom"), "--show-identifiers"])
    assert "PatientID=VS-SEG-001" in capsys.readouterr().out


def test_info_ct_reports_hu_and_mask_labels(shared_data, capsys):
    main(["info", str(shared_data / "totalseg" / "example_ct_dicom")])
    out = capsys.readouterr().out
    assert "modality: CT" in out
    assert "min -1024" in out
    assert "HU" in out
    main(["info", str(shared_data / "dcmqi" / "liver.dcm")])
    out = capsys.readouterr().out
    assert "Liver" in out  # segment name next to label 1
    assert "70.362" in out  # 107098 voxels x 0.810547^2 x 1 mm^3 = 70.362 mL


def test_info_lists_several_series(shared_data, tmp_path, capsys):
    import shutil

    mixed = tmp_path / "mixed"
    shutil.copytree(shared_data / "dcmqi" / "ct-3slice", mixed / "a")
    shutil.copytree(shared_data / "totalseg" / "example_ct_dicom", mixed / "b")
    main(["info", str(mixed)])
    out = capsys.readouterr().out
    assert "holds 2 DICOM series" in out
    assert "1.2.392.200103.20080913.113635.1.2009.6.22.21.43.10.23430.1" in out
    assert "'CT Body 3.0'" in out
    main(["info", str(mixed), "--series", "CT Body 3.0", "--json"])
    assert json.loads(capsys.readouterr().out)["shape"] == [512, 512, 20]


def test_convert_nifti_to_mha_and_canonical(shared_data, tmp_path, capsys):
    src = shared_data / "totalseg" / "example_mr_sm.nii.gz"
    main(["convert", str(src), str(tmp_path / "mr.mha")])
    assert read_volume(tmp_path / "mr.mha").same_grid(read_volume(src), atol=1e-4)
    main(["convert", str(src), str(tmp_path / "ras.nii.gz"), "--canonical"])
    canon = read_volume(tmp_path / "ras.nii.gz")
    assert "".join(canon.orientation) == "RAS"
    np.testing.assert_array_equal(canon.array, read_volume(src).to_canonical().array)


def test_convert_and_series_listing_print_the_notice(tmp_path, capsys):
    """Synthetic data (no shared_data): every user-facing output carries the notice."""
    from medseg.io.dicom_write import write_dicom_series
    from medseg.io.volume import Volume

    arr = np.arange(6 * 5 * 3, dtype=np.float32).reshape(6, 5, 3)
    volume = Volume(arr, np.diag([1.0, 1.0, 2.0, 1.0]))
    mixed = tmp_path / "mixed"
    write_dicom_series(volume, mixed / "a", series_description="first")
    write_dicom_series(volume, mixed / "b", series_description="second")
    main(["info", str(mixed)])
    out = capsys.readouterr().out
    assert "holds 2 DICOM series" in out
    assert out.rstrip().endswith(RESEARCH_USE_NOTICE)
    main(["info", str(mixed), "--json"])
    data = json.loads(capsys.readouterr().out)  # still valid JSON
    assert len(data["series"]) == 2
    assert data["notice"] == RESEARCH_USE_NOTICE
    main(["convert", str(mixed / "a"), str(tmp_path / "a.nii.gz")])
    out = capsys.readouterr().out
    assert out.startswith("wrote ")
    assert out.rstrip().endswith(RESEARCH_USE_NOTICE)
    assert read_volume(tmp_path / "a.nii.gz").shape == (6, 5, 3)
