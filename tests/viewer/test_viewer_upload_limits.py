"""Issue 22 items 10 and 11: a .nii.gz upload's unpacked size is capped like a zip's, and
every file read for a --data-root case (each member of a DICOM folder) stays inside the root."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.io import Volume, write_volume
from medseg.viewer.core import loading
from tests.io.dicom_factory import write_series


def _header(shape: tuple[int, ...], dtype=np.int16) -> bytes:
    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(dtype)
    header["vox_offset"] = 352
    return header.binaryblock + b"\0" * 4


def _gzip_of_zeros(prefix: bytes, zeros: int) -> bytes:
    """gzip of ``prefix`` followed by ``zeros`` zero bytes, compressed in pieces (a bomb)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(prefix)]
    block = b"\0" * (1 << 20)
    for start in range(0, zeros, len(block)):
        parts.append(packer.compress(block[: zeros - start]))
    parts.append(packer.flush())
    return b"".join(parts)


def test_nii_gz_whose_header_declares_a_huge_volume_is_refused_before_unpacking():
    # 2000 x 2000 x 400 int16 = 3.2 GB declared; only 8 MB of zeros actually sent
    data = _gzip_of_zeros(_header((2000, 2000, 400)), 8 << 20)
    assert len(data) < 100_000
    with pytest.raises(loading.UploadError) as err:
        loading.read_upload("bomb.nii.gz", data)
    message = str(err.value)
    assert message.startswith("bomb.nii.gz: its header declares 3,052 MB of voxel data")
    assert f"{loading.MAX_UNZIPPED_MB:,} MB limit" in message
    assert "medseg view" in message


def test_nii_gz_whose_body_unpacks_past_the_cap_is_refused(tmp_path):
    # an honest little header (8 x 6 x 4) followed by 24 MB of zeros: a lying stream
    data = _gzip_of_zeros(_header((8, 6, 4), np.float32), 24 << 20)
    with pytest.raises(loading.UploadError, match="stream unpacked past 17 MB") as err:
        loading.read_upload("lying.nii.gz", data, max_unpacked_mb=16)
    assert "16 MB limit" in str(err.value)
    # under the cap the same kind of file opens (the reader ignores bytes after the voxels)
    vol = loading.read_upload("small.nii.gz", data, max_unpacked_mb=32)
    assert vol.shape == (8, 6, 4)
    assert not vol.array.any()


def test_ordinary_and_multi_member_nii_gz_uploads_still_open(tmp_path):
    vol = Volume(np.arange(8 * 6 * 4, dtype=np.float32).reshape(8, 6, 4), np.eye(4))
    write_volume(vol, tmp_path / "scan.nii")
    raw = (tmp_path / "scan.nii").read_bytes()
    # two gzip members (what `cat a.gz b.gz` gives): one file once unpacked
    for data in (gzip.compress(raw), gzip.compress(raw[:100]) + gzip.compress(raw[100:])):
        loaded = loading.read_upload("scan.nii.gz", data)
        np.testing.assert_array_equal(loaded.array, vol.array)
    with pytest.raises(loading.UploadError, match=r"scan\.nii\.gz"):
        loading.read_upload("scan.nii.gz", gzip.compress(raw)[:-40] + b"\x1f\x8b" + b"x" * 40)


@pytest.fixture
def linked_series(tmp_path: Path) -> tuple[Path, Path]:
    """``root/ct_dicom/`` whose members are links to a series outside ``root``."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    write_series(outside / "secret_series", n=3)
    write_series(root / "own_dicom", n=3)
    linked = root / "ct_dicom"
    linked.mkdir()
    for member in sorted((outside / "secret_series").iterdir()):
        os.symlink(member, linked / member.name)
    return root, outside


def test_dicom_folder_of_links_to_files_outside_is_not_listed_nor_opened(linked_series):
    root, outside = linked_series
    names = {r.name for r in loading.discover_cases(root)}
    assert names == {"own_dicom"}
    assert loading.resolve_in_root(root, "own_dicom") == (root / "own_dicom").resolve()
    with pytest.raises(loading.DataRootError) as err:
        loading.resolve_in_root(root, "ct_dicom")
    message = str(err.value)
    assert message.startswith("ct_dicom: reads img")
    assert str((outside / "secret_series").resolve()) in message
    assert "outside the data root" in message
    # the operator's own sample folder may link elsewhere on purpose
    assert "ct_dicom" in {r.name for r in loading.discover_cases(root, confine=False)}


def test_one_linked_member_or_linked_subfolder_is_enough_to_refuse(linked_series):
    root, outside = linked_series
    own = root / "own_dicom"
    os.symlink(outside / "secret_series", own / "more")  # a linked sub-folder
    with pytest.raises(loading.DataRootError, match="more"):
        loading.resolve_in_root(root, "own_dicom")
    os.remove(own / "more")
    first = sorted((outside / "secret_series").iterdir())[0]
    os.symlink(first, own / "zz_extra.dcm")
    assert "own_dicom" not in {r.name for r in loading.discover_cases(root)}
    with pytest.raises(loading.DataRootError, match=r"zz_extra\.dcm"):
        loading.resolve_in_root(root, "own_dicom")


def test_mhd_header_naming_a_data_file_outside_the_root_is_refused(tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "secret.raw").write_bytes(b"\0" * 64)
    (root / "scan.mhd").write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 4 4 4\nElementType = MET_UCHAR\n"
        "ElementDataFile = ../secret.raw\n"
    )
    with pytest.raises(loading.DataRootError, match=r"secret\.raw"):
        loading.resolve_in_root(root, "scan.mhd")
    assert loading.discover_cases(root) == []
