"""The Train page's live panel: progress, loss, lr, throughput, gradients, activations, health, samples.

It is two fragments that rerun while its run trains (the numbers and the loss every REFRESH_S, the other
charts every SLOW_REFRESH_S) and stop polling when the run ends (one full rerun then, so the page
settles). It reads the registry's snapshot of a training run (its metrics file read incrementally), or
the run folder of one that is not training. The run trains in its own process, so drawing competes with
it for cores, not for an interpreter.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import streamlit as st

from tinyviz.analysis import plots, probes
from tinyviz.training import health
from tinyviz.training.runs import CONFIG, RunError, file_version
from tinyviz.ui import analysis, loaders, page, state, widgets
from tinyviz.ui.registry import RegistryFull, registry

# How often the live panel redraws while its run trains. On a 2-core laptop the browser's CPU is CPU the
# training process needs. Measured in headless Chromium (the induction preset training, the Train page
# open): a chart whose figure changed costs the browser 0.1-0.2 s of CPU to redraw (Plotly draws it
# anew), one whose figure is the same next to nothing, and every fragment rerun ~0.1 s more (React and
# styles). benchmarks/app_speed.py, 3 rounds each: with the numbers
# and loss every 5 s the app trained at 0.87x the CLI's steps/s, every 10 s at 0.94x. So the numbers and
# the loss curve come every REFRESH_S; the other charts (lr, tokens/s, gradients, activations, heads)
# and their buttons are a fragment of their own that redraws every SLOW_REFRESH_S.
REFRESH_S = 10.0
SLOW_REFRESH_S = 30.0
# While the run trains, every chart (loss, heads, lr, tokens/s, gradients, activations) is drawn as a light
# SVG of the same figure (tinyviz.analysis.svg, put in the page by widgets.live_svg), this many px wide (the
# page's main column and half of it on a laptop), without export buttons. A Plotly redraw cost the browser
# 0.1-0.3 s of CPU per chart and refresh; with the charts as SVG the browser used 0.05-0.06 of a core where it
# used 0.11-0.13 (headless Chromium, 60 s on the live Train page, trainer at one thread).
WIDE, HALF = 1000, 480
LIVE_NOTE = (":material/bolt: While the run trains its charts are drawn light (no hover, zoom or export buttons; a "
             "click on a head still opens it) to leave the cores to training; the interactive charts and their "
             "export buttons return when it stops.")
STATUS_ICONS = {"running": ":green[:material/play_circle:]", "done": ":green[:material/check_circle:]",
                "stopped": ":orange[:material/pause_circle:]", "failed": ":red[:material/error:]",
                "ready": ":gray[:material/radio_button_unchecked:]", "new": ":gray[:material/radio_button_unchecked:]"}


def _eta(seconds) -> str:
    if seconds is None:
        return ""
    m, s = divmod(int(seconds), 60)
    return f" · about {m} min {s} s left" if m else f" · about {s} s left"


def _view(run_id: str) -> dict:
    """What to draw: the live job's snapshot, or the run folder's metrics and state."""
    job = registry().get(run_id)
    if job is not None:
        return {**job.snapshot(), "alive": job.alive}
    run = loaders.open_run(run_id)
    st_ = run.state()
    return {"run_id": run_id, "status": st_.get("status", "new"), "message": st_.get("message", ""),
            "step": run.weights_step(), "total": run.config.train.steps, "metrics": loaders.metrics(run_id),
            "eta": None, "alive": False}


def live_panel(run_id: str) -> None:
    """The run's header and Stop/Resume (redrawn with the page), then the polling fragment."""
    view = _view(run_id)
    running = view["alive"]
    _controls(run_id, view)

    @st.fragment(run_every=REFRESH_S if running else None)
    def panel():
        view = _view(run_id)
        if running and not view["alive"]:
            st.rerun(scope="app")  # the run ended: redraw once without polling
        if running and _slower_charts_behind(run_id, view):
            # the first steps or snapshot landed: draw them now, not up to 30 s later (marked as drawn first,
            # so this panel, which the app's rerun draws before the slower charts, does not ask again)
            state.put(state.TRAIN_SLOW_DREW, (run_id, True, True))
            st.rerun(scope="app")
        _progress(view)
        _numbers(run_id, view)

    @st.fragment(run_every=SLOW_REFRESH_S if running else None)
    def slower():
        jump = st.session_state.pop(state.TRAIN_JUMP, None)
        if jump is not None:  # a cell of the head grid (drawn here) was clicked: open that head on Heads
            page.open_head(run_id, *jump)
        view = _view(run_id)
        drew = _slow_charts(run_id, view)
        state.put(state.TRAIN_SLOW_DREW, (run_id, bool(view["metrics"]), drew))

    panel()
    slower()


def _slower_charts_behind(run_id: str, view: dict) -> bool:
    """The slower charts last drew this run before its first step (or first snapshot) and it has one now.
    Right after Start they draw with nothing yet; without this the lr, gradient and head charts would
    appear only at their next turn, up to SLOW_REFRESH_S later."""
    drew = state.get(state.TRAIN_SLOW_DREW)
    if not drew or drew[0] != run_id:
        return False
    _, had_metrics, had_heads = drew
    if not had_metrics:
        return bool(view["metrics"])
    return not had_heads and bool(loaders.open_run(run_id).snapshot_steps())


def control_key(action: str, run_id: str) -> str:
    """The Stop / Resume button's key, one per run ("train_stop_<hash>"): a click on the button drawn
    for run A reaches run A only, even if the session has moved on to run B meanwhile; with one
    shared key the click would act on whichever run the latest rerun drew."""
    return f"train_{action}_{zlib.crc32(run_id.encode()):08x}"


def _on_heads_click(step: int) -> None:
    """Keep the clicked head and the grid's step; the fragment's rerun opens it on Heads."""
    picked = analysis.head_from_selection(widgets.selection(state.TRAIN_HEADS))
    if picked is not None:
        state.put(state.TRAIN_JUMP, (*picked, step))


def _on_stop(run_id: str) -> None:
    """Stop the run this button was drawn for, and only while it trains."""
    job = registry().get(run_id)
    if job is None or not job.alive:
        return
    registry().stop(run_id)
    st.toast(f"Stopping {Path(run_id).name} after this step...", icon=":material/stop:")


def _controls(run_id: str, view: dict) -> None:
    """Outside the fragment, so the buttons stay put while the charts refresh."""
    name = loaders.display_label(run_id)  # 'ablate-residual / full-seed0' for a run of an ablation
    status = "training" if view["alive"] else view["status"]
    c1, c2 = st.columns([5, 1], vertical_alignment="center")
    c1.markdown(f"### {STATUS_ICONS.get(view['status'], '')} {name} · {status}")
    with c2:
        if view["alive"]:
            st.button("Stop", key=control_key("stop", run_id), icon=":material/stop:", type="primary",
                      on_click=_on_stop, args=(run_id,), help="stop after this step and save a checkpoint")
            return
        resumable = view["status"] in ("stopped", "ready", "failed") and view["step"] < view["total"]
        if resumable and st.button("Resume", key=control_key("resume", run_id), icon=":material/play_arrow:"):
            try:
                registry().resume(run_id)
            except (RegistryFull, RunError, ValueError) as e:
                state.put(state.TRAIN_MSG, ("error", widgets.sentence(e)))
            st.rerun(scope="app")


def _progress(view: dict) -> None:
    total = max(1, view["total"])
    st.progress(min(1.0, view["step"] / total), text=f"step {view['step']} of {view['total']}{_eta(view['eta'])}")
    if view["message"] and not view["alive"]:
        (st.error if view["status"] == "failed" else st.info)(widgets.sentence(view["message"]))


def _numbers(run_id: str, view: dict) -> None:
    """Every REFRESH_S: the numbers, health, the loss curve and the sample preview."""
    metrics, name = view["metrics"], Path(run_id).name
    if not metrics:
        st.info("No steps logged yet; the charts appear with the first step.")
        return
    last = metrics[-1]
    vals = [m for m in metrics if m.get("val_loss") is not None]
    m = st.columns(5)
    m[0].metric("Train loss", f"{last['loss']:.3f}")
    m[1].metric("Val loss", f"{vals[-1]['val_loss']:.3f}" if vals else "–")
    m[2].metric("Tokens/s", f"{last['tokens_per_s']:,.0f}")
    m[3].metric("Learning rate", f"{last['lr']:.2e}")
    m[4].metric("Grad norm", f"{last['grad_norm']:.3g}")

    run = loaders.open_run(run_id)
    _health(metrics, run.config)
    state.default(state.TRAIN_LOG_Y, True)
    c1, c2 = st.columns([1, 2], vertical_alignment="center")
    c1.toggle("Log-scale loss", key=state.TRAIN_LOG_Y, persist_state="session")
    smooth = widgets.smoothing(state.TRAIN_SMOOTHING, c2)
    if view["alive"]:
        st.caption(LIVE_NOTE)
    widgets.chart(plots.loss_curves({name: metrics}, log_y=state.get(state.TRAIN_LOG_Y), smoothing=smooth),
                  plots.title(name, "loss"), key="train_loss", live_width=WIDE if view["alive"] else None,
                  look_for="both curves falling together; val turning up while train keeps falling is overfitting, "
                           "a sudden plateau or jump is the optimiser struggling.")
    samples = [r for r in metrics if (r.get("extra") or {}).get("sample")]
    if samples:
        st.markdown(f"**Sample preview** (greedy, step {samples[-1]['step']})")
        st.code(samples[-1]["extra"]["sample"], language=None, wrap_lines=True)


def _slow_charts(run_id: str, view: dict) -> bool:
    """Every SLOW_REFRESH_S: lr, tokens/s, gradients, activations and heads, drawn from the records up to
    the latest step. True when the head grid was drawn (a snapshot had landed)."""
    metrics, name = view["metrics"], Path(run_id).name
    if not metrics:
        return False
    upto = metrics[-1]["step"]
    version = loaders.weights_version(run_id), file_version(run_id, CONFIG)
    figs = _slow_figures(run_id, upto, version, _metrics=metrics)
    wide, half = (WIDE, HALF) if view["alive"] else (None, None)  # light SVGs while it trains
    heads = figs.get("heads")
    if heads is not None:
        st.markdown(f"**Heads at step {figs['heads_step']}** (the probe prompt; click a head to open it on the "
                    "Heads page at this step)")
        st.caption(figs["formed"])
        widgets.chart(heads, plots.title(name, "all heads", f"step {figs['heads_step']}"), key=state.TRAIN_HEADS,
                      on_select=lambda step=figs["heads_step"]: _on_heads_click(step), live_width=wide,
                      look_for="a diagonal stripe just below the main diagonal is a previous-token head; an "
                               "'induction' label in layer 1 is the model learning to copy.")
    left, right = st.columns(2)
    with left:
        widgets.chart(figs["lr"], plots.title(name, "lr"), key="train_lr", live_width=half,
                      look_for="warmup rising to the peak, then the cosine decay.")
    with right:
        widgets.chart(figs["tps"], plots.title(name, "tokens per second"), key="train_tps", live_width=half,
                      look_for="a flat line; dips are evaluations, snapshots or a busy machine.")
    widgets.chart(figs["grad"], plots.title(name, "gradient norms"), key="train_grad", live_width=wide,
                  look_for="a bright vertical band is a gradient spike; one block far brighter than the others "
                           "for long is where training is unstable.")
    if figs.get("acts") is not None:
        widgets.chart(figs["acts"], plots.title(name, "activations", f"step {figs['acts_step']}"), key="train_acts",
                      live_width=wide)
    return heads is not None


@st.cache_resource(max_entries=8, show_spinner=False)
def _slow_figures(run_id: str, upto: int, version: tuple, _metrics: list[dict]) -> dict:
    """The charts that change only when a snapshot lands, for records up to step `upto` (cached per step
    and per version of the run's files, so a new run of the same name is drawn afresh)."""
    name = Path(run_id).name
    out = {"lr": plots.metric_curve(_metrics, "lr", name, "learning rate"),
           "tps": plots.metric_curve(_metrics, "tokens_per_s", name, "tokens per second"),
           "grad": plots.grad_norm_heatmap(_metrics, name)}
    steps = [s for s in loaders.open_run(run_id).snapshot_steps() if s <= upto]
    if steps:
        snap = loaders.snapshot(run_id, steps[-1])
        if snap.get("act_stats"):
            out["acts"], out["acts_step"] = plots.activation_stats_bars(snap["act_stats"], name, steps[-1]), steps[-1]
        if snap.get("scores"):
            labels = probes.label_heads({k: np.asarray(v) for k, v in snap["scores"].items()})
            out["heads"] = plots.head_grid(snap["patterns"], name, steps[-1], labels)
            out["heads_step"] = steps[-1]
            out["formed"] = induction_formed(run_id, steps)
    return out


def induction_formed(run_id: str, steps: list[int]) -> str:
    """'Induction head formed at step N (L1H0).' from the snapshots, or that none has yet."""
    for step in steps:
        scores = loaders.snapshot(run_id, step).get("scores")
        if not scores:
            continue
        labels = probes.label_heads({k: np.asarray(v) for k, v in scores.items()})
        found = [f"L{l}H{h}" for l, row in enumerate(labels) for h, lab in enumerate(row) if lab == "induction"]
        if found:
            return (f":material/flag: **Induction head formed at step {step}** ({', '.join(found)}): from then on "
                    "it attends to the token after an earlier copy of the current one.")
    return (f"No induction head yet (by step {steps[-1]}); one forms when a layer-1 head learns to attend to the "
            "token after an earlier copy of the current one. Labels: prev = previous token, induction, sink, self.")


def _health(metrics: list[dict], cfg) -> None:
    warnings = health.health_checks(metrics, vocab_size=cfg.model.d_vocab, causal=cfg.model.causal)
    if not warnings:
        st.success("Health: no problems seen (loss, gradients, attention entropy, causal mask).",
                   icon=":material/check_circle:")
    for w in warnings:
        (st.error if w.severity == "error" else st.warning)(f"Step {w.step}: {w.message}")
