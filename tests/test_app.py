"""Every page under Streamlit's AppTest, on the demo run, in a temporary runs folder (TINYVIZ_RUNS)."""

import json
import shutil
import time
from pathlib import Path

import pytest

from tinyviz.config import apply_overrides, preset
from tinyviz.training.runs import Run
from tinyviz.training.session import TrainingSession
from tinyviz.ui import analysis

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["train", "heads", "predictions", "sample", "compare"]
SMALL = ["n_layers=2", "n_heads=2", "d_model=32", "d_ff=64", "n_ctx=32", "batch_size=8", "steps=60",
         "warmup_steps=5", "eval_interval=20", "eval_batches=2", "snapshot_interval=20", "checkpoint_interval=20",
         "sample_interval=20", "corpus_chars=20000"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The committed demo run, or a small run standing in for it while it is not there."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    committed = ROOT / "checkpoints" / "demo"
    if (committed / "model.safetensors").exists():
        shutil.copytree(committed, out)
    else:
        assert TrainingSession.start(apply_overrides(preset("micro"), SMALL), out).train() == "done"
    return out


@pytest.fixture
def runs_root(tmp_path, demo, monkeypatch):
    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(demo, root / "demo")
    monkeypatch.setenv("TINYVIZ_RUNS", str(root))
    yield root
    from tinyviz.ui.registry import registry

    registry().stop_all()


def app(page=None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
    return at


def ok(at) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def chart_titles(at) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


@pytest.mark.parametrize("page", [None, *PAGES])
def test_every_page_renders_on_the_demo_run(runs_root, page):
    at = ok(app(page))
    if page in ("heads", "predictions", "sample", "compare"):
        assert at.get("plotly_chart"), "the page drew no chart"
        assert all("demo" in t for t in chart_titles(at))
    picker = [s for s in at.sidebar.selectbox if s.key.startswith("sidebar_run")]
    assert picker[0].value == str(runs_root / "demo")


def test_the_run_picker_takes_picks_only_from_the_box_on_the_page(monkeypatch):
    """The browser may report the value of a picker drawn before the current one (its key changes
    with the options and the current run); right after Start that value is the demo, and taking it
    moved a trainer's session off its own run."""
    from tinyviz.ui import sidebar, state

    session = {state.RUN: "runs/mine", state.RUN_PICKER_DRAWN: "sidebar_run_new",
               "sidebar_run_old": "runs/demo", "sidebar_run_new": "runs/mine"}
    monkeypatch.setattr(sidebar.st, "session_state", session)
    sidebar._on_pick("sidebar_run_old")
    assert session[state.RUN] == "runs/mine"
    session["sidebar_run_new"] = "runs/other"  # the person picks in the box they see
    sidebar._on_pick("sidebar_run_new")
    assert session[state.RUN] == "runs/other"


@pytest.mark.parametrize("asked, shown", [("other", "other"), ("nope", "demo"), ("../demo", "demo"), ("", "demo")])
def test_a_new_session_opens_the_run_named_in_the_url(runs_root, asked, shown):
    """A reload, a second tab or a shared link starts a new session: ?run=NAME keeps its run. The name
    is only looked up among the run folders, so an unknown or path-like one falls back to the demo."""
    shutil.copytree(runs_root / "demo", runs_root / "other")
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["run"] = asked
    at.run()  # AppTest maps a page file to its URL path only after a first run
    at.switch_page("app_pages/heads.py").run()
    ok(at)
    assert all(shown in t for t in chart_titles(at))
    assert at.session_state["run_id"] == str(runs_root / shown)
    assert at.query_params["run"] == shown  # the URL follows, so the next reload lands here too


def test_picking_a_run_puts_it_in_the_url(runs_root):
    shutil.copytree(runs_root / "demo", runs_root / "other")
    at = app("heads")
    picker = [s for s in at.sidebar.selectbox if s.key.startswith("sidebar_run")][0]
    picker.set_value(str(runs_root / "other")).run()
    ok(at)
    assert at.query_params["run"] == "other"
    assert all("other" in t for t in chart_titles(at))


def test_heads_picker_opens_that_head(runs_root):
    at = ok(app("heads"))
    at.selectbox(key="head_layer").set_value(1).run()
    at.selectbox(key="head_head").set_value(1).run()
    ok(at)
    assert any("layer 1, head 1" in t for t in chart_titles(at)), chart_titles(at)


def test_a_grid_click_event_names_its_head():
    event = {"selection": {"points": [{"curve_number": 7, "point_index": 3, "customdata": [1, 2]}]}}
    assert analysis.head_from_selection(event) == (1, 2)
    assert analysis.head_from_selection({"selection": {"points": []}}) is None


def test_heads_replay_slider_shows_that_step(runs_root):
    at = ok(app("heads"))
    at.segmented_control(key="heads_source").set_value("Training replay (probe prompt)").run()
    steps = at.select_slider(key="heads_step").options
    at.select_slider(key="heads_step").set_value(steps[0]).run()
    ok(at)
    assert any(f"step {steps[0]}" in t and "layer 1, head 1" in t for t in chart_titles(at)), chart_titles(at)


def test_heads_opens_on_the_demo_runs_induction_head(runs_root):
    at = ok(app("heads"))
    assert any("layer 1, head 1" in t and "induction" in t for t in chart_titles(at)), chart_titles(at)


def test_heads_zero_ablation_changes_the_loss(runs_root):
    at = ok(app("heads"))
    at.multiselect(key="heads_ablate").set_value(["L0 H0", "L1 H0"]).run()
    ok(at)
    metrics = {m.label: m for m in at.metric}
    assert metrics["Heads zeroed"].value == "2"
    assert metrics["Loss, ablated"].value != metrics["Loss, clean"].value


def test_sample_resamples_when_a_slider_moves(runs_root):
    at = ok(app("sample"))
    before = at.get("html")[0].proto.body
    at.slider(key="sample_temperature").set_value(1.6).run()
    ok(at)
    assert at.get("html")[0].proto.body != before
    at.slider(key="sample_step").set_value(3).run()
    assert any("token 3" in t for t in chart_titles(ok(at)))


def test_sample_length_defaults_by_model_size_and_a_chosen_length_stays(runs_root, monkeypatch):
    from tinyviz import resources
    from tinyviz.model import sampling

    at = ok(app("sample"))
    assert at.slider(key="sample_length").value == 150  # a small model: the page's default since it was made
    assert not any("by default for a model this size" in c.value for c in at.caption)
    n = resources.n_params(Run.open(runs_root / "demo").config.model)
    monkeypatch.setattr(sampling, "READ_BYTES_PER_S", n * 90)  # 44 ms a token: 36 fit in 1.6 s
    at = ok(app("sample"))
    assert at.slider(key="sample_length").value == 30 and at.slider(key="sample_step").max == 30
    assert any("30 new tokens by default for a model this size" in c.value for c in at.caption)
    at.slider(key="sample_length").set_value(60).run()
    monkeypatch.setattr(sampling, "READ_BYTES_PER_S", n * 10_000)  # another default: the person's 60 stays
    assert ok(at.run()).slider(key="sample_length").value == 60 and at.slider(key="sample_step").max == 60


def test_predictions_top_k(runs_root):
    at = ok(app("predictions"))
    at.slider(key="pred_k").set_value(3).run()
    assert any("Top-3" in t for t in chart_titles(ok(at)))


def live_html(at, key: str) -> str:
    """The HTML a light element (widgets.live_html) was drawn with: its component's data."""
    def find(node):
        for child in node.children.values() if isinstance(getattr(node, "children", None), dict) else []:
            if getattr(child, "key", None) == key:
                return child
            if (hit := find(child)) is not None:
                return hit
        return None
    element = find(at.main)
    element = element if element is not None else find(at.sidebar)
    if element is None:
        return ""
    data = json.loads(element.proto.json)
    return data["html"] if isinstance(data, dict) else data


def test_train_start_see_metrics_then_stop(runs_root):
    at = ok(app("train"))
    at.number_input(key="cfg_micro_train_steps").set_value(20000).run()
    at.button(key="train_start").click().run()
    ok(at)
    deadline = time.monotonic() + 60
    # while it trains the numbers are a light element the live feed keeps up to date
    while "Train loss" not in live_html(at, "train_numbers_live"):
        assert time.monotonic() < deadline, "no metrics arrived"
        time.sleep(0.5)
        at.run()
    assert "of 20000" in live_html(at, "train_progress_live")
    assert any(b.key.startswith("train_stop_") for b in at.button)
    next(b for b in at.button if b.key.startswith("train_stop_")).click().run()
    deadline = time.monotonic() + 60
    while not any("stopped" in m.value for m in at.markdown):
        assert time.monotonic() < deadline, "the run did not stop"
        time.sleep(0.5)
        at.run()
    ok(at)
    run = runs_root / "micro-tinytales-1"
    assert json.loads((run / "state.json").read_text())["status"] == "stopped"
    assert any(b.key.startswith("train_resume_") for b in at.button)
    # stopped: Streamlit's own numbers and the interactive charts are back
    assert {"Train loss", "Val loss", "Tokens/s"} <= {m.label for m in at.metric}
    assert not live_html(at, "train_numbers_live")


def test_a_third_training_is_refused_in_a_sentence(tmp_path):
    from tinyviz.ui.registry import MAX_CONCURRENT, Registry, RegistryFull

    reg = Registry()
    cfg = apply_overrides(preset("micro"), SMALL + ["steps=100000"])
    try:
        for i in range(MAX_CONCURRENT):
            reg.start(cfg, tmp_path / f"r{i}")
        with pytest.raises(RegistryFull, match=r"2 runs are training already \(r0 and r1\).*stop one"):
            reg.start(cfg, tmp_path / "r2")
    finally:
        reg.stop_all()
    assert not (tmp_path / "r2").exists()


def test_compare_ab_launches_a_sibling(runs_root):
    at = ok(app("compare"))
    at.selectbox(key="ab_field").set_value("pos_emb").run()
    at.button(key="ab_start").click().run()
    ok(at)
    sibling = next(p for p in runs_root.iterdir() if p.name.startswith("demo-pos_emb-"))
    a = json.loads((runs_root / "demo" / "config.json").read_text())
    b = json.loads((sibling / "config.json").read_text())
    assert a["model"]["pos_emb"] != b["model"]["pos_emb"]
    assert a["train"] == b["train"] and a["data"] == b["data"]
    assert any(sibling.name in s.value for s in at.success)


def test_write_up_bundle_collects_figures_and_builds_a_zip(runs_root, monkeypatch):
    from tinyviz.analysis import export

    monkeypatch.setattr(export, "find_browser", lambda: None)  # CSV + HTML only: fast, and the note is shown
    at = ok(app("heads"))
    at.button(key="export_heads_big_bundle").click().run()
    at.button(key="export_heads_scores_bundle").click().run()
    ok(at)
    assert at.button(key="export_heads_big_bundle").disabled
    at.sidebar.button(key="bundle_build").click().run()
    ok(at)
    assert at.sidebar.get("download_button")
    assert any("Chrome or Chromium" in c.value for c in at.sidebar.caption)


def test_pages_live_outside_a_pages_folder():
    """A pages/ folder beside app.py switches Streamlit to its legacy mode for a process's first run
    (a page runs without the frame, or "Page not found" shows): page files belong in app_pages/."""
    assert not (ROOT / "pages").exists(), "move page files to app_pages/ and register them in tinyviz/ui/page.PAGES"
    from tinyviz.ui import page

    files = sorted(f"app_pages/{f.name}" for f in (ROOT / "app_pages").glob("*.py"))
    assert sorted(p for p, _, _ in page.PAGES.values()) == files
