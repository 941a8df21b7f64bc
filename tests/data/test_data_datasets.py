"""Dataset layouts (nnU-Net, MSD, YAML/CSV manifests, plain folders), validation, splits, config."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from medseg.cli.main import main
from medseg.data.config import load_data_config, parse_data_config
from medseg.data.datasets import load_dataset
from medseg.data.preprocessing import PreprocessingParams
from medseg.data.splits import split_cases, split_from_spec
from medseg.data.validation import validate_dataset
from medseg.errors import ConfigError, DatasetError, InputNotFoundError
from tests.data.data_factory import RAS, blob_case, nnunet_dataset, save


def test_nnunet_layout(tmp_path):
    spec = load_dataset(nnunet_dataset(tmp_path / "ds", n_cases=3))
    assert spec.channel_names == ["flair", "t1c"]
    assert spec.labels == {0: "background", 1: "oedema", 2: "core"}
    assert [c.case_id for c in spec.cases] == ["case000", "case001", "case002"]
    assert [p.name for p in spec.cases[1].images] == ["case001_0000.nii.gz", "case001_0001.nii.gz"]
    assert spec.cases[1].label.name == "case001.nii.gz"
    assert validate_dataset(spec) == []


def test_msd_layout_with_4d_images(tmp_path):
    import nibabel as nib

    root = tmp_path / "Task01"
    images, label = blob_case()
    save(np.stack(images, -1), RAS, root / "imagesTr" / "brain_001.nii.gz")
    save(label, RAS, root / "labelsTr" / "brain_001.nii.gz")
    meta = {
        "name": "msd",
        "modality": {"0": "FLAIR", "1": "T1c"},
        "labels": {"0": "background", "1": "oedema", "2": "core"},
        "training": [
            {"image": "./imagesTr/brain_001.nii.gz", "label": "./labelsTr/brain_001.nii.gz"}
        ],
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    spec = load_dataset(root)
    case = spec.cases[0]
    assert case.channel_indices == [0, 1]
    assert spec.channel_names == ["FLAIR", "T1c"]
    assert nib.load(case.images[0]).ndim == 4
    assert validate_dataset(spec) == []


def test_yaml_manifest_cases_and_pattern(tmp_path):
    for i in range(3):
        images, label = blob_case(seed=i)
        save(images[0], RAS, tmp_path / "data" / f"p{i}" / "flair.nii.gz")
        save(images[1], RAS, tmp_path / "data" / f"p{i}" / "t1c.nii.gz")
        save(label, RAS, tmp_path / "data" / f"p{i}" / "seg.nii.gz")
    listed = {
        "name": "listed",
        "channel_names": ["flair", "t1c"],
        "labels": {0: "bg", 1: "oedema", 2: "core"},
        "root": "data",
        "cases": [
            {
                "id": f"p{i}",
                "images": [f"p{i}/flair.nii.gz", f"p{i}/t1c.nii.gz"],
                "label": f"p{i}/seg.nii.gz",
                "split": "val" if i == 2 else "train",
            }
            for i in range(3)
        ],
    }
    (tmp_path / "listed.yaml").write_text(yaml.safe_dump(listed))
    spec = load_dataset(tmp_path / "listed.yaml")
    assert [c.split for c in spec.cases] == ["train", "train", "val"]
    assert spec.cases[0].images[1] == tmp_path / "data" / "p0" / "t1c.nii.gz"
    assert split_from_spec(spec.cases) == (["p0", "p1"], ["p2"])
    pattern = {
        "channel_names": ["flair", "t1c"],
        "root": str(tmp_path / "data"),
        "pattern": {
            "images": ["{case}/flair.nii.gz", "{case}/t1c.nii.gz"],
            "label": "{case}/seg.nii.gz",
        },
    }
    (tmp_path / "pattern.yml").write_text(yaml.safe_dump(pattern))
    spec2 = load_dataset(tmp_path / "pattern.yml")
    assert [c.case_id for c in spec2.cases] == ["p0", "p1", "p2"]
    assert spec2.cases[2].label == tmp_path / "data" / "p2" / "seg.nii.gz"
    # plain folder rule: per-case sub-folders, seg = label, other NIfTI files = channels
    spec3 = load_dataset(tmp_path / "data")
    assert spec3.channel_names == ["flair", "t1c"]
    assert len(spec3.cases) == 3
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"cases": [], "chanel_names": ["x"]}))
    with pytest.raises(DatasetError, match="chanel_names"):
        load_dataset(tmp_path / "bad.yaml")


def test_csv_manifest_and_plain_images_labels_folder(tmp_path):
    images, label = blob_case(channels=1)
    for i in range(2):
        save(images[0], RAS, tmp_path / "images" / f"c{i}.nii.gz")
        save(label, RAS, tmp_path / "labels" / f"c{i}.nii.gz")
    (tmp_path / "m.csv").write_text(
        "case_id,image_ct,label,split\nc0,images/c0.nii.gz,labels/c0.nii.gz,train\n"
        "c1,images/c1.nii.gz,labels/c1.nii.gz,val\n"
    )
    spec = load_dataset(tmp_path / "m.csv")
    assert spec.channel_names == ["ct"]
    assert spec.cases[1].split == "val"
    assert spec.cases[0].images == [tmp_path / "images" / "c0.nii.gz"]
    folder = load_dataset(tmp_path)
    assert [c.case_id for c in folder.cases] == ["c0", "c1"]
    assert folder.cases[1].label == tmp_path / "labels" / "c1.nii.gz"
    with pytest.raises(InputNotFoundError):
        load_dataset(tmp_path / "nope")


def _broken_dataset(tmp_path):
    root = nnunet_dataset(tmp_path / "broken", n_cases=6)
    (root / "labelsTr" / "case000.nii.gz").unlink()  # 1 missing label
    images, label = blob_case(shape=(40, 36, 9), seed=1)
    save(label, RAS, root / "labelsTr" / "case001.nii.gz")  # 2 label shape mismatch
    images, label = blob_case(seed=2)
    images[0][3, 3, 3] = np.nan
    save(images[0], RAS, root / "imagesTr" / "case002_0000.nii.gz")  # 3 NaN
    label[label == 2] = 7
    save(label, RAS, root / "labelsTr" / "case002.nii.gz")  # 4 unexpected value 7
    save(np.zeros_like(label), RAS, root / "labelsTr" / "case003.nii.gz")  # 5 empty label
    (root / "imagesTr" / "case004_0001.nii.gz").write_bytes(
        b"\x1f\x8bnot really gzip"
    )  # 6 unreadable
    images, label = blob_case(seed=5)
    shifted = RAS.copy()
    shifted[2, 3] = 9.0
    save(images[1], shifted, root / "imagesTr" / "case005_0001.nii.gz")  # 7 channel geometry
    return root


def test_validation_reports_every_problem_in_one_run(tmp_path):
    problems = validate_dataset(load_dataset(_broken_dataset(tmp_path)))
    found = {(p.case_id, p.kind) for p in problems}
    assert found == {
        ("case000", "missing-label"),
        ("case001", "geometry"),
        ("case002", "non-finite"),
        ("case002", "label-values"),
        ("case003", "empty-label"),
        ("case004", "unreadable"),
        ("case005", "geometry"),
    }
    by_kind = {p.kind: p for p in problems if p.case_id == "case002"}
    assert "[7]" in by_kind["label-values"].message
    assert "case002.nii.gz" in by_kind["label-values"].path


def test_validate_data_cli_exit_codes_and_table(tmp_path, capsys):
    root = _broken_dataset(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["validate-data", str(root)])
    assert exc.value.code == 1
    out = capsys.readouterr()
    for case in ("case000", "case001", "case002", "case003", "case004", "case005"):
        assert case in out.out
    assert "missing-label" in out.out
    assert "empty-label" in out.out
    assert "7 problem(s) in 6 case(s)" in out.err
    clean = nnunet_dataset(tmp_path / "clean", n_cases=2)
    main(["validate-data", str(clean)])  # exit 0: returns normally
    assert "dataset OK" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["validate-data", str(tmp_path / "missing")])
    assert exc.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_validate_data_uses_label_map_from_config(tmp_path, capsys):
    root = nnunet_dataset(tmp_path / "ds", n_cases=2)
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"] = {"background": 0, "tumour": 1}  # label 2 undeclared ...
    (root / "dataset.json").write_text(json.dumps(meta))
    with pytest.raises(SystemExit):
        main(["validate-data", str(root)])
    assert "unexpected label value(s) [2]" in capsys.readouterr().out
    cfg = tmp_path / "train.yaml"  # ... but merged by the training config's label_map
    cfg.write_text(
        yaml.safe_dump({"data": {"dataset": "x", "preprocessing": {"label_map": {1: 1, 2: 1}}}})
    )
    main(["validate-data", str(root), "--config", str(cfg)])
    assert "dataset OK" in capsys.readouterr().out


@pytest.mark.parametrize("n", [5, 11, 40])
def test_patient_level_split_and_kfold_are_disjoint_and_cover(n):
    ids = [f"pat{i:03d}" for i in range(n)]
    train, val = split_cases(ids, val_fraction=0.2, seed=3)
    assert set(train).isdisjoint(val)
    assert sorted(train + val) == ids
    assert len(val) == max(1, round(0.2 * n))
    assert split_cases(ids, 0.2, seed=3) == (train, val)  # deterministic
    assert split_cases(ids, 0.2, seed=4) != (train, val)
    folds = [split_cases(ids, fold=f, num_folds=5, seed=1) for f in range(5)]
    vals = [v for _, v in folds]
    assert sorted(c for v in vals for c in v) == ids  # every patient validated exactly once
    for tr, va in folds:
        assert set(tr).isdisjoint(va)
        assert sorted(tr + va) == ids


def test_split_groups_keep_a_patients_scans_together():
    ids = [f"p{i}_t{t}" for i in range(6) for t in range(3)]
    groups = {c: c.split("_")[0] for c in ids}
    for fold in range(3):
        train, val = split_cases(ids, fold=fold, num_folds=3, groups=groups)
        assert {groups[c] for c in train}.isdisjoint({groups[c] for c in val})
    with pytest.raises(ConfigError, match="fold 5"):
        split_cases(ids, fold=5, num_folds=5)


def test_data_config_rejects_misspelt_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'augmentation\.elastc'"):
        parse_data_config({"dataset": "x", "augmentation": {"elastc": {"prob": 1}}})
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "data": {
                    "dataset": "d",
                    "context": 2,
                    "crop_size": [64, 96],
                    "augmentation": {"backend": "batched"},
                }
            }
        )
    )
    cfg = load_data_config(path)
    assert cfg.context == 2
    assert cfg.crop_size == (64, 96)
    assert cfg.augmentation.backend == "batched"
    assert isinstance(cfg.preprocessing, PreprocessingParams)
    path.write_text(yaml.safe_dump({"dataset": "d", "foreground_ratio": 2}))
    with pytest.raises(SystemExit) as exc:  # config errors reach the CLI as exit 2
        main(["preview-data", str(tmp_path), "-o", str(tmp_path / "p.png"), "-c", str(path)])
    assert exc.value.code == 2


def test_case_ids_with_path_separators_are_refused(tmp_path):
    import nibabel as nib

    image = tmp_path / "img.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), image)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"case_id,image,label\nsite1/pat001,{image},{image}\n")
    with pytest.raises(DatasetError, match=r"site1/pat001.*path separators"):
        load_dataset(manifest)


def test_plain_case_folders_never_take_masks_as_channels(tmp_path):
    images, label = blob_case(channels=2)
    for case in ("p1", "p2"):
        save(images[0], RAS, tmp_path / case / "flair.nii.gz")
        save(images[1], RAS, tmp_path / case / "t1c.nii.gz")
        save((images[0] > 0).astype(np.uint8), RAS, tmp_path / case / "brainmask.nii.gz")
        save(label, RAS, tmp_path / case / f"{case}-segmentation.nii.gz")
    spec = load_dataset(tmp_path)
    assert spec.channel_names == ["flair", "t1c"]
    assert spec.cases[1].label == tmp_path / "p2" / "p2-segmentation.nii.gz"
    assert [p.name for p in spec.cases[0].images] == ["flair.nii.gz", "t1c.nii.gz"]


def test_nnunet_missing_channels_are_refused_and_all_listed(tmp_path):
    root = nnunet_dataset(tmp_path / "ds", n_cases=3)
    (root / "imagesTr" / "case000_0001.nii.gz").unlink()
    (root / "imagesTr" / "case002_0001.nii.gz").unlink()
    with pytest.raises(DatasetError) as err:
        load_dataset(root)
    message = str(err.value)
    assert "imagesTr" in message
    assert "case000_0001.nii.gz" in message
    assert "case002_0001.nii.gz" in message


def test_brats_patient_folders_as_a_plain_dataset(shared_data):
    spec = load_dataset(shared_data / "brats2015")
    assert [c.case_id for c in spec.cases] == ["pat0001", "pat0002", "pat0003", "pat0004"]
    assert spec.channel_names == ["flair", "t1c"]  # brainmask.nii.gz is not a channel
    assert all(c.label is not None and c.label.name == "seg.nii.gz" for c in spec.cases)
