"""Ablation and sweep runs in the sidebar's run picker, grouped by their folder, addressed by ?run=GROUP/RUN,
and every page opening them (AppTest, in a temporary runs folder)."""

import json
import shutil
from pathlib import Path

import pytest

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["train", "heads", "predictions", "sample", "dynamics", "compare"]


@pytest.fixture
def runs_root(tmp_path, trained, monkeypatch):
    """demo, then an ablation's and a sweep's output folders whose runs share a folder name (full-seed0)."""
    root = tmp_path / "runs"
    for rel in ("demo", "ablate-residual/full-seed0", "ablate-residual/nores-2L-seed0", "sweep-lr/full-seed0"):
        shutil.copytree(trained, root / rel)
    (root / "ablate-residual" / "summary.md").write_text("# an ablation's summary")
    monkeypatch.setenv("TINYVIZ_RUNS", str(root))
    yield root
    from tinyviz.ui.registry import registry

    registry().stop_all()


def ok(at):
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def picker(at):
    return [s for s in at.sidebar.selectbox if s.key.startswith("sidebar_run")][0]


def test_the_picker_lists_ablation_and_sweep_runs_grouped_and_picking_one_puts_it_in_the_url(runs_root):
    at = ok(AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run())
    box = picker(at)
    assert list(box.options) == [  # the labels the box shows
        "demo", "ablate-residual / full-seed0", "ablate-residual / nores-2L-seed0", "sweep-lr / full-seed0"]
    box.set_value(str(runs_root / "sweep-lr" / "full-seed0")).run()
    ok(at)
    assert at.session_state["run_id"] == str(runs_root / "sweep-lr" / "full-seed0")
    assert at.query_params["run"] == "sweep-lr/full-seed0"  # unique, though ablate-residual has a full-seed0 too


@pytest.mark.parametrize("page", PAGES)
def test_every_page_opens_a_run_of_an_ablation_named_in_the_url(runs_root, page):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["run"] = "ablate-residual/full-seed0"
    at.run()
    at.switch_page(f"app_pages/{page}.py").run()
    ok(at)
    assert at.session_state["run_id"] == str(runs_root / "ablate-residual" / "full-seed0")
    assert at.query_params["run"] == "ablate-residual/full-seed0"
    if page == "compare":  # two runs named full-seed0, told apart by their group
        shown = set(at.multiselect(key="compare_runs").options)
        assert {"ablate-residual / full-seed0", "sweep-lr / full-seed0"} <= shown
    elif page != "train":
        assert any("Run **ablate-residual / full-seed0**" in c.value for c in at.caption)
    if page in ("heads", "predictions", "sample"):
        titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
        assert titles and all("full-seed0" in t for t in titles), titles


def test_compare_keeps_two_groups_runs_of_one_name_apart(runs_root):
    """An ablation's and a sweep's full-seed0: two loss curves, two head grids, two config columns (keyed by
    the folder name, they were one curve and a duplicate-key error)."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("app_pages/compare.py").run()
    a, b = str(runs_root / "ablate-residual" / "full-seed0"), str(runs_root / "sweep-lr" / "full-seed0")
    at.multiselect(key="compare_runs").set_value([a, b]).run()
    ok(at)
    figs = {json.loads(c.proto.spec)["layout"]["title"]["text"]: json.loads(c.proto.spec)
            for c in at.get("plotly_chart")}
    loss = next(f for t, f in figs.items() if t.startswith("Loss"))
    names = {d.get("name") for d in loss["data"]}
    assert {"ablate-residual / full-seed0 train", "sweep-lr / full-seed0 train"} <= names, names
    grids = [t for t in figs if t.startswith("All heads")]
    assert len(grids) == 2 and any("ablate-residual" in t for t in grids) and any("sweep-lr" in t for t in grids)
