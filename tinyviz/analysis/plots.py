"""Figures for the app and for write-ups: pure functions, data -> ``plotly.graph_objects.Figure``.

No Streamlit and no I/O. Every figure has a title naming the run (and layer, head, step
where they apply), labelled axes and a colour scale. Token axes are numeric positions
with the tokens as tick labels, so a repeated token keeps its own row and column.
Shapes are checked against the tokens; a mismatch raises ``ValueError`` with a sentence.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tinyviz.analysis.probes import SCORE_NAMES

TEMPLATE = "plotly_white"
ATTN_SCALE = "Blues"
LOSS_SCALE = "Reds"
PROB_SCALE = "Greens"
OVERLAY = "click-overlay"  # meta of the invisible traces that make heatmaps clickable; export skips them
_SHORT = {"prev_token": "prev", "induction": "induction", "sink": "sink", "self": "self", "local": "local",
          "uniform": "uniform", "mixed": ""}
_CLICK_MARKERS = 8  # per axis of one small heatmap: enough targets to hit anywhere in it


def title(*parts) -> str:
    """'demo · layer 1, head 2 · step 300': the non-empty parts joined."""
    return " · ".join(str(p) for p in parts if p is not None and p is not False and p != "")


_for_svg = threading.local()


@contextlib.contextmanager
def for_svg():
    """Figures built inside (in this thread) are for tinyviz.analysis.svg, which does not read Plotly's template:
    they skip applying it, half the time of building a loss figure (22 -> 11 ms at 1,500 steps), which the live
    feed spends at every poll beside a training run."""
    before, _for_svg.on = getattr(_for_svg, "on", False), True
    try:
        yield
    finally:
        _for_svg.on = before


def _layout(fig: go.Figure, text: str, **kw) -> go.Figure:
    kw.setdefault("margin", dict(l=60, r=20, t=60, b=50))
    template = None if getattr(_for_svg, "on", False) else TEMPLATE
    # the title sits 28 px down, below the toolbar (which appears at the top right on hover) instead of under it
    # colorway: a trace without its own colour (single-line charts such as lr and tokens/s) takes the palette's
    # first colour, not plotly's default blue
    fig.update_layout(template=template, colorway=PALETTE,
                      title=dict(text=text, x=0, xanchor="left", font_size=15, yref="container", y=1, yanchor="top",
                                 pad=dict(t=28)), **kw)
    return fig


def _check_labels(labels: Sequence[str], n: int, what: str) -> None:
    if len(labels) != n:
        raise ValueError(f"{len(labels)} token labels do not match {what} over {n} positions.")


def _token_axis(labels: Sequence[str], max_ticks: int = 64) -> dict:
    """A numeric axis whose ticks are the tokens (every k-th when there are many)."""
    step = max(1, math.ceil(len(labels) / max_ticks))
    vals = list(range(0, len(labels), step))
    return dict(tickmode="array", tickvals=vals, ticktext=[labels[i] for i in vals], tickangle=0)


# -- training ---------------------------------------------------------------------------------

def thin(records: list[dict], max_points: int = 1000) -> list[dict]:
    """Every k-th record (and the last), so a long run's curve stays light to draw and send."""
    if len(records) <= max_points:
        return records
    k = math.ceil(len(records) / max_points)
    return records[::k] + ([records[-1]] if (len(records) - 1) % k else [])


# Okabe & Ito's colour-blind-safe categorical palette (https://jfly.uni-koeln.de/color/), yellow last
# (faint on white); with a dash and a marker per series, lines stay apart in grey scale too.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#E69F00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
MARKERS = ("circle", "square", "diamond", "triangle-up", "x", "cross", "star", "triangle-down")
PATTERNS = ("", "/", ".", "x", "\\", "+")  # bar fill patterns, the bars' second cue besides colour
RAW = "raw"  # meta of the faint unsmoothed curve drawn behind a smoothed one


def series_style(i: int) -> dict:
    """Series i's colour, dash and marker: no two of the first 24 series share both colour and dash."""
    return {"color": PALETTE[i % len(PALETTE)], "dash": DASHES[i % len(DASHES)], "symbol": MARKERS[i % len(MARKERS)]}


def ema(values: Sequence[float], smoothing: float) -> np.ndarray:
    """Exponential moving average with weight `smoothing` on the past (0 = the raw values), bias-corrected
    as TensorBoard does, so the first points are not pulled towards 0."""
    x = np.asarray(values, dtype=float)
    if smoothing <= 0 or len(x) == 0:
        return x
    out, acc = np.empty_like(x), 0.0
    for i, v in enumerate(x):
        acc = smoothing * acc + (1 - smoothing) * v
        out[i] = acc / (1 - smoothing ** (i + 1))
    return out


def loss_figure(groups: dict[str, list[list[dict]]], log_y: bool = True, smoothing: float = 0.0,
                title_text: str | None = None, max_points: int = 1000, val_suffix: str = " val",
                train_suffix: str = " train", **layout) -> go.Figure:
    """THE loss chart (Train, Compare, ablations, sweeps): per group (a run, or an arm's seeds), the train
    loss smoothed by an EMA (``smoothing`` in [0, 1)) over the raw curve drawn faint, and the val loss
    with markers; a group of several seeds is drawn as their mean with a min-max band. Group i has
    ``series_style(i)``. Curves longer than max_points are thinned after smoothing."""
    fig = go.Figure()
    for i, (name, seeds) in enumerate(groups.items()):
        style = series_style(i)
        colour, rgb = style["color"], tuple(int(style["color"][j:j + 2], 16) for j in (1, 3, 5))
        runs = [[m for m in ms if m.get("loss") is not None] for ms in seeds]
        runs = [r for r in runs if r]
        if not runs:
            continue
        longest = max(runs, key=len)
        steps = np.array([m["step"] for m in longest])
        loss = np.full((len(runs), len(steps)), np.nan)
        for r, ms in enumerate(runs):
            loss[r, :len(ms)] = [m["loss"] for m in ms]
        mean = np.nanmean(loss, 0) if len(runs) > 1 else loss[0]
        keep = np.unique(np.r_[np.arange(0, len(steps), max(1, math.ceil(len(steps) / max_points))), len(steps) - 1])
        x = steps[keep].tolist()
        if len(runs) > 1:
            lo, hi = np.nanmin(loss, 0)[keep], np.nanmax(loss, 0)[keep]
            fig.add_scatter(x=x + x[::-1], y=np.r_[hi, lo[::-1]].tolist(), fill="toself", mode="none", meta=RAW,
                            fillcolor=f"rgba({rgb[0]},{rgb[1]},{rgb[2]},0.15)", legendgroup=name, showlegend=False,
                            hoverinfo="skip", name=f"{name} min-max")
        if smoothing > 0:  # the raw curve stays visible, faint, behind the smoothed one
            fig.add_scatter(x=x, y=mean[keep].tolist(), mode="lines", name=f"{name}{train_suffix} (raw)", meta=RAW,
                            line=dict(color=colour, width=1, dash=style["dash"]), opacity=0.25, legendgroup=name,
                            showlegend=False, hoverinfo="skip")
        fig.add_scatter(x=x, y=ema(mean, smoothing)[keep].tolist(), mode="lines", name=f"{name}{train_suffix}",
                        line=dict(color=colour, width=1.6, dash=style["dash"]), legendgroup=name,
                        hovertemplate=f"{name}" + " step %{x}: train %{y:.3f}<extra></extra>")
        vals: dict[int, list[float]] = {}
        for ms in seeds:
            for m in ms:
                if m.get("val_loss") is not None:
                    vals.setdefault(m["step"], []).append(m["val_loss"])
        if vals:
            vs = sorted(vals)
            fig.add_scatter(x=vs, y=[sum(vals[s]) / len(vals[s]) for s in vs], mode="lines+markers",
                            name=f"{name}{val_suffix}", legendgroup=name,
                            line=dict(color=colour, width=2.5, dash=style["dash"]),
                            marker=dict(size=7, symbol=style["symbol"], color=colour),
                            hovertemplate=f"{name}" + " step %{x}: val %{y:.3f}<extra></extra>")
    default = title("Loss", ", ".join(groups)) if len(groups) > 1 else title("Loss", *groups)
    layout.setdefault("height", 380)
    layout.setdefault("legend", dict(orientation="h", y=-0.2))
    _layout(fig, title_text or default, xaxis_title="step", yaxis_title="cross-entropy (nats)", **layout)
    fig.update_yaxes(type="log" if log_y else "linear")
    return fig


def loss_curves(runs: dict[str, list[dict]], log_y: bool = True, title_text: str | None = None,
                smoothing: float = 0.0) -> go.Figure:
    """Train loss (smoothed line over the faint raw one) and val loss (markers) of one or more runs."""
    return loss_figure({name: [metrics] for name, metrics in runs.items()}, log_y, smoothing, title_text)


def metric_curve(metrics: list[dict], key: str, run: str, label: str, log_y: bool = False) -> go.Figure:
    """One scalar per step (lr, tokens_per_s, grad_norm...) as a line."""
    recs = thin([m for m in metrics if m.get(key) is not None])
    fig = go.Figure(go.Scatter(x=[m["step"] for m in recs], y=[m[key] for m in recs], mode="lines", name=label))
    _layout(fig, title(label, run), xaxis_title="step", yaxis_title=label, height=300)
    fig.update_yaxes(type="log" if log_y else "linear")
    return fig


def grad_norm_heatmap(metrics: list[dict], run: str, max_columns: int = 400) -> go.Figure:
    """Gradient norm per block (rows) over steps (columns), thinned to at most max_columns steps."""
    recs = [m for m in metrics if m.get("grad_norm_layers")]
    recs = recs[:: max(1, math.ceil(len(recs) / max_columns))]
    z = np.array([m["grad_norm_layers"] for m in recs], dtype=float).T if recs else np.zeros((0, 0))
    fig = go.Figure(go.Heatmap(
        z=z, x=[m["step"] for m in recs], y=[f"block {l}" for l in range(z.shape[0])],
        colorscale="Viridis", colorbar=dict(title="grad norm"),
        hovertemplate="step %{x}<br>%{y}<br>grad norm %{z:.3g}<extra></extra>",
    ))
    _layout(fig, title("Gradient norm per layer", run), xaxis_title="step", yaxis_title="layer",
            height=140 + 40 * max(1, z.shape[0]))
    fig.update_yaxes(autorange="reversed")
    return fig


def activation_stats_bars(act_stats: list[dict], run: str, step: int | None = None) -> go.Figure:
    """Per layer: std of the residual stream, attention and MLP outputs, and the dead-unit fraction."""
    layers = [f"block {s['layer']}" for s in act_stats]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("output std", "MLP units never active"))
    for i, (key, name) in enumerate((("resid_std", "residual"), ("attn_out_std", "attention out"),
                                     ("mlp_out_std", "MLP out"))):
        fig.add_bar(x=layers, y=[s[key] for s in act_stats], name=name, row=1, col=1,
                    marker=dict(color=PALETTE[i], pattern_shape=PATTERNS[i]))
    fig.add_bar(x=layers, y=[s["mlp_dead_frac"] for s in act_stats], name="dead fraction",
                marker_color="#7f7f7f", row=1, col=2)
    _layout(fig, title("Activation statistics of the probe prompt", run, step is not None and f"step {step}"),
            height=320, barmode="group", legend=dict(orientation="h", y=-0.25))
    fig.update_yaxes(title_text="std", row=1, col=1)
    fig.update_yaxes(title_text="fraction", range=[0, 1], row=1, col=2)
    if act_stats and all(s["mlp_dead_frac"] == 0 for s in act_stats):  # zero-height bars read as a blank chart
        fig.add_annotation(text="none: every MLP unit fires on this prompt", x=0.5, y=0.5, xref="x2 domain",
                           yref="y2 domain", showarrow=False, font=dict(size=13, color="#555"))
    return fig


# -- heads -----------------------------------------------------------------------------------

def _check_patterns(patterns: np.ndarray) -> np.ndarray:
    p = np.asarray(patterns, dtype=np.float32)
    if p.ndim != 4 or p.shape[-1] != p.shape[-2]:
        raise ValueError(f"attention patterns must be [layers, heads, T, T]; got shape {list(p.shape)}.")
    return p


GRID_VALUES = 400_000  # attention values one head grid sends at most; beyond, cells become thumbnails


def thumbnails(p: np.ndarray, budget: int = GRID_VALUES) -> tuple[np.ndarray, int]:
    """Patterns [L, H, T, T] shrunk so that all of them hold at most ``budget`` values: each f x f block
    becomes its maximum (a sharp one-token stripe stays visible, a mean would fade it). Returns
    (thumbnails [L, H, ceil(T/f), ceil(T/f)], f); f = 1 leaves them as they are."""
    L, H, T = p.shape[0], p.shape[1], p.shape[-1]
    f = 1
    while L * H * (-(-T // f)) ** 2 > budget and f < T:
        f += 1
    if f == 1:
        return p, 1
    n = -(-T // f)
    padded = np.zeros((L, H, n * f, n * f), dtype=p.dtype)
    padded[..., :T, :T] = p
    return padded.reshape(L, H, n, f, n, f).max(axis=(3, 5)), f


def head_grid(patterns: np.ndarray, run: str, step: int | None = None,
              labels: list[list[str]] | None = None, selected: tuple[int, int] | None = None) -> go.Figure:
    """Every head's pattern [L, H, T, T] as a grid of small heatmaps, clickable.

    Heatmaps emit no click events in Streamlit, so each cell carries an invisible scatter of
    square markers whose ``customdata`` is ``[layer, head]`` (plain lists, not arrays). A big grid
    (e.g. GPT-2 small's 12 x 12 heads on 128 tokens) shows thumbnails (``thumbnails``) so the page
    stays light; the clicked head's own heatmap is always full size.
    """
    p, pooled = thumbnails(_check_patterns(patterns))
    L, H, T = p.shape[0], p.shape[1], p.shape[-1]
    names = [f"L{l}H{h} " + (_SHORT.get(labels[l][h], labels[l][h]) if labels else "")
             for l in range(L) for h in range(H)]
    # beyond 6 columns a label no longer fits over its cell (GPT-2 small has 12): the titles keep the
    # head's name and the label moves to the hover text and the table below
    titles = names if H <= 6 else [f"L{l}H{h}" for l in range(L) for h in range(H)]
    fig = make_subplots(rows=L, cols=H, subplot_titles=titles, horizontal_spacing=0.02,
                        vertical_spacing=min(0.1, 0.4 / L))
    n = min(T, _CLICK_MARKERS)
    centres = ((np.arange(n) + 0.5) * T / n - 0.5).tolist()
    xs = [x for _ in centres for x in centres]
    ys = [y for y in centres for _ in centres]
    for l in range(L):
        for h in range(H):
            fig.add_trace(go.Heatmap(z=p[l, h], coloraxis="coloraxis", hoverinfo="skip"), row=l + 1, col=h + 1)
            fig.add_trace(go.Scatter(
                x=xs, y=ys, mode="markers", meta=OVERLAY, showlegend=False,
                marker=dict(symbol="square", size=22, color="rgba(0,0,0,0)"),
                customdata=[[l, h]] * len(xs), text=[names[l * H + h]] * len(xs),
                hovertemplate="%{text}<br>click to open<extra></extra>",
            ), row=l + 1, col=h + 1)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, range=[-0.5, T - 0.5], constrain="domain")
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, range=[T - 0.5, -0.5], constrain="domain")
    for i in range(L * H):  # square cells whatever the chart's width
        fig.layout[f"yaxis{i + 1 if i else ''}"].scaleanchor = f"x{i + 1 if i else ''}"
    if selected is not None:
        l, h = selected
        ref = "" if l * H + h == 0 else str(l * H + h + 1)
        fig.add_shape(type="rect", xref=f"x{ref} domain", yref=f"y{ref} domain", x0=0, x1=1, y0=0, y1=1,
                      line=dict(color="#d62728", width=3))
    heading = "All heads" + (f" ({pooled}x{pooled}-block max thumbnails)" if pooled > 1 else "")
    _layout(fig, title(heading, run, step is not None and f"step {step}"),
            height=80 + L * int(min(200, max(48, 560 / H))),
            coloraxis=dict(colorscale=ATTN_SCALE, cmin=0, cmax=1, showscale=False),
            margin=dict(l=10, r=10, t=60, b=10),
            hovermode="closest", clickmode="event+select", dragmode=False)
    fig.update_annotations(font_size=11 if H <= 6 else 9)
    return fig


TOKEN_VIEW_CLICKS = 6000  # cells of the head view with a click target each; a bigger model picks on the buttons
QUERY_COLOUR = "#D55E00"  # Okabe-Ito vermillion: apart from the blue attention scale for every colour vision
FUTURE_COLOUR = "#d9d9d9"  # keys after the query in a causal model: the head cannot see them


def query_rows(patterns: np.ndarray, query: int, causal: bool = True) -> np.ndarray:
    """[L, H, T]: where token ``query`` attends in every head (row ``query`` of each pattern); in a causal
    model the keys after it are NaN (masked: it cannot see them)."""
    p = _check_patterns(patterns)
    T = p.shape[-1]
    if not 0 <= query < T:
        raise ValueError(f"token position {query} is outside the prompt's {T} tokens.")
    rows = p[:, :, query, :].astype(np.float32)  # a copy: the NaNs below never reach the patterns
    if causal:
        rows[..., query + 1:] = np.nan
    return rows


def token_view(patterns: np.ndarray, tokens: Sequence[str], query: int, run: str, step: int | None = None,
               labels: list[list[str]] | None = None, causal: bool = True) -> go.Figure:
    """bertviz's head view on tinyviz's grid: where one token (``query``) attends in every head at once.

    One panel per layer (one under the other), one row per head, one column per key token of the prompt;
    the colour is the attention weight (the same 0..1 single-hue scale as the head heatmaps); the query's
    column is outlined, its tick label marked; keys a causal model cannot see are grey."""
    rows = query_rows(patterns, query, causal)
    L, H, T = rows.shape
    _check_labels(tokens, T, "the attention patterns")
    row_px = 20 if H <= 4 else 14 if H <= 8 else 10
    names = [[f"H{h} " + (_SHORT.get(labels[l][h], labels[l][h]) if labels else "") for h in range(H)]
             for l in range(L)]
    gap = 46  # px between layers: the key labels of one and the title of the next
    plot_px = L * H * row_px + (L - 1) * gap
    fig = make_subplots(rows=L, cols=1, shared_xaxes=True, subplot_titles=[f"layer {l}" for l in range(L)],
                        vertical_spacing=gap / plot_px if L > 1 else 0)
    keys = np.array([f"{i} {tok!r}" for i, tok in enumerate(tokens)], dtype=object)
    hover = np.broadcast_to(keys, (H, T))  # [H, T]: the key of each cell
    q = f"{query} {tokens[query]!r}"
    clickable = L * H * T <= TOKEN_VIEW_CLICKS
    for l in range(L):
        fig.add_trace(go.Heatmap(
            # a list, so the masked keys reach the browser as null (a typed array cannot hold them)
            z=rows[l].tolist(), x=list(range(T)), y=list(range(H)), coloraxis="coloraxis", customdata=hover,
            text=[[f"L{l}{names[l][h]}".strip()] * T for h in range(H)],
            hovertemplate="%{text}<br>query " + q.replace("%", "%%") + "<br>key %{customdata}<br>"
                          "weight %{z:.3f}<extra></extra>", hoverongaps=False,
            hoverinfo="skip" if clickable else None,
        ), row=l + 1, col=1)
        if clickable:  # heatmaps send no clicks: an invisible marker on each cell names its key ([key])
            fig.add_trace(go.Scatter(
                x=[k for _ in range(H) for k in range(T)], y=[h for h in range(H) for _ in range(T)],
                mode="markers", meta=OVERLAY, showlegend=False,
                marker=dict(symbol="square", size=max(6, min(row_px, 900 // T)), color="rgba(0,0,0,0)"),
                customdata=[[k] for _ in range(H) for k in range(T)],
                text=[f"L{l}{names[l][h]}".strip() + f"<br>query {q}<br>key {keys[k]}<br>" +
                      ("cannot see it (later)" if np.isnan(rows[l, h, k]) else f"weight {rows[l, h, k]:.3f}")
                      for h in range(H) for k in range(T)],
                hovertemplate="%{text}<br>click: make it the query<extra></extra>",
            ), row=l + 1, col=1)
        fig.add_vrect(x0=query - 0.5, x1=query + 0.5, line=dict(color=QUERY_COLOUR, width=2.5), row=l + 1, col=1)
        fig.update_yaxes(tickmode="array", tickvals=list(range(H)), ticktext=names[l], autorange="reversed",
                         showgrid=False, zeroline=False, tickfont_size=10 if H <= 8 else 8, row=l + 1, col=1)
    axis = _token_axis(tokens, 128 if max(map(len, tokens)) <= 2 else 64)  # characters fit twice as many labels
    if query not in axis["tickvals"]:  # the query's own label is always shown
        axis["tickvals"] = sorted([*axis["tickvals"], query])
    axis["ticktext"] = [f"<b><span style='color:{QUERY_COLOUR}'>{tokens[i]}</span></b>" if i == query else tokens[i]
                        for i in axis["tickvals"]]
    fig.update_xaxes(range=[-0.5, T - 0.5], showgrid=False, zeroline=False, tickfont_size=9 if T > 40 else 11,
                     showticklabels=True, **axis)
    fig.update_xaxes(title_text="key (attended-to token)", row=L, col=1)
    _layout(fig, title(f"Where {tokens[query]!r} (position {query}) attends, in every head", run,
                       step is not None and f"step {step}"),
            height=plot_px + 150, plot_bgcolor=FUTURE_COLOUR if causal else "white",
            coloraxis=dict(colorscale=ATTN_SCALE, cmin=0, cmax=1,
                           colorbar=dict(title="weight", thickness=12, len=min(1.0, 300 / plot_px),
                                         y=1, yanchor="top")),
            margin=dict(l=70, r=20, t=70, b=50), hovermode="closest", clickmode="event+select", dragmode=False)
    fig.update_annotations(font_size=12, x=0, xanchor="left")
    return fig


def head_heatmap(pattern: np.ndarray, tokens: Sequence[str], run: str, layer: int, head: int,
                 step: int | None = None, label: str | None = None) -> go.Figure:
    """One head's pattern [T, T] with the prompt's tokens on both axes and the weight on hover."""
    p = np.asarray(pattern, dtype=np.float32)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ValueError(f"a head's pattern must be [T, T]; got shape {list(p.shape)}.")
    _check_labels(tokens, p.shape[0], "the pattern")
    T = len(tokens)
    labels = np.array([f"{i} {tok!r}" for i, tok in enumerate(tokens)])
    # [T, T, 2] (query, key) labels for the hover; a numpy array, as a nested list of T*T
    # pairs takes plotly's validators ten times longer (this is the big heatmap, not clickable)
    hover = np.stack(np.broadcast_arrays(labels[:, None], labels[None, :]), axis=-1)
    fig = go.Figure(go.Heatmap(
        z=p, x=list(range(T)), y=list(range(T)), colorscale=ATTN_SCALE, zmin=0, zmax=1,
        colorbar=dict(title="weight", thickness=14, len=0.8, y=1, yanchor="top"), customdata=hover,
        hovertemplate="query %{customdata[0]}<br>key %{customdata[1]}<br>weight %{z:.3f}<extra></extra>",
    ))
    font = 9 if T > 40 else 12
    _layout(fig, title(run, f"layer {layer}, head {head}", step is not None and f"step {step}", label),
            xaxis=dict(title="key (attended-to token)", tickfont_size=font, **_token_axis(tokens, 40)),
            yaxis=dict(title="query (attending token)", autorange="reversed", tickfont_size=font,
                       scaleanchor="x", constrain="domain", constraintoward="top", **_token_axis(tokens, 40)),
            height=600, margin=dict(l=70, r=10, t=60, b=60))
    fig.update_xaxes(constrain="domain")
    return fig


def head_scores_heatmap(scores: dict[str, np.ndarray], entropy: np.ndarray, run: str,
                        step: int | None = None) -> go.Figure:
    """Every head (rows) by pattern score (columns), value written in each cell; entropy in nats last."""
    names = [n for n in SCORE_NAMES if n in scores]
    z = np.stack([np.asarray(scores[n], dtype=float) for n in names], -1)  # [L, H, K]
    L, H = z.shape[:2]
    ent = np.asarray(entropy, dtype=float).reshape(L, H, 1)
    heads = [f"L{l} H{h}" for l in range(L) for h in range(H)]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.85, 0.15], horizontal_spacing=0.04)
    fig.add_trace(go.Heatmap(z=z.reshape(L * H, -1), x=list(names), y=heads, colorscale="Purples", zmin=0, zmax=1,
                             text=np.round(z.reshape(L * H, -1), 2), texttemplate="%{text}",
                             colorbar=dict(title="score", x=1.02),
                             hovertemplate="%{y}<br>%{x}: %{z:.3f}<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Heatmap(z=ent.reshape(L * H, 1), x=["entropy"], y=heads, colorscale="Greys",
                             text=np.round(ent.reshape(L * H, 1), 2), texttemplate="%{text}", showscale=False,
                             hovertemplate="%{y}<br>entropy %{z:.3f} nats<extra></extra>"), row=1, col=2)
    _layout(fig, title("Head pattern scores", run, step is not None and f"step {step}"),
            height=120 + 26 * L * H)
    fig.update_yaxes(autorange="reversed", title_text="head", row=1, col=1)
    fig.update_yaxes(autorange="reversed", showticklabels=False, row=1, col=2)
    fig.update_xaxes(title_text="score (0..1)", row=1, col=1)
    fig.update_xaxes(title_text="nats", row=1, col=2)
    return fig


def head_history(history: list[dict], layer: int, head: int, run: str) -> go.Figure:
    """One head's scores over training from snapshots [{"step", "scores": {name: [L][H]}, "entropy"}]."""
    steps = [s["step"] for s in history]
    fig = go.Figure()
    for name in SCORE_NAMES:
        if history and name in history[0]["scores"]:
            sty = series_style(SCORE_NAMES.index(name))
            fig.add_scatter(x=steps, y=[s["scores"][name][layer][head] for s in history], mode="lines+markers",
                            name=name, line=dict(color=sty["color"], dash=sty["dash"]),
                            marker=dict(symbol=sty["symbol"], size=7))
    _layout(fig, title("How the head formed", run, f"layer {layer}, head {head}"), xaxis_title="training step",
            yaxis_title="score (0..1)", height=320, legend=dict(orientation="h", y=-0.25))
    fig.update_yaxes(range=[0, 1])
    return fig


def ablation_bars(deltas: np.ndarray, run: str, step: int | None = None) -> go.Figure:
    """The loss increase [L, H] on the prompt when each head alone is zero-ablated, grouped by layer."""
    d = np.asarray(deltas, dtype=float)
    if d.ndim != 2:
        raise ValueError(f"ablation deltas must be [layers, heads]; got shape {list(d.shape)}.")
    fig = go.Figure()
    for l in range(d.shape[0]):
        fig.add_bar(x=[f"H{h}" for h in range(d.shape[1])], y=d[l], name=f"layer {l}",
                    marker=dict(color=PALETTE[l % len(PALETTE)], pattern_shape=PATTERNS[l % len(PATTERNS)]),
                    hovertemplate=f"layer {l}, " + "%{x}: %{y:+.3f} nats<extra></extra>")
    _layout(fig, title("Loss change when one head is zeroed", run, step is not None and f"weights of step {step}"),
            xaxis_title="head", yaxis_title="loss change (nats)", barmode="group", height=320,
            legend=dict(orientation="h", y=-0.25))
    return fig


# -- predictions ------------------------------------------------------------------------------

PRED_COLUMNS = 32  # positions the top-k heatmap shows at once: enough room for each cell's token to be read


def predictions_heatmap(tokens: Sequence[str], top_tokens: list[list[str]], top_probs: np.ndarray,
                        run: str, step: int | None = None, start: int = 0,
                        width: int | None = PRED_COLUMNS) -> go.Figure:
    """For each position (columns), the k likeliest next tokens (rows, best first) written in cells; only
    positions start .. start+width-1 (all when width is None), so each cell's text stays readable."""
    probs = np.asarray(top_probs, dtype=float)  # [T, k]
    _check_labels(tokens, probs.shape[0], "the predictions")
    T, k = probs.shape
    nxt = [tokens[i + 1] if i + 1 < T else "(end)" for i in range(T)]
    start = max(0, min(start, T - 1))
    cols = list(range(start, T if width is None else min(T, start + width)))
    fig = go.Figure(go.Heatmap(
        z=probs[cols].T, x=cols, y=[f"#{r + 1}" for r in range(k)], colorscale=PROB_SCALE, zmin=0, zmax=1,
        text=np.array(top_tokens, dtype=object)[cols].T, texttemplate="%{text}", textfont_size=12,
        customdata=[[[f"{i} {tokens[i]!r}", nxt[i]] for i in cols] for _ in range(k)],
        colorbar=dict(title="probability"),
        hovertemplate="after %{customdata[0]}<br>%{y}: %{text!r} p=%{z:.3f}<br>actual next %{customdata[1]}"
                      "<extra></extra>",
    ))
    shown = "" if len(cols) == T else f"positions {cols[0]}-{cols[-1]} of {T}"
    axis = _token_axis([tokens[i] for i in cols])
    axis["tickvals"] = [cols[v] for v in axis["tickvals"]]
    _layout(fig, title(f"Top-{k} next-token predictions", run, step is not None and f"step {step}", shown),
            height=140 + 34 * k, xaxis=dict(title="position (current token)", **axis), yaxis_title="rank")
    fig.update_yaxes(autorange="reversed")
    return fig


def token_loss_bars(tokens: Sequence[str], losses: np.ndarray, run: str, step: int | None = None) -> go.Figure:
    """The loss of each actual next token (tokens[1:]), coloured by the loss."""
    loss = np.asarray(losses, dtype=float)
    _check_labels(tokens, loss.shape[0] + 1, "the per-token losses (one fewer than the tokens)")
    targets = list(tokens[1:])
    fig = go.Figure(go.Bar(
        x=list(range(1, len(tokens))), y=loss, marker=dict(color=loss, colorscale=LOSS_SCALE, cmin=0,
                                                           colorbar=dict(title="nats")),
        customdata=targets, hovertemplate="predicting %{customdata!r} at %{x}<br>loss %{y:.3f} nats<extra></extra>",
    ))
    _layout(fig, title("Loss of each actual next token", run, step is not None and f"step {step}",
                       f"mean {loss.mean():.3f} nats"),
            xaxis=dict(title="position of the predicted token", **_token_axis(["", *targets])),
            yaxis_title="cross-entropy (nats)", height=340)
    return fig


def logit_lens_heatmap(lens: dict, tokens: Sequence[str], run: str, step: int | None = None) -> go.Figure:
    """Rows: the residual stream after each block (logit_lens "rows"); columns: positions; each cell
    shows the top next token read out there, coloured by its probability."""
    probs = np.asarray(lens["top_prob"], dtype=float)  # [L+1, T]
    _check_labels(tokens, probs.shape[1], "the logit lens")
    labels = lens.get("labels") or [[str(i) for i in row] for row in lens["top_token"]]
    T = probs.shape[1]
    fig = go.Figure(go.Heatmap(
        z=probs, x=list(range(T)), y=lens["rows"], colorscale=PROB_SCALE, zmin=0, zmax=1,
        text=np.array(labels, dtype=object), texttemplate="%{text}", textfont_size=11,
        customdata=[[f"{i} {tokens[i]!r}" for i in range(T)] for _ in lens["rows"]],
        colorbar=dict(title="probability"),
        hovertemplate="after %{customdata}<br>%{y}: top %{text!r} p=%{z:.3f}<extra></extra>",
    ))
    _layout(fig, title("Logit lens: top next token after each layer", run, step is not None and f"step {step}"),
            xaxis=dict(title="position (current token)", **_token_axis(tokens)), yaxis_title="read out after",
            height=160 + 40 * len(lens["rows"]))
    fig.update_yaxes(autorange="reversed")
    return fig


# -- sampling ---------------------------------------------------------------------------------

def candidates_bar(candidates: list[tuple[str, float]], chosen: str, run: str, index: int,
                   settings: str = "") -> go.Figure:
    """The top candidates of one generated step; the chosen token in red."""
    names = [c for c, _ in candidates]
    colours = [PALETTE[1] if c == chosen else PALETTE[0] for c in names]
    fig = go.Figure(go.Bar(x=[p for _, p in candidates], y=[repr(c) for c in names], orientation="h",
                           marker_color=colours, text=[f"{p:.3f}" for _, p in candidates], textposition="auto",
                           hovertemplate="%{y}: p=%{x:.3f}<extra></extra>"))
    _layout(fig, title(f"Candidates at generated token {index + 1} (chose {chosen!r})", run, settings),
            xaxis=dict(title="probability", range=[0, 1]), yaxis_title="token", height=140 + 32 * len(names))
    fig.update_yaxes(autorange="reversed")
    return fig


# -- training dynamics: one x axis for every figure, the kept steps spaced evenly --------------------
def _step_axis(steps: Sequence[int], max_ticks: int = 16) -> dict:
    """An x axis over the kept steps at positions 0..S-1 (dense early steps get as much room as late ones)."""
    every = max(1, math.ceil(len(steps) / max_ticks))
    idx = list(range(0, len(steps), every))
    return dict(tickmode="array", tickvals=idx, ticktext=[str(steps[i]) for i in idx],
                title="training step (kept steps, evenly spaced)", range=[-0.5, len(steps) - 0.5])


def step_position(steps: Sequence[int], step: float) -> float:
    """Where any step falls on the kept-step axis (linear between kept steps)."""
    return float(np.interp(step, steps, np.arange(len(steps))))


def _mark(fig: go.Figure, steps: Sequence[int], marks: dict[str, int | None], **kw) -> None:
    """Dashed lines at the marked steps; the earliest label sits left of its line, the others right,
    so two close marks (a phase change and a loss bump) do not print over each other."""
    shown = [s for s in marks.values() if s is not None]
    for (label, step), colour in zip(marks.items(), PALETTE[1:4]):
        if step is not None:
            side = "top left" if len(shown) > 1 and step == min(shown) else "top right"
            fig.add_vline(x=step_position(steps, step), line_dash="dash", line_color=colour, line_width=2,
                          annotation_text=f"{label} (step {step})", annotation_position=side,
                          annotation_font_color=colour, **kw)


def head_timeline(steps: Sequence[int], rows: list[dict], run: str, marks: dict[str, int | None] | None = None,
                  selected: tuple[int, int, int] | None = None) -> go.Figure:
    """Heads (rows) x kept steps (columns), coloured by each head's label score over its threshold (1 =
    at the threshold); a star where it first reached it. Cells are clickable (customdata [layer, head,
    step]). rows as from analysis.dynamics.head_timeline."""
    S = len(steps)
    names = [f"L{r['layer']}H{r['head']} {r['label']}" + ("" if r.get("named", True) else "?") for r in rows]
    z = np.array([np.clip(np.asarray(r["score"]) / r["threshold"], 0, 2) for r in rows])  # [heads, S]
    text = [[f"{names[i]}<br>step {steps[j]}: {rows[i]['label']} score {rows[i]['score'][j]:.2f} "
             f"(threshold {rows[i]['threshold']})" for j in range(S)] for i in range(len(rows))]
    fig = go.Figure(go.Heatmap(z=z, x=list(range(S)), y=list(range(len(rows))), text=text,
                               hovertemplate="%{text}<extra></extra>", zmin=0, zmax=2,
                               colorscale=[[0, "#f7fbff"], [0.45, "#9ecae1"], [0.5, "#fdae6b"], [1, "#a63603"]],
                               colorbar=dict(title="score /<br>threshold", tickvals=[0, 1, 2])))
    xs = [j for _ in rows for j in range(S)]
    ys = [i for i in range(len(rows)) for _ in range(S)]
    fig.add_scatter(x=xs, y=ys, mode="markers", meta=OVERLAY, showlegend=False, hoverinfo="skip",
                    marker=dict(symbol="square", size=14, color="rgba(0,0,0,0)"),
                    customdata=[[rows[i]["layer"], rows[i]["head"], steps[j]] for i, j in zip(ys, xs)])
    crossed = [(step_position(steps, r["crossed"]), i) for i, r in enumerate(rows) if r["crossed"] is not None]
    if crossed:
        fig.add_scatter(x=[c[0] for c in crossed], y=[c[1] for c in crossed], mode="markers", name="first crossing",
                        marker=dict(symbol="star", size=13, color="#111", line=dict(color="#fff", width=1)),
                        hovertemplate="first at or over its threshold<extra></extra>")
    if selected is not None:
        l, h, step = selected
        i = next((k for k, r in enumerate(rows) if (r["layer"], r["head"]) == (l, h)), None)
        if i is not None and step in steps:
            j = list(steps).index(step)
            fig.add_shape(type="rect", x0=j - 0.5, x1=j + 0.5, y0=i - 0.5, y1=i + 0.5,
                          line=dict(color="#111", width=2))
    _mark(fig, steps, marks or {})
    _layout(fig, title("Head timeline", run, "label score over training"), height=120 + 26 * len(rows),
            xaxis=_step_axis(steps), hovermode="closest", clickmode="event+select", dragmode=False,
            legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    fig.update_yaxes(tickmode="array", tickvals=list(range(len(rows))), ticktext=names, autorange="reversed")
    return fig


def importance_over_training(steps: Sequence[int], imp: np.ndarray, run: str, on: str,
                             marks: dict[str, int | None] | None = None) -> go.Figure:
    """Loss change when each head alone is zero-ablated [S, L, H] as heads x kept steps (red: the loss
    rises without it, the head matters)."""
    S, L, H = imp.shape
    z = imp.reshape(S, L * H).T
    names = [f"L{l}H{h}" for l in range(L) for h in range(H)]
    vmax = max(1e-3, float(np.abs(z).max()))
    fig = go.Figure(go.Heatmap(z=z, x=list(range(S)), y=names, zmid=0, zmin=-vmax, zmax=vmax, colorscale="RdBu_r",
                               customdata=[[steps[j] for j in range(S)] for _ in names],
                               hovertemplate="%{y} at step %{customdata}: loss %{z:+.3f} nats without it"
                                             "<extra></extra>",
                               colorbar=dict(title="Δ loss")))
    _mark(fig, steps, marks or {})
    _layout(fig, title("Head importance over training", run, f"zero-ablation loss change on {on}"),
            height=120 + 24 * L * H, xaxis=_step_axis(steps))
    fig.update_yaxes(autorange="reversed")
    return fig


def icl_over_training(steps: Sequence[int], icl: np.ndarray, metrics: list[dict], run: str,
                      marks: dict[str, int | None] | None = None) -> go.Figure:
    """The in-context-learning score at each kept step and the training loss, on the kept-step axis."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    x = np.arange(len(steps))
    fig.add_scatter(x=x, y=icl, mode="lines+markers", name="ICL score (late - early loss)", line_color=PALETTE[0],
                    customdata=list(steps), hovertemplate="step %{customdata}: ICL %{y:.3f} nats<extra></extra>")
    pts = [m for m in thin([m for m in metrics if m.get("loss") is not None], 600) if m["step"] <= steps[-1]]
    if pts:
        fig.add_scatter(x=[step_position(steps, m["step"]) for m in pts], y=[m["loss"] for m in pts], mode="lines",
                        name="training loss", line=dict(color=PALETTE[1], width=1, dash="dot"), opacity=0.7,
                        customdata=[m["step"] for m in pts], secondary_y=True,
                        hovertemplate="step %{customdata}: loss %{y:.3f}<extra></extra>")
    _mark(fig, steps, marks or {})
    _layout(fig, title("In-context learning over training", run), height=340, xaxis=_step_axis(steps),
            legend=dict(orientation="h", y=-0.3))
    fig.update_yaxes(title_text="ICL score (nats)", secondary_y=False)
    fig.update_yaxes(title_text="training loss", secondary_y=True, showgrid=False)
    return fig


def loss_by_position_over_training(steps: Sequence[int], loss_pos: np.ndarray, run: str) -> go.Figure:
    """Validation loss at each position (rows) at each kept step (columns)."""
    S, P = loss_pos.shape
    fig = go.Figure(go.Heatmap(z=loss_pos.T, x=list(range(S)), y=list(range(1, P + 1)), colorscale=LOSS_SCALE,
                               customdata=[[steps[j] for j in range(S)] for _ in range(P)],
                               hovertemplate="step %{customdata}, position %{y}: loss %{z:.2f}<extra></extra>",
                               colorbar=dict(title="loss")))
    _layout(fig, title("Loss by position over training", run, "validation batch"), height=360,
            xaxis=_step_axis(steps), yaxis_title="position in the context")
    return fig


def lens_over_training(steps: Sequence[int], agree: np.ndarray, first: np.ndarray, run: str) -> go.Figure:
    """Logit lens over training: for each lens row, the share of probe positions whose top-1 already is the
    final answer; the line is the mean first row from which it stays so."""
    S, R = agree.shape
    rows = ["embed"] + [f"block {l}" for l in range(R - 1)]
    fig = go.Figure(go.Heatmap(z=agree.T, x=list(range(S)), y=list(range(R)), zmin=0, zmax=1, colorscale=PROB_SCALE,
                               customdata=[[steps[j] for j in range(S)] for _ in range(R)],
                               hovertemplate="step %{customdata}: %{z:.0%} of positions agree<extra></extra>",
                               colorbar=dict(title="agrees with<br>final top-1")))
    fig.add_scatter(x=list(range(S)), y=first, mode="lines+markers", name="mean first agreeing row",
                    line=dict(color="#111"), customdata=list(steps),
                    hovertemplate="step %{customdata}: first row %{y:.2f} on average<extra></extra>")
    _layout(fig, title("Logit lens over training", run, "where the final answer appears"), height=300,
            xaxis=_step_axis(steps), legend=dict(orientation="h", y=-0.35))
    fig.update_yaxes(tickmode="array", tickvals=list(range(R)), ticktext=rows, title="read out after")
    return fig
