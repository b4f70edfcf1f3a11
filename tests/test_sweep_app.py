"""The Compare page opens a sweep folder; the ablation launcher sends its grid to $TINYVIZ_RAY_ADDRESS."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tinyviz.experiments.executors import LocalExecutor
from tinyviz.experiments.sweep import grid_sweep, run_sweep

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["d_model=16", "n_heads=2", "n_ctx=16", "batch_size=4", "corpus_chars=6000", "eval_interval=3",
        "eval_batches=1", "warmup_steps=1"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweeps") / "sweep-lr-layers"
    sw = grid_sweep("micro", ["lr=1e-3,3e-3", "n_layers=1,2"], seeds=2, steps=6, sets=TINY)
    run_sweep(sw, out, LocalExecutor(1), images=False, sample_tokens=4)
    return out


@pytest.fixture
def runs_root(tmp_path, swept, monkeypatch):
    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(swept, root / swept.name)
    monkeypatch.setenv("TINYVIZ_RUNS", str(root))
    monkeypatch.delenv("TINYVIZ_RAY_ADDRESS", raising=False)
    return root


def compare() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=90).run()
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    return at


def titles(at) -> list[str]:
    return [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]


def traces(at, title_part: str) -> list[dict]:
    spec = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                if title_part in json.loads(c.proto.spec)["layout"]["title"]["text"])
    return spec["data"]


def test_compare_opens_a_sweep_folder_with_table_coordinates_heatmap_and_curves(runs_root):
    at = compare()
    assert at.selectbox(key="sweep_folder").value == "sweep-lr-layers"
    table = next(df.value for df in at.dataframe if "val_loss" in df.value.columns)
    assert len(table) == 8 and {"lr", "n_layers", "seed", "node", "tokens_per_s"} <= set(table.columns)
    t = titles(at)
    assert any("grid values against final val loss" in x for x in t)
    par = traces(at, "grid values against final val loss")[0]
    assert par["type"] == "parcoords" and [d["label"] for d in par["dimensions"]] == \
        ["lr", "n_layers", "seed", "final val loss"]
    heat = traces(at, "mean over seeds")[0]
    assert heat["type"] == "heatmap" and len(heat["z"]) == 2 and len(heat["z"][0]) == 2
    # the heatmap's cell is the mean of its two seeds' last val loss
    rows = json.loads((runs_root / "sweep-lr-layers" / "results.json").read_text())["rows"]
    first = [r["val_loss"] for r in rows if r["lr"] == 1e-3 and r["n_layers"] == 1]
    assert heat["z"][0][0] == pytest.approx(sum(first) / 2)
    cells = at.multiselect(key="sweep_cells_sweep-lr-layers")
    assert len(cells.value) == 2  # the lowest and the highest val loss
    curves = [tr for tr in traces(at, "train loss (mean, min-max") if tr.get("fill") == "toself"]
    assert len(curves) == 2  # one seed band per chosen cell
    cells.set_value(["lr=1e-3 n_layers=1", "lr=1e-3 n_layers=2", "lr=3e-3 n_layers=2"]).run()
    assert len([tr for tr in traces(at, "train loss (mean, min-max") if tr.get("fill") == "toself"]) == 3


def test_no_sweep_folder_says_how_to_make_one(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("TINYVIZ_RUNS", str(tmp_path / "empty"))
    at = compare()
    assert any("python -m tinyviz sweep" in i.value for i in at.info)


def test_ablation_launcher_says_where_its_grid_runs(runs_root, monkeypatch):
    at = compare()
    assert any("Runs on this machine's cores" in c.value and "TINYVIZ_RAY_ADDRESS" in c.value for c in at.caption)
    monkeypatch.setenv("TINYVIZ_RAY_ADDRESS", "127.0.0.1:6391")
    at = compare()
    assert any("Ray cluster at `127.0.0.1:6391`" in c.value for c in at.caption)


def test_ablation_launcher_sends_the_grid_to_the_ray_address(tmp_path, monkeypatch):
    from tinyviz.ui import ablate_panel

    seen = {}

    class FakePopen:
        def __init__(self, cmd, **kwargs):
            seen["cmd"] = cmd
            self.pid, self.returncode = 0, 0

        def poll(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    jobs = ablate_panel.AblationJobs()
    monkeypatch.setenv("TINYVIZ_RAY_ADDRESS", "10.0.0.5:6379")
    jobs.start("tying", tmp_path, seeds=1, steps=10, corpus="tinytales")
    assert seen["cmd"][-4:] == ["--executor", "ray", "--ray-address", "10.0.0.5:6379"]
    monkeypatch.delenv("TINYVIZ_RAY_ADDRESS")
    jobs.start("tying", tmp_path, seeds=1, steps=10, corpus="tinytales")
    assert "--executor" not in seen["cmd"]


def test_the_table_names_copied_runs_only_when_a_sweep_copied_some(runs_root, swept):
    at = compare()
    table = next(df.value for df in at.dataframe if "val_loss" in df.value.columns)
    assert "reused_from" not in table.columns  # nothing was copied: no empty column
    sw = grid_sweep("micro", ["lr=1e-3,1e-2", "n_layers=1"], seeds=2, steps=6, sets=TINY)  # lr 1e-2 is new
    run_sweep(sw, runs_root / "a-sweep-reusing", LocalExecutor(1), images=False, sample_tokens=4, reuse=[str(swept)])
    at = compare()
    at.selectbox(key="sweep_folder").set_value("a-sweep-reusing").run()
    table = next(df.value for df in at.dataframe if "val_loss" in df.value.columns)
    assert list(table["reused_from"]) == [str(swept / f"lr1e_3-n_layers1-seed{s}") for s in (0, 1)] + \
        ["trained here"] * 2
