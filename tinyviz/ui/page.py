"""What every page does first: page config, the navigation links and the shared sidebar.

The app keeps its pages in ``pages/``, which puts Streamlit in its file-per-page mode: a page's
URL runs that file alone, not app.py. So each page (app.py included) calls ``setup()`` itself,
and the built-in page list is hidden (client.showSidebarNavigation = false) in favour of ours.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle torch threads sleep instead of spinning

import streamlit as st

from tinyviz.runs import Run
from tinyviz.ui import loaders, sidebar, widgets

HOME = "app.py"
PAGES = {
    "Train": ("pages/train.py", ":material/model_training:", "train a model live: loss, gradients, health, samples"),
    "Heads": ("pages/heads.py", ":material/grid_view:", "click any head to see its attention; replay how it formed"),
    "Predictions": ("pages/predictions.py", ":material/format_list_numbered:",
                    "top-k next tokens, per-token loss and the logit lens"),
    "Sample": ("pages/sample.py", ":material/edit_note:", "generate text with temperature, top-k, top-p and a seed"),
    "Compare": ("pages/compare.py", ":material/compare_arrows:", "overlay runs, diff configs, launch an A/B ablation"),
}


def setup(title: str) -> None:
    """Page config, the navigation and the run picker; call first on every page."""
    st.set_page_config(page_title=f"{title} · tinyviz", page_icon=":material/grid_view:", layout="wide")
    ids, current = sidebar.current_run()
    params = sidebar.link_params(current)
    with st.sidebar:
        st.page_link(HOME, label="Home", icon=":material/home:", query_params=params)
        for name, (path, icon, _) in PAGES.items():
            st.page_link(path, label=name, icon=icon, query_params=params)
        st.divider()
    sidebar.run_picker(ids, current)
    sidebar.bundle_box()


def run_page(title: str) -> Run:
    """setup(), the title, and the current run with its caption; a page without one shows why and stops."""
    setup(title)
    st.title(title)
    run = loaders.current_run_or_error()
    if run is None:
        st.stop()
    widgets.run_caption(run)
    return run
