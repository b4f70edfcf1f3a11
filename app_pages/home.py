"""Home: what tinyviz is, the current run at a glance, and where to go next."""

import streamlit as st

from tinyviz.ui import loaders, page, sidebar, state
from tinyviz.ui.registry import registry

st.title("tinyviz")
st.markdown(
    "Train a tiny GPT-style transformer on your laptop's CPU and watch its attention heads form. "
    "Flip one architecture switch, train the sibling with the same seed and data, compare the two, and export "
    "every plot for your write-up."
)
run = loaders.current_run_or_error()
if run is not None:
    s = run.summary()
    job = registry().get(s["path"])
    st.subheader(f"Current run: {s['name']}")
    c = st.columns(4)
    c[0].metric("Step", f"{s['step']} / {s['steps']}")
    c[1].metric("Train loss", "–" if s["loss"] is None else f"{s['loss']:.3f}")
    c[2].metric("Val loss", "–" if s["val_loss"] is None else f"{s['val_loss']:.3f}")
    c[3].metric("Status", "training" if job is not None and job.alive else s["status"])
    st.caption(f"{s['model']} · corpus {s['corpus']} · preset {s['preset']} · folder `{s['path']}`. "
               "Pick another run, or open a zipped run folder, in the sidebar.")
st.subheader("Where to next")
links = sidebar.link_params(state.get(state.RUN))
for title, (path, icon, what) in page.PAGES.items():
    if path != page.HOME:
        st.page_link(path, label=f"**{title}**: {what}", icon=icon, query_params=links)
