"""The app's pages and the frame they share (drawn once per rerun by app.py).

The page files live in ``app_pages/``, not ``pages/``: a ``pages/`` folder beside app.py puts
Streamlit in its legacy file-per-page mode for a process's first script run (and every AppTest
run), which runs a page file on its own, without this frame, or shows "Page not found" first.
"""

from __future__ import annotations

import streamlit as st

from tinyviz.training.runs import Run, RunError
from tinyviz.ui import loaders, sidebar, widgets

HOME = "app_pages/home.py"
PAGES = {  # title -> (file, icon, what it is for)
    "Home": (HOME, ":material/home:", "what tinyviz is and the current run"),
    "Train": ("app_pages/train.py", ":material/model_training:",
              "train a model live: loss, gradients, health, samples"),
    "Heads": ("app_pages/heads.py", ":material/grid_view:",
              "click any head to see its attention; replay how it formed"),
    "Predictions": ("app_pages/predictions.py", ":material/format_list_numbered:",
                    "top-k next tokens, per-token loss and the logit lens"),
    "Sample": ("app_pages/sample.py", ":material/edit_note:",
               "generate text with temperature, top-k, top-p and a seed"),
    "Dynamics": ("app_pages/dynamics.py", ":material/timeline:",
                 "when each head formed and started to matter; ICL, logit lens and loss changes over training"),
    "Compare": ("app_pages/compare.py", ":material/compare_arrows:",
                "overlay runs, diff configs, launch an A/B ablation"),
}


def pages() -> list:
    """The st.Page list for st.navigation; Home is the default (served at /)."""
    return [st.Page(path, title=title, icon=icon, default=path == HOME, url_path=title.lower())
            for title, (path, icon, _) in PAGES.items()]


def frame() -> None:
    """The sidebar every page shares: the run picker (in step with ``?run=``) with its status and step
    control, and the write-up bundle."""
    ids, current = sidebar.current_run()
    sidebar.run_picker(ids, current)
    sidebar.bundle_box()


def run_header(title: str) -> Run:
    """The page's title and the current run with its caption; without a run the page shows why and stops."""
    st.title(title)
    run = loaders.current_run_or_error()
    if run is None:
        st.stop()
    step = loaders.shown_step(str(run.path))
    widgets.run_caption(run, step)
    try:
        loaders.model(str(run.path), step)  # a damaged history file is named here; other steps still open
    except RunError as e:
        st.error(f"{e} Move **Weights at step** in the sidebar to another step.")
        st.stop()
    return run


def link_params() -> dict | None:
    """The address parameters a page link carries: the current run and step."""
    from tinyviz.ui import state

    return sidebar.link_params(state.get(state.RUN))


def open_head(run_id: str, layer: int, head: int, step: int) -> None:
    """Switch to Heads showing head (layer, head) at `step`: the sidebar's "Weights at step" moves there
    (None for the latest) and Heads shows the prompt with those weights; a step whose weights were not
    kept (only its attention snapshot was) opens the training replay at that step instead."""
    from tinyviz.ui import state

    steps = loaders.kept_steps(run_id)
    if step in steps:
        state.put(state.STEP, None if step == steps[-1] else step)
        state.put(state.HEADS_SOURCE, state.YOUR_PROMPT)
    else:
        state.put(state.HEADS_SOURCE, state.REPLAY)
        state.put(state.HEADS_STEP, step)
    state.put(state.HEAD_LAYER, layer)
    state.put(state.HEAD_HEAD, head)
    st.switch_page(PAGES["Heads"][0], query_params=link_params())


def shown_step(run: Run) -> int:
    """The step the page shows (the sidebar's "Weights at step")."""
    return loaders.shown_step(str(run.path))
