"""Bounded readouts (issue 22 item 12): the N largest lesions per class are listed, the rest
summarised; components are found slab by slab, never with a whole-volume component map."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy import ndimage

from medseg.inference import components as components_module
from medseg.inference import compute_readouts, find_lesions
from medseg.inference.components import ComponentSweep
from medseg.io.volume import Volume
from medseg.metrics import CONNECTIVITY_26
from medseg.viewer.core import services
from tests.peak_memory import peak_extra

NAMES = ["background", "tumour", "oedema"]


def _five_lesions() -> np.ndarray:
    label = np.zeros((30, 30, 12), np.uint8)
    label[1:6, 1:6, 1:6] = 1  # 125 voxels
    label[10:14, 10:14, 1:5] = 1  # 64
    label[20:23, 20:23, 1:4] = 1  # 27
    label[1, 25, 8] = 1  # 1
    label[25, 1, 8] = 1  # 1
    label[15:17, 2:4, 8:10] = 2  # 8
    return label


def test_only_the_largest_lesions_are_listed_and_the_rest_summarised():
    vol = Volume(_five_lesions(), np.diag([1.0, 1.0, 2.0, 1.0]))
    full = compute_readouts(vol, NAMES, max_lesions=None)
    read = compute_readouts(vol, NAMES, max_lesions=2)
    tumour = read["classes"]["tumour"]
    assert read["max_lesions_per_class"] == 2
    assert tumour["lesions"] == 5  # every lesion is counted
    assert tumour["lesions_listed"] == 2
    listed = [les for les in read["lesions"] if les["class_name"] == "tumour"]
    assert [les["voxels"] for les in listed] == [125, 64]
    assert listed == [les for les in full["lesions"] if les["class_name"] == "tumour"][:2]
    assert tumour["unlisted"] == {
        "lesions": 3,
        "volume_ml": pytest.approx((27 + 1 + 1) * 0.002),
        "size_histogram": [
            {"voxels_from": 1, "voxels_to": 9, "lesions": 2, "volume_ml": 0.004},
            {"voxels_from": 10, "voxels_to": 99, "lesions": 1, "volume_ml": 0.054},
        ],
    }
    assert tumour["volume_ml"] == full["classes"]["tumour"]["volume_ml"]
    oedema = read["classes"]["oedema"]
    assert oedema["lesions"] == oedema["lesions_listed"] == 1
    assert oedema["unlisted"] == {"lesions": 0, "volume_ml": 0.0, "size_histogram": []}
    # the default bound lists all of an ordinary mask
    assert compute_readouts(vol, NAMES)["lesions"] == full["lesions"]
    # the viewer's class table says how many of them its lesion table lists
    rows = {r["class"]: r for r in services.class_rows(read)}
    assert (rows["tumour"]["lesions"], rows["tumour"]["listed"]) == (5, 2)
    assert len(services.lesion_rows(read)) == 3


@pytest.mark.parametrize("seed", range(6))
def test_slab_by_slab_components_equal_whole_volume_labelling(seed, monkeypatch):
    """Tiny slabs (one to a few planes) against ndimage.label over the whole volume: sizes,
    boxes, first voxels and the raster order of ties all agree."""
    rng = np.random.default_rng(seed)
    shape = tuple(int(s) for s in rng.integers(6, 20, 3))
    label = (rng.random(shape) < rng.uniform(0.05, 0.4)).astype(np.uint8)
    monkeypatch.setattr(components_module, "COMPONENT_CHUNK", int(rng.integers(1, 200)))
    axis = seed % 3
    found = []
    sweep = ComponentSweep(label, (1,), axis=axis)
    sweep.run(found.append)
    got = components_module.ComponentStats.concat(found)
    whole, n = ndimage.label(label, structure=CONNECTIVITY_26)
    assert len(got) == n
    order = np.argsort(got.first)  # whole-volume labels are numbered by first voxel
    np.testing.assert_array_equal(got.voxels[order], np.bincount(whole.ravel())[1:])
    boxes = ndimage.find_objects(whole)
    np.testing.assert_array_equal(got.lo[order], [[s.start for s in b] for b in boxes])
    np.testing.assert_array_equal(got.hi[order], [[s.stop - 1 for s in b] for b in boxes])
    centroids = ndimage.center_of_mass(label, whole, range(1, n + 1))
    np.testing.assert_allclose(got.sums[order] / got.voxels[order, None], centroids)
    # the second pass names every voxel's component consistently with the first
    for slab, local, roots in sweep.relabel():
        part = np.moveaxis(whole[slab], axis, 0)
        ours = roots[local[local > 0]]
        pairs = {(int(a), int(b)) for a, b in zip(part[local > 0], ours, strict=True)}
        # one root per whole-volume label and one whole-volume label per root
        assert len({a for a, _ in pairs}) == len({b for _, b in pairs}) == len(pairs)


def test_find_lesions_bounded_is_a_prefix_of_the_full_list():
    label = _five_lesions()
    affine = np.diag([0.7, 0.9, 2.5, 1.0])
    full = find_lesions(label, affine, NAMES)
    assert find_lesions(label, affine, NAMES, max_lesions=3) == [*full[:3], full[-1]]


CHILD_SETUP = """
import json, sys
import numpy as np
from medseg.inference.postprocess import Structure, remove_components
from medseg.inference.readouts import compute_readouts
from medseg.io.volume import Volume

shape = (512, 512, 100)
rng = np.random.default_rng(0)
mask = np.empty(shape, np.uint8)
for i in range(shape[0]):  # plane by plane: no full-size float temporary before the baseline
    mask[i] = rng.random(shape[1:]) < 0.15
"""

CHILD_MEASURED = """
if sys.argv[1] == "readouts":
    volume = Volume(mask, np.diag([0.8, 0.8, 2.0, 1.0]))
    readouts = compute_readouts(volume, ["background", "lesion"])
    lesion = readouts["classes"]["lesion"]
    found = {"components": lesion["lesions"], "listed": len(readouts["lesions"]),
             "json": len(json.dumps(readouts))}
else:  # in place, as postprocess_labels does on its copy
    _, removed, _ = remove_components(mask, Structure(name="lesion", values=(1,)), 0.0013,
                                      min_ml=0.01)
    found = {"components": removed, "left": int(mask.sum())}
found["mask"] = mask.nbytes
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("mode", ["readouts", "postprocess"])
def test_components_of_a_noise_mask_stay_within_1_5x_the_mask(mode):
    """A 512 x 512 x 100 noise mask (~90,000 components): the peak extra RSS of the readouts
    and of small-component removal, in a fresh process, stays under 1.5x the mask's bytes
    (whole-volume labelling took 11x and 14x, and the readouts listed every component: a
    30 MB JSON)."""
    res = peak_extra(CHILD_SETUP, CHILD_MEASURED, mode)
    assert res["extra"] <= 1.5 * res["mask"], f"{res['extra'] / res['mask']:.2f}x the mask"
    assert res["components"] > 50_000
    if mode == "readouts":
        assert res["listed"] == 100
        assert res["json"] < 100_000
    else:
        assert 0 < res["left"] < 0.15 * res["mask"]  # the one big component stays
