"""Keep the default test run fast: the ResNet/MobileNet models (tens of millions of weights,
slow to build on a CPU) run the full contract in the ``slow`` tier and only the main
(2 planes, 4 classes) configuration by default."""

from __future__ import annotations

import pytest

HEAVY_MODELS = {
    "deeplabv3_resnet50",
    "deeplabv3_resnet101",
    "deeplabv3_mobilenet_v3_large",
    "deeplabv3plus_resnet50",
    "fcn_resnet50",
}
HEAVY_ONLY_IN_SLOW = {"test_model_info_is_complete"}


@pytest.hookimpl(tryfirst=True)  # before pytest's own -m deselection
def pytest_collection_modifyitems(config, items):
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if params.get("name") not in HEAVY_MODELS:
            continue
        extra_config = "in_channels" in params and (
            params["in_channels"],
            params["num_classes"],
        ) != (2, 4)
        if extra_config or item.originalname in HEAVY_ONLY_IN_SLOW:
            item.add_marker(pytest.mark.slow)
