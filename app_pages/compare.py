"""Compare: overlay runs' losses, diff their configs, see their heads on one prompt, launch an A/B sibling."""

import streamlit as st

from tinyviz.analysis import plots
from tinyviz.training.runs import RunError, check_run_name
from tinyviz.ui import (
    ablate_panel,
    analysis,
    config_form,
    loaders,
    state,
    sweep_panel,
    widgets,
)
from tinyviz.ui.registry import RegistryFull, live_fragment, live_metrics, registry


def pick_runs() -> list:
    ids = loaders.run_ids()
    current = state.get(state.RUN)
    pending = st.session_state.pop(state.COMPARE_PENDING, None)  # set by the A/B launcher, before the widget
    if pending:
        state.put(state.COMPARE_RUNS, pending)
    if state.get(state.COMPARE_RUNS) is None:
        state.put(state.COMPARE_RUNS, ([current] if current in ids else []) + [i for i in ids if i != current][:2])
    state.put(state.COMPARE_RUNS, [i for i in state.get(state.COMPARE_RUNS) if i in ids])
    chosen = st.multiselect("Runs", ids, key=state.COMPARE_RUNS, format_func=loaders.display_label,
                            persist_state="session")
    runs = []
    for run_id in chosen:
        try:
            runs.append(loaders.open_run(run_id))
        except RunError as e:
            st.error(str(e))
    return runs


def loss_section(runs: list) -> None:
    state.default(state.COMPARE_LOG_Y, True)
    c1, c2 = st.columns([1, 2], vertical_alignment="center")
    c1.toggle("Log-scale loss", key=state.COMPARE_LOG_Y, persist_state="session")
    smooth = widgets.smoothing(state.COMPARE_SMOOTHING, c2)
    # keyed by the run's unique name: two ablations' full-seed0 runs are two curves, not one
    metrics = {loaders.display_label(str(r.path)): live_metrics(str(r.path), loaders.metrics) for r in runs}
    fig = plots.loss_curves(metrics, log_y=state.get(state.COMPARE_LOG_Y), smoothing=smooth)
    current = state.get(state.RUN)
    if current and any(str(r.path) == current for r in runs) and loaders.kept_steps(current):
        step = loaders.shown_step(current)
        fig.add_vline(x=step, line_dash="dot", line_color="#555", annotation_text=f"step {step}",
                      annotation_position="top left")
    widgets.chart(fig, plots.title("loss", *metrics), key="compare_loss",
                  look_for="where the curves part: the earlier and wider the gap, the more the difference matters.")


def config_section(runs: list) -> None:
    st.subheader("What differs")
    if len(runs) < 2:
        st.info("Pick a second run to see how its configuration differs.")
        return
    diff = analysis.config_diff_frame(runs)
    if diff.empty:
        st.info("These runs have the same configuration.")
    else:
        st.dataframe(diff, hide_index=True)


def heads_section(runs: list) -> None:
    st.subheader("Heads on the same prompt")
    state.default(state.COMPARE_PROMPT, analysis.default_prompt(runs[0], loaders.tokenizer(str(runs[0].path)), 48))
    prompt = st.text_input("Prompt", key=state.COMPARE_PROMPT, persist_state="session")
    current = state.get(state.RUN)
    if any(str(r.path) == current for r in runs):
        st.caption(f"{loaders.display_label(current)} at step {loaders.shown_step(current)} (the sidebar's Weights at "
                   "step); the other runs at their latest weights.")
    for row in range(0, len(runs), 3):
        cols = st.columns(3)
        for col, run in zip(cols, runs[row:row + 3]):
            with col:
                run_id = str(run.path)
                if not run.has_weights():
                    st.warning(f"{loaders.display_label(run_id)} has no weights yet.")
                    continue
                ids = widgets.encode_or_error(loaders.tokenizer(run_id), prompt, run.config.model.n_ctx)
                if ids is None or len(ids) < 2:
                    continue
                step = loaders.shown_step(run_id) if run_id == state.get(state.RUN) else run.weights_step()
                patterns = loaders.patterns_on(run_id, ids, step)
                labels = analysis.head_stats(patterns, ids, run.config.model.causal)["labels"]
                name = loaders.display_label(run_id)
                fig = plots.head_grid(patterns, name, step, labels)
                # the key by the unique path under the runs folder: two groups may each hold a full-seed0
                widgets.chart(fig, plots.title(name, "all heads", f"step {step}"),
                              key=f"compare_grid_{row}_{loaders.label(run_id)}")


def ab_section() -> None:
    """Train the current run's sibling: one model switch flipped, same seed, data and settings."""
    st.subheader("A/B this run")
    run_id = state.get(state.RUN)
    if not run_id:
        st.info("Pick a run in the sidebar first.")
        return
    run = loaders.open_run(run_id)
    cfg = run.config
    c = st.columns([2, 2, 3, 2], vertical_alignment="bottom")
    switch = c[0].selectbox("Switch to flip", config_form.SWITCHES, key=state.AB_FIELD, persist_state="session")
    value = c[1].selectbox(f"{switch} (now {getattr(cfg.model, switch)})",
                           config_form.alternatives(cfg.model, switch), key=f"{state.AB_VALUE}_{switch}")
    name = c[2].text_input("Sibling's name", value=f"{run.name}-{switch}-{value}"[:80],
                           key=f"{state.AB_NAME}_{run.name}_{switch}_{value}")
    if c[3].button("Train sibling", key="ab_start", type="primary", icon=":material/call_split:"):
        try:
            check_run_name(name.strip())
            job = registry().start(config_form.flip(cfg, switch, value), loaders.runs_root() / name.strip())
        except (RegistryFull, RunError, ValueError) as e:
            st.error(widgets.sentence(e))
            return
        else:
            state.put(state.COMPARE_PENDING, [run_id, job.run_id])
            state.put(state.AB_MSG, f"Training {name.strip()}: {run.name} with {switch}={value}, seed "
                      f"{cfg.train.seed}, the same data and steps. Watch it live on the Train page (pick it in the "
                      "sidebar); its curve fills in here as it trains.")
            st.rerun()
    msg = st.session_state.pop(state.AB_MSG, None)
    if msg:
        st.success(msg)
    st.caption(f"Same seed ({cfg.train.seed}), corpus ({cfg.data.corpus}) and {cfg.train.steps} steps as {run.name}; "
               "only the switch differs, so the comparison is controlled.")



st.title("Compare")
chosen = pick_runs()
if chosen:
    ids = [str(r.path) for r in chosen]  # a run that trains: its curve and heads fill in here as it trains
    live_fragment(ids, 2.0, lambda: loss_section(chosen))
    config_section(chosen)
    live_fragment(ids, 10.0, lambda: heads_section(chosen))
else:
    st.info("Pick one or more runs to compare.")
ab_section()
st.divider()
sweep_panel.render(loaders.runs_root())
st.divider()
ablate_panel.render(loaders.runs_root())
