"""Sample: generate text; every slider re-samples; inspect any step's candidates."""

import streamlit as st

from tinyviz.analysis import plots
from tinyviz.app import analysis, loaders, page, state, widgets
from tinyviz.config import SampleConfig

run = page.run_header("Sample")
run_id = str(run.path)
tok = loaders.tokenizer(run_id)

state.default(state.SAMPLE_PROMPT, run.meta.get("probe_prompt", "")[:40] or "The")
for key, value in ((state.SAMPLE_TEMP, 0.8), (state.SAMPLE_TOP_K, 0), (state.SAMPLE_TOP_P, 1.0),
                   (state.SAMPLE_SEED, 0), (state.SAMPLE_LEN, 150)):
    state.default(key, value)
if state.get(state.SAMPLE_TOP_K) > tok.vocab_size:
    state.put(state.SAMPLE_TOP_K, 0)

prompt = st.text_area("Prompt", key=state.SAMPLE_PROMPT, height=70, persist_state="session")
c = st.columns(5)
temperature = c[0].slider("Temperature", 0.0, 2.0, step=0.05, key=state.SAMPLE_TEMP, persist_state="session",
                          help="0 = greedy: always the likeliest token")
top_k = c[1].slider("Top-k", 0, tok.vocab_size, key=state.SAMPLE_TOP_K, persist_state="session",
                    help="keep only the k likeliest tokens; 0 = off")
top_p = c[2].slider("Top-p", 0.05, 1.0, step=0.05, key=state.SAMPLE_TOP_P, persist_state="session",
                    help="keep the likeliest tokens covering this much probability; 1 = off")
seed = c[3].number_input("Seed", 0, 2**31 - 1, step=1, key=state.SAMPLE_SEED, persist_state="session")
length = c[4].slider("Length (tokens)", 10, 500, step=10, key=state.SAMPLE_LEN, persist_state="session")

try:
    cfg = SampleConfig(max_new_tokens=length, temperature=temperature, top_k=top_k, top_p=top_p, seed=int(seed))
    result = analysis.sample(run_id, loaders.weights_version(run_id), prompt, cfg)
except ValueError as e:  # includes UnknownCharactersError and an empty prompt
    st.error(widgets.sentence(e))
    st.stop()
for notice in result.notices:
    st.info(widgets.sentence(notice))

settings = f"T={temperature:g}, top-k={top_k or 'off'}, top-p={top_p:g}, seed={int(seed)}"
st.caption(f"Generated with {settings}. Each generated token is shaded by how unlikely it was under the "
           "distribution it was drawn from: plain = probability near 1, dark orange = near 0. Hover a token for its "
           "probability. The prompt is not shaded.")
labels, values, tips = widgets.sample_tokens(tok, result)
surprise = [None if v is None else 1.0 - v for v in values]
with st.container(key="sample_text", border=True):
    st.html(widgets.token_html(labels, surprise, tips, (255, 127, 14)))
with st.expander("Plain text"):
    st.code(result.prompt + result.text, language=None, wrap_lines=True)

if result.steps:
    st.subheader("Why this token?")
    n = len(result.steps)
    if not 1 <= state.get(state.SAMPLE_STEP, 1) <= n:
        state.put(state.SAMPLE_STEP, 1)
    state.default(state.SAMPLE_STEP, 1)
    i = st.slider("Generated token", 1, n, key=state.SAMPLE_STEP, persist_state="session") - 1
    step = result.steps[i]
    fig = plots.candidates_bar(step.candidates, tok.token_str(step.token), run.name, i, settings)
    widgets.chart(fig, plots.title(run.name, f"candidates at token {i + 1}", settings), key="sample_candidates")
