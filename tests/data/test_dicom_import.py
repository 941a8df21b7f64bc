"""``medseg import-dicom``: DICOM studies with DICOM-SEG or RTSTRUCT labels -> nnU-Net v2."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medseg.io import read_volume
from medseg.io.dicom_write import write_dicom_series
from medseg.io.rtstruct import write_rtstruct
from medseg.io.volume import Volume
from tests.inference.infer_factory import run_cli
from tests.io.dicom_factory import edit

PATIENT_NAME, PATIENT_ID = "Doe^Jane", "SECRET-ID-42"  # fake, but must never leak


def _link_study(folder: Path, files: list[Path]) -> Path:
    folder.mkdir(parents=True)
    for file in files:
        (folder / file.name).symlink_to(file)
    return folder


@pytest.fixture
def seg_study(shared_data, tmp_path) -> Path:
    """The real dcmqi CT (3 slices) and its liver DICOM-SEG, linked into one study folder."""
    ct = sorted((shared_data / "dcmqi" / "ct-3slice").glob("*.dcm"))
    return _link_study(tmp_path / "src" / "study1", [*ct, shared_data / "dcmqi" / "liver.dcm"])


@pytest.fixture
def rt_study(tmp_path) -> tuple[Path, np.ndarray]:
    """A CT series (non-square pixels, flipped axis) with an RTSTRUCT of two ROIs, Body and
    GTV, in a folder named like its patient (as PACS exports often are). Returns the folder
    and the expected label map with the default names (Body 1, GTV 2)."""
    affine = np.diag([-0.7, 0.9, 2.5, 1.0])
    affine[:3, 3] = [40.0, -30.0, 12.0]
    rng = np.random.default_rng(0)
    image = Volume(rng.integers(-100, 100, (24, 18, 5)).astype(np.int16), affine, {})
    folder = tmp_path / "src" / "DOE_JANE_SECRET-ID-42"
    write_dicom_series(image, folder, patient_name=PATIENT_NAME, patient_id=PATIENT_ID)
    ct = read_volume(folder)
    label = np.zeros(ct.shape, dtype=np.uint8)
    label[3:20, 2:15, 1:4] = 1
    label[8:12, 5:9, 2:4] = 2
    names = ["background", "Body", "GTV"]
    write_rtstruct(ct.with_array(label), ct.metadata["dicom_files"], names, folder / "rt.dcm")
    return folder, label


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _import(capsys, *args) -> tuple[int, str, str]:
    code = run_cli(["import-dicom", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _refused(capsys, out: Path, src: Path, *args) -> str:
    """Run an import that must fail: one ``error:`` line, nothing written, inputs intact."""
    before = _tree_digest(src)
    code, stdout, stderr = _import(capsys, src, "-o", out, "-q", *args)
    assert code == 2, stdout + stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert not out.exists()
    assert not Path(f"{out}.id_map.csv").exists()
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name]
    assert _tree_digest(src) == before
    return errors[0]


def test_seg_study_lands_on_the_source_grid(seg_study, shared_data, tmp_path, capsys):
    import highdicom as hd

    out = tmp_path / "out" / "Dataset001_Liver"
    code, stdout, _ = _import(capsys, seg_study.parent, "-o", out, "-q")
    assert code == 0, stdout
    assert "labels: 1 Liver (sorted names" in stdout
    assert "validate-data: dataset OK" in stdout
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "Liver": 1}
    assert meta["channel_names"] == {"0": "CT"}
    assert meta["numTraining"] == 1
    assert meta["file_ending"] == ".nii.gz"
    ct = read_volume(shared_data / "dcmqi" / "ct-3slice")
    image = nib.load(out / "imagesTr" / "case_0001_0000.nii.gz")
    label = nib.load(out / "labelsTr" / "case_0001.nii.gz")
    np.testing.assert_allclose(image.affine, ct.affine, atol=1e-5)  # no resampling
    np.testing.assert_array_equal(np.asarray(image.dataobj), ct.array)
    np.testing.assert_allclose(label.affine, ct.affine, atol=1e-5)
    # highdicom's own reading is the reference: frames matched to the source images by their
    # SOP instance references (dcmqi does not flag spatial locations as preserved), not by
    # the geometry medseg uses
    seg = hd.seg.segread(str(shared_data / "dcmqi" / "liver.dcm"))
    files = ct.metadata["dicom_files"]
    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files]
    frames = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, ignore_spatial_locations=True
    )
    array = np.asarray(label.dataobj)
    assert array.any()
    for k in range(ct.shape[2]):
        np.testing.assert_array_equal(array[:, :, k].T, frames[k])


def test_rtstruct_study_pseudonymised(rt_study, tmp_path, capsys, caplog):
    caplog.set_level("INFO")
    folder, expected = rt_study
    out = tmp_path / "out" / "DS"
    code, stdout, stderr = _import(capsys, folder, "-o", out)
    logged = caplog.text  # before this test's own reads log the source folder
    assert code == 0, stdout + stderr
    assert "labels: 1 Body, 2 GTV (sorted names; change with --map)" in stdout
    assert "keep it apart from the dataset" in stdout
    ct = read_volume(folder)
    label = nib.load(out / "labelsTr" / "case_0001.nii.gz")
    np.testing.assert_allclose(label.affine, ct.affine, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(label.dataobj), expected)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["labels"] == {"background": 0, "Body": 1, "GTV": 2}
    # identifiers: only in the id map, which lies beside the dataset, not inside it
    id_map = out.parent / "DS.id_map.csv"
    rows = id_map.read_text().splitlines()
    assert rows[0].startswith("# For research use only")
    assert rows[1].startswith("case_id,patient_id,study_instance_uid")
    assert rows[2].startswith(f"case_0001,{PATIENT_ID},")
    texts = [stdout, stderr, logged]
    for file in out.rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            texts.append(
                (gzip.decompress(data) if file.suffix == ".gz" else data).decode("latin-1")
            )
    for secret in (PATIENT_ID, "Doe", "DOE_JANE"):
        assert not [t for t in texts if secret in t], secret


def test_map_merges_and_leaves_out_names(rt_study, tmp_path, capsys):
    folder, expected = rt_study
    out = tmp_path / "merged"
    code, stdout, _ = _import(capsys, folder, "-o", out, "-q", "--map", "GTV=tumour,Body=tumour")
    assert code == 0, stdout
    assert "labels: 1 tumour (--map)" in stdout
    np.testing.assert_array_equal(nib.load(out / "labelsTr" / "case_0001.nii.gz").dataobj, expected > 0)  # fmt: skip
    out = tmp_path / "gtv"
    code, stdout, _ = _import(
        capsys, folder, "-o", out, "-q", "--map", "GTV=3", "--ignore-unmapped"
    )
    assert code == 0, stdout
    assert "left out (not in --map): Body" in stdout
    array = np.asarray(nib.load(out / "labelsTr" / "case_0001.nii.gz").dataobj)
    np.testing.assert_array_equal(array, np.where(expected == 2, 3, 0))
    assert json.loads((out / "dataset.json").read_text())["labels"] == {"background": 0, "GTV": 3}


def test_unmapped_names_refused(rt_study, tmp_path, capsys):
    folder, _ = rt_study
    error = _refused(capsys, tmp_path / "out", folder, "--map", "GTV=tumour")
    assert "unmapped: 'Body'" in error
    assert "--ignore-unmapped" in error


def test_contours_outside_the_image_refused(rt_study, tmp_path, capsys):
    folder, _ = rt_study
    ds = pydicom.dcmread(folder / "rt.dcm")
    contour = ds.ROIContourSequence[1].ContourSequence[0]
    points = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
    points[:, 1] += 500.0
    contour.ContourData = [f"{v:.4f}" for v in points.ravel()]
    ds.save_as(folder / "rt.dcm")
    error = _refused(capsys, tmp_path / "out", folder)
    assert "rt.dcm: ROI 'GTV': contour points reach voxels" in error
    assert "outside the image" in error


def test_seg_referencing_a_series_not_given_refused(shared_data, tmp_path, capsys):
    src = _link_study(tmp_path / "src" / "segonly", [shared_data / "dcmqi" / "liver.dcm"])
    error = _refused(capsys, tmp_path / "out", src)
    assert "liver.dcm: references the image series 1.2.392." in error
    assert "not among the sources; add the folder holding that series" in error


def test_no_label_object_of_the_kind_asked_refused(seg_study, tmp_path, capsys):
    error = _refused(capsys, tmp_path / "out", seg_study, "--labels-from", "rtstruct")
    assert "holds no RTSTRUCT label object (--labels-from rtstruct)" in error
    assert str(seg_study) in error


def test_mixed_slice_geometry_refused(rt_study, tmp_path, capsys):
    folder, _ = rt_study
    ct = read_volume(folder)
    odd = Path(ct.metadata["dicom_files"][2])
    edit(odd, ImageOrientationPatient=[1, 0, 0, 0, 0.8, 0.6])
    error = _refused(capsys, tmp_path / "out", folder)
    assert f"{odd}: orientation" in error
    assert "a series must share one orientation" in error


def test_label_in_another_frame_of_reference_refused(rt_study, tmp_path, capsys):
    folder, _ = rt_study
    ds = pydicom.dcmread(folder / "rt.dcm")
    ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = pydicom.uid.generate_uid()
    ds.save_as(folder / "rt.dcm")
    error = _refused(capsys, tmp_path / "out", folder)
    assert "rt.dcm: its FrameOfReferenceUID differs" in error
    assert "mixed geometry" in error


def test_existing_dataset_needs_overwrite(rt_study, tmp_path, capsys):
    folder, _ = rt_study
    out = tmp_path / "DS"
    assert _import(capsys, folder, "-o", out, "-q")[0] == 0
    (out / "stale.txt").write_text("from an older import")
    code, _, stderr = _import(capsys, folder, "-o", out, "-q")
    assert code == 2
    assert "already exists" in stderr
    assert (out / "stale.txt").exists()
    assert _import(capsys, folder, "-o", out, "-q", "--overwrite")[0] == 0
    assert not (out / "stale.txt").exists()
    assert (out / "labelsTr" / "case_0001.nii.gz").is_file()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]


def test_id_map_inside_the_dataset_refused(rt_study, tmp_path, capsys):
    folder, _ = rt_study
    out = tmp_path / "DS"
    error = _refused(capsys, out, folder, "--id-map", out / "ids.csv")
    assert "lies inside the dataset" in error


def test_url_source_refused(tmp_path, capsys):
    code, _, stderr = _import(
        capsys, "https://pacs.example/dicom-web/studies/1.2.3", "-o", tmp_path / "DS"
    )
    assert code == 2
    assert "reads local folders only" in stderr
