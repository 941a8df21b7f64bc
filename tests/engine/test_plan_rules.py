"""Each planning rule: synthetic fingerprint figures in, the expected choice out."""

from __future__ import annotations

import pytest

from medseg.engine import plan_rules as rules
from medseg.engine.planner import parse_duration, quantise
from medseg.errors import ConfigError


@pytest.mark.parametrize(
    ("spacing", "axis"),
    [
        ((1.0, 1.0, 1.0), 2),  # isotropic: axial
        ((0.8, 0.8, 5.0), 2),  # thick axial slices: slice across S-I
        ((5.0, 0.9, 0.9), 0),  # sagittal acquisition: slice across R-L
        ((0.7, 4.0, 0.7), 1),  # coronal acquisition
        ((1.0, 1.0, 1.8), 2),  # below the threshold: near-isotropic rule, still axial
    ],
)
def test_slice_axis_is_the_low_resolution_axis_when_anisotropic(spacing, axis):
    chosen, reason = rules.slice_axis(spacing)
    assert chosen == axis
    assert ("anisotropic" in reason) == (max(spacing) / min(spacing) >= rules.ANISOTROPY_THRESHOLD)


def test_target_spacing_keeps_the_median_spacing_when_slices_fit():
    spacing, reason = rules.target_spacing((1.0, 1.0, 1.0), (35.0, 50.0, 35.0), 2, "cpu", 10.0)
    assert spacing == (1.0, 1.0)
    assert "coarsened" not in reason


def test_target_spacing_coarsens_a_large_field_of_view_on_cpu_only():
    # a brain 192 mm across at 1 mm: does not fit the CPU's 128 px, fits a GPU's 512
    cpu, why = rules.target_spacing((1.0, 1.0, 1.0), (150, 192, 140), 2, "cpu", 60.0)
    gpu, _ = rules.target_spacing((1.0, 1.0, 1.0), (150, 192, 140), 2, "cuda", 60.0)
    assert cpu == (1.5, 1.5)
    assert "coarsened" in why
    assert gpu == (1.0, 1.0)


def test_target_spacing_never_makes_small_structures_too_small():
    # 12 mm structures must keep >= 12 pixels: no coarsening past 1 mm
    spacing, _ = rules.target_spacing((1.0, 1.0, 1.0), (200, 200, 155), 2, "cpu", 12.0)
    assert spacing == (1.0, 1.0)


def test_target_spacing_uses_the_two_inplane_axes_of_the_slice_axis():
    spacing, _ = rules.target_spacing((5.0, 0.5, 0.7), (100, 50, 70), 0, "cpu", None)
    assert spacing == (0.5, 0.7)


def test_crop_is_the_whole_body_when_small():
    crop, reason = rules.crop_size((35, 51), (35, 51), None, "cpu")
    assert crop == (48, 64)
    assert "whole body" in reason
    # a brain (125 x 115 px at 1.5 mm) in a 160 px field of view: the brain, not the field
    assert rules.crop_size((125, 115), (160, 160), None, "cpu")[0] == (128, 128)


def test_crop_covers_twice_the_object_when_the_body_is_large():
    crop, _ = rules.crop_size((400, 300), (512, 512), (40.0, 70.0), "cpu")
    assert crop == (80, 128)  # 2 x 70 = 140 px, capped at the CPU size
    crop_small_object, _ = rules.crop_size((400, 300), (512, 512), (10.0, 10.0), "cpu")
    assert crop_small_object == (64, 64)  # at least 64 px of context
    crop_huge_object, _ = rules.crop_size((400, 300), (512, 512), (400.0, 400.0), "cpu")
    assert crop_huge_object == (128, 128)  # capped at the device's size
    gpu, _ = rules.crop_size((400, 300), (512, 512), None, "cuda")
    assert gpu == (400, 304)  # a GPU trains the whole body


@pytest.mark.parametrize(
    ("crop", "device", "depth", "base"),
    [
        ((48, 64), "cpu", 3, 16),
        ((128, 128), "cpu", 4, 16),
        ((256, 256), "cuda", 5, 32),
        ((16, 16), "cpu", 2, 16),
    ],
)
def test_network_depth_keeps_a_bottleneck_of_at_least_4_pixels(crop, device, depth, base):
    options, _ = rules.network(crop, device)
    assert options["depth"] == depth
    assert options["base_channels"] == base
    assert min(crop) >> options["depth"] >= 4


def test_batch_fills_the_pixel_budget_and_respects_the_dataset_cap():
    assert rules.batch_size((128, 128), "cpu", 10_000)[0] == 16
    assert rules.batch_size((48, 64), "cpu", 10_000)[0] == 64
    assert rules.batch_size((48, 64), "cpu", 200)[0] == 8  # 5 % of 200 slices
    assert rules.batch_size((1024, 1024), "cpu", 10_000)[0] == 4  # never below 4


def test_normalisation_by_modality():
    ct = {"name": "CT", "modality": "ct", "modality_reason": "named CT"}
    mr = {"name": "T1", "modality": "mr", "modality_reason": "declared"}
    assert rules.normalisation([ct])[0] == "ct"
    assert rules.normalisation([mr])[0] == "mr"
    kind, why = rules.normalisation([ct, mr])
    assert kind == "mr"
    assert "mixed" in why


def test_context_is_2d_for_very_few_slices():
    assert rules.context(3, 1.0)[0] == 0
    assert rules.context(35, 1.0)[0] == 1


@pytest.mark.parametrize(
    ("cases", "budget", "expected"),
    [
        (1, None, 0),
        (4, None, 4),
        (208, None, 5),
        (208, 10 * 60.0, 5),
        (208, 4 * 60.0, 4),
        (208, 60.0, 2),
    ],
)
def test_folds_fit_the_cases_and_the_budget(cases, budget, expected):
    assert rules.folds(cases, budget, min_fold_s=60.0)[0] == expected


def test_schedule_fills_the_training_time():
    sched, _ = rules.schedule(300.0, 0.1, 64, 6000, 2.0)
    steps = sched["epochs"] * sched["samples_per_epoch"] / 64
    assert 0.8 * 3000 <= steps <= 3000  # fills the 300 s at 0.1 s/step, validation taken out
    assert sched["samples_per_epoch"] <= 6000  # at most one pass per epoch


def test_schedule_gives_enough_epochs_for_model_selection():
    sched, _ = rules.schedule(60.0, 0.1, 16, 100_000, 0.5)
    assert sched["epochs"] >= 8


def test_rare_classes_are_named():
    classes = [
        {"name": "tumour", "cases_present": 20},
        {"name": "metastasis", "cases_present": 3},
    ]
    assert rules.rare_classes(classes, 20) == ["metastasis (in 3 of 20 cases)"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800.0), ("1h30m", 5400.0), ("90s", 90.0), ("10", 600.0), ("2h", 7200.0)],
)
def test_time_budget_parsing(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "30x", "-5m", "m"])
def test_time_budget_parsing_refuses_nonsense(text):
    with pytest.raises(ConfigError, match="time-budget"):
        parse_duration(text)


def test_step_times_are_quantised_so_noise_does_not_change_a_plan():
    assert quantise(0.100) == quantise(0.103)
    assert quantise(0.1) != quantise(0.2)
