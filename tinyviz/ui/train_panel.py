"""The Train page's live panel: progress, loss, lr, throughput, gradients, activations, health, samples.

While its run trains the panel is drawn once, as light elements (widgets.live_html: numbers as HTML, charts as
SVG) that the browser keeps up to date from the live feed (tinyviz.ui.live_feed, which answers
train_live.TrainView) every FEED_S: no Streamlit rerun, so no React redraw of the page at every refresh. When
the run ends the feed says so and the panel asks for one rerun of the page, which draws the interactive Plotly
charts and their export buttons. A run that is not training is drawn from its run folder.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import streamlit as st

from tinyviz.analysis import plots
from tinyviz.training import health
from tinyviz.training.runs import CONFIG, RunError, file_version
from tinyviz.ui import analysis, live_feed, live_parts, loaders, page, state, train_live, widgets
from tinyviz.ui.registry import RegistryFull, registry

# How often the feed pushes the run's latest parts to the live elements (over one open stream per view, only the
# answers that changed; the page then sets the inner HTML of each part that changed). A Streamlit rerun of the
# panel cost the browser 0.15-0.3 s of CPU (React and styles; headless Chromium on the induction preset) and the
# two-thread trainer a visible dip in tokens/s each time: benchmarks/app_speed.py. Where the feed cannot be
# reached (a page opened from another machine, no loopback port) the panel reruns every REFRESH_S instead.
FEED_S = live_feed.EVERY_S
REFRESH_S = 10.0
LIVE_NOTE = (":material/bolt: While the run trains its charts are drawn light (no hover, zoom or export buttons; a "
             "click on a head still opens it) to leave the cores to training; the interactive charts and their "
             "export buttons return when it stops.")
STATUS_ICONS = {"running": ":green[:material/play_circle:]", "done": ":green[:material/check_circle:]",
                "stopped": ":orange[:material/pause_circle:]", "failed": ":red[:material/error:]",
                "ready": ":gray[:material/radio_button_unchecked:]", "new": ":gray[:material/radio_button_unchecked:]"}


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
    """The run's header and Stop/Resume (redrawn with the page), then its live or settled panel."""
    view = _view(run_id)
    _controls(run_id, view)
    jump = st.session_state.pop(state.TRAIN_JUMP, None)
    if jump is not None:  # a cell of the head grid was clicked: open that head on Heads
        page.open_head(run_id, *jump)
    if view["alive"]:
        _live(run_id)
        return
    _progress(view)
    _numbers(run_id, view)
    _slow_charts(run_id, view)


def _live(run_id: str) -> None:
    """The panel of a training run: light elements the feed keeps up to date, in one fragment that reruns
    only when the run ends, a head is clicked or a chart option changes (or every REFRESH_S without a feed)."""
    feed = live_feed.feed()

    @st.fragment(run_every=None if feed else REFRESH_S)
    def panel():
        job = registry().get(run_id)
        if job is None or not job.alive:
            st.rerun(scope="app")  # the run ended: redraw the page once, with the interactive charts
        jump = st.session_state.pop(state.TRAIN_JUMP, None)
        if jump is not None:
            page.open_head(run_id, *jump)
        top, options = st.container(), st.container()
        with options:  # drawn first (they shape the loss curve), shown below the numbers
            state.default(state.TRAIN_LOG_Y, True)
            c1, c2 = st.columns([1, 2], vertical_alignment="center")
            log_y = c1.toggle("Log-scale loss", key=state.TRAIN_LOG_Y, persist_state="session")
            smooth = widgets.smoothing(state.TRAIN_SMOOTHING, c2)
            st.caption(LIVE_NOTE)
        view = train_live.TrainView(job, log_y=log_y, smoothing=smooth)
        parts = view()["parts"]
        url = feed.publish((run_id, log_y, smooth), view) if feed else None
        source = {"url": url, "every_s": FEED_S} if url else None

        def part(name: str, key: str | None = None, lead_s: float = 0, on_click=None):
            with st.container(key=key) if key else st.container():
                widgets.live_html(parts[name], f"{key or 'train_' + name}{widgets.LIVE_SUFFIX}", source, name,
                                  lead_s=lead_s, on_click=on_click)

        with top:
            part("progress", lead_s=REFRESH_S)
            part("numbers")
            part("health")
        part("loss", key="train_loss")
        part("sample")
        part("heads_title")
        part("heads", key=state.TRAIN_HEADS, on_click=lambda: _on_heads_click(None))
        left, right = st.columns(2)
        with left:
            part("lr", key="train_lr")
        with right:
            part("tps", key="train_tps")
        part("grad", key="train_grad")
        part("acts", key="train_acts")

    panel()


def control_key(action: str, run_id: str) -> str:
    """The Stop / Resume button's key, one per run ("train_stop_<hash>"): a click on the button drawn
    for run A reaches run A only, even if the session has moved on to run B meanwhile; with one
    shared key the click would act on whichever run the latest rerun drew."""
    return f"train_{action}_{zlib.crc32(run_id.encode()):08x}"


def _on_heads_click(step: int | None) -> None:
    """Keep the clicked head and the grid's step (a live grid's click target carries the step it showed);
    the rerun opens it on Heads."""
    event = widgets.selection(state.TRAIN_HEADS)
    picked = analysis.head_from_selection(event)
    if picked is None:
        return
    data = event["selection"]["points"][0].get("customdata")
    if isinstance(data, (list, tuple)) and len(data) == 3:
        step = int(data[2])
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
    text = f"step {view['step']} of {view['total']}{live_parts.eta(view['eta'])}"
    st.progress(min(1.0, view["step"] / total), text=text)
    if view["message"] and not view["alive"]:
        (st.error if view["status"] == "failed" else st.info)(widgets.sentence(view["message"]))


def _numbers(run_id: str, view: dict) -> None:
    """A run that is not training: the numbers, health, the loss curve and the sample preview."""
    metrics, name = view["metrics"], Path(run_id).name
    if not metrics:
        st.info("No steps logged yet; the charts appear with the first step.")
        return
    for column, (label, value) in zip(st.columns(5), live_parts.metric_values(metrics), strict=True):
        column.metric(label, value)
    _health(metrics, loaders.open_run(run_id).config)
    state.default(state.TRAIN_LOG_Y, True)
    c1, c2 = st.columns([1, 2], vertical_alignment="center")
    c1.toggle("Log-scale loss", key=state.TRAIN_LOG_Y, persist_state="session")
    smooth = widgets.smoothing(state.TRAIN_SMOOTHING, c2)
    widgets.chart(plots.loss_curves({name: metrics}, log_y=state.get(state.TRAIN_LOG_Y), smoothing=smooth),
                  plots.title(name, "loss"), key="train_loss", look_for=train_live.LOOK_FOR["loss"])
    samples = [r for r in metrics if (r.get("extra") or {}).get("sample")]
    if samples:
        st.markdown(f"**Sample preview** (greedy, step {samples[-1]['step']})")
        st.code(samples[-1]["extra"]["sample"], language=None, wrap_lines=True)


def _slow_charts(run_id: str, view: dict) -> None:
    """A run that is not training: lr, tokens/s, gradients, activations and heads."""
    metrics, name = view["metrics"], Path(run_id).name
    if not metrics:
        return
    version = loaders.weights_version(run_id), file_version(run_id, CONFIG)
    figs = _slow_figures(run_id, metrics[-1]["step"], version, _metrics=metrics)
    heads, look = figs.get("heads"), train_live.LOOK_FOR
    if heads is not None:
        st.markdown(f"**Heads at step {figs['heads_step']}** (the probe prompt; click a head to open it on the "
                    "Heads page at this step)")
        headline, rest = figs["formed"]
        st.caption(f":material/flag: **{headline}** {rest}" if headline else rest)
        widgets.chart(heads, plots.title(name, "all heads", f"step {figs['heads_step']}"), key=state.TRAIN_HEADS,
                      on_select=lambda step=figs["heads_step"]: _on_heads_click(step), look_for=look["heads"])
    left, right = st.columns(2)
    with left:
        widgets.chart(figs["lr"], plots.title(name, "lr"), key="train_lr", look_for=look["lr"])
    with right:
        widgets.chart(figs["tps"], plots.title(name, "tokens per second"), key="train_tps", look_for=look["tps"])
    widgets.chart(figs["grad"], plots.title(name, "gradient norms"), key="train_grad", look_for=look["grad"])
    if figs.get("acts") is not None:
        widgets.chart(figs["acts"], plots.title(name, "activations", f"step {figs['acts_step']}"), key="train_acts")


@st.cache_resource(max_entries=8, show_spinner=False)
def _slow_figures(run_id: str, upto: int, version: tuple, _metrics: list[dict]) -> dict:
    """The charts that change only when a snapshot lands, for records up to step `upto` (cached per step
    and per version of the run's files, so a new run of the same name is drawn afresh)."""
    def found(steps):
        return train_live.formed(steps, lambda step: loaders.snapshot(run_id, step).get("scores"))
    return train_live.slow_figures(loaders.open_run(run_id), _metrics, upto,
                                   lambda step: loaders.snapshot(run_id, step), found)


def _health(metrics: list[dict], cfg) -> None:
    warnings = health.health_checks(metrics, vocab_size=cfg.model.d_vocab, causal=cfg.model.causal)
    if not warnings:
        st.success(live_parts.HEALTHY, icon=":material/check_circle:")
    for w in warnings:
        (st.error if w.severity == "error" else st.warning)(f"Step {w.step}: {w.message}")
