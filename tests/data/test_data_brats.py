"""The real BraTS cases (../shared/data/brats2015) as a 2-channel FLAIR + T1c dataset with a
whole-tumour label: validated, cached, sampled with foreground oversampling, augmented."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from medseg.data.augmentation import BatchAugmenter
from medseg.data.config import AugmentationConfig, DataConfig
from medseg.data.datasets import load_dataset
from medseg.data.pipeline import build_train_loader, prepare_data
from medseg.data.preprocessing import restore_labels
from medseg.data.validation import validate_dataset
from medseg.io import read_volume

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def manifest(shared_data, tmp_path_factory) -> Path:
    root = shared_data / "brats2015"
    cases = [
        {"id": p, "images": [f"{p}/flair.nii.gz", f"{p}/t1c.nii.gz"], "label": f"{p}/seg.nii.gz"}
        for p in ("pat0001", "pat0002", "pat0003", "pat0004")
    ]
    text = {
        "name": "brats",
        "modality": "mr",
        "channel_names": ["flair", "t1c"],
        "root": str(root),
        "labels": {0: "background", 1: "necrosis", 2: "oedema", 3: "non-enhancing", 4: "enhancing"},
        "cases": cases,
    }
    path = tmp_path_factory.mktemp("brats") / "brats.yaml"
    path.write_text(yaml.safe_dump(text))
    return path


@pytest.fixture(scope="module")
def bundle(manifest, tmp_path_factory):
    cfg = DataConfig.model_validate(
        {
            "dataset": str(manifest),
            "cache_dir": str(tmp_path_factory.mktemp("cache")),
            "preprocessing": {"label_map": {1: 1, 2: 1, 3: 1, 4: 1}},
            "context": 1,
            "crop_size": (160, 160),
            "foreground_ratio": 0.5,
            "samples_per_epoch": 200,
            "val_fraction": 0.25,
        }
    )
    data = prepare_data(cfg, progress=False)
    train, _, _ = build_train_loader(data, cfg, batch_size=4, num_workers=0, seed=0)
    return SimpleNamespace(
        params=data.params, train_ids=data.train_ids, val_ids=data.val_ids, train=train
    )


def test_brats_manifest_validates(manifest, shared_data):
    spec = load_dataset(manifest)
    assert spec.channel_names == ["flair", "t1c"]
    assert len(spec.cases) == 4
    assert validate_dataset(spec) == []
    # the documented example manifest points at the same files (relative root)
    example = load_dataset(REPO / "docs" / "examples" / "brats_manifest.yaml")
    assert [c.case_id for c in example.cases] == [c.case_id for c in spec.cases]
    for ce, cs in zip(example.cases, spec.cases, strict=True):
        assert [p.resolve() for p in ce.images] == [p.resolve() for p in cs.images]
        assert ce.label.resolve() == cs.label.resolve()


@pytest.mark.slow  # decodes and caches 4 full BraTS cases (~10-15 s on 2 cores)
def test_brats_cached_two_channel_whole_tumour(bundle, shared_data):
    assert bundle.params.channel_names == ["flair", "t1c"]
    assert bundle.params.class_names == ["background", "foreground"]
    assert len(bundle.train_ids) == 3
    assert len(bundle.val_ids) == 1
    assert set(bundle.train_ids).isdisjoint(bundle.val_ids)
    case = bundle.train.cases[0]
    assert case.image.shape == (2, 240, 240, 155)
    assert isinstance(case.image, np.memmap)
    assert set(np.unique(case.label)) == {0, 1}
    # stored LPS, cached in RAS; restoring gives the source mask (labels 1-4 -> 1) exactly
    source = read_volume(shared_data / "brats2015" / case.case_id / "seg.nii.gz")
    assert "".join(source.orientation) == "LPS"
    np.testing.assert_array_equal(
        restore_labels(np.asarray(case.label), case.grid), source.array > 0
    )


@pytest.mark.slow
def test_brats_foreground_oversampling_and_augmentation(bundle):
    ds = bundle.train
    items = [ds[i] for i in range(len(ds))]
    assert items[0]["image"].shape == (6, 160, 160)  # 2 channels x (2k+1) planes
    drawn = np.mean([it["foreground"] for it in items])
    with_tumour = np.mean([bool((it["label"] > 0).any()) for it in items])
    fg = sum(len(c.foreground[2]) for c in ds.cases) / sum(c.label.shape[2] for c in ds.cases)
    print(
        f"BraTS: tumour in {fg:.0%} of axial slices; oversampling drew {drawn:.0%} foreground "
        f"slices; {with_tumour:.0%} of crops contain tumour"
    )
    assert abs(drawn - 0.5) < 0.1
    assert with_tumour > fg  # oversampling raised the share above the natural rate
    # the CPU augmentation ran in the dataset: labels stay {0, 1}, shapes unchanged
    assert ds.transform is not None
    assert all(set(it["label"].unique().tolist()) <= {0, 1} for it in items)
    image = torch.stack([it["image"] for it in items[:16]])
    label = torch.stack([it["label"] for it in items[:16]])
    aug_image, aug_label = BatchAugmenter(AugmentationConfig(), seed=0)(image, label)
    assert aug_image.shape == image.shape
    assert set(aug_label.unique().tolist()) <= {0, 1}
    # the FLAIR signal is brighter inside the whole tumour than outside, before and after
    for img, lab in ((image, label), (aug_image, aug_label)):
        flair = img[:, 1]  # channel 0, centre plane of k=1
        assert flair[lab == 1].mean() > flair[(lab == 0) & (flair != 0)].mean() + 0.5
