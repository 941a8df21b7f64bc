"""`medseg import-dicom dicomweb+http://...` against a real Orthanc: the real dcmqi CT (3
slices) and its liver DICOM-SEG go up through STOW-RS, come down through WADO-RS into a
private temporary folder, and give the same dataset as importing the same files from a
folder. Refused: a query matching too many studies, a study without a label object, PACS
options without a PACS, --engine ray for a PACS in `medseg predict`."""

from __future__ import annotations

import csv
import json
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.io.dicom_write import write_dicom_series
from medseg.io.dicomweb import DicomwebServer
from medseg.io.volume import Volume
from tests.inference.infer_factory import run_cli
from tests.pacs.conftest import upload

PATIENT_NAME, PATIENT_ID = "Roe^Richard", "PACS-SECRET-77"  # fake, but must never leak


@pytest.fixture
def labelled_study(orthanc, shared_data) -> tuple[str, list[Path]]:
    """The CT series and its SEG stored on the emptied Orthanc: (StudyInstanceUID, files)."""
    files = [*sorted((shared_data / "dcmqi" / "ct-3slice").glob("*.dcm"))]
    files.append(shared_data / "dcmqi" / "liver.dcm")
    study, _ = upload(orthanc, files)
    return study, files


@pytest.fixture
def unlabelled_study(orthanc, tmp_path) -> str:
    """A small synthetic CT study (no label object) stored on Orthanc: its StudyInstanceUID."""
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    array = np.random.default_rng(1).integers(-100, 100, (16, 12, 3)).astype(np.int16)
    folder = tmp_path / "unlabelled"
    write_dicom_series(
        Volume(array, affine, {}), folder, patient_name=PATIENT_NAME, patient_id=PATIENT_ID
    )
    study, _ = upload(orthanc, folder.glob("*.dcm"))
    return study


def _import(capsys, *args) -> tuple[int, str, str]:
    code = run_cli(["import-dicom", *map(str, args), "-q"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _refused(capsys, out: Path, *args) -> str:
    """An import that must fail: exit 2, one ``error:`` line, no dataset written."""
    code, stdout, stderr = _import(capsys, *args, "-o", out)
    assert code == 2, stdout + stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert not out.exists()
    return errors[0]


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    image = nib.load(path)
    return np.asarray(image.dataobj), image.affine


def test_import_from_orthanc_equals_folder_import(
    orthanc, labelled_study, scratch, tmp_path, capsys, monkeypatch
):
    study, files = labelled_study
    modes = []
    download = DicomwebServer.download_series

    def spy(self, study_uid, series_uid, folder):
        got = download(self, study_uid, series_uid, folder)
        modes.append((stat.S_IMODE(folder.parent.parent.stat().st_mode),
                      stat.S_IMODE(folder.stat().st_mode)))  # fmt: skip
        return got

    monkeypatch.setattr(DicomwebServer, "download_series", spy)
    remote = tmp_path / "remote" / "ds"
    code, stdout, stderr = _import(
        capsys, orthanc.medseg_url, "--query", "ModalitiesInStudy=CT", "-o", remote
    )
    assert code == 0, stdout + stderr
    for identifier in ("JANCT000", "99000", "03086212"):  # the CT's patient name, ID, accession
        assert identifier not in stdout + stderr
    assert modes == [(0o700, 0o700)] * 2  # the SEG, then the CT series it references
    assert list(scratch.iterdir()) == []  # the downloads are gone

    local_src = tmp_path / "src" / "study1"
    local_src.mkdir(parents=True)
    for file in files:
        (local_src / file.name).symlink_to(file)
    local = tmp_path / "local" / "ds"
    assert _import(capsys, local_src, "-o", local)[0] == 0

    assert json.loads((remote / "dataset.json").read_text()) == json.loads(
        (local / "dataset.json").read_text()
    )
    names = sorted(p.relative_to(local) for p in local.rglob("*.nii.gz"))
    assert names == sorted(p.relative_to(remote) for p in remote.rglob("*.nii.gz"))
    assert len(names) == 2
    for name in names:
        (ours, our_affine), (theirs, their_affine) = _read(remote / name), _read(local / name)
        np.testing.assert_array_equal(ours, theirs)
        np.testing.assert_allclose(our_affine, their_affine, atol=1e-6)
    assert np.count_nonzero(_read(remote / "labelsTr" / "case_0001.nii.gz")[0]) > 0

    # the id map names the PACS series, not the deleted temporary folder
    with (remote.parent / "ds.id_map.csv").open() as handle:
        rows = [r for r in csv.DictReader(line for line in handle if not line.startswith("#"))]
    assert [r["case_id"] for r in rows] == ["case_0001"]
    assert rows[0]["study_instance_uid"] == study
    base = f"{orthanc.medseg_url}/studies/{study}/series/"
    assert rows[0]["image_folder"] == base + rows[0]["series_instance_uid"]
    assert rows[0]["label_file"].startswith(base)
    assert rows[0]["label_file"] != rows[0]["image_folder"]


def test_query_with_too_many_studies_and_study_without_labels(
    orthanc, labelled_study, unlabelled_study, scratch, tmp_path, capsys, monkeypatch
):
    from medseg.data import dicom_import

    monkeypatch.setattr(dicom_import, "DEFAULT_QUERY_LIMIT", 1)
    out = tmp_path / "ds"
    error = _refused(capsys, out, orthanc.medseg_url, "--query", "ModalitiesInStudy=CT")
    assert "matches more than 1 studies" in error
    assert "--limit N" in error

    # allowed with --limit 2, but one of the two studies holds no label object
    error = _refused(
        capsys, out, orthanc.medseg_url, "--query", "ModalitiesInStudy=CT", "--limit", "2"
    )
    assert f"study {unlabelled_study}" in error
    assert "holds no DICOM-SEG or RTSTRUCT label object" in error
    assert PATIENT_NAME not in error
    assert PATIENT_ID not in error
    assert list(scratch.iterdir()) == []

    error = _refused(capsys, out, orthanc.medseg_url, "--study", unlabelled_study)
    assert "holds no DICOM-SEG or RTSTRUCT label object" in error
    error = _refused(
        capsys, out, orthanc.medseg_url, "--study", labelled_study[0], "--labels-from", "rtstruct"
    )
    assert "holds no RTSTRUCT label object (--labels-from rtstruct)" in error


def test_pacs_options_need_a_pacs_source(shared_data, tmp_path, capsys):
    out = tmp_path / "ds"
    error = _refused(capsys, out, shared_data / "dcmqi", "--study", "1.2.3")
    assert "apply to a DICOMweb source" in error
    error = _refused(capsys, out, "dicomweb+http://127.0.0.1:9/dicom-web")
    assert "exactly one of --study UID" in error


def test_predict_refuses_ray_for_a_pacs(tmp_path, capsys):
    args = ["predict", "dicomweb+http://127.0.0.1:9/dicom-web", "--study", "1.2.3",
            "-o", tmp_path / "out", "--engine", "ray"]  # fmt: skip
    assert run_cli(args) == 2
    stderr = capsys.readouterr().err
    assert "error: --engine ray: a PACS (dicomweb+https://...) is predicted on this machine" in (
        stderr
    )
    assert not (tmp_path / "out").exists()
