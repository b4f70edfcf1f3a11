"""Dynamics: when each head became what it is, when it started to matter, and what changed between steps."""

import streamlit as st

from tinyviz.analysis import dynamics, plots
from tinyviz.ui import analysis, loaders, page, state, widgets


def _on_timeline_click() -> None:
    event = st.session_state.get(state.DYN_TIMELINE)
    for point in (event or {}).get("selection", {}).get("points", []):
        data = point.get("customdata")
        if isinstance(data, (list, tuple)) and len(data) >= 3:
            state.put(state.DYN_JUMP, tuple(int(v) for v in data[:3]))
            return


run = page.run_header("Dynamics")
run_id = str(run.path)
jump = st.session_state.pop(state.DYN_JUMP, None)
if jump is not None:  # a timeline cell was clicked: open that head at that step on Heads
    page.open_head(run_id, *jump)

kept = run.history.steps()
if len(kept) < 2:
    st.info(f"{run.name} kept no weights history (it was trained before tinyviz kept one, imported, or trained "
            "with history_keep=0), so there is no training to look back on. Train a run on the Train page: it "
            "keeps its weights at about 60 steps, dense early and sparse late.")
    st.stop()

bar = st.progress(0.0, text="Measuring every kept step...")
dyn = analysis.training_dynamics(run_id, on_progress=lambda i, n: bar.progress(i / n, text=f"Step {i} of {n}..."))
bar.empty()
for note in dyn["notes"]:
    st.warning(widgets.sentence(note))
steps = dyn["steps"]
if len(steps) < 2:
    st.stop()
metrics = loaders.metrics(run_id)
phase = dynamics.phase_change(steps, dyn["icl"]) if dyn["icl"] is not None else None
marks = {"phase change": phase, "loss bump": dynamics.loss_bump([m for m in metrics if m["step"] <= steps[-1]])}
rows = dynamics.head_timeline(steps, dyn["scores"])
st.caption(f"{len(steps)} kept steps, evenly spaced on the x axis (dense early: look at the tick labels). "
           "**Phase change**: the steepest fall of the in-context-learning score; **loss bump**: where the smoothed "
           "training loss stands highest above its best so far.")

st.subheader("Head timeline")
st.caption("Each head's label score over its threshold (orange: at or over it, the head has that label). A star "
           "marks the first kept step at or over the threshold; a ? after the label means the head never got it "
           "(the colour shows how close it came). **Click a cell** to open that head at that step on Heads.")
selected = (state.get(state.HEAD_LAYER, -1), state.get(state.HEAD_HEAD, -1), page.shown_step(run))
timeline = plots.head_timeline(steps, rows, run.name, marks, selected=selected)
widgets.chart(timeline, plots.title(run.name, "head timeline"), key=state.DYN_TIMELINE, on_select=_on_timeline_click,
              df=analysis.timeline_frame(steps, rows))

st.subheader("Head importance over training")
st.caption("How much the loss rises when one head alone is zeroed, at every kept step: read it beside the "
           "timeline to see when a head *became* something and when it *started to matter*.")
c1, c2 = st.columns(2)
with c1:
    widgets.chart(plots.importance_over_training(steps, dyn["imp_probe"], run.name, "the probe prompt", marks),
                  plots.title(run.name, "importance", "probe prompt"), key="dyn_imp_probe")
with c2:
    if dyn["imp_val"] is not None:
        widgets.chart(plots.importance_over_training(steps, dyn["imp_val"], run.name, "a validation batch", marks),
                      plots.title(run.name, "importance", "validation batch"), key="dyn_imp_val")

if dyn["icl"] is not None:
    st.subheader("In-context learning")
    st.caption("ICL score: the loss at the last tenth of the context minus the loss at its first tenth, on a fixed "
               "validation batch. It falls below zero when late tokens profit from what came before, which is "
               "what induction heads make possible.")
    widgets.chart(plots.icl_over_training(steps, dyn["icl"], metrics, run.name, marks),
                  plots.title(run.name, "ICL score"), key="dyn_icl")
    widgets.chart(plots.loss_by_position_over_training(steps, dyn["loss_pos"], run.name),
                  plots.title(run.name, "loss by position"), key="dyn_loss_pos")

st.subheader("Logit lens over training")
st.caption("For the probe prompt: after which layer does the model's final answer already come out on top?")
widgets.chart(plots.lens_over_training(steps, dyn["lens_agree"], dyn["lens_first"], run.name),
              plots.title(run.name, "logit lens over training"), key="dyn_lens")

st.subheader("What changed between two steps")
tok = loaders.tokenizer(run_id)
state.default(state.DYN_A, steps[len(steps) // 2] if len(steps) > 2 else steps[0])
state.default(state.DYN_B, steps[-1])
for key in (state.DYN_A, state.DYN_B):
    if state.get(key) not in steps:
        state.put(key, steps[-1])
c1, c2 = st.columns(2)
a = c1.select_slider("From step", options=steps, key=state.DYN_A)
b = c2.select_slider("To step", options=steps, key=state.DYN_B)
state.default(state.DYN_PROMPT, analysis.default_prompt(run, tok))
prompt = st.text_area("Text", key=state.DYN_PROMPT, height=70)
ids = widgets.encode_or_error(tok, prompt, run.config.model.n_ctx)
if ids is not None and len(ids) >= 2:
    version = (loaders.weights_version(run_id, a), loaders.weights_version(run_id, b))
    change = analysis.loss_change(run_id, a, b, version, tuple(ids))
    st.caption(f"Each token shaded by how its loss changed from step {a} to step {b}: green = predicted better at "
               f"step {b}, red = worse (mean {change.mean():+.3f} nats). Hover a token for the numbers.")
    labels, values, tips = widgets.change_tokens(tok, ids, change)
    with st.container(key="dyn_change", border=True):
        st.html(widgets.signed_token_html(labels, values, tips))

st.subheader("Replay file")
st.caption("One offline HTML file with a step slider over the head grid, the head timeline, the loss curves and the "
           "ICL score, plus the config, seed and corpus hash: a write-up attachment that opens anywhere.")
if st.button("Build replay file", icon=":material/movie:", key="dyn_report_build"):
    with st.spinner("Writing the replay file..."):
        state.put(state.REPORT_HTML, (run_id, analysis.replay_html(run_id)))
built = state.get(state.REPORT_HTML)
if built and built[0] == run_id:
    st.download_button("Download replay.html", data=built[1], file_name=f"{run.name}-replay.html", mime="text/html",
                       key="dyn_report_download", on_click="ignore", type="primary")
