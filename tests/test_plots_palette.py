"""Colour-blind-safe charts (issue 11): every multi-line chart tells its lines apart by more than hue,
and every loss chart is the one loss figure, with EMA smoothing over the faint raw curve."""

import math

import numpy as np
import pytest

from tinyviz.analysis import plots
from tinyviz.experiments import sweep


def curve(n=200, offset=0.0, val_every=50, seed=0):
    rng = np.random.default_rng(seed)
    return [{"step": s, "loss": 3 + offset - math.log(s) * 0.3 + rng.normal(0, 0.05),
             **({"val_loss": 3.1 + offset - math.log(s) * 0.3} if s % val_every == 0 else {})} for s in range(1, n + 1)]


def identities(fig) -> list[tuple]:
    """(colour, dash, marker) of each drawn line or point series; the faint raw curves, filled bands and
    click overlays are backdrops, not series a reader tells apart."""
    out = []
    for t in fig.data:
        if t.meta in (plots.RAW, plots.OVERLAY) or t.type != "scatter" or t.fill == "toself":
            continue
        mode = t.mode or "lines"
        colour = t.line.color or t.marker.color
        out.append((colour, t.line.dash or "solid" if "lines" in mode else None,
                    t.marker.symbol or "circle" if "markers" in mode else None))
    return out


def bar_identities(fig) -> list[tuple]:
    return [(t.marker.color, t.marker.pattern.shape) for t in fig.data if t.type == "bar" and t.name != "dead fraction"]


def assert_distinct(ids):
    assert len(ids) > 1
    assert len(set(ids)) == len(ids), ids


@pytest.mark.parametrize("n_runs", [2, 8, 12])
def test_loss_curves_of_many_runs_differ_in_colour_or_dash(n_runs):
    runs = {f"run{i}": curve(offset=0.1 * i) for i in range(n_runs)}
    for smoothing in (0.0, 0.8):
        fig = plots.loss_curves(runs, smoothing=smoothing)
        assert_distinct(identities(fig))
        assert {c for c, _, _ in identities(fig)} <= set(plots.PALETTE)


def test_sweep_and_ablation_figures_are_the_one_loss_figure():
    metrics = {f"arm{i}": {s: curve(seed=s, offset=0.2 * i) for s in range(2)} for i in range(6)}
    fig = sweep.loss_figure(metrics, "t")
    assert_distinct(identities(fig))
    assert {c for c, _, _ in identities(fig)} <= set(plots.PALETTE)
    bands = [t for t in fig.data if t.fill == "toself"]
    assert len(bands) == 6  # the min-max over the two seeds of each arm


def test_head_history_lines_differ_in_colour_dash_and_marker():
    history = [{"step": s, "scores": {n: [[0.1 * k]] for k, n in enumerate(plots.SCORE_NAMES)}, "entropy": [[1.0]]}
               for s in (0, 100, 200)]
    ids = identities(plots.head_history(history, 0, 0, "r"))
    assert len(ids) == len(plots.SCORE_NAMES)
    assert_distinct(ids)
    assert len({c for c, _, _ in ids}) == len(ids) and len({d for _, d, _ in ids}) == len(ids)


def test_bar_series_differ_in_colour_and_fill_pattern():
    assert_distinct(bar_identities(plots.ablation_bars(np.ones((4, 2)), "r")))
    stats = [{"layer": l, "resid_std": 1.0, "attn_out_std": 0.5, "mlp_out_std": 0.7, "mlp_dead_frac": 0.0}
             for l in range(2)]
    assert_distinct(bar_identities(plots.activation_stats_bars(stats, "r")))


def test_ema_smooths_without_bias_and_zero_is_the_raw_curve():
    x = np.array([2.0, 2.0, 2.0, 2.0])
    assert np.allclose(plots.ema(x, 0.9), x)  # bias-corrected: a constant stays itself from the first point
    noisy = np.array([1.0, 3.0] * 50)
    assert np.array_equal(plots.ema(noisy, 0.0), noisy)
    assert plots.ema(noisy, 0.9)[-10:].std() < 0.2 * noisy.std()


def test_smoothed_loss_chart_keeps_the_raw_curve_faint_behind():
    fig = plots.loss_curves({"r": curve()}, smoothing=0.9)
    raw = [t for t in fig.data if t.meta == plots.RAW]
    smooth = next(t for t in fig.data if t.name == "r train")
    assert len(raw) == 1 and raw[0].opacity < 0.5 and fig.data.index(raw[0]) < fig.data.index(smooth)
    assert np.std(np.diff(smooth.y)) < np.std(np.diff(raw[0].y))


def test_single_line_charts_take_the_palette_not_plotlys_default_blue():
    metrics = [{"step": s, "lr": 1e-3 * s, "tokens_per_s": 1000.0 + s} for s in range(1, 50)]
    for key in ("lr", "tokens_per_s"):
        fig = plots.metric_curve(metrics, key, "demo", key)
        assert fig.data[0].line.color is None  # the colour comes from the layout, for every such chart
        assert tuple(fig.layout.colorway) == plots.PALETTE
