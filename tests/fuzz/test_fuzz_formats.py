"""Fuzz the non-image inputs with mutated real files (Hypothesis): checkpoints (to
``Predictor.load``), zip uploads (to the viewer's ``read_upload``), DICOM-SEG (to
``read_dicom_seg``) and training configs (to ``load_config``).

Mutations: truncation at a random byte, bit flips, and edits of the structure each format
has (a checkpoint's payload keys, weights and pickle; zip entry names, flags, links,
duplicated or missing slices; DICOM-SEG header and functional-group fields; config keys).
Contract as in ``test_fuzz_readers``: a valid result or a ``MedsegError`` naming the file,
within a time limit and an allocation bound; a checkpoint never runs code and a zip never
writes outside its temporary folder. ``quick`` runs in the default suite, ``long`` with
``pytest -m fuzz tests/fuzz``.
"""

from __future__ import annotations

import copy
import io
import pickle
import resource
import struct
import tempfile
import time
import tracemalloc
import uuid
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from medseg.engine.config import TrainConfig, load_config
from medseg.errors import MedsegError
from medseg.inference import Predictor
from medseg.io import Volume, read_dicom_seg
from medseg.viewer.core.loading import read_upload
from tests.fuzz.seeds import COUNTS, write_format_seeds

PROFILES = {"quick": 100, "long": 1500}
TIME_LIMIT_S = 20.0
SEEDS = write_format_seeds(Path(tempfile.mkdtemp(prefix="medseg_fuzz_formats_")))
MARKER = Path(tempfile.gettempdir()) / f"medseg_fuzz_executed_{uuid.uuid4().hex}"
TOKEN = uuid.uuid4().hex[:12]  # in hostile zip entry names: must never appear on disk

HOSTILE_VALUES = [None, -1, 0, 1, 3, 2**31, 10**12, 1e308, float("nan"), float("inf"), True,
                  "", "x", "../../etc/passwd", [], [1, 2], {}, {"a": 1},
                  torch.zeros(0), torch.full((2,), float("nan"))]  # fmt: skip


# ----------------------------------------------------------------------------- checkpoints
class _Run:
    """Pickled as a call of ``func(*args)``: what an attacker's .pt would do on load."""

    def __init__(self, func: Callable, *args: Any) -> None:
        self.call = (func, args)

    def __reduce__(self):
        return self.call


def _payload_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    paths = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            paths += _payload_paths(value, (*prefix, key))
    return paths


PAYLOAD = torch.load(SEEDS["checkpoint"], map_location="cpu", weights_only=True)
PAYLOAD_PATHS = [p for p in _payload_paths(PAYLOAD) if p[0] != "state_dict" or len(p) == 1]
WEIGHT_PATHS = [p for p in _payload_paths(PAYLOAD) if p[0] == "state_dict" and len(p) == 2]


def _byte_damage(draw, raw: bytes, kind: str) -> bytes:
    """The format-blind mutations: ``truncate`` at any byte, or ``flip`` 1-8 bits."""
    if kind == "truncate":
        return raw[: draw(st.integers(0, len(raw) - 1))]
    edited = bytearray(raw)
    for pos, bit in draw(st.lists(st.tuples(st.integers(0, len(raw) - 1),
                                            st.integers(0, 7)), min_size=1, max_size=8)):  # fmt: skip
        edited[pos] ^= 1 << bit
    return bytes(edited)


@st.composite
def checkpoint_mutations(draw) -> bytes:
    raw = SEEDS["checkpoint"].read_bytes()
    kind = draw(st.sampled_from(["truncate", "flip", "payload", "payload", "pickle", "hostile"]))
    if kind in ("truncate", "flip"):
        return _byte_damage(draw, raw, kind)
    if kind == "hostile":  # code that would run on a plain pickle.load / weights_only=False
        evil = draw(st.sampled_from([
            _Run(eval, f"open({str(MARKER)!r}, 'w').close()"),
            _Run(exec, f"open({str(MARKER)!r}, 'w').close()"),
            {"model": _Run(eval, f"open({str(MARKER)!r}, 'w').close()"), "state_dict": {}},
        ]))  # fmt: skip
        if draw(st.booleans()):
            return pickle.dumps(evil, protocol=2)  # a legacy (non-zip) torch file
        out = io.BytesIO()
        torch.save({"seed": 1}, out)
        return _replace_pickle(out.getvalue(), pickle.dumps(evil, protocol=2))
    if kind == "pickle":  # the zip is intact, its data.pkl is damaged
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
            data = bytearray(archive.read(name))
        for pos, bit in draw(st.lists(st.tuples(st.integers(0, len(data) - 1),
                                                st.integers(0, 7)), min_size=1, max_size=4)):  # fmt: skip
            data[pos] ^= 1 << bit
        return _replace_pickle(raw, bytes(data))
    payload = copy.deepcopy(PAYLOAD)
    paths = st.sampled_from(PAYLOAD_PATHS) | st.sampled_from(WEIGHT_PATHS)
    for path in draw(st.lists(paths, min_size=1, max_size=3)):
        parent = payload
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        action = draw(st.sampled_from(["delete", "value", "value", "tensor"]))
        if action == "delete":
            parent.pop(path[-1], None)
        elif action == "tensor" and isinstance(parent.get(path[-1]), torch.Tensor):
            old = parent[path[-1]]
            shape = draw(st.sampled_from([(), (0,), (1,), (*old.shape, 2), old.shape[::-1]]))
            dtype = draw(st.sampled_from([torch.float32, torch.float16, torch.int64, torch.bool]))
            parent[path[-1]] = torch.ones(shape, dtype=dtype)
        else:
            # a copy: a later edit may descend into it, and the list is shared by all inputs
            parent[path[-1]] = copy.deepcopy(draw(st.sampled_from(HOSTILE_VALUES)))
    out = io.BytesIO()
    torch.save(payload, out)
    return out.getvalue()


def _replace_pickle(raw: bytes, data: bytes) -> bytes:
    source, out = zipfile.ZipFile(io.BytesIO(raw)), io.BytesIO()
    with source, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in source.infolist():
            target.writestr(info, data if info.filename.endswith("data.pkl") else source.read(info))
    return out.getvalue()


def _load_checkpoint(path: Path) -> None:
    predictor = Predictor.load(path, device="cpu")
    assert len(predictor.class_names) >= 2
    assert len(predictor.channel_names) >= 1


# ----------------------------------------------------------------------------- zip uploads
HOSTILE_NAMES = [f"../{TOKEN}.dcm", f"../../../{TOKEN}.dcm", f"/tmp/{TOKEN}.dcm",
                 f"C:/{TOKEN}.dcm", f"series/../../{TOKEN}.dcm", "series\\..\\..\\x.dcm",
                 "series/", "series/img000.dcm/inner.dcm", "other/img.dcm", "series/notes.txt",
                 "series/.hidden.dcm", "series/DICOMDIR", "series/" + "a" * 300]  # fmt: skip


@st.composite
def zip_mutations(draw) -> bytes:
    raw = SEEDS["zip"].read_bytes()
    kind = draw(st.sampled_from(["truncate", "flip", "entries", "entries", "flags"]))
    if kind in ("truncate", "flip"):
        return _byte_damage(draw, raw, kind)
    if kind == "flags":  # central-directory fields: flags (encryption), method, sizes
        edited = bytearray(raw)
        at = raw.find(b"PK\x01\x02")
        field, fmt_, values = draw(st.sampled_from([
            (8, "<H", [1, 8, 0x41, 0xFFFF]), (10, "<H", [1, 6, 9, 12, 14, 93, 99, 0xFFFF]),
            (20, "<I", [0, 1, 2**31, 0xFFFFFFFF]), (24, "<I", [0, 1, 2**31, 0xFFFFFFFF]),
            (28, "<H", [0, 0xFFFF]), (42, "<I", [0, 2**31, 0xFFFFFFFF]),
        ]))  # fmt: skip
        struct.pack_into(fmt_, edited, at + field, draw(st.sampled_from(values)))
        return bytes(edited)
    with zipfile.ZipFile(io.BytesIO(raw)) as source:
        entries = [(i.filename, source.read(i)) for i in source.infolist()]
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["drop", "duplicate", "rename", "add", "link", "dicom"]))
        index = draw(st.integers(0, max(len(entries) - 1, 0)))
        if action == "drop" and entries:
            entries.pop(index)
        elif action == "duplicate" and entries:
            name, data = entries[index]
            entries.append((draw(st.sampled_from([name, name + ".dcm", "series/copy.dcm"])), data))
        elif action == "rename" and entries:
            entries[index] = (draw(st.sampled_from(HOSTILE_NAMES)), entries[index][1])
        elif action == "add":
            entries.append((draw(st.sampled_from(HOSTILE_NAMES)), draw(st.binary(max_size=64))))
        elif action == "link":
            entries.append(("link", f"series/{TOKEN}.dcm".encode()))
        elif action == "dicom" and entries and entries[index][1][128:132] == b"DICM":
            from tests.fuzz.test_fuzz_readers import _dicom_field

            entries[index] = (entries[index][0], _dicom_field(draw, entries[index][1]))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for name, data in entries:
            if name == "link":
                info = zipfile.ZipInfo(f"series/{TOKEN}_link.dcm")
                info.external_attr = 0o120777 << 16  # a symbolic link
                target.writestr(info, data)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # duplicate names
                    target.writestr(name, data)
    return out.getvalue()


def _read_zip(path: Path) -> None:
    volume = read_upload(path.name, path.read_bytes())
    _valid_volume(volume)


def _nothing_escaped() -> None:
    for folder in (Path(tempfile.gettempdir()), Path(tempfile.gettempdir()).parent, Path.cwd()):
        assert not list(folder.glob(f"*{TOKEN}*")), f"a zip entry was written to {folder}"


# ----------------------------------------------------------------------------- DICOM-SEG
SEG_FIELDS = [
    ("Rows", [0, 1, 3, 65535]), ("Columns", [0, 1, 5, 65535]),
    ("NumberOfFrames", [0, 1, 2, 1000, "0\\0", "abc"]), ("BitsAllocated", [0, 1, 8, 16, 3]),
    ("BitsStored", [0, 1, 8]), ("HighBit", [0, 7]), ("SamplesPerPixel", [0, 3]),
    ("SegmentationType", ["BINARY", "FRACTIONAL", "LABELMAP", "x"]),
    ("MaximumFractionalValue", [0, 255]), ("Modality", ["CT", ""]),
    ("SOPClassUID", ["1.2.840.10008.5.1.4.1.1.2", "1.2.3"]),
    ("PhotometricInterpretation", ["RGB", "MONOCHROME1"]),
    ("PixelData", [b"", b"\x00", b"\xff" * 3]),
]  # fmt: skip
SEG_SEQUENCE_EDITS = ["drop_segments", "empty_segments", "segment_number", "duplicate_segment",
                      "drop_per_frame", "drop_shared", "frame_position", "frame_segment",
                      "pixel_spacing", "orientation", "drop_frame_item", "thickness"]  # fmt: skip
BAD_NUMBERS = [0, -1, 99, 65535, "nan", "1e308", "abc", ""]
BAD_VECTORS = ["0\\0\\0\\0\\0\\0", "1\\0\\0\\1\\0\\0", "nan\\0\\0\\0\\1\\0", "1\\0", "abc",
               "0\\0", "1e308\\1e308", "-1\\-1", "0\\0\\0"]  # fmt: skip


@st.composite
def seg_mutations(draw) -> bytes:
    raw = SEEDS["dicom-seg"].read_bytes()
    kind = draw(st.sampled_from(["truncate", "flip", "field", "sequence", "sequence"]))
    if kind in ("truncate", "flip"):
        return _byte_damage(draw, raw, kind)
    ds = pydicom.dcmread(io.BytesIO(raw))
    try:
        if kind == "field":
            name, values = draw(st.sampled_from(SEG_FIELDS))
            setattr(ds, name, draw(st.sampled_from(values)))
        else:
            _edit_seg_sequence(draw, ds, draw(st.sampled_from(SEG_SEQUENCE_EDITS)))
    except (TypeError, ValueError, OverflowError, AttributeError, IndexError):
        assume(False)
    out = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds.save_as(out, enforce_file_format=True)
    except Exception:  # pydicom refuses to write this value: not an input we can test
        assume(False)
    return out.getvalue()


def _edit_seg_sequence(draw, ds: pydicom.Dataset, edit: str) -> None:
    frames = ds.PerFrameFunctionalGroupsSequence
    frame = frames[draw(st.integers(0, len(frames) - 1))]
    shared = ds.SharedFunctionalGroupsSequence[0]
    if edit == "drop_segments":
        del ds.SegmentSequence
    elif edit == "empty_segments":
        ds.SegmentSequence = []
    elif edit == "segment_number":
        ds.SegmentSequence[0].SegmentNumber = draw(st.sampled_from(BAD_NUMBERS))
    elif edit == "duplicate_segment":
        ds.SegmentSequence.append(copy.deepcopy(ds.SegmentSequence[0]))
    elif edit == "drop_per_frame":
        del ds.PerFrameFunctionalGroupsSequence
    elif edit == "drop_shared":
        del ds.SharedFunctionalGroupsSequence
    elif edit == "frame_position":
        position = frame.PlanePositionSequence[0]
        value = draw(
            st.sampled_from(["nan\\0\\0", "0\\0\\0", "1e308\\0\\0", "1\\2", "abc", "copy"])
        )
        if value == "copy":  # two frames at one position
            value = frames[0].PlanePositionSequence[0].ImagePositionPatient
        position.ImagePositionPatient = value
    elif edit == "frame_segment":
        frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber = draw(
            st.sampled_from(BAD_NUMBERS)
        )
    elif edit == "pixel_spacing":
        shared.PixelMeasuresSequence[0].PixelSpacing = draw(st.sampled_from(BAD_VECTORS))
    elif edit == "orientation":
        shared.PlaneOrientationSequence[0].ImageOrientationPatient = draw(
            st.sampled_from(BAD_VECTORS)
        )
    elif edit == "drop_frame_item":
        del frames[draw(st.integers(0, len(frames) - 1))]
    else:
        shared.PixelMeasuresSequence[0].SliceThickness = draw(st.sampled_from(BAD_NUMBERS))


def _read_seg(path: Path) -> None:
    volume, segments = read_dicom_seg(path)
    _valid_volume(volume)
    assert isinstance(segments, list)


# ----------------------------------------------------------------------------- configs
CONFIG_KEYS = ["name", "seed", "device", "output", "data.dataset", "data.crop_size",
               "data.context", "data.samples_per_epoch", "data.val_cases", "data.num_workers",
               "data.preprocessing", "data.preprocessing.modality",
               "data.preprocessing.slice_axis", "data.augmentation", "data.augmentation.backend",
               "model", "model.name", "model.options", "model.options.depth", "loss",
               "loss.class_weights", "optim.name", "optim.lr", "schedule.name",
               "schedule.warmup_epochs", "train", "train.epochs", "train.batch_size",
               "train.amp", "train.early_stopping_patience", "train.init_from", "unknown",
               "data.unknown", "train.epoch"]  # fmt: skip
HOSTILE_YAML_VALUES = ["-1", "0", "1e400", ".nan", ".inf", "abc", "[]", "{}", "null", "true",
                       "[0, 0]", "[1, 2, 3]", "{a: 1}", "!!python/object/apply:os.system [x]",
                       "!!binary aGVsbG8=", "2001-12-14", "&a [*a]", "'\\x00'", "~",
                       "99999999999999999999999999", "'../../etc'", "[*undefined]",
                       '"\\ud800"', "!!set {a, b}", "0x10", "1_000"]  # fmt: skip


@st.composite
def config_mutations(draw) -> bytes:
    raw = SEEDS["train-config"].read_bytes()
    kind = draw(st.sampled_from(["truncate", "flip", "key", "key", "key"]))
    if kind in ("truncate", "flip"):
        return _byte_damage(draw, raw, kind)
    import yaml

    section = yaml.safe_load(raw)
    values = []
    for number in range(draw(st.integers(1, 3))):
        parts = draw(st.sampled_from(CONFIG_KEYS)).split(".")
        node = section
        for part in parts[:-1]:
            child = node.get(part)
            node[part] = child = child if isinstance(child, dict) else {}
            node = child
        node[parts[-1]] = f"__VALUE{number}__"
        values.append(draw(st.sampled_from(HOSTILE_YAML_VALUES)))
    text = yaml.safe_dump(section, sort_keys=False)
    for number, value in enumerate(values):
        text = text.replace(f"'__VALUE{number}__'", value).replace(f"__VALUE{number}__", value)
    return text.encode()


def _load_config(path: Path) -> None:
    assert isinstance(load_config(path), TrainConfig)


# ----------------------------------------------------------------------------- contract
def _valid_volume(volume: Volume) -> None:
    assert isinstance(volume, Volume)
    assert volume.array.ndim == 3
    assert min(volume.shape) > 0
    assert np.all(np.isfinite(volume.affine))
    assert abs(np.linalg.det(volume.affine[:3, :3])) > 0


FORMATS: dict[str, tuple[Any, Callable[[Path], None], str]] = {
    "checkpoint": (checkpoint_mutations, _load_checkpoint, "mutant.pt"),
    "zip": (zip_mutations, _read_zip, "mutant.zip"),
    "dicom-seg": (seg_mutations, _read_seg, "mutant_seg.dcm"),
    "train-config": (config_mutations, _load_config, "mutant.yaml"),
}


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: kB


def check_contract(fmt: str, blob: bytes) -> None:
    _, reader, name = FORMATS[fmt]
    with tempfile.TemporaryDirectory(prefix="medseg_fuzz_") as folder:
        path = Path(folder) / name
        path.write_bytes(blob)
        # tracemalloc sees NumPy and Python; torch's allocator is only seen by the peak RSS
        bound = 4 * (1100 * max(len(blob), 1) + 64 * 2**20)
        rss_before = _max_rss_bytes()
        tracemalloc.start()
        start = time.perf_counter()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reader(path)
            outcome, message = "ok", ""
        except MedsegError as err:
            outcome, message = "error", str(err)
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        elapsed = time.perf_counter() - start
        rss_growth = _max_rss_bytes() - rss_before
    if outcome == "error":
        assert name in message, f"message does not name the file: {message}"
    assert not MARKER.exists(), "loading a checkpoint executed code"
    if fmt == "zip":
        _nothing_escaped()
    assert elapsed < TIME_LIMIT_S, f"{elapsed:.1f} s for one {fmt} input"
    assert peak < bound, f"allocated {peak:,} bytes for a {len(blob):,}-byte {fmt} file"
    assert rss_growth < bound, f"peak memory grew {rss_growth:,} bytes for a {fmt} input"
    COUNTS.setdefault(fmt, {"ok": 0, "error": 0})[outcome] += 1


def _fuzz_test(fmt: str, examples: int):
    strategy = FORMATS[fmt][0]

    @settings(max_examples=examples, deadline=None, database=None, derandomize=examples < 100,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(blob=strategy())
    def run(blob: bytes) -> None:
        check_contract(fmt, blob)

    return run


CASES = [pytest.param(f, "quick", id=f"{f}-quick") for f in FORMATS] + [
    pytest.param(f, "long", id=f"{f}-long", marks=pytest.mark.fuzz) for f in FORMATS
]


@pytest.mark.parametrize(("fmt", "profile"), CASES)
def test_format_contract_under_mutation(fmt: str, profile: str) -> None:
    _fuzz_test(fmt, PROFILES[profile])()
    assert sum(COUNTS[fmt].values()) > 0


def test_format_seeds_are_valid() -> None:
    for fmt, (_, reader, _) in FORMATS.items():
        reader(SEEDS[fmt])


def test_a_pickle_that_runs_code_is_refused_without_running_it(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps(_Run(eval, f"open({str(MARKER)!r}, 'w').close()"), 2))
    with pytest.raises(MedsegError, match=r"evil\.pt"):
        Predictor.load(path, device="cpu")
    assert not MARKER.exists()
