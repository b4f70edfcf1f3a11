"""The sidebar's "Weights at step" under AppTest: the pages show the chosen step; runs without history
and damaged history files."""

import json
import shutil
from pathlib import Path

import pytest

from tinyviz.config import apply_overrides, preset
from tinyviz.training.session import TrainingSession

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["n_layers=2", "n_heads=2", "d_model=32", "d_ff=64", "n_ctx=32", "batch_size=8", "steps=60",
         "warmup_steps=5", "eval_interval=20", "eval_batches=2", "snapshot_interval=20", "checkpoint_interval=20",
         "corpus_chars=20000", "history_keep=12"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("hist")
    TrainingSession.start(apply_overrides(preset("micro"), SMALL), out / "demo").train()
    TrainingSession.start(apply_overrides(preset("micro"), SMALL + ["history_keep=0"]), out / "plain").train()
    return out


@pytest.fixture
def runs_root(tmp_path, trained, monkeypatch):
    root = tmp_path / "runs"
    shutil.copytree(trained, root)
    monkeypatch.setenv("TINYVIZ_RUNS", str(root))
    return root


def app(page=None, **params) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
    return at


def ok(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def slider(at):
    found = [s for s in at.sidebar.select_slider if s.key.startswith("sidebar_step")]
    return found[0] if found else None


def titles(at) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def sample_text(at) -> str:
    return at.get("code")[0].value


def test_the_step_control_offers_the_kept_steps_latest_first(runs_root):
    at = ok(app("heads"))
    s = slider(at)
    assert s.options == ["0", "1", "2", "20", "40", "60 (latest)"] and s.value == 60
    assert any("step 60" in t for t in titles(at))


def test_moving_the_step_redraws_heads_and_sample_at_that_step(runs_root):
    at = ok(app("sample"))
    late = sample_text(at)
    slider(at).set_value(2).run()
    ok(at)
    assert at.query_params["step"] in (["2"], "2")
    assert sample_text(at) != late
    assert "weights at step 2" in " ".join(c.value for c in at.caption)
    at.switch_page("app_pages/heads.py").run()
    ok(at)
    assert slider(at).value == 2
    assert any("step 2" in t for t in titles(at)) and not any("step 60" in t for t in titles(at))
    # the run's caption names the step shown, not only the step the run reached
    assert "weights at step **2** (trained to 60 of 60)" in at.caption[0].value
    at.switch_page("app_pages/predictions.py").run()
    assert all("step 2" in t for t in titles(ok(at)))


def test_the_address_opens_a_kept_step(runs_root):
    at = ok(app("predictions", run="demo", step="20"))
    assert slider(at).value == 20 and all("step 20" in t for t in titles(at))


def test_a_run_without_history_hides_the_control_and_says_why(runs_root):
    at = ok(app("heads", run="plain"))
    assert slider(at) is None
    assert any("kept no weights history" in c.value for c in at.sidebar.caption)


def test_a_damaged_history_file_is_named_and_other_steps_open(runs_root):
    (runs_root / "demo" / "history" / "step_0000020.safetensors").write_bytes(b"\x00 not weights" * 9)
    at = app("heads", run="demo", step="20")
    assert not at.exception
    assert any("history/step_0000020.safetensors is damaged" in e.value for e in at.error)
    slider(at).set_value(40).run()
    ok(at)
    assert any("step 40" in t for t in titles(at))


def test_the_dynamics_page_draws_every_view_of_a_run_with_history(runs_root):
    at = ok(app("dynamics"))
    names = " ".join(titles(at))
    for view in ("Head timeline", "Head importance over training", "In-context learning over training",
                 "Loss by position over training", "Logit lens over training"):
        assert view in names, view
    assert at.get("html"), "the loss change between two steps is painted on the text"
    at.button(key="dyn_report_build").click().run()
    assert ok(at).get("download_button")


def test_the_dynamics_page_says_why_a_run_without_history_has_nothing(runs_root):
    at = ok(app("dynamics", run="plain"))
    assert any("kept no weights history" in i.value for i in at.info) and not at.get("plotly_chart")
