"""Cached loaders: runs, models, tokenizers and snapshots, keyed so a run that trains refreshes.

A model is cached per (run folder, weights file mtime), so pages reuse one model until a
new checkpoint lands. Everything here returns plain objects; errors are RunError with a
sentence for st.error.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import streamlit as st

from tinyviz.analysis import probes
from tinyviz.training.runs import (
    CONFIG,
    METRICS,
    MODEL,
    TOKENIZER,
    Run,
    RunError,
    file_version,
    list_runs,
    run_label,
)

DEMO = "demo"


def runs_root() -> Path:
    """Where runs live: $TINYVIZ_RUNS (tests point it at a temporary folder), else ./checkpoints."""
    return Path(os.environ.get("TINYVIZ_RUNS", "checkpoints"))


ALLOW_PATHS_ENV = "TINYVIZ_ALLOW_SERVER_PATHS"


def _is_loopback(address: str) -> bool:
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False  # a host name or empty (every interface): reachable from elsewhere


def server_paths_off() -> str | None:
    """None when a corpus may be a path on the server's disk; otherwise the sentence saying why not.

    On a server that listens beyond loopback, anyone who can open the page could make it read any file
    the server can read, so paths are off there unless TINYVIZ_ALLOW_SERVER_PATHS=1."""
    if os.environ.get(ALLOW_PATHS_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return None
    address = str(st.get_option("server.address") or "")
    if _is_loopback(address):
        return None
    where = f"on {address}" if address else "on every network interface"
    return (f"Reading a file on the server is off: this server listens {where}, so anyone who can open this page "
            f"could make it read any file the server can read. Upload the text instead, or restart the server "
            f"with {ALLOW_PATHS_ENV}=1 if everyone who can reach it may read its files.")


def demo_path() -> Path:
    return runs_root() / DEMO


def run_ids() -> list[str]:
    """Every run folder under the runs root: the demo first, then the others, then the runs of each ablation
    or sweep folder, group by group (runs.list_runs)."""
    ids = [str(r.path) for r in list_runs(runs_root())]
    demo = str(demo_path())
    return sorted(ids, key=lambda i: i != demo)  # stable: list_runs' order after the demo


def label(run_id: str) -> str:
    """The run's name in the store, unique: 'demo', or 'ablate-residual/nores-2L-seed1' for a run in a group
    folder (what ?run= holds)."""
    return run_label(Path(run_id), runs_root())


def display_label(run_id: str) -> str:
    """label() for people: 'ablate-residual / nores-2L-seed1'."""
    return label(run_id).replace("/", " / ")


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return 0


def weights_version(run_id: str, step: int | None = None) -> int:
    """Changes when the weights a page shows change: the checkpoint's file, or a kept step's file."""
    if step is None or step == open_run(run_id).weights_step():
        return _mtime(Path(run_id) / MODEL)
    return hash((step, *open_run(run_id).history.file_version(step)))


def kept_steps(run_id: str) -> list[int]:
    """The steps the step control offers, oldest first: the kept steps and the checkpoint's step;
    [] for a run without weights history (re-read every rerun, so a live run's steps appear as written)."""
    run = open_run(run_id)
    steps = run.history.steps()
    return sorted({*steps, run.weights_step()}) if steps else []


def shown_step(run_id: str) -> int:
    """The step whose weights the pages show: the step control's choice, else the latest kept step
    (the checkpoint's step for a run without history)."""
    from tinyviz.ui import state

    steps = kept_steps(run_id)
    want = state.get(state.STEP)
    if want in steps:
        return want
    return steps[-1] if steps else open_run(run_id).weights_step()


@st.cache_resource(max_entries=16, show_spinner=False)
def _open(run_id: str, version: tuple) -> Run:
    return Run.open(Path(run_id))


def config_version(run_id: str) -> tuple:
    """Changes when the run folder is replaced (a new config.json)."""
    return file_version(run_id, CONFIG)


def open_run(run_id: str) -> Run:
    return _open(run_id, file_version(run_id, CONFIG))


@st.cache_resource(max_entries=16, show_spinner=False)
def _tokenizer(run_id: str, version: tuple):
    return Run.open(Path(run_id)).tokenizer()


def tokenizer(run_id: str):
    return _tokenizer(run_id, file_version(run_id, TOKENIZER))


@st.cache_resource(max_entries=6, show_spinner="Loading the model...")
def _model(run_id: str, version: int):
    return Run.open(Path(run_id)).load_model()


@st.cache_resource(max_entries=12, show_spinner=False)
def _model_at(run_id: str, step: int, version: int):
    return Run.open(Path(run_id)).model_at(step)


def model(run_id: str, step: int | None = None):
    """The weights at a kept step (None or the checkpoint's step: the latest) in eval mode; shared, never
    train or modify it. A missing or damaged history file is a RunError naming it."""
    if step is None or step == open_run(run_id).weights_step():
        return _model(run_id, weights_version(run_id))
    return _model_at(run_id, step, weights_version(run_id, step))


@st.cache_data(max_entries=64, show_spinner=False)
def snapshot(run_id: str, step: int) -> dict:
    return Run.open(Path(run_id)).load_snapshot(step)


def snapshot_history(run_id: str) -> list[dict]:
    """Every snapshot's step, scores and entropy (not the patterns), oldest first."""
    out = []
    for step in Run.open(Path(run_id)).snapshot_steps():
        snap = snapshot(run_id, step)
        if "scores" in snap and "entropy" in snap:
            out.append({"step": step, "scores": snap["scores"], "entropy": snap["entropy"]})
    return out


@st.cache_data(max_entries=32, show_spinner=False)
def _metrics(run_id: str, version: tuple) -> list[dict]:
    return Run.open(Path(run_id)).metrics()


def metrics(run_id: str) -> list[dict]:
    return _metrics(run_id, file_version(run_id, METRICS))


def current_run_or_error() -> Run | None:
    """The sidebar's run, or None after st.error says why (no run, or a damaged folder)."""
    from tinyviz.ui import state

    run_id = state.get(state.RUN)
    if not run_id:
        st.error(f"No run is selected. Train one on the Train page, or put a run folder in {runs_root()}/.")
        return None
    try:
        run = open_run(run_id)
        if not run.has_weights():
            st.warning(f"{run.name} has no trained weights yet; train it on the Train page first.")
            return None
        model(run_id)  # cached; a damaged or mismatched weights file is a sentence here, not a page crash
        return run
    except RunError as e:
        st.error(str(e))
        return None


def patterns_on(run_id: str, ids: list[int], step: int | None = None):
    """Every head's pattern [L, H, T, T] on a prompt, with the weights at step (cached per prompt)."""
    return _patterns(run_id, step, weights_version(run_id, step), tuple(ids))


@st.cache_data(max_entries=32, show_spinner=False)
def _patterns(run_id: str, step: int | None, version: int, ids: tuple):
    return probes.attention_patterns(model(run_id, step), list(ids))
