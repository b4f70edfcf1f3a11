"""The replay file: one self-contained offline HTML page about a run (``python -m tinyviz report``).

It holds plotly.js once (inlined, no network), a step slider over the probe prompt's head grid
(from the attention snapshots), the head timeline, the loss curves and the ICL score (from the
kept weights; a run without history gets its timeline from the snapshots' scores and no ICL
score, said so), plus the config, seed and corpus hash.
"""

from __future__ import annotations

import datetime
import html
import json

import numpy as np
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from plotly.subplots import make_subplots

from tinyviz import __version__
from tinyviz.analysis import dynamics, plots
from tinyviz.training import dynamics as dynamics_store
from tinyviz.training.runs import Run, RunError

MAX_FRAMES = 24  # snapshot steps on the head-grid slider (evenly chosen, first and last kept)
MAX_TOKENS = 64  # the grid's heatmaps show the probe prompt's first tokens (size: L*H*T*T per frame)


def _pick(steps: list[int], n: int) -> list[int]:
    if len(steps) <= n:
        return steps
    idx = np.unique(np.linspace(0, len(steps) - 1, n).round().astype(int))
    return [steps[i] for i in idx]


def head_grid_slider(run: Run) -> go.Figure | None:
    """Every head's attention on the probe prompt with a slider over the snapshot steps, or None."""
    steps = _pick(run.snapshot_steps(), MAX_FRAMES)
    snaps = []
    for step in steps:
        try:
            snaps.append(run.load_snapshot(step))
        except RunError:
            continue
    if not snaps:
        return None
    L, H = snaps[0]["patterns"].shape[:2]
    T = min(MAX_TOKENS, snaps[0]["patterns"].shape[-1])
    fig = make_subplots(rows=L, cols=H, subplot_titles=[f"L{l}H{h}" for l in range(L) for h in range(H)],
                        horizontal_spacing=0.02, vertical_spacing=min(0.1, 0.4 / L))

    def z(snap, l, h):
        return np.round(snap["patterns"][l, h, :T, :T], 2)

    for l in range(L):
        for h in range(H):
            fig.add_trace(go.Heatmap(z=z(snaps[-1], l, h), coloraxis="coloraxis",
                                     hovertemplate="query %{y}, key %{x}: %{z}<extra></extra>"), row=l + 1, col=h + 1)
    fig.frames = [go.Frame(name=str(s["step"]), data=[go.Heatmap(z=z(s, l, h)) for l in range(L) for h in range(H)],
                           traces=list(range(L * H))) for s in snaps]
    fig.update_xaxes(showticklabels=False, range=[-0.5, T - 0.5], constrain="domain")
    fig.update_yaxes(showticklabels=False, range=[T - 0.5, -0.5], constrain="domain")
    for i in range(L * H):
        fig.layout[f"yaxis{i + 1 if i else ''}"].scaleanchor = f"x{i + 1 if i else ''}"
    slider = dict(active=len(snaps) - 1, currentvalue=dict(prefix="step "), pad=dict(t=30),
                  steps=[dict(label=str(s["step"]), method="animate",
                              args=[[str(s["step"])], dict(mode="immediate", frame=dict(duration=0, redraw=True),
                                                           transition=dict(duration=0))]) for s in snaps])
    plots._layout(fig, plots.title("All heads on the probe prompt", run.name, f"first {T} tokens"),
                  height=160 + L * int(min(220, 640 / H)), sliders=[slider],
                  coloraxis=dict(colorscale=plots.ATTN_SCALE, cmin=0, cmax=1, colorbar=dict(title="attention")))
    return fig


def _snapshot_timeline(run: Run) -> tuple[list[int], dict[str, np.ndarray]] | None:
    steps, scores = [], []
    for step in run.snapshot_steps():
        try:
            snap = run.load_snapshot(step)
        except RunError:
            continue
        if "scores" in snap:
            steps.append(step)
            scores.append(snap["scores"])
    if len(steps) < 2:
        return None
    return steps, {n: np.array([s[n] for s in scores], dtype=np.float64) for n in scores[0]}


def replay_html(run: Run, dyn: dict | None = None) -> str:
    """The whole replay page as one HTML string. dyn: training.dynamics.compute(run) if already at hand."""
    notes = []
    if dyn is None and len(run.history.steps()) >= 2:
        dyn = dynamics_store.compute(run)
    if dyn is not None:
        notes += dyn["notes"]
    metrics = run.metrics()
    figures: list[tuple[str, go.Figure]] = []
    grid = head_grid_slider(run)
    if grid is not None:
        figures.append(("Attention through training", grid))
    else:
        notes.append(f"{run.name} has no attention snapshots, so there is no head grid to replay.")
    marks = {}
    if dyn is not None and len(dyn["steps"]) >= 2:
        steps, scores, source = dyn["steps"], dyn["scores"], "kept weights"
        if dyn["icl"] is not None:
            marks = {"phase change": dynamics.phase_change(steps, dyn["icl"]), "loss bump": dynamics.loss_bump(metrics)}
    else:
        snap = _snapshot_timeline(run)
        steps, scores, source = (snap[0], snap[1], "attention snapshots") if snap else (None, None, None)
        notes.append(f"{run.name} kept no weights history, so the timeline comes from its attention snapshots "
                     "and there is no in-context-learning score.")
    if steps is not None:
        rows = dynamics.head_timeline(steps, scores)
        fig = plots.head_timeline(steps, rows, run.name, marks)
        fig.data = tuple(t for t in fig.data if t.meta != plots.OVERLAY)  # clicks mean nothing offline
        figures.append((f"Head timeline (from the {source})", fig))
    if metrics:
        figures.append(("Loss curves", plots.loss_curves({run.name: metrics})))
    if dyn is not None and dyn["icl"] is not None and len(dyn["steps"]) >= 2:
        figures.append(("In-context learning", plots.icl_over_training(dyn["steps"], dyn["icl"], metrics, run.name,
                                                                       marks)))
    return _page(run, figures, notes)


def _page(run: Run, figures: list[tuple[str, go.Figure]], notes: list[str]) -> str:
    cfg = run.config
    facts = {"run": run.name, "preset": cfg.preset, "seed": cfg.train.seed, "corpus": cfg.data.corpus,
             "corpus sha256 (first 16)": run.meta.get("corpus_sha256", "unknown"),
             "trained to step": run.weights_step(), "tinyviz": run.meta.get("tinyviz_version", "?"),
             "written by": f"tinyviz {__version__}, {datetime.date.today().isoformat()}"}
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(run.name)} · tinyviz replay</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse}td{padding:2px 12px 2px 0;vertical-align:top}"
        "pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}.note{color:#8a5a00}</style>",
        f"<script>{get_plotlyjs()}</script></head><body>",
        f"<h1>{html.escape(run.name)}: training replay</h1>",
        "<table>" + "".join(f"<tr><td><b>{html.escape(k)}</b></td><td>{html.escape(str(v))}</td></tr>"
                            for k, v in facts.items()) + "</table>",
        *[f"<p class='note'>{html.escape(n)}</p>" for n in notes],
    ]
    for i, (heading, fig) in enumerate(figures):
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig{i}",
                                 auto_play=False, config={"displaylogo": False, "responsive": True}))
    parts.append("<h2>Configuration</h2><pre>" + html.escape(json.dumps(cfg.to_dict(), indent=2)) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
