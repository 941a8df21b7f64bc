"""The viewer server's warm-up: the case the page opens on, read before a browser connects."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import MedsegError
from medseg.viewer import launch
from medseg.viewer.core import cases, loading, render, state, warmup
from medseg.viewer.launch import ViewerConfig
from medseg.viewer.ui import server
from tests.apps.viewer_factory import write_case_folder, write_constant_checkpoint


@pytest.fixture(scope="module")
def case_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("warm_data")
    write_case_folder(root)
    return root


def _one_case(root: Path) -> loading.CaseRef:
    return loading.default_case(loading.discover_cases(root, confine=False))


def test_a_warmed_case_is_taken_once_with_its_ground_truth_prepared(case_root: Path) -> None:
    ref = _one_case(case_root)
    warmup.start(lambda: ref).join(60)
    shown = warmup.take(ref)
    assert isinstance(shown, state.DisplayCase)
    # what the page's first run needs is there: the truth layer and each view's slice areas
    truth = state.truth_layer(shown)
    assert truth is state.truth_layer(shown)  # memoised on the case: the same layer
    for view in render.VIEWS:
        assert (view, tuple(truth.present)) in truth._areas
    expected = state.prepare_case(loading.load_case(ref))
    np.testing.assert_array_equal(shown.images[0], expected.images[0])
    assert warmup.take(ref) is None  # once: the page's cache holds it from then on


def test_a_page_that_comes_early_waits_for_the_warm_up(
    case_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = _one_case(case_root)
    real = warmup.prepare
    calls = []

    def slow(r):
        calls.append(r)
        return real(r)

    monkeypatch.setattr(warmup, "prepare", slow)
    warmup.start(lambda: ref)  # not joined: take() waits for the case, it does not read it again
    assert isinstance(warmup.take(ref), state.DisplayCase)
    assert calls == [ref]


def test_a_page_that_asks_early_waits_for_the_model_being_loaded() -> None:
    """The page asks for the model while the warm-up is still loading it: it waits for that
    one instead of loading a second copy beside it."""
    import threading

    loading_model = threading.Event()
    key = warmup.model_key("model.pt", 1.0, "cpu", None)

    def plan() -> None:
        loading_model.wait(10)
        warmup.keep_model(key, "the model")  # as server.model_channels does
        return None

    warmup.start(plan)  # not joined
    taker = threading.Timer(0.2, loading_model.set)
    taker.start()
    assert warmup.take_model(key) == "the model"
    assert warmup.take_model(key) is None


def test_a_case_that_fails_is_left_to_the_page(tmp_path: Path) -> None:
    ref = loading.CaseRef("missing", (tmp_path / "missing.nii.gz",))
    warmup.start(lambda: ref).join(60)
    assert warmup.take(ref) is None  # the page reads it and shows the error itself
    with pytest.raises(MedsegError):
        loading.load_case(ref)


def test_no_case_or_a_failing_plan_never_holds_the_page(case_root: Path) -> None:
    def broken() -> loading.CaseRef:
        raise MedsegError("no such case")

    warmup.start(broken).join(60)
    assert warmup.take(_one_case(case_root)) is None
    warmup.start(lambda: None).join(60)
    assert warmup.take(_one_case(case_root)) is None


def test_the_server_warms_what_the_page_opens_on(case_root: Path, tmp_path: Path) -> None:
    ref = _one_case(case_root)
    image = ref.images[0]
    # the command line's case, as the page's "command line" source builds it
    config = ViewerConfig(path=image, gt=ref.label)
    assert server.opening_case(config) == launch.config_case(config)
    # no path: the sample data's default case, as the page's "sample data" source picks it
    assert server.opening_case(ViewerConfig(sample_root=case_root)) == ref
    # several images open in the model's channel order, as the page opens them
    folder = tmp_path / "case"
    folder.mkdir()
    for name in ("flair", "t1c"):
        (folder / f"{name}.nii.gz").write_bytes(image.read_bytes())
    model = write_constant_checkpoint(tmp_path / "t1c.pt", channels=("t1c",))
    both = ViewerConfig(path=folder / "flair.nii.gz", more_paths=(folder / "t1c.nii.gz",))
    given = launch.config_case(both)
    assert [p.name for p in given.images] == ["flair.nii.gz", "t1c.nii.gz"]
    opened = server.opening_case(dataclasses.replace(both, model=model))
    assert opened == cases.model_first(given, ["t1c"])
    assert next(p.name for p in opened.images) == "t1c.nii.gz"
    # the model read for that is kept for the page, as the page's first run keys it
    key = warmup.model_key(str(model), model.stat().st_mtime, both.device, None)
    assert warmup.take_model(key).channel_names == ["t1c"]
    assert warmup.take_model(key) is None  # once
    # a model that does not load leaves the order given (the page says why)
    broken = dataclasses.replace(both, model=tmp_path / "nothing.pt")
    assert server.opening_case(broken) == given
    # a path that does not open is the page's to report
    assert server.opening_case(ViewerConfig(path=tmp_path / "nothing.nii.gz")) is None
    assert server.opening_case(ViewerConfig()) is None
    assert warmup.case_key(launch.config_case(config)) != warmup.case_key(
        launch.config_case(dataclasses.replace(config, gt=None))
    )


def test_the_server_module_starts_without_the_readers() -> None:
    """Importing the server entry point leaves pydicom, pandas and torch to the warm-up thread
    (imported first, they would delay the server's answer by a second or more)."""
    code = (
        "import sys, medseg.viewer.ui.server;"
        "print(sorted(m for m in ('pydicom', 'pandas', 'torch', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_page_opens_the_warmed_case_without_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from streamlit.testing.v1 import AppTest

    from medseg.viewer.ui import keys

    root = tmp_path / "data"  # paths of its own: no other test's page has this case cached
    write_case_folder(root)
    ref = _one_case(root)
    warmup.start(lambda: ref).join(60)

    def no_reading(_ref):
        raise AssertionError("the page read the case again")

    monkeypatch.setattr(loading, "load_case", no_reading)
    app = Path(__file__).resolve().parents[2] / "apps" / "viewer.py"
    at = AppTest.from_file(str(app), default_timeout=120)
    at.session_state[keys.CONFIG] = ViewerConfig(sample_root=root, model=tmp_path / "no.pt")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any(ref.name in c.value for c in at.caption)  # the case line under the banner
    assert warmup.take(ref) is None


def test_the_page_predicts_with_the_model_the_server_loaded(
    case_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A case of several images: the server loads the model to open the case in its channel
    order, and the page predicts with that model instead of loading a second copy."""
    from streamlit.testing.v1 import AppTest

    from medseg.viewer.core import services
    from medseg.viewer.ui import keys

    image = _one_case(case_root).images[0]
    folder = tmp_path / "case"
    folder.mkdir()
    for name in ("flair", "t1c"):
        (folder / f"{name}.nii.gz").write_bytes(image.read_bytes())
    model = write_constant_checkpoint(tmp_path / "t1c.pt", channels=("t1c",))
    config = ViewerConfig(
        path=folder / "flair.nii.gz",
        more_paths=(folder / "t1c.nii.gz",),
        model=model,
        device="cpu",
        runs_dir=tmp_path / "none",
    )
    loads = []
    real = services.load_predictor
    monkeypatch.setattr(
        services, "load_predictor", lambda *a, **k: loads.append(a[0]) or real(*a, **k)
    )
    warmup.start(lambda: server.opening_case(config)).join(120)
    assert loads == [model]
    app = Path(__file__).resolve().parents[2] / "apps" / "viewer.py"
    at = AppTest.from_file(str(app), default_timeout=120)
    at.session_state[keys.CONFIG] = config
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key=keys.CHANNEL).options == ["t1c", "flair"]
    assert any(c.value.startswith("Measured on the prediction") for c in at.caption)
    assert loads == [model]  # predicted with the server's model: loaded once
