"""Regression tests for what the fuzz harness found (each failed before its fix)."""

from __future__ import annotations

import struct
import sys
import tracemalloc
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medseg.data.config import load_data_config
from medseg.errors import CheckpointError, ConfigError, CorruptFileError, UnsupportedFormatError
from medseg.io import read_volume
from tests.io.dicom_factory import write_slice


def _slice(tmp_path: Path) -> Path:
    pixels = np.arange(30, dtype=np.uint16).reshape(6, 5)
    return write_slice(tmp_path / "s.dcm", pixels, (0.0, 0.0, 0.0), series_uid="1.2.3")


def test_nifti_header_nibabel_refuses_is_a_corrupt_file(tmp_path):
    path = tmp_path / "bad.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), path)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<h", raw, 40, 3)
    struct.pack_into("<f", raw, 108, 1.0)  # vox_offset 1: nibabel raises HeaderDataError
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=r"bad\.nii: not a valid NIfTI file"):
        read_volume(path)


def test_dicom_length_field_larger_than_the_file_allocates_nothing_big(tmp_path):
    path = _slice(tmp_path)
    raw = bytearray(path.read_bytes())
    # an unbounded file read allocates the requested size first: here 800 MB for a 1 KB file
    # the explicit-VR 32-bit length of the pixel data element, set to ~800 MB
    at = raw.rfind(b"\xe0\x7f\x10\x00OW\x00\x00") + 8
    struct.pack_into("<I", raw, at, 800_000_000)
    path.write_bytes(bytes(raw))
    tracemalloc.start()
    try:
        read_volume(path)  # the 60 pixel bytes that are there are read; nothing more
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20


def test_dicom_header_value_of_the_wrong_multiplicity_is_a_corrupt_file(tmp_path):
    path = _slice(tmp_path)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames = "0\\0"
    ds.save_as(path)
    with pytest.raises(CorruptFileError, match=r"s\.dcm: a DICOM header value cannot be"):
        read_volume(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"just a string", "expected a YAML mapping"), (b"\xe4\xff: 1", "not a UTF-8 text file")],
)
def test_yaml_config_that_is_not_a_mapping_or_not_text(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        load_data_config(path)


def test_metaimage_with_a_negative_dimension_count_does_not_crash_the_process(tmp_path):
    """SimpleITK segfaults on ``NDims = -1``; run in a child so a regression cannot kill pytest."""
    import subprocess

    import SimpleITK as sitk

    path = tmp_path / "neg.mha"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.int16)), str(path))
    path.write_bytes(path.read_bytes().replace(b"NDims = 3", b"NDims = -1"))
    code = (
        "import sys\nfrom medseg.io import read_volume\nfrom medseg.errors import CorruptFileError\n"
        f"try:\n    read_volume({str(path)!r})\nexcept CorruptFileError as err:\n"
        "    print('refused:', err)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: " in result.stdout
    assert "neg.mha: corrupt header: NDims '-1'" in result.stdout


def test_nifti_with_an_infinite_vox_offset_is_a_corrupt_file(tmp_path):
    path = tmp_path / "inf.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), path)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<f", raw, 108, float("inf"))
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match=r"inf\.nii: cannot decode NIfTI data"):
        read_volume(path)


# ----------------------------------------------------------------------------- formats
# Found by tests/fuzz/test_fuzz_formats.py (checkpoints, zip uploads, DICOM-SEG, configs).
def _seed_payload() -> dict:
    from medseg.data.preprocessing import PreprocessingParams
    from medseg.models import build_model

    names = ["background", "lesion"]
    params = PreprocessingParams(modality="mr", channel_names=["MRI"], class_names=names)
    return {
        "model": {"name": "unet", "in_channels": 1, "num_classes": 2,
                  "options": {"depth": 2, "base_channels": 4}},
        "state_dict": build_model("unet", 1, 2, depth=2, base_channels=4).state_dict(),
        "preprocessing": params.model_dump(mode="json"),
        "sampling": {"axis": 2, "axes": [2], "context": 0},
        "class_names": names,
        "channel_names": ["MRI"],
    }  # fmt: skip


def _checkpoint(tmp_path: Path, name: str, **changes) -> Path:
    import torch

    payload = _seed_payload()
    for dotted, value in changes.items():
        node = payload
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    path = tmp_path / name
    torch.save(payload, path)
    return path


def test_empty_checkpoint_file_is_a_checkpoint_error(tmp_path):
    """torch's error has no message here; quoting its first line raised IndexError."""
    from medseg.inference import Predictor

    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty\.pt: cannot be loaded"):
        Predictor.load(path, device="cpu")


def test_checkpoint_with_a_non_mapping_record_section_is_a_checkpoint_error(tmp_path):
    from medseg.inference import Predictor

    path = _checkpoint(tmp_path, "sampling.pt", sampling="axial")
    with pytest.raises(CheckpointError, match=r"sampling\.pt: its model record is invalid"):
        Predictor.load(path, device="cpu")


def test_checkpoint_whose_model_record_is_a_tensor_is_a_checkpoint_error(tmp_path):
    import torch

    from medseg.inference import Predictor

    path = _checkpoint(tmp_path, "tensor.pt", model=torch.zeros(0))  # IndexError escaped
    with pytest.raises(CheckpointError, match=r"tensor\.pt: its model record is invalid"):
        Predictor.load(path, device="cpu")
    path = _checkpoint(tmp_path, "names.pt", channel_names=torch.zeros(0))  # RuntimeError
    with pytest.raises(CheckpointError, match=r"names\.pt: its model record is invalid"):
        Predictor.load(path, device="cpu")


def test_checkpoint_claiming_a_giant_model_allocates_nothing(tmp_path):
    """``num_classes: 10**10`` asked PyTorch for a 160 GB output layer (RuntimeError from the
    allocator) before the weights were compared; the model is now checked on the meta
    device first, so nothing is allocated."""
    import time

    from medseg.inference import Predictor

    path = _checkpoint(tmp_path, "giant.pt", model__num_classes=10**10)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"giant\.pt: weights do not fit model 'unet'"):
        Predictor.load(path, device="cpu")
    assert time.perf_counter() - start < 10


def test_checkpoint_naming_an_unknown_model_names_the_file(tmp_path):
    from medseg.inference import Predictor

    path = _checkpoint(tmp_path, "renamed.pt", model__name="unett")
    with pytest.raises(CheckpointError, match=r"renamed\.pt: the recorded model 'unett'"):
        Predictor.load(path, device="cpu")


def _series_zip(tmp_path: Path, **kwargs) -> bytes:
    import io
    import zipfile

    from tests.io.dicom_factory import write_series

    folder, _ = write_series(tmp_path / "series", n=3, shape=(6, 4))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, kwargs.get("name", "series/{}").format(path.name))
    return out.getvalue()


def _patch_method(data: bytes, method: int) -> bytes:
    raw = bytearray(data)
    for signature, offset in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        at = raw.find(signature)
        while at >= 0:
            struct.pack_into("<H", raw, at + offset, method)
            at = raw.find(signature, at + 4)
    return bytes(raw)


def _damage_deflate(data: bytes) -> bytes:
    raw = bytearray(data)
    at = raw.find(b"PK\x03\x04")
    name_len, extra_len = struct.unpack_from("<HH", raw, at + 26)
    start = at + 30 + name_len + extra_len
    raw[start : start + 8] = b"\xff" * 8  # an invalid deflate block header
    return bytes(raw)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_damage_deflate, "not a valid zip archive"),  # zlib.error escaped
        (lambda d: _patch_method(d, 99), "not a valid zip archive"),  # NotImplementedError
    ],
    ids=["damaged-deflate", "unknown-method"],
)
def test_damaged_zip_upload_is_an_upload_error(tmp_path, mutate, message):
    from medseg.viewer.core.loading import UploadError, read_upload

    with pytest.raises(UploadError, match=rf"scan\.zip: {message}"):
        read_upload("scan.zip", mutate(_series_zip(tmp_path)))


def test_zip_entry_name_the_file_system_refuses_is_an_upload_error(tmp_path):
    from medseg.viewer.core.loading import UploadError, read_upload

    data = _series_zip(tmp_path, name="series/" + "a" * 300 + "{}")  # OSError: name too long
    with pytest.raises(UploadError, match=r"scan\.zip: not a valid zip archive \(OSError"):
        read_upload("scan.zip", data)


def test_empty_zip_upload_names_the_upload(tmp_path):
    import io
    import zipfile

    from medseg.viewer.core.loading import UploadError, read_upload

    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("series/", b"")
    with pytest.raises(UploadError, match=r"^scan\.zip: the zip archive is empty"):
        read_upload("scan.zip", out.getvalue())


def test_training_config_that_is_not_utf8_is_a_config_error(tmp_path):
    from medseg.engine.config import load_config

    path = tmp_path / "train.yaml"
    path.write_bytes(b"name: caf\xe9\n")  # Latin-1: UnicodeDecodeError escaped
    with pytest.raises(ConfigError, match=r"train\.yaml: not a UTF-8 text file"):
        load_config(path)


@pytest.fixture
def seg_file(tmp_path: Path) -> Path:
    from medseg.inference.dicom_seg import write_dicom_seg
    from medseg.io import Volume
    from tests.io.dicom_factory import write_series

    folder, _ = write_series(tmp_path / "series", n=3, shape=(6, 4))
    image = read_volume(folder)
    label = np.zeros(image.shape, np.uint8)
    label[1:4, 1:3, :] = 1
    return write_dicom_seg(
        Volume(label, image.affine), image.metadata["dicom_files"], ["bg", "lesion"],
        tmp_path / "seg.dcm",
    )  # fmt: skip


def _edit_seg(path: Path, edit) -> Path:
    ds = pydicom.dcmread(path)
    edit(ds)
    ds.save_as(path)
    return path


def test_seg_that_is_not_dicom_is_a_corrupt_file(tmp_path):
    from medseg.io import read_dicom_seg

    path = tmp_path / "seg.dcm"
    path.write_bytes(b"not dicom at all")  # pydicom's InvalidDicomError escaped
    with pytest.raises(CorruptFileError, match=r"seg\.dcm: not a readable DICOM file"):
        read_dicom_seg(path)


def test_seg_truncated_inside_its_file_meta_is_a_corrupt_file(seg_file):
    from medseg.io import read_dicom_seg

    # preamble, DICM, the group length, then (0002,0001) without its 4-byte length:
    # pydicom's struct.error escaped
    seg_file.write_bytes(seg_file.read_bytes()[:152])
    with pytest.raises(CorruptFileError, match=r"seg\.dcm: not a readable DICOM file"):
        read_dicom_seg(seg_file)


def test_seg_header_claiming_more_frames_than_stored_allocates_nothing(seg_file):
    from medseg.io import read_dicom_seg

    def claim_big_frames(ds):
        ds.Rows, ds.Columns = 65535, 65535

    _edit_seg(seg_file, claim_big_frames)
    tracemalloc.start()
    try:
        with pytest.raises(CorruptFileError, match=r"seg\.dcm: DICOM-SEG pixel data holds"):
            read_dicom_seg(seg_file)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20


@pytest.mark.parametrize(
    "edit",
    [
        # highdicom indexes frames in SQLite: a NaN position raised sqlite3.IntegrityError
        lambda ds: setattr(
            ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0],
            "ImagePositionPatient", ["nan", "0", "0"],
        ),
        lambda ds: delattr(ds, "PixelData"),  # AttributeError escaped from get_volume
    ],
    ids=["nan-position", "no-pixel-data"],
)  # fmt: skip
def test_damaged_seg_header_is_a_corrupt_file(seg_file, edit):
    from medseg.io import read_dicom_seg

    _edit_seg(seg_file, edit)
    with pytest.raises((CorruptFileError, UnsupportedFormatError), match=r"seg\.dcm: "):
        read_dicom_seg(seg_file)


def test_checkpoint_without_class_names_is_a_checkpoint_error(tmp_path):
    from medseg.inference import Predictor

    path = _checkpoint(tmp_path, "nameless.pt", class_names=[])  # loaded as a 0-class model
    with pytest.raises(CheckpointError, match=r"nameless\.pt: its model record is invalid"):
        Predictor.load(path, device="cpu")


def test_seg_with_an_unknown_value_representation_is_a_corrupt_file(seg_file):
    from medseg.io import read_dicom_seg

    raw = seg_file.read_bytes()
    manufacturer = b"\x08\x00\x70\x00LO"
    assert manufacturer in raw
    # pydicom converts lazily: NotImplementedError escaped when the metadata was read
    seg_file.write_bytes(raw.replace(manufacturer, b"\x08\x00\x70\x00MO", 1))
    with pytest.raises(CorruptFileError, match=r"seg\.dcm: not a readable DICOM file"):
        read_dicom_seg(seg_file)


def test_nifti_with_an_impossible_quaternion_reads_with_its_sform(tmp_path):
    """b^2 + c^2 + d^2 > 1: nibabel's get_qform raised ValueError in the ITK comparison."""
    path = tmp_path / "quat.nii"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), path)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<hh", raw, 252, 1, 2)  # qform_code 1, sform_code 2
    struct.pack_into("<fff", raw, 256, 1.0, 1.0, 1.0)  # quatern_b, c, d
    path.write_bytes(bytes(raw))
    volume = read_volume(path)
    np.testing.assert_allclose(volume.affine, np.eye(4))
    assert volume.metadata["qform_sform_mismatch"] is True


def test_checkpoint_zip_with_an_undecodable_entry_name_is_a_checkpoint_error(tmp_path):
    """The TorchScript sniffing opened the zip and let zipfile's UnicodeDecodeError out."""
    from medseg.inference import Predictor

    raw = bytearray(_checkpoint(tmp_path, "names.pt").read_bytes())
    at = raw.find(b"PK\x01\x02")  # the first central-directory entry
    struct.pack_into("<H", raw, at + 8, struct.unpack_from("<H", raw, at + 8)[0] | 0x800)
    raw[at + 46] = 0xF3  # its name, flagged UTF-8, starts with an invalid byte
    path = tmp_path / "names.pt"
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"names\.pt: cannot be loaded"):
        Predictor.load(path, device="cpu")


def test_checkpoint_with_an_infinite_slice_axis_is_a_checkpoint_error(tmp_path):
    from medseg.inference import Predictor

    path = _checkpoint(tmp_path, "axis.pt", sampling__axis=float("inf"))  # OverflowError
    with pytest.raises(CheckpointError, match=r"axis\.pt: its model record is invalid"):
        Predictor.load(path, device="cpu")
