"""Inference at scale: memory-mapped sources, slab-by-slab prediction, compact readouts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from medseg.data import slabs
from medseg.inference import Predictor
from medseg.inference import readouts as readouts_module
from medseg.inference.readouts import class_box, find_lesions, label_counts
from medseg.inference.slices import batch_slices, first_argmax
from medseg.io import Volume, read_volume, write_volume
from medseg.io.volume import release_mapped_pages
from medseg.metrics import CONNECTIVITY_26
from tests.inference.infer_factory import blob_volume

REPO = Path(__file__).resolve().parents[2]


def _write(volume: Volume, path: Path) -> Volume:
    write_volume(volume, path)
    return read_volume(path)


def test_uncompressed_nifti_is_a_read_only_memory_map(tmp_path):
    vol = _write(blob_volume(shape=(20, 18, 6)), tmp_path / "scan.nii")
    assert isinstance(vol.array, np.memmap)
    assert vol.array.mode == "r"
    with pytest.raises(ValueError, match="read-only"):
        vol.array[0, 0, 0] = 1.0
    gz = _write(blob_volume(shape=(20, 18, 6)), tmp_path / "scan.nii.gz")
    assert not isinstance(gz.array, np.memmap)  # gzip has no random access: read whole
    assert not release_mapped_pages(gz.array)


def test_released_pages_leave_the_process(tmp_path):
    psutil = pytest.importorskip("psutil")
    data = np.arange(64 * 64 * 512, dtype=np.float32).reshape(64, 64, 512)  # 8 MiB
    vol = _write(Volume(data, np.eye(4)), tmp_path / "big.nii")
    process = psutil.Process()
    before = process.memory_info().rss
    assert float(np.sum(vol.array, dtype=np.float64)) == float(np.sum(data, dtype=np.float64))
    touched = process.memory_info().rss
    assert touched - before > 6 * 2**20  # every page of the map is now resident
    assert release_mapped_pages(vol.array[:, :, 3:9])  # a view releases its whole map
    assert touched - process.memory_info().rss > 6 * 2**20
    np.testing.assert_array_equal(vol.array, data)  # and reads back from the file


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_predict_from_file_equals_in_memory(tiny_checkpoint, tmp_path, suffix, monkeypatch):
    source = blob_volume(shape=(45, 38, 9))
    vol = _write(source, tmp_path / f"scan{suffix}")
    in_memory = Volume(np.array(vol.array), vol.affine, dict(vol.metadata))
    predictor = Predictor.load(tiny_checkpoint, device="cpu", batch_size=4)
    released = []
    monkeypatch.setattr(
        slabs, "release_mapped_pages", lambda a: released.append(release_mapped_pages(a))
    )
    mapped = predictor.predict(vol)
    # slab by slab, the pages of the memory map are given back (a .nii.gz has none)
    assert (sum(released) > 3) == (suffix == ".nii")
    reference = predictor.predict(in_memory)
    assert mapped.label.array.flags.c_contiguous
    np.testing.assert_array_equal(mapped.label.array, reference.label.array)
    assert mapped.readouts == reference.readouts
    probs = predictor.predict(vol, return_probabilities=True)
    np.testing.assert_array_equal(probs.label.array, mapped.label.array)
    np.testing.assert_array_equal(np.asarray(vol.array), np.asarray(source.array))


def test_batches_are_capped_by_pixels(tiny_checkpoint):
    assert batch_slices(16, (512, 512, 600), 2, 1 << 19) == 2
    assert batch_slices(16, (240, 240, 155), 2, 1 << 19) == 9
    assert batch_slices(16, (64, 64, 30), 2, 1 << 19) == 16
    assert batch_slices(16, (512, 512, 600), 0, None) == 16
    assert batch_slices(16, (512, 512, 600), 0, 100) == 1  # never fewer than one slice
    vol = blob_volume(shape=(45, 38, 9))
    capped = Predictor.load(tiny_checkpoint, device="cpu", max_batch_pixels=2 * 45 * 38)
    plain = Predictor.load(tiny_checkpoint, device="cpu", max_batch_pixels=None)
    assert Predictor.load(tiny_checkpoint, device="cpu").max_batch_pixels == 1 << 19
    seen = []
    capped.predict(vol, progress=lambda n, total: seen.append(total))
    assert seen[-1] == 5  # 9 axial slices, 2 per batch
    np.testing.assert_array_equal(capped.predict(vol).label.array, plain.predict(vol).label.array)


@pytest.mark.parametrize("classes", [2, 3, 9])
def test_first_argmax_equals_torch_argmax_with_ties(classes):
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(classes)
    scores = torch.randint(0, 3, (3, classes, 7, 5), generator=gen).float()  # many ties
    assert torch.equal(first_argmax(scores), scores.argmax(1))


def test_label_counts_in_chunks(monkeypatch):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 5, size=(9, 7, 5)).astype(np.uint8)
    expected = np.bincount(label.ravel(), minlength=8)
    monkeypatch.setattr(readouts_module, "COUNT_CHUNK", 17)  # many chunks, a ragged last one
    np.testing.assert_array_equal(label_counts(label, minlength=8), expected)
    signed = label.astype(np.int16) - 1  # negatives count as background
    np.testing.assert_array_equal(label_counts(signed)[1:], np.bincount(label.ravel())[2:])
    assert label_counts(signed)[0] == np.count_nonzero(label <= 1)


def test_lesions_from_class_boxes_equal_whole_volume_components():
    label = np.zeros((40, 30, 20), np.uint8)
    label[5:9, 4:8, 2:5] = 1
    label[30:35, 20:29, 10:19] = 1
    label[20, 15, 10] = 2
    label[0, 0, 0] = 1  # a corner voxel, its own lesion
    assert class_box(label, 2) == (slice(20, 21), slice(15, 16), slice(10, 11))
    assert class_box(label, 1, chunk=3) == (slice(0, 35), slice(0, 29), slice(0, 19))
    assert class_box(label, 3) is None
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    lesions = find_lesions(label, affine, ["bg", "a", "b"])
    components, _ = ndimage.label(label == 1, structure=CONNECTIVITY_26)
    sizes = sorted(np.bincount(components.ravel())[1:].tolist(), reverse=True)
    assert [les.voxels for les in lesions if les.label == 1] == sizes
    assert lesions[0].bbox_voxel == [[30, 20, 10], [34, 28, 18]]
    assert [les.label for les in lesions].count(2) == 1


@pytest.mark.slow
def test_memory_benchmark_mode_runs(tmp_path):
    """The benchmark's peak-RSS mode on a tiny CT (the real figure is in docs/performance.md)."""
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_infer.py"), "--only", "memory",
         "--big-shape", "64", "48", "40", "--depth", "1"],
        capture_output=True, text=True, check=True, timeout=300, cwd=tmp_path,
    ).stdout  # fmt: skip
    assert "ratio" in out
    assert "mapped=True" in out
