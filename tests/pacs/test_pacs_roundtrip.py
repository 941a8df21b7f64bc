"""Round trip through a real Orthanc: a real CT series goes up (STOW-RS), QIDO-RS finds it,
`medseg predict dicomweb+http://...` writes the same mask as predicting the files locally,
`--push` stores one DICOM-SEG that references the source series, and highdicom reads it back
onto the source grid. A rerun skips the study and pushes nothing twice."""

from __future__ import annotations

import json
import stat
import tempfile

import nibabel as nib
import numpy as np

from medseg.io import align_to_grid, read_volume
from medseg.io.dicomweb import DicomwebServer
from tests.inference.infer_factory import run_cli
from tests.pacs.conftest import upload

SERIES = "dcmqi/ct-3slice"  # 3 real CT slices, 512 x 512


def test_predict_from_and_back_to_orthanc(
    orthanc, shared_data, ct_checkpoint, tmp_path, capsys, monkeypatch
):
    source = shared_data / SERIES
    study, series = upload(orthanc, source.glob("*.dcm"))
    client = DicomwebServer(orthanc.url, retries=0)
    assert study in client.study_uids({"ModalitiesInStudy": "CT"}, cap=None)

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    modes = []
    download = DicomwebServer.download_series

    def spy(self, study_uid, series_uid, folder):
        files = download(self, study_uid, series_uid, folder)
        modes.append(
            (stat.S_IMODE(folder.parent.stat().st_mode), stat.S_IMODE(folder.stat().st_mode))
        )
        return files

    monkeypatch.setattr(DicomwebServer, "download_series", spy)
    out = tmp_path / "pacs"
    args = ["predict", orthanc.medseg_url, "--study", study, "-o", out, "--model", ct_checkpoint,
            "--device", "cpu", "--push", "-q"]  # fmt: skip
    assert run_cli(args) == 0
    printed = capsys.readouterr().out
    assert modes == [(0o700, 0o700)]
    assert list(scratch.iterdir()) == []  # the downloaded series is gone

    # the same mask as predicting the files on disk
    local = tmp_path / "local"
    assert (
        run_cli(["predict", source, "-o", local, "--model", ct_checkpoint, "--device", "cpu", "-q"])
        == 0
    )
    remote_mask = nib.load(out / f"{study}.nii.gz")
    local_mask = nib.load(local / f"{source.name}.nii.gz")
    np.testing.assert_array_equal(np.asarray(remote_mask.dataobj), np.asarray(local_mask.dataobj))
    np.testing.assert_allclose(remote_mask.affine, local_mask.affine, atol=1e-6)
    assert 0 < np.count_nonzero(np.asarray(remote_mask.dataobj)) < remote_mask.shape[0] ** 2 * 3
    assert (out / "summary.csv").is_file()
    report = json.loads((out / f"{study}.json").read_text())
    assert report["inputs"] == [f"{orthanc.medseg_url}/studies/{study}/series/{series}"]

    # one SEG series on the server, the one printed, referencing the source series
    segs = client.client.search_for_series(search_filters={"Modality": "SEG"})
    assert len(segs) == 1
    seg_series = segs[0]["0020000E"]["Value"][0]
    assert f"pushed: study {study}: DICOM-SEG series {seg_series}" in printed
    (seg,) = client.client.retrieve_series(study, seg_series)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series
    seg_path = tmp_path / "seg.dcm"
    seg.save_as(seg_path, enforce_file_format=True)

    import highdicom as hd

    assert hd.seg.segread(str(seg_path)).number_of_segments == 1
    on_grid = align_to_grid(read_volume(seg_path), read_volume(source))
    np.testing.assert_array_equal(on_grid.array > 0, np.asarray(remote_mask.dataobj) > 0)

    # rerun: the study is done (nothing downloaded) and its SEG is not pushed twice
    modes.clear()
    assert run_cli(args) == 0
    assert "0 predicted, 1 already done" in capsys.readouterr().out
    assert modes == []
    assert len(client.client.search_for_series(search_filters={"Modality": "SEG"})) == 1
    report = json.loads((out / f"{study}.json").read_text())
    assert report["pushed"]["series_uid"] == seg_series
