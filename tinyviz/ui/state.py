"""Every st.session_state key the app uses, in one place.

Widgets that should keep their value across page switches are created with
``persist_state="session"``. Keys that depend on the current run (prompts, the chosen
head, the replay step) are listed in RUN_SCOPED and cleared when the run changes.
"""

from __future__ import annotations

import streamlit as st

# shared
RUN = "run_id"  # the current run: its folder path as a string
RUN_PICKER = "sidebar_run"  # the sidebar selectbox (a prefix: its key changes with the options)
RUN_PICKER_DRAWN = "run_picker_drawn"  # the key of the picker the latest run drew
UPLOAD = "sidebar_upload"  # the run-zip uploader
UPLOAD_MSG = "sidebar_upload_msg"  # (kind, sentence) of the last upload
IMPORT_FILES = "sidebar_import_files"  # "Open a model trained elsewhere": uploaded model + tokenizer files
IMPORT_PATH = "sidebar_import_path"  # ... or a path on the server, and a tokenizer path
IMPORT_TOKENIZER = "sidebar_import_tokenizer"
IMPORT_MSG = "sidebar_import_msg"  # (kind, sentence) of the last import
BUNDLE = "bundle"  # {figure name: (figure, dataframe)} chosen for the write-up bundle
BUNDLE_ZIP = "bundle_zip"  # (zip bytes, notes) once built
STEP = "weights_step"  # the step control's choice: a kept step, or None for the latest
STEP_SLIDER = "sidebar_step"  # the step slider (a prefix: its key changes with the kept steps)
STEP_MOVED = "weights_step_moved"  # the step control moved inside its live fragment: rerun the whole page

# Heads
HEADS_PROMPT = "heads_prompt"
HEADS_SOURCE = "heads_source"
YOUR_PROMPT, REPLAY = "Your prompt", "Training replay (probe prompt)"  # HEADS_SOURCE's two values
HEADS_STEP = "heads_step"
HEADS_GRID = "heads_grid"  # the clickable grid chart's selection state
HEAD_LAYER = "head_layer"
HEADS_QUERY = "heads_query"  # the token position the head view shows (kept when the prompt changes)
HEADS_QUERY_PICKER = "heads_query_picker"  # a prefix: the token picker's key changes with the prompt's tokens
HEAD_HEAD = "head_head"
HEADS_ABLATE = "heads_ablate"
HEADS_ABLATE_ALL = "heads_ablate_all"  # big models: the per-head ablation bars only on request

# Predictions
PRED_PROMPT = "pred_prompt"
PRED_K = "pred_k"
PRED_START = "pred_start"  # the first position the top-k heatmap shows

# Sample
SAMPLE_PROMPT = "sample_prompt"
SAMPLE_TEMP = "sample_temperature"
SAMPLE_TOP_K = "sample_top_k"
SAMPLE_TOP_P = "sample_top_p"
SAMPLE_SEED = "sample_seed"
SAMPLE_LEN = "sample_length"
SAMPLE_LEN_DEFAULT = "sample_length_default"  # the default length last given (it depends on the model's size)
SAMPLE_STEP = "sample_step"

# Dynamics
DYN_TIMELINE = "dyn_timeline"  # the clickable head timeline's selection state
DYN_JUMP = "dyn_jump"  # (layer, head, step) picked on the timeline: open it on Heads
TRAIN_JUMP = "train_jump"  # (layer, head, step) clicked in the Train page's live head grid: open it on Heads
DYN_A = "dyn_step_a"
DYN_B = "dyn_step_b"
DYN_PROMPT = "dyn_prompt"
REPORT_HTML = "report_html"  # (run id, html bytes) of the replay file once built

# Train
TRAIN_LOG_Y = "train_log_y"
TRAIN_SMOOTHING = "train_smoothing"  # the loss chart's EMA slider (one per chart, so two on a page never clash)
TRAIN_PRESET = "train_preset"
TRAIN_SOURCE = "train_source"
TRAIN_MSG = "train_msg"  # (kind, sentence) after Start / Resume
TRAIN_HEADS = "train_heads"  # the live head grid's selection state

# Compare
COMPARE_RUNS = "compare_runs"
COMPARE_PROMPT = "compare_prompt"
COMPARE_LOG_Y = "compare_log_y"
COMPARE_SMOOTHING = "compare_smoothing"
ABLATE_SMOOTHING = "ablate_smoothing"
SWEEP_SMOOTHING = "sweep_smoothing"
COMPARE_PENDING = "compare_pending"  # runs to select on the next rerun (after an A/B launch)
AB_MSG = "ab_msg"
AB_FIELD = "ab_field"
AB_VALUE = "ab_value"  # prefix: one value box per switch
AB_NAME = "ab_name"  # prefix: the name box is keyed by run, switch and value
ABLATE_PRESET = "ablate_preset"  # the ablation panel (tinyviz/ui/ablate_panel.py)
ABLATE_SEEDS = "ablate_seeds"  # suffixed with the preset name: each preset has its own default
ABLATE_STEPS = "ablate_steps"
ABLATE_CORPUS = "ablate_corpus"
SWEEP_FOLDER = "sweep_folder"  # the sweep folder opened on Compare (tinyviz/ui/sweep_panel.py)
SWEEP_CELLS = "sweep_cells"  # suffixed with the folder's name: the cells whose curves are drawn

RUN_SCOPED = (STEP, DYN_TIMELINE, DYN_JUMP, TRAIN_JUMP, DYN_A, DYN_B, DYN_PROMPT, REPORT_HTML,
              HEADS_PROMPT, HEADS_STEP, HEADS_GRID, HEAD_LAYER, HEAD_HEAD, HEADS_QUERY, HEADS_ABLATE,
              PRED_PROMPT, PRED_START,
              SAMPLE_PROMPT, SAMPLE_STEP, SAMPLE_TOP_K, COMPARE_PROMPT)


def get(key: str, default=None):
    return st.session_state.get(key, default)


def put(key: str, value) -> None:
    st.session_state[key] = value


def set_run(run_id: str) -> None:
    """Make run_id current and forget what belonged to the previous run."""
    if st.session_state.get(RUN) != run_id:
        for key in RUN_SCOPED:
            st.session_state.pop(key, None)
    st.session_state[RUN] = run_id


def default(key: str, value) -> None:
    """Give a widget's key its starting value once (instead of value=, which would fight the state)."""
    if key not in st.session_state:
        st.session_state[key] = value
