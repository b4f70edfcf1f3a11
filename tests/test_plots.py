"""Figures: titles name what they show, token axes keep every token, shapes are checked, heads are clickable."""

import json

import numpy as np
import pytest

from tinyviz.analysis import plots
from tinyviz.model.sampling import SampleStep


def causal_patterns(L=2, H=3, T=5, seed=0):
    rng = np.random.default_rng(seed)
    p = np.tril(rng.random((L, H, T, T)).astype(np.float32))
    return p / p.sum(-1, keepdims=True)


def test_head_grid_overlay_is_clickable_with_plain_list_customdata():
    p = causal_patterns()
    fig = plots.head_grid(p, "demo", step=300, selected=(1, 2))
    overlays = [t for t in fig.data if t.meta == plots.OVERLAY]
    assert len(overlays) == 2 * 3
    spec = json.loads(fig.to_json())  # what Streamlit sends: arrays must not become base64 dicts
    sent = [t for t in spec["data"] if t.get("meta") == plots.OVERLAY]
    heads = {tuple(t["customdata"][0]) for t in sent}
    assert heads == {(l, h) for l in range(2) for h in range(3)}
    assert all(isinstance(t["customdata"], list) and all(c == t["customdata"][0] for c in t["customdata"])
               for t in sent)
    assert all(t["marker"]["color"] == "rgba(0,0,0,0)" for t in sent)
    assert "demo" in fig.layout.title.text and "step 300" in fig.layout.title.text
    assert len(fig.layout.shapes) == 1  # the selected head is outlined


def test_head_heatmap_names_run_layer_head_step_and_keeps_repeated_tokens():
    tokens = ["a", "b", "a", "b", "a"]
    fig = plots.head_heatmap(causal_patterns()[1, 2], tokens, "demo", 1, 2, step=300, label="induction")
    title = fig.layout.title.text
    assert all(s in title for s in ("demo", "layer 1, head 2", "step 300", "induction"))
    assert list(fig.layout.xaxis.ticktext) == tokens and list(fig.layout.yaxis.ticktext) == tokens
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text
    assert fig.data[0].zmin == 0 and fig.data[0].zmax == 1 and fig.data[0].colorbar.title.text == "weight"


def test_shape_mismatch_is_a_sentence():
    with pytest.raises(ValueError, match="4 token labels do not match the pattern over 5 positions"):
        plots.head_heatmap(causal_patterns()[0, 0], list("abcd"), "demo", 0, 0)
    with pytest.raises(ValueError, match=r"\[layers, heads, T, T\]"):
        plots.head_grid(np.zeros((3, 3)), "demo")
    with pytest.raises(ValueError, match="one fewer than the tokens"):
        plots.token_loss_bars(list("abc"), np.ones(3), "demo")


def test_loss_curves_overlay_train_and_val_on_a_log_axis():
    metrics = [{"step": s, "loss": 4 / s, "val_loss": 4.5 / s if s % 2 == 0 else None} for s in range(1, 11)]
    fig = plots.loss_curves({"a": metrics, "b": metrics}, log_y=True)
    assert [t.name for t in fig.data] == ["a train", "a val", "b train", "b val"]
    assert fig.layout.yaxis.type == "log"
    assert len(fig.data[1].x) == 5
    assert plots.loss_curves({"a": metrics}, log_y=False).layout.yaxis.type == "linear"


def test_training_figures_accept_live_metrics():
    metrics = [{"step": s, "loss": 3.0, "lr": 1e-3, "grad_norm": 1.0, "grad_norm_layers": [1.0, 0.5],
                "tokens_per_s": 1000.0} for s in range(1, 801)]
    grad = plots.grad_norm_heatmap(metrics, "demo", max_columns=400)
    assert grad.data[0].z.shape == (2, 400)
    assert plots.metric_curve(metrics, "lr", "demo", "learning rate").layout.yaxis.title.text == "learning rate"
    stats = [{"layer": l, "resid_std": 1.0, "attn_out_std": 0.5, "mlp_out_std": 0.7, "mlp_dead_frac": 0.1}
             for l in range(2)]
    assert "step 50" in plots.activation_stats_bars(stats, "demo", 50).layout.title.text


def test_scores_history_and_ablation_figures():
    scores = {n: np.full((2, 3), 0.5, np.float32) for n in plots.SCORE_NAMES}
    fig = plots.head_scores_heatmap(scores, np.ones((2, 3)), "demo", 100)
    assert list(fig.data[0].y) == [f"L{l} H{h}" for l in range(2) for h in range(3)]
    history = [{"step": s, "scores": {n: [[0.1] * 3] * 2 for n in plots.SCORE_NAMES}} for s in (0, 50)]
    assert "layer 1, head 2" in plots.head_history(history, 1, 2, "demo").layout.title.text
    assert len(plots.ablation_bars(np.zeros((2, 3)), "demo", 300).data) == 2


def test_prediction_figures_write_tokens_in_cells():
    tokens = list("abcab")
    top = [["a", "b"]] * 5
    fig = plots.predictions_heatmap(tokens, top, np.full((5, 2), 0.4), "demo")
    assert fig.data[0].z.shape == (2, 5) and fig.data[0].texttemplate == "%{text}"
    lens = {"rows": ["embed", "block 0"], "top_prob": np.full((2, 5), 0.3), "top_token": np.zeros((2, 5), int),
            "labels": [list("xxxxx")] * 2}
    fig = plots.logit_lens_heatmap(lens, tokens, "demo")
    assert list(fig.data[0].y) == ["embed", "block 0"] and "demo" in fig.layout.title.text


def test_candidates_bar_marks_the_chosen_token():
    step = SampleStep(token=1, text="b", prob=0.6, candidates=[("b", 0.6), ("a", 0.3)])
    fig = plots.candidates_bar(step.candidates, "b", "demo", 4, "T=1")
    assert list(fig.data[0].marker.color) == [plots.PALETTE[1], plots.PALETTE[0]]  # vermillion, blue
    assert "token 5" in fig.layout.title.text and fig.layout.xaxis.title.text == "probability"


def test_a_big_head_grid_shows_thumbnails_that_keep_a_one_token_stripe():
    # GPT-2 small: 12 x 12 heads on 128 tokens would send 2.4 M values; thumbnails send at most GRID_VALUES
    T = 128
    p = np.zeros((12, 12, T, T), np.float32)
    p[..., np.arange(1, T), np.arange(T - 1)] = 1.0  # every head attends to the previous token
    fig = plots.head_grid(p, "gpt2-small", labels=[["prev_token"] * 12] * 12, selected=(11, 11))
    cells = [t.z for t in fig.data if t.type == "heatmap"]
    assert len(cells) == 144 and sum(np.asarray(z).size for z in cells) <= plots.GRID_VALUES
    z = np.asarray(cells[0])
    assert (np.diag(z, -1) == 1).all() or (np.diag(z) == 1).all()  # the stripe survives at full strength
    assert "thumbnails" in fig.layout.title.text
    small = plots.head_grid(p[:2, :2, :16, :16], "tiny")
    assert np.asarray(small.data[0].z).shape == (16, 16) and "thumbnails" not in small.layout.title.text
