"""Fuzz the public readers with mutated real files (Hypothesis).

Each seed (a small valid NIfTI .nii/.nii.gz, NRRD, MHA, DICOM slice, YAML data config) is
truncated at a random byte, bit-flipped, or has one header field set to a hostile value.
Contract: the reader returns a valid result (a 3D Volume with finite, invertible geometry;
a DataConfig) or raises a ``MedsegError`` whose message names the file; never another
exception, never more than a time limit, never an allocation beyond a bound derived from the
file size. ``quick`` runs in the default suite; ``long`` with ``pytest -m fuzz tests/fuzz``.
"""

from __future__ import annotations

import gzip
import io
import struct
import tempfile
import time
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from medseg.data.config import load_data_config
from medseg.errors import MedsegError
from medseg.io import Volume, read_volume
from tests.fuzz.seeds import COUNTS, DICOM_FIELDS, MHA_KEYS, NIFTI_FIELDS, NRRD_KEYS, write_seeds

PROFILES = {"quick": 60, "long": 1500}
TIME_LIMIT_S = 20.0  # per input, generous for a shared CPU; a hang would blow far past it
SEEDS = write_seeds(Path(tempfile.mkdtemp(prefix="medseg_fuzz_seeds_")))

HOSTILE_TEXT = [b"0", b"-1", b"1", b"30000 30000 30000", b"0 4 4", b"4 4", b"nan", b"inf",
                b"1e308", b"-0", b"(0,0,0) (0,0,0) (0,0,0)", b"(1,0,0) (1,0,0) (0,0,1)",
                b"", b"abc", b"MET_DOUBLE", b"MET_UCHAR", b"double", b"gzip", b"bzip2",
                b"True", b"False", b"big", b"none", b"5", b"0 0 0 0 0 0 0 0 0"]  # fmt: skip
HOSTILE_YAML = ["context: -1", "crop_size: [0, 0]", "crop_size: abc", "foreground_ratio: 2",
                "unknown_key: 1", "preprocessing: 5", "val_cases: {a: 1}", "dataset: [1, 2]",
                "!!python/object/apply:os.system ['true']", "a: &x [*x]", "\t- bad",
                "crop_size: [1e400, 3]", "context: .nan", "preprocessing: {modality: xray}",
                "[", "{", "dataset: null", "? [a]\n: b"]  # fmt: skip


def _text_field(raw: bytes, key: bytes, value: bytes) -> bytes:
    start = raw.find(key)
    if start < 0:
        return raw
    end = raw.find(b"\n", start)
    sep = b": " if key.endswith(b":") is False and b":" in raw[start : start + 40] else b" "
    line = key + (b" = " + value if b" = " in raw[start:end] else sep + value)
    return raw[:start] + line + raw[end:]


@st.composite
def mutations(draw, fmt: str) -> bytes:
    raw = SEEDS[fmt].read_bytes()
    kind = draw(st.sampled_from(["truncate", "flip", "field", "field"]))
    body = gzip.decompress(raw) if fmt == "nii.gz" else raw
    if kind == "truncate":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if kind == "flip":
        target = bytearray(body if fmt == "nii.gz" and draw(st.booleans()) else raw)
        flips = st.tuples(st.integers(0, len(target) - 1), st.integers(0, 7))
        for pos, bit in draw(st.lists(flips, min_size=1, max_size=8)):
            target[pos] ^= 1 << bit
        return (
            gzip.compress(bytes(target)) if len(target) == len(body) != len(raw) else bytes(target)
        )
    if fmt in ("nii", "nii.gz"):
        edited = bytearray(body)
        for offset, fmt_ in draw(st.lists(st.sampled_from(NIFTI_FIELDS), min_size=1, max_size=3)):
            if fmt_ == "<h":
                # 1, 32, 128, 1792, 2304: NIfTI datatypes 1-bit, complex64, RGB24, complex128, RGBA32
                value = draw(st.one_of(st.sampled_from([0, 1, -1, 2, 7, 32, 128, 1792, 2304,
                                                        32767, -32768]),
                                       st.integers(-32768, 32767)))  # fmt: skip
            else:
                value = draw(st.floats(width=32, allow_nan=True, allow_infinity=True))
            struct.pack_into(fmt_, edited, offset, value)
        return gzip.compress(bytes(edited)) if fmt == "nii.gz" else bytes(edited)
    if fmt in ("nrrd", "mha"):
        key = draw(st.sampled_from(NRRD_KEYS if fmt == "nrrd" else MHA_KEYS))
        value = draw(st.one_of(st.sampled_from(HOSTILE_TEXT),
                               st.binary(max_size=12).filter(lambda b: b"\n" not in b)))  # fmt: skip
        return _text_field(raw, key, value)
    if fmt == "dcm":
        return _dicom_field(draw, raw)
    text = raw.decode() + "\n".join(draw(st.lists(st.sampled_from(HOSTILE_YAML), min_size=1)))
    return text.encode()


def _dicom_field(draw, raw: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(raw))
    field = draw(st.sampled_from(DICOM_FIELDS))
    if field == "TransferSyntaxUID":
        ds.file_meta.TransferSyntaxUID = draw(st.sampled_from(
            ["1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90",
             "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2", "1.2.3"]))  # fmt: skip
    else:
        value = draw(st.sampled_from([0, 1, 3, 8, 12, 16, 32, 65535, "0", "-1", "nan", "1e308",
                                      "0\\0", "1\\0\\0\\1\\0\\0", "0\\0\\0\\0\\0\\0", "abc",
                                      "RGB", "PALETTE COLOR", ""]))  # fmt: skip
        try:
            setattr(ds, field, value)
        except (TypeError, ValueError, OverflowError):
            assume(False)
    out = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(out, enforce_file_format=True)
    except Exception:  # pydicom itself refuses to write this value: not an input we can test
        assume(False)
    return out.getvalue()


def _valid_volume(volume: Volume) -> None:
    assert isinstance(volume, Volume)
    assert volume.array.ndim == 3
    # real numbers only: complex or colour voxels must be refused (medseg.io.volume.checked_voxels)
    assert volume.array.dtype.kind in "iuf", volume.array.dtype
    assert not volume.array.dtype.names, volume.array.dtype
    assert min(volume.shape) > 0
    assert np.all(np.isfinite(volume.affine))
    assert abs(np.linalg.det(volume.affine[:3, :3])) > 0


def _check_contract(fmt: str, blob: bytes) -> None:
    suffix = {"yaml": ".yaml", "dcm": ".dcm"}.get(fmt, "." + fmt)
    with tempfile.TemporaryDirectory(prefix="medseg_fuzz_") as folder:
        path = Path(folder) / f"mutant{suffix}"
        path.write_bytes(blob)
        bound = 4 * (1100 * max(len(blob), 1) + 64 * 2**20)
        tracemalloc.start()
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if fmt == "yaml":
                    load_data_config(path)
                else:
                    _valid_volume(read_volume(path))
            outcome = "ok"
        except MedsegError as err:
            message = str(err)
            outcome = "error"
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        elapsed = time.perf_counter() - start
    if outcome == "error":
        assert path.name in message, f"message does not name the file: {message}"
    assert elapsed < TIME_LIMIT_S, f"{elapsed:.1f} s for one {fmt} input"
    assert peak < bound, f"allocated {peak:,} bytes for a {len(blob):,}-byte {fmt} file"
    COUNTS.setdefault(fmt, {"ok": 0, "error": 0})[outcome] += 1


def _fuzz_test(fmt: str, examples: int):
    @settings(max_examples=examples, deadline=None, database=None, derandomize=examples < 100,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(blob=mutations(fmt))
    def run(blob: bytes) -> None:
        _check_contract(fmt, blob)

    return run


FORMATS = ["nii", "nii.gz", "nrrd", "mha", "dcm", "yaml"]
CASES = [pytest.param(f, "quick", id=f"{f}-quick") for f in FORMATS] + [
    pytest.param(f, "long", id=f"{f}-long", marks=pytest.mark.fuzz) for f in FORMATS
]


@pytest.mark.parametrize(("fmt", "profile"), CASES)
def test_reader_contract_under_mutation(fmt: str, profile: str) -> None:
    _fuzz_test(fmt, PROFILES[profile])()
    assert sum(COUNTS[fmt].values()) > 0


@pytest.mark.parametrize(
    ("datatype", "bitpix", "dims"),
    [(1, 1, (6, 5, 4)), (32, 64, (6, 5, 1)), (128, 24, (4, 5, 4)), (1792, 128, (5, 3, 1)),
     (2304, 32, (6, 5, 2)), (2, 8, (6, 5, 8))],
)  # fmt: skip
def test_nifti_datatype_edits_keep_the_contract(datatype: int, bitpix: int, dims) -> None:
    """The seed's 240 voxel bytes re-declared as each odd NIfTI type (1-bit, complex64, RGB24,
    complex128, RGBA32) with a shape that fits them, so the reader decodes them."""
    raw = bytearray(SEEDS["nii"].read_bytes())
    struct.pack_into("<hh", raw, 70, datatype, bitpix)
    struct.pack_into("<4h", raw, 40, 3, *dims)
    _check_contract("nii", bytes(raw))


def test_seeds_are_valid() -> None:
    for fmt, path in SEEDS.items():
        if fmt == "yaml":
            load_data_config(path)
        else:
            _valid_volume(read_volume(path))
