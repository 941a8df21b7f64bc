"""DICOM series in every lossless compressed transfer syntax read back voxel-exact.

The slices are transcoded with GDCM (``python-gdcm``, Apache-2.0, a dependency) from an
uncompressed series written by ``dicom_factory``; pydicom decodes them through GDCM,
pylibjpeg or pylibjpeg-openjpeg. No GPL decoder (pylibjpeg-libjpeg) is involved.
"""

from __future__ import annotations

from pathlib import Path

import gdcm  # a declared dependency: without it JPEG Lossless (.4.70) cannot be decoded
import numpy as np
import pydicom
import pytest

from medseg.errors import CorruptFileError
from medseg.io import read_volume
from tests.io.dicom_factory import write_series

SYNTAXES = {
    "1.2.840.10008.1.2.4.70": "JPEGLosslessProcess14_1",  # JPEG Lossless SV1, common in PACS
    "1.2.840.10008.1.2.4.57": "JPEGLosslessProcess14",
    "1.2.840.10008.1.2.4.80": "JPEGLSLossless",
    "1.2.840.10008.1.2.4.90": "JPEG2000Lossless",
    "1.2.840.10008.1.2.5": "RLELossless",
    "1.2.840.10008.1.2": "ImplicitVRLittleEndian",
}


def _transcode(src: Path, dst: Path, syntax: str) -> None:
    reader = gdcm.ImageReader()
    reader.SetFileName(str(src))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax)))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(dst))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()


@pytest.fixture(scope="module")
def plain_series(tmp_path_factory) -> tuple[Path, np.ndarray]:
    return write_series(tmp_path_factory.mktemp("plain") / "ct", n=4, shape=(20, 14))


@pytest.mark.parametrize("uid", list(SYNTAXES))
def test_compressed_series_reads_back_equal(plain_series, tmp_path, uid):
    folder, _ = plain_series
    out = tmp_path / "compressed"
    out.mkdir()
    for src in sorted(folder.glob("*.dcm")):
        _transcode(src, out / src.name, SYNTAXES[uid])
    assert all(
        pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID == uid
        for p in out.glob("*.dcm")
    )
    original, compressed = read_volume(folder), read_volume(out)
    assert compressed.same_grid(original)
    np.testing.assert_array_equal(compressed.array, original.array)
    assert compressed.array.min() < 0  # rescaled to HU (intercept -1024) like the original


def test_damaged_compressed_pixel_data_names_the_syntax(plain_series, tmp_path):
    folder, _ = plain_series
    out = tmp_path / "damaged"
    out.mkdir()
    src = sorted(folder.glob("*.dcm"))[0]
    _transcode(src, out / "a.dcm", SYNTAXES["1.2.840.10008.1.2.4.70"])
    raw = (out / "a.dcm").read_bytes()
    (out / "a.dcm").write_bytes(raw[: len(raw) - 200])  # cut into the JPEG stream
    with pytest.raises(CorruptFileError) as exc:
        read_volume(out / "a.dcm")
    message = str(exc.value)
    assert "a.dcm" in message
    assert "JPEG Lossless" in message
    assert "libjpeg-libjpeg" not in message  # never advise a GPL decoder
