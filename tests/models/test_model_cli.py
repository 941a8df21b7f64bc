"""``medseg models``: what a user sees on the command line."""

from __future__ import annotations

import json

import pytest

from medseg.cli.main import main
from medseg.models import list_models


def test_lists_every_model(capsys):
    main(["models"])
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines()] == list_models()
    assert "divisor=16" in out


def test_one_model_shows_its_options_as_json(capsys):
    main(["models", "monai_unet", "--json"])
    info = json.loads(capsys.readouterr().out)
    assert info["options"]["strides"] == [2, 2, 2, 2]
    assert info["torchscript"] is True


def test_unknown_model_exits_2_with_suggestion(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "deeplabv3plus"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown model 'deeplabv3plus'")
    assert "deeplabv3plus_resnet50" in err
