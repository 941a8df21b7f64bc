"""Cases from the command line (files, folders, prefixes, dataset + id) and channel matching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import InputNotFoundError, MedsegError
from medseg.io import Volume, write_mask, write_volume
from medseg.viewer.core.cases import (
    ChannelMatchError,
    command_line_case,
    label_scheme_warning,
    map_labels,
    match_channels,
    model_first,
    parse_label_map,
    parse_labels,
    truth_class_names,
)
from medseg.viewer.core.loading import load_case
from medseg.viewer.launch import ViewerConfig, app_arguments, check_config, parse_app_args


def _write(path: Path, value: float = 1.0) -> Path:
    write_volume(Volume(np.full((6, 5, 4), value, np.float32), np.eye(4)), path)
    return path


def test_several_files_are_channels_in_order(tmp_path: Path) -> None:
    a, b = _write(tmp_path / "pat_0001.nii.gz", 2), _write(tmp_path / "pat_0000.nii.gz", 1)
    ref = command_line_case([a, b])
    assert ref.images == (a, b)
    assert ref.name == "pat"
    assert not ref.named_channels
    case = load_case(ref)
    assert [float(c.array.max()) for c in case.channels] == [2.0, 1.0]


def test_one_0000_file_brings_its_siblings(tmp_path: Path) -> None:
    files = [_write(tmp_path / f"pat_{i:04d}.nii.gz", i) for i in range(3)]
    _write(tmp_path / "other_0000.nii.gz")
    ref = command_line_case([files[0]])
    assert ref.images == tuple(files)


def test_prefix_and_nnunet_folder(tmp_path: Path) -> None:
    files = [_write(tmp_path / "case" / f"pat_{i:04d}.nii.gz", i) for i in range(2)]
    assert command_line_case([tmp_path / "case" / "pat"]).images == tuple(files)
    assert command_line_case([tmp_path / "case"]).images == tuple(files)


def test_named_folder_matched_to_model_channels_case_insensitively(tmp_path: Path) -> None:
    folder = tmp_path / "BraTS-001"
    for name in ("BraTS-001-t1c", "BraTS-001-FLAIR", "BraTS-001-t1", "BraTS-001-t2w"):
        _write(folder / f"{name}.nii.gz")
    write_mask(np.zeros((6, 5, 4), np.uint8), Volume(np.zeros((6, 5, 4)), np.eye(4)),
               folder / "BraTS-001-seg.nii.gz")  # fmt: skip
    ref = command_line_case([folder])
    assert ref.named_channels
    assert ref.label == folder / "BraTS-001-seg.nii.gz"
    picks = match_channels(ref.channel_names, True, ["flair", "t1c"])
    assert [ref.channel_names[i] for i in picks] == ["BraTS-001-FLAIR", "BraTS-001-t1c"]
    # "t1" must not match "t1c" (suffix match, not substring)
    assert ref.channel_names[match_channels(ref.channel_names, True, ["t1"])[0]] == "BraTS-001-t1"


def test_unmatched_channels_name_model_channels_and_files() -> None:
    with pytest.raises(ChannelMatchError) as err:
        match_channels(["pat_0000"], False, ["flair", "t1c"])
    message = str(err.value)
    assert "flair, t1c" in message
    assert "pat_0000" in message
    assert "Fix" in message
    with pytest.raises(ChannelMatchError, match="no file named like t2f"):
        match_channels(["flair", "t1c"], True, ["t2f", "t1c"])
    assert match_channels(["a", "b"], False, ["flair", "t1c"]) == [0, 1]


def test_dataset_with_case_id(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    for i in range(2):
        _write(root / "imagesTr" / f"c1_{i:04d}.nii.gz", i)
    write_mask(np.zeros((6, 5, 4), np.uint8), Volume(np.zeros((6, 5, 4)), np.eye(4)),
               root / "labelsTr" / "c1.nii.gz")  # fmt: skip
    meta = {"channel_names": {"0": "FLAIR", "1": "T1c"}, "labels": {"background": 0, "tumour": 1},
            "numTraining": 1, "file_ending": ".nii.gz"}  # fmt: skip
    (root / "dataset.json").write_text(json.dumps(meta))
    ref = command_line_case([root], "c1")
    assert ref.channel_names == ("FLAIR", "T1c")
    assert ref.label == root / "labelsTr" / "c1.nii.gz"
    assert ref.class_names == ("background", "tumour")
    with pytest.raises(MedsegError, match="no case 'nope'"):
        command_line_case([root], "nope")
    with pytest.raises(MedsegError, match=r"--case"):
        command_line_case([root])


def test_missing_paths_are_clear(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match="does not exist"):
        command_line_case([tmp_path / "nothing"])
    with pytest.raises(InputNotFoundError, match=r"b\.nii\.gz"):
        command_line_case([_write(tmp_path / "a.nii.gz"), tmp_path / "b.nii.gz"])
    with pytest.raises(InputNotFoundError):
        check_config(ViewerConfig(path=tmp_path / "a.nii.gz", more_paths=(tmp_path / "x",)))


def test_app_arguments_round_trip(tmp_path: Path) -> None:
    a, b = _write(tmp_path / "a.nii.gz"), _write(tmp_path / "b.nii.gz")
    config = ViewerConfig(path=a, more_paths=(b,), case_id=None, runs_dir=tmp_path)
    back = parse_app_args(app_arguments(config))
    assert back.path == a.resolve()
    assert back.more_paths == (b.resolve(),)
    dataset = ViewerConfig(path=tmp_path, case_id="c1", runs_dir=tmp_path)
    assert parse_app_args(app_arguments(dataset)).case_id == "c1"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["view", "a.nii.gz", "missing_0001.nii.gz"], "missing_0001.nii.gz do not exist"),
        (["view", "--case", "c1"], "given without a dataset"),
        (["view", "ds"], "is a dataset; choose a case with --case"),
        (["view", "ds", "--case", "nope"], "no case 'nope'"),
        (["view", "pat"], "pat does not exist"),
    ],
)
def test_cli_case_errors_exit_2(argv, message, capsys, monkeypatch, tmp_path: Path) -> None:
    from medseg.cli.main import main

    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "a.nii.gz")
    _write(tmp_path / "ds" / "imagesTr" / "c1_0000.nii.gz")
    (tmp_path / "ds" / "dataset.json").write_text(
        json.dumps(
            {"channel_names": {"0": "t1"}, "labels": {"background": 0}, "file_ending": ".nii.gz"}
        )
    )
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def _launched(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> ViewerConfig:
    """The ViewerConfig the page would read after ``medseg <argv>`` (the server is faked)."""
    import subprocess

    from medseg.cli.main import main

    seen = {}

    class FakePopen:
        def __init__(self, command, env, **kwargs):
            seen["command"] = command
            self.stderr = __import__("io").StringIO("")

        def wait(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    main(argv)
    return parse_app_args(seen["command"][seen["command"].index("--") + 1 :])


def test_cli_passes_channels_and_case(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = _write(tmp_path / "p_0000.nii.gz"), _write(tmp_path / "p_0001.nii.gz")
    config = _launched(monkeypatch, ["view", str(a), str(b), "--no-browser"])
    assert config.path == a.resolve()
    assert config.more_paths == (b.resolve(),)


def test_brats_folder_opens_flair_first_never_the_brain_mask(shared_data: Path) -> None:
    """`medseg view pat0001/`: brainmask.nii.gz is no channel, seg.nii.gz is the ground truth."""
    folder = shared_data / "brats2015" / "pat0001"
    ref = command_line_case([folder])
    assert [p.name for p in ref.images] == ["flair.nii.gz", "t1c.nii.gz"]
    assert ref.label == folder / "seg.nii.gz"
    assert match_channels(ref.channel_names, ref.named_channels, ["FLAIR"]) == [0]


def test_files_given_by_position_still_match_by_name(shared_data: Path, tmp_path: Path) -> None:
    """`medseg view flair.nii.gz t1c.nii.gz --gt seg.nii.gz` with a one-channel FLAIR model."""
    folder = shared_data / "brats2015" / "pat0002"
    flair, t1c, seg = (folder / f"{n}.nii.gz" for n in ("flair", "t1c", "seg"))
    ref = command_line_case([flair, t1c], label=seg)
    assert not ref.named_channels
    assert ref.label == seg
    assert match_channels(ref.channel_names, ref.named_channels, ["FLAIR"]) == [0]
    reversed_ref = command_line_case([t1c, flair], label=seg)  # any order
    assert match_channels(reversed_ref.channel_names, False, ["flair", "t1c"]) == [1, 0]
    first = model_first(reversed_ref, ["flair", "t1c"])
    assert [p.name for p in first.images] == ["flair.nii.gz", "t1c.nii.gz"]
    assert first.channel_names == ("flair", "t1c")
    # a mask-named file among the channels is the ground truth, never channel 0
    mixed = command_line_case([folder / "brainmask.nii.gz", flair, seg])
    assert mixed.images == (flair,)
    assert mixed.label == seg
    with pytest.raises(MedsegError, match="--gt"):
        command_line_case([flair, seg, _write(tmp_path / "label.nii.gz")])  # which is truth?


def test_gaps_in_numbered_channels_name_the_missing_file(tmp_path: Path) -> None:
    _write(tmp_path / "pat_0000.nii.gz")
    _write(tmp_path / "pat_0002.nii.gz")
    with pytest.raises(MedsegError, match=r"pat_0001\.nii\.gz"):
        command_line_case([tmp_path / "pat_0000.nii.gz"])
    with pytest.raises(MedsegError, match=r"pat_0001\.nii\.gz"):
        command_line_case([tmp_path])


def test_segmentation_is_a_label_in_a_case_folder(tmp_path: Path) -> None:
    folder = tmp_path / "case"
    _write(folder / "t2.nii.gz")
    _write(folder / "segmentation.nii.gz")
    ref = command_line_case([folder])
    assert [p.name for p in ref.images] == ["t2.nii.gz"]
    assert ref.label == folder / "segmentation.nii.gz"


def test_truth_label_names_and_scheme_warning(tmp_path: Path) -> None:
    model = ("background", "tumour_core", "oedema")
    assert parse_labels("necrosis=1, oedema=2,enhancing=4") == (
        "background", "necrosis", "oedema", "label 3", "enhancing"
    )  # fmt: skip
    with pytest.raises(MedsegError, match="NAME=VALUE"):
        parse_labels("necrosis:1")
    assert truth_class_names((), "necrosis=1", model) == ("background", "necrosis")
    assert truth_class_names(("bg", "lesion"), None, model) == ("bg", "lesion")
    assert truth_class_names((), None, model) == model
    brats = parse_labels("necrosis=1,oedema=2,non-enhancing=3,enhancing=4")
    warning = label_scheme_warning(brats, model)
    assert warning is not None
    assert "1: necrosis vs tumour_core" in warning
    assert "4: enhancing vs label 4" in warning
    assert label_scheme_warning(model, model) is None
    assert label_scheme_warning((), model) is None
    # a per-patient folder under a dataset.json gets its label names from it
    (tmp_path / "dataset.json").write_text(
        json.dumps({"labels": {"0": "background", "1": "necrosis"}})
    )
    _write(tmp_path / "pat" / "flair.nii.gz")
    assert command_line_case([tmp_path / "pat"]).class_names == ("background", "necrosis")
    named = command_line_case([tmp_path / "pat"], labels="oedema=2")
    assert named.class_names == ("background", "label 1", "oedema")


def test_ground_truth_label_map() -> None:
    assert parse_label_map("1=2, 4=3") == {1: 2, 4: 3}
    assert parse_label_map("") == {}
    for bad in ("1-2", "a=2", "1=2,1=3"):
        with pytest.raises(MedsegError, match="--gt-map 1=2,4=3"):
            parse_label_map(bad)
    truth = np.array([0, 1, 2, 4, 4], np.uint8)
    assert map_labels(truth, {1: 2, 4: 3}).tolist() == [0, 2, 2, 3, 3]
    assert map_labels(truth, {1: 2, 2: 1}).tolist() == [0, 2, 1, 4, 4]  # a swap, at once
    assert map_labels(truth, {1: 300}).dtype == np.int32  # the new value needs room
    assert map_labels(truth, {}) is truth


def test_labels_and_gt_map_reach_the_app_and_are_checked_early(tmp_path: Path) -> None:
    scan = _write(tmp_path / "flair.nii.gz")
    config = ViewerConfig(path=scan, labels="necrosis=1,oedema=2", gt_map="1=2,4=3")
    back = parse_app_args(app_arguments(config))
    assert (back.labels, back.gt_map) == ("necrosis=1,oedema=2", "1=2,4=3")
    check_config(config)
    with pytest.raises(MedsegError, match="NAME=VALUE"):
        check_config(ViewerConfig(path=scan, labels="necrosis"))
    with pytest.raises(MedsegError, match="FROM=TO"):
        check_config(ViewerConfig(path=scan, gt_map="1:2"))


def test_cli_passes_labels_and_gt_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scan = _write(tmp_path / "flair.nii.gz")
    argv = ["view", str(scan), "--labels", "oedema=2", "--gt-map", "1=2", "--no-browser"]
    config = _launched(monkeypatch, argv)
    assert (config.labels, config.gt_map) == ("oedema=2", "1=2")


def test_cli_refuses_a_bad_gt_map_with_exit_2(capsys, tmp_path: Path) -> None:
    from medseg.cli.main import main

    scan = _write(tmp_path / "flair.nii.gz")
    with pytest.raises(SystemExit) as exc:
        main(["view", str(scan), "--gt-map", "one=two", "--no-browser"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "--gt-map 'one=two'" in err
