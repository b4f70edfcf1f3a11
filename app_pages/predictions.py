"""Predictions: what the model expects after each position, how wrong it was, and the logit lens."""

import streamlit as st

from tinyviz.analysis import plots, probes
from tinyviz.ui import analysis, loaders, page, state, widgets

run = page.run_header("Predictions")
run_id, cfg = str(run.path), run.config.model
tok = loaders.tokenizer(run_id)

state.default(state.PRED_PROMPT, analysis.default_prompt(run, tok))
state.default(state.PRED_K, 5)
c1, c2 = st.columns([4, 1])
prompt = c1.text_area("Prompt", key=state.PRED_PROMPT, height=80, persist_state="session")
k = c2.slider("Top-k", 1, min(10, tok.vocab_size), key=state.PRED_K, persist_state="session")
ids = widgets.encode_or_error(tok, prompt, cfg.n_ctx)
if ids is None:
    st.stop()
if len(ids) < 2:
    st.error("The prompt needs at least two tokens: one to predict from and one to be predicted.")
    st.stop()

step = page.shown_step(run)  # the sidebar's "Weights at step"
model = loaders.model(run_id, step)
tokens = [tok.token_str(i) for i in ids]
top_ids, top_probs = probes.top_predictions(model, ids, k)
losses = probes.loss_per_position(model, ids)

st.subheader(f"Loss of each next token · weights at step {step}")
st.caption(f"Each token shaded by the loss the model took predicting it (darker = more surprised; mean "
           f"{losses.mean():.3f} nats). Hover a token for its loss and the model's top guess.")
labels, values, tips = analysis.loss_tokens(tok, ids, losses, top_ids)
with st.container(key="pred_tokens", border=True):
    st.html(widgets.token_html(labels, values, tips, (214, 39, 40), vmax=max(4.0, float(losses.max()))))
widgets.chart(plots.token_loss_bars(tokens, losses, run.name, step),
              plots.title(run.name, "per-token loss", f"step {step}"),
              key="pred_loss")

st.subheader(f"Top-{k} next tokens at each position")
top_labels = [[tok.token_str(int(i)) for i in row] for row in top_ids]
start = 0
if len(tokens) > plots.PRED_COLUMNS:  # more columns than fit readably: a window over the positions
    if state.get(state.PRED_START, 0) > len(tokens) - plots.PRED_COLUMNS:  # a shorter prompt than before
        state.put(state.PRED_START, len(tokens) - plots.PRED_COLUMNS)
    start = st.slider("First position shown", 0, len(tokens) - plots.PRED_COLUMNS, key=state.PRED_START,
                      help=f"the chart shows {plots.PRED_COLUMNS} positions at a time, so each token stays readable")
st.caption("What to look for: where the right next token is rank #1 (dark cell), the model is sure and right; "
           "a flat column is a position the model cannot predict from what came before.")
widgets.chart(plots.predictions_heatmap(tokens, top_labels, top_probs, run.name, step, start=start),
              plots.title(run.name, f"top-{k} predictions", f"step {step}"), key="pred_topk")

st.subheader("Logit lens")
st.caption("The residual stream after each layer, read out with the model's own unembedding: where in the "
           "network does the final guess appear?")
if cfg.tie_embeddings:
    st.caption("The **embed** row reads the token embeddings straight out through the same matrix (the embeddings "
               "are tied), so its top guess is mostly the current token itself: nothing has been computed yet. "
               "What the layers add shows in the rows below it.")
lens = probes.logit_lens(model, ids, tok)
widgets.chart(plots.logit_lens_heatmap(lens, tokens, run.name, step),
              plots.title(run.name, "logit lens", f"step {step}"), key="pred_lens")
