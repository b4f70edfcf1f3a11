"""The head view (one token in every head) and grouped ablation/sweep runs in the run store."""

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from tinyviz.analysis import plots, probes
from tinyviz.config import ModelConfig
from tinyviz.model.transformer import Transformer


def tiny(**kw) -> Transformer:
    torch.manual_seed(0)
    cfg = dict(n_layers=2, n_heads=3, d_model=24, d_ff=48, n_ctx=32, d_vocab=11)
    return Transformer(ModelConfig(**{**cfg, **kw})).eval()


def heatmaps(fig) -> list:
    return [t for t in fig.data if isinstance(t, go.Heatmap)]


@pytest.mark.parametrize("query", [0, 5, 11])
def test_the_head_view_shows_the_captured_attention_row_of_the_query_in_every_head(query):
    ids = [1, 2, 3, 4, 1, 2, 3, 4, 5, 6, 1, 2]
    patterns = probes.attention_patterns(tiny(), ids)  # [L, H, T, T] as the Heads page captures them
    tokens = [str(i) for i in ids]
    fig = plots.token_view(patterns, tokens, query, "tiny", step=40)
    maps = heatmaps(fig)
    assert len(maps) == 2  # one panel per layer, one row per head
    for layer, trace in enumerate(maps):
        z = np.asarray(trace.z, dtype=float)  # [H, T]
        assert z.shape == (3, len(ids))
        seen = z[:, : query + 1]
        assert np.array_equal(seen, np.asarray(patterns[layer, :, query, : query + 1], dtype=np.float32))
        assert np.isnan(z[:, query + 1:]).all()  # later keys: masked (grey), not drawn as weight 0
        assert np.allclose(seen.sum(-1), 1, atol=1e-5)  # each head's row is a distribution over what it sees
    assert f"position {query}" in fig.layout.title.text and "step 40" in fig.layout.title.text
    assert fig.layout.coloraxis.cmin == 0 and fig.layout.coloraxis.cmax == 1  # the head heatmaps' scale
    # the query's column is outlined in every layer and its tick label is shown (and marked)
    rects = [s for s in fig.layout.shapes if s.type == "rect"]
    assert len(rects) == 2 and all(s.x0 == query - 0.5 and s.x1 == query + 0.5 for s in rects)
    assert query in fig.layout.xaxis.tickvals


def test_every_cell_of_a_small_head_view_is_a_click_target_naming_its_key_column():
    from tinyviz.ui import analysis

    rng = np.random.default_rng(0)
    p = rng.random((2, 3, 9, 9)).astype(np.float32)
    fig = plots.token_view(p, list("abcdefghi"), 4, "tiny")
    overlays = [t for t in fig.data if t.meta == plots.OVERLAY]
    assert len(overlays) == 2  # one per layer
    for t in overlays:
        assert len(t.x) == 3 * 9 and all(cd == [x] for cd, x in zip(t.customdata, t.x))  # plain lists, key = column
    event = {"selection": {"points": [{"curve_number": 1, "customdata": [6]}]}}
    assert analysis.key_from_selection(event) == 6
    assert analysis.key_from_selection({"selection": {"points": []}}) is None
    big = plots.token_view(rng.random((12, 12, 100, 100)), [str(i) for i in range(100)], 3, "gpt2-small")
    assert not [t for t in big.data if t.meta == plots.OVERLAY]  # 14,400 targets: it picks on the buttons


def test_a_bidirectional_model_shows_every_key():
    ids = [1, 2, 3, 4, 5, 6]
    patterns = probes.attention_patterns(tiny(causal=False), ids)
    z = np.asarray(heatmaps(plots.token_view(patterns, [str(i) for i in ids], 2, "tiny", causal=False))[1].z)
    assert not np.isnan(z).any() and np.array_equal(z, patterns[1, :, 2, :].astype(np.float32))


def test_the_head_view_of_a_12x12_model_has_one_panel_per_layer_and_stays_on_a_page():
    rng = np.random.default_rng(0)
    p = rng.random((12, 12, 100, 100)).astype(np.float32)
    fig = plots.token_view(p, [f"t{i}" for i in range(100)], 99, "gpt2-small",
                           labels=[["prev_token"] * 12] * 12)
    assert len(heatmaps(fig)) == 12 and all(np.asarray(h.z).shape == (12, 100) for h in heatmaps(fig))
    assert fig.layout.height <= 2200
    assert fig.layout.coloraxis.colorscale[0][1] != fig.layout.coloraxis.colorscale[-1][1]
    assert list(fig.layout.yaxis.ticktext)[0] == "H0 prev"


def test_a_query_outside_the_prompt_is_a_sentence():
    with pytest.raises(ValueError, match="outside the prompt's 4 tokens"):
        plots.token_view(np.zeros((1, 1, 4, 4)), list("abcd"), 4, "tiny")


# -- ablation and sweep runs in the run store -----------------------------------------------------------

def group_layout(root, make_run) -> None:
    """root as `ablate` and `sweep` leave it: runs directly under it, and output folders holding one run per
    arm/cell and seed beside their curves, results and logs; plus folders that are neither."""
    from tinyviz.experiments.sweep import run_folder

    make_run(root / "demo")
    make_run(root / "mine")
    for group, cells in (("ablate-residual", ["full", "nores-2L"]), ("sweep-lr", ["lr=0.001"])):
        for cell in cells:
            make_run(root / group / run_folder(cell, 0))
        for name in ("curves.csv", "summary.md", "ablation.json", "ablate.log"):
            (root / group / name).write_text("x")
    make_run(root / "sweep-lr" / "nested" / "too-deep")  # only one level of groups
    (root / "_corpora").mkdir()
    (root / "_corpora" / "abc.txt").write_text("text")
    (root / "ablate-residual" / "damaged-seed0").mkdir()
    (root / "ablate-residual" / "damaged-seed0" / "config.json").write_text("{not json")


def test_the_store_lists_ablation_and_sweep_runs_after_the_others_grouped_by_folder(tmp_path, tiny_cfg):
    from tinyviz.data.text import CharTokenizer
    from tinyviz.training.runs import Run, list_runs, run_label

    tok = CharTokenizer.train("abcdef")
    group_layout(tmp_path, lambda p: Run.create(p, tiny_cfg, tok))
    runs = list_runs(tmp_path)
    assert [run_label(r.path, tmp_path) for r in runs] == [
        "demo", "mine", "ablate-residual/full-seed0", "ablate-residual/nores-2L-seed0", "sweep-lr/lr_0.001-seed0"]
    assert [r.name for r in runs][2] == "full-seed0"  # the run itself still knows only its folder's name
    assert run_label(tmp_path / "elsewhere" / "x", tmp_path / "runs") == "x"
