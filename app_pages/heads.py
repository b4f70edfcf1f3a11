"""Heads: every head's attention on a prompt; click one for its full heatmap, scores and history."""

import streamlit as st

from tinyviz.analysis import plots, probes
from tinyviz.ui import analysis, loaders, page, state, widgets

YOUR_PROMPT, REPLAY = state.YOUR_PROMPT, state.REPLAY
TOKEN_VIEW = "heads_token_view"  # the head view chart (one token in every head): its key and selection state


def _on_grid_click() -> None:
    picked = analysis.head_from_selection(st.session_state[state.HEADS_GRID])
    if picked is not None:  # clicking the selected marker again clears the selection: keep the last pick
        st.session_state[state.HEAD_LAYER], st.session_state[state.HEAD_HEAD] = picked


def _on_view_click() -> None:
    key = analysis.key_from_selection(st.session_state.get(TOKEN_VIEW))
    if key is not None:  # a click on a cell makes its key token the query (clicking it again clears: keep)
        state.put(state.HEADS_QUERY, key)


run = page.run_header("Heads")
run_id, cfg = str(run.path), run.config.model
tok = loaders.tokenizer(run_id)
shown = page.shown_step(run)  # the sidebar's "Weights at step"

state.default(state.HEADS_SOURCE, YOUR_PROMPT)
source = st.segmented_control("Attention of", [YOUR_PROMPT, REPLAY], key=state.HEADS_SOURCE, required=True,
                              persist_state="session")
if source == YOUR_PROMPT:
    state.default(state.HEADS_PROMPT, analysis.default_prompt(run, tok))
    prompt = st.text_area("Prompt", key=state.HEADS_PROMPT, height=80, persist_state="session",
                          help="any text made of characters the model was trained on")
    ids = widgets.encode_or_error(tok, prompt, cfg.n_ctx)
    if ids is None:
        st.stop()
    step, patterns = shown, loaders.patterns_on(run_id, ids, shown)
else:
    steps = run.snapshot_steps()
    if not steps:
        st.warning(f"{run.name} has no attention snapshots; train with snapshot_interval above 0 to replay.")
        st.stop()
    if state.get(state.HEADS_STEP) not in steps:
        state.put(state.HEADS_STEP, steps[-1])
    step = st.select_slider("Training step", options=steps, key=state.HEADS_STEP, persist_state="session",
                            help="the probe prompt's attention, saved every snapshot_interval steps")
    snap = loaders.snapshot(run_id, step)
    patterns, ids = snap["patterns"], snap["tokens"]
if len(ids) < 2:
    st.error("The prompt needs at least two tokens for attention to have a choice.")
    st.stop()

tokens = [tok.token_str(i) for i in ids]
stats = analysis.head_stats(patterns, ids, cfg.causal)
if state.get(state.HEAD_LAYER) not in range(cfg.n_layers) or state.get(state.HEAD_HEAD) not in range(cfg.n_heads):
    layer, head = analysis.most_telling_head(stats["labels"])
    state.put(state.HEAD_LAYER, layer)
    state.put(state.HEAD_HEAD, head)
layer, head = state.get(state.HEAD_LAYER), state.get(state.HEAD_HEAD)

left, right = st.columns([5, 6], gap="medium")
with left:
    st.markdown("**Click a head** (or pick it below) to open it. Same colour scale as the big heatmap.")
    grid = plots.head_grid(patterns, run.name, step, stats["labels"], selected=(layer, head))
    widgets.chart(grid, plots.title(run.name, "all heads", f"step {step}"), key=state.HEADS_GRID,
                  on_select=_on_grid_click)
    c1, c2 = st.columns(2)
    c1.selectbox("Layer", range(cfg.n_layers), key=state.HEAD_LAYER, persist_state="session")
    c2.selectbox("Head", range(cfg.n_heads), key=state.HEAD_HEAD, persist_state="session")
    label = stats["labels"][layer][head]
    st.markdown(f"**Layer {layer}, head {head}** · label **{label}** · entropy {stats['entropy'][layer, head]:.2f} "
                f"nats · strongest score {stats['top_score'][layer][head]}")
    st.dataframe(analysis.head_score_row(stats, layer, head), hide_index=True)
with right:
    big = plots.head_heatmap(patterns[layer, head], tokens, run.name, layer, head, step, label)
    widgets.chart(big, plots.title(run.name, f"layer {layer} head {head}", f"step {step}"), key="heads_big",
                  look_for="each row is a query token; where its weight sits says what it reads: the token "
                           "before (previous-token), the token after an earlier copy (induction), or the first.")

st.subheader("One token in every head")
st.caption("Click a token of the prompt (or a cell of the chart: its column's token) to see where it attends in every "
           "head at once: one row per head, one column per token, darker = more weight (grey: later tokens, which it "
           "cannot see).")
with st.container(key="heads_query_box", border=True):
    query = widgets.token_picker("Token", tokens, state.HEADS_QUERY, default=len(tokens) - 1,
                                 help="the attending (query) token; its column is outlined in every head")
view = plots.token_view(patterns, tokens, query, run.name, step, stats["labels"], causal=cfg.causal)
widgets.chart(view, plots.title(run.name, f"token {query} in every head", f"step {step}"), key=TOKEN_VIEW,
              on_select=_on_view_click, df=analysis.query_rows_frame(patterns, tokens, query, cfg.causal),
              look_for="where each row is darkest: the token before (a previous-token head), the token after an "
                       "earlier copy of this one (an induction head), or the first token (a sink). Heads that "
                       "agree read the same thing.")

st.subheader("Scores of every head")
st.caption("prev_token: attends to the token before · induction: to the token after an earlier copy of itself · "
           "sink: to the first token · self: to itself · local: to the 3 tokens before · uniform: spread evenly.")
scores_fig = plots.head_scores_heatmap(stats["scores"], stats["entropy"], run.name, step)
widgets.chart(scores_fig, plots.title(run.name, "head scores", f"step {step}"), key="heads_scores",
              df=analysis.scores_frame(stats))

history = loaders.snapshot_history(run_id)
if len(history) > 1:
    st.subheader(f"How layer {layer}, head {head} formed")
    widgets.chart(plots.head_history(history, layer, head, run.name),
                  plots.title(run.name, f"layer {layer} head {head}", "history"), key="heads_history",
                  look_for="the step where one score climbs past the others: that is when the head took its job "
                           "(induction often jumps late).")

st.subheader("Zero-ablate heads")
st.caption(f"Set a head's output to zero and see how the loss on this prompt changes (weights at step {shown}).")
names = [f"L{l} H{h}" for l in range(cfg.n_layers) for h in range(cfg.n_heads)]
chosen = st.multiselect("Heads to zero", names, key=state.HEADS_ABLATE, persist_state="session")
model = loaders.model(run_id, shown)
result = probes.ablation_loss(model, ids, [analysis.parse_head(n) for n in chosen])
a = st.columns(3)
a[0].metric("Loss, clean", f"{result['clean']:.3f}")
a[1].metric("Loss, ablated", f"{result['ablated']:.3f}", delta=f"{result['delta']:+.3f}", delta_color="inverse")
a[2].metric("Heads zeroed", len(chosen))
# one forward pass per head: instant for the tiny models, minutes for GPT-2 small's 144 heads on 2 cores
n_heads = cfg.n_layers * cfg.n_heads
if n_heads <= analysis.AUTO_ABLATION_HEADS or st.toggle(
        f"Zero each of the {n_heads} heads in turn ({n_heads} forward passes)", key=state.HEADS_ABLATE_ALL,
        help="the loss change when each head alone is zeroed; on a model this size it takes a while"):
    each = analysis.single_head_ablation(run_id, shown, loaders.weights_version(run_id, shown), tuple(ids))
    widgets.chart(plots.ablation_bars(each, run.name, shown),
                  plots.title(run.name, "ablation", f"step {shown}"), key="heads_ablation")
