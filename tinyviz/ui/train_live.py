"""What the Train page shows of a training run: its figures, and while it trains every part of its panel as
HTML for the live feed (tinyviz.ui.live_feed). No Streamlit here: the feed's threads call TrainView."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from html import escape
from pathlib import Path

import numpy as np

from tinyviz.analysis import plots, probes, svg
from tinyviz.training import health
from tinyviz.training.runs import Run
from tinyviz.ui import live_parts

# While the run trains every chart is a light SVG of the same figure this many px wide (the page's main column
# and half of it on a laptop): a Plotly redraw cost the browser 0.1-0.3 s of CPU per chart and refresh.
WIDE, HALF = 1000, 480
# The charts that change only with a snapshot (lr, tokens/s, gradients, activations, heads) are rebuilt at most
# this often, and as soon as the first steps or the first snapshot land.
SLOW_REFRESH_S = 30.0
LOOK_FOR = {
    "loss": "both curves falling together; val turning up while train keeps falling is overfitting, a sudden "
            "plateau or jump is the optimiser struggling.",
    "heads": "a diagonal stripe just below the main diagonal is a previous-token head; an 'induction' label in "
             "layer 1 is the model learning to copy.",
    "lr": "warmup rising to the peak, then the cosine decay.",
    "tps": "a flat line; dips are evaluations, snapshots or a busy machine (on 2 cores also a thin one at each "
           "5-s refresh of this page while it trains: drawing it takes CPU the training then waits for).",
    "grad": "a bright vertical band is a gradient spike; one block far brighter than the others for long is where "
            "training is unstable.",
}
NOT_YET = "No steps logged yet; the numbers and charts appear with the first step."


def formed(steps: list[int], scores_at: Callable[[int], dict | None]) -> tuple[int, list[str]] | None:
    """(step, ['L1H0', ...]) of the first snapshot with a head labelled induction, or None."""
    for step in steps:
        scores = scores_at(step)
        if not scores:
            continue
        labels = probes.label_heads({k: np.asarray(v) for k, v in scores.items()})
        found = [f"L{l}H{h}" for l, row in enumerate(labels) for h, lab in enumerate(row) if lab == "induction"]
        if found:
            return step, found
    return None


def formed_text(found: tuple[int, list[str]] | None, last_step: int) -> tuple[str, str]:
    """The headline and its explanation: 'Induction head formed at step N (L1H0)', or that none has yet."""
    if found:
        return (f"Induction head formed at step {found[0]}",
                f"({', '.join(found[1])}): from then on it attends to the token after an earlier copy of the "
                "current one.")
    return ("", f"No induction head yet (by step {last_step}); one forms when a layer-1 head learns to attend to "
                "the token after an earlier copy of the current one. Labels: prev = previous token, induction, "
                "sink, self.")


SLOW = ("lr", "tps", "grad", "acts", "heads")  # the slower charts, in the order the live view refreshes them


def slow_figure(kind: str, run: Run, metrics: list[dict], upto: int, load: Callable[[int], dict],
                found: Callable[[list[int]], tuple[int, list[str]] | None]) -> dict:
    """One of the slower charts ({kind: figure}, or {} when there is none yet): lr, tokens/s or the gradient
    norms of the records, or the activations or head grid of the latest snapshot up to step `upto` (with
    its step and, for the heads, whether an induction head has formed by then)."""
    name = Path(run.path).name
    if kind == "lr":
        return {"lr": plots.metric_curve(metrics, "lr", name, "learning rate")}
    if kind == "tps":
        return {"tps": plots.metric_curve(metrics, "tokens_per_s", name, "tokens per second")}
    if kind == "grad":
        return {"grad": plots.grad_norm_heatmap(metrics, name)}
    steps = [s for s in run.snapshot_steps() if s <= upto]
    snap = load(steps[-1]) if steps else {}
    if kind == "acts" and snap.get("act_stats"):
        return {"acts": plots.activation_stats_bars(snap["act_stats"], name, steps[-1]), "acts_step": steps[-1]}
    if kind == "heads" and snap.get("scores"):
        labels = probes.label_heads({k: np.asarray(v) for k, v in snap["scores"].items()})
        return {"heads": plots.head_grid(snap["patterns"], name, steps[-1], labels), "heads_step": steps[-1],
                "formed": formed_text(found(steps), steps[-1])}
    return {}


def slow_figures(run: Run, metrics: list[dict], upto: int, load: Callable[[int], dict],
                 found: Callable[[list[int]], tuple[int, list[str]] | None]) -> dict:
    """Every slower chart there is (slow_figure of each kind)."""
    return {k: v for kind in SLOW for k, v in slow_figure(kind, run, metrics, upto, load, found).items()}


def stamp_step(fig, step: int):
    """The head grid's click targets carry the grid's step ([layer, head, step]): a live grid is redrawn in
    the page without a rerun, so a click must say which step it showed."""
    for trace in fig.data:
        data = trace.customdata
        if data is not None and len(data) and all(len(d) == 2 for d in data):
            trace.customdata = [[int(d[0]), int(d[1]), int(step)] for d in data]
    return fig


class TrainView:
    """The live feed's answer for one training run and chart options: {"parts": {name: html}, "ended": bool}.

    The numbers, health, loss curve and sample preview are made anew when a step was logged. The slower
    charts all at once when the first steps or the first snapshot land, then one of them per answer in turns,
    at most one every SLOW_REFRESH_S / 5 (each every SLOW_REFRESH_S): building them all at once took 170-260 ms
    of the server's CPU in one burst, which stalled a training's steps for as long (a dip every 30 s)."""

    def __init__(self, job, log_y: bool, smoothing: float, clock: Callable[[], float] = time.monotonic):
        self.job, self.log_y, self.smoothing, self.clock = job, log_y, smoothing, clock
        self.run = Run.open(Path(job.run_id))
        self.name = Path(job.run_id).name
        self.lock = threading.Lock()
        self._fast: tuple[int, dict] | None = None  # (records, parts)
        self._slow: dict[str, str] = {}  # part name -> html, once the first steps have landed
        self._slow_at, self._turn = -math.inf, 0  # when a slower chart was last made, which is next
        self._scores: dict[int, dict | None] = {}
        self._snap: tuple[int, dict] | None = None  # the latest snapshot read (the activations and heads share it)

    def __call__(self) -> dict:
        with self.lock, plots.for_svg():
            view = self.job.snapshot()
            alive = self.job.alive
            metrics = view["metrics"]
            parts = {"progress": live_parts.progress(view["step"], view["total"], view["eta"]),
                     **self._fast_parts(metrics), **self._slow_parts(metrics)}
            return {"parts": parts, "ended": not alive}

    def _fast_parts(self, metrics: list[dict]) -> dict:
        if self._fast is None or self._fast[0] != len(metrics):
            if not metrics:
                parts = {"numbers": live_parts.caption(NOT_YET), "health": "", "loss": "", "sample": ""}
            else:
                cfg = self.run.config.model
                warnings = health.health_checks(metrics, vocab_size=cfg.d_vocab, causal=cfg.causal)
                loss = plots.loss_curves({self.name: metrics}, log_y=self.log_y, smoothing=self.smoothing)
                parts = {"numbers": live_parts.numbers(metrics), "health": live_parts.health(warnings),
                         "loss": self._chart(loss, WIDE, "loss"), "sample": live_parts.sample(metrics)}
            self._fast = (len(metrics), parts)
        return self._fast[1]

    def _slow_parts(self, metrics: list[dict]) -> dict:
        if not metrics:
            return {k: "" for k in ("lr", "tps", "grad", "acts", "heads_title", "heads")}
        if not self._slow or (not self._slow.get("heads") and self.run.snapshot_steps()):
            kinds = SLOW  # the first steps, or the first snapshot: everything now, not in turns
        elif self.clock() - self._slow_at >= SLOW_REFRESH_S / len(SLOW):
            kinds, self._turn = (SLOW[self._turn % len(SLOW)],), self._turn + 1
        else:
            return self._slow
        for kind in kinds:
            self._slow.update(self._slow_part(kind, metrics))
        self._slow_at = self.clock()
        return self._slow

    def _slow_part(self, kind: str, metrics: list[dict]) -> dict:
        figs = slow_figure(kind, self.run, metrics, metrics[-1]["step"], self._load, self._found)
        if kind in ("lr", "tps"):
            return {kind: self._chart(figs[kind], HALF, kind)}
        if kind == "grad":
            return {"grad": self._chart(figs["grad"], WIDE, "grad")}
        if kind == "acts":
            return {"acts": svg.figure_svg(figs["acts"], WIDE) if "acts" in figs else ""}
        if "heads" not in figs:
            return {"heads_title": "", "heads": ""}
        return {"heads_title": heads_title_html(figs["heads_step"], *figs["formed"]),
                "heads": self._chart(stamp_step(figs["heads"], figs["heads_step"]), WIDE, "heads")}

    def _load(self, step: int) -> dict:
        if self._snap is None or self._snap[0] != step:
            self._snap = (step, self.run.load_snapshot(step))
        return self._snap[1]

    def _found(self, steps: list[int]) -> tuple[int, list[str]] | None:
        def scores_at(step):
            if step not in self._scores:
                self._scores[step] = self.run.load_snapshot(step).get("scores")
            return self._scores[step]
        return formed(steps, scores_at)

    @staticmethod
    def _chart(fig, width: int, look: str) -> str:
        return svg.figure_svg(fig, width) + live_parts.caption(f"What to look for: {LOOK_FOR[look]}")


def heads_title_html(step: int, headline: str, rest: str) -> str:
    """'Heads at step N' and whether an induction head has formed, as the page writes them."""
    flag = f"<strong>⚑ {escape(headline)}</strong> " if headline else ""
    return (f'<p style="color:{live_parts.TEXT};margin:0 0 0.25rem"><strong>Heads at step {step}</strong> (the probe '
            "prompt; click a head to open it on the Heads page at this step)</p>"
            f'<div style="color:{live_parts.MUTED};font-size:0.875rem;margin-bottom:0.5rem">{flag}{escape(rest)}</div>')
