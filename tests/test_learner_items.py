"""The smaller things a learner tripped on (issue 11, point 5), each checked where it is drawn."""

import io
import json
import zipfile

import numpy as np

from tests import test_app
from tests.test_app import app, ok
from tinyviz.analysis import export, plots

demo, runs_root = test_app.demo, test_app.runs_root  # fixtures: a copy of the demo in a temporary runs folder


def test_mlp_units_never_active_says_none_when_every_unit_fires():
    stats = [{"layer": l, "resid_std": 1.0, "attn_out_std": 0.5, "mlp_out_std": 0.7, "mlp_dead_frac": 0.0}
             for l in range(2)]
    texts = [a.text for a in plots.activation_stats_bars(stats, "r").layout.annotations]
    assert any(t.startswith("none") for t in texts)
    stats[1]["mlp_dead_frac"] = 0.25
    assert not any(a.text.startswith("none") for a in plots.activation_stats_bars(stats, "r").layout.annotations)


def test_top_k_heatmap_shows_a_readable_window_of_positions():
    T, k = 89, 10
    tokens = [chr(97 + i % 26) for i in range(T)]
    top = [[tokens[(i + r) % T] for r in range(k)] for i in range(T)]
    probs = np.full((T, k), 0.1)
    fig = plots.predictions_heatmap(tokens, top, probs, "r", start=40)
    assert list(fig.data[0].x) == list(range(40, 40 + plots.PRED_COLUMNS))
    assert np.asarray(fig.data[0].text).shape == (k, plots.PRED_COLUMNS)
    assert "positions 40-71 of 89" in fig.layout.title.text


def test_bundle_html_pages_share_one_plotly_js():
    figs = [(f"fig {i}", plots.loss_curves({"r": [{"step": s, "loss": 1.0 / s} for s in range(1, 50)]}), None)
            for i in range(4)]
    data, _ = export.bundle(figs, {"a": 1}, images=())
    z = zipfile.ZipFile(io.BytesIO(data))
    htmls = [n for n in z.namelist() if n.endswith(".html")]
    assert len(htmls) == 4 and z.namelist().count(export.PLOTLY_JS) == 1
    for n in htmls:
        page = z.read(n).decode()
        assert 'src="plotly.min.js"' in page and len(page) < 100_000  # no embedded copy of plotly.js
    assert len(z.read(export.PLOTLY_JS)) > 1_000_000


def test_the_bundle_survives_a_reload_and_its_hint_names_the_button(runs_root, monkeypatch):
    monkeypatch.setattr(export, "find_browser", lambda: None)
    at = ok(app("heads"))
    assert any("**Bundle**" in c.value for c in at.sidebar.caption)
    at.button(key="export_heads_big_bundle").click().run()
    fresh = ok(app())  # a new session, as after a reload
    assert any(c.value.startswith("• ") for c in fresh.sidebar.caption), "the bundle came back empty"
    fresh.sidebar.button(key="bundle_build").click().run()
    assert ok(fresh).sidebar.get("download_button")
    fresh.sidebar.button(key="bundle_clear").click().run()
    assert not any(c.value.startswith("• ") for c in ok(app()).sidebar.caption)


def test_greedy_sample_is_not_shaded_and_the_explained_token_is_outlined(runs_root):
    at = ok(app("sample"))
    at.slider(key="sample_temperature").set_value(0.0).run()
    at.slider(key="sample_step").set_value(3).run()
    page = next(h.proto.body for h in ok(at).get("html") if "data-highlight" in h.proto.body)
    assert page.count('data-highlight="true"') == 1
    assert "rgba(255,127,14,0.00)" in page and not any(f"rgba(255,127,14,0.{d}" in page for d in "123456789")


def test_logit_lens_explains_the_embed_row_of_tied_embeddings(runs_root):
    cfg = json.loads((runs_root / "demo" / "config.json").read_text())["model"]
    at = ok(app("predictions"))
    said = any("embed** row" in c.value for c in at.caption)
    assert said == cfg["tie_embeddings"]


def test_a_run_downloaded_from_the_sidebar_opens_again_with_its_upload(runs_root, tmp_path):
    from tinyviz.training.runs import Run
    from tinyviz.training.runzip import export_run_zip
    from tinyviz.ui.uploads import extract_run_zip

    at = ok(app())
    assert at.sidebar.get("download_button"), "no run download in the sidebar"
    data = export_run_zip(runs_root / "demo")
    (tmp_path / "other").mkdir()
    run = extract_run_zip(data, tmp_path / "other", "demo.zip")  # what the sidebar's upload does with it
    original = Run.open(runs_root / "demo")
    assert run.name == "demo" and run.config == original.config and run.weights_step() == original.weights_step()
    assert run.snapshot_steps() == original.snapshot_steps() and len(run.metrics()) == len(original.metrics())


def test_charts_say_what_to_look_for(runs_root):
    for page, least in (("heads", 2), ("train", 3), ("predictions", 1), ("compare", 1)):
        at = ok(app(page))
        said = [c.value for c in at.caption if "What to look for" in c.value]
        assert len(said) >= least, (page, said)
