"""What the pages compute, in one call each: head statistics, tables, cached probe results.

Pages stay layout only; the arithmetic lives here and in tinyviz.analysis.probes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import pandas as pd
import streamlit as st

from tinyviz.analysis import dynamics, plots, probes
from tinyviz.config import RunConfig, SampleConfig
from tinyviz.data.text import visible
from tinyviz.model.sampling import Generation, SampleResult
from tinyviz.training import dynamics as dynamics_store
from tinyviz.training.runs import Run, RunError
from tinyviz.ui import loaders
from tinyviz.ui.registry import every_core_while_idle


def default_prompt(run: Run, tokenizer, n_tokens: int | None = None) -> str:
    """The run's probe prompt, cut to what the model sees at once (n_ctx tokens) or to n_tokens."""
    prompt = run.meta.get("probe_prompt") or ""
    try:
        ids = tokenizer.encode(prompt)
    except ValueError:
        return ""
    return tokenizer.decode(ids[: n_tokens or run.config.model.n_ctx])


LABEL_INTEREST = ("induction", "prev_token", "local", "sink", "self", "uniform")


def most_telling_head(labels: list[list[str]]) -> tuple[int, int]:
    """The head a first look should open: an induction head if any, then a previous-token head, ..."""
    for wanted in LABEL_INTEREST:
        for l, row in enumerate(labels):
            if wanted in row:
                return l, row.index(wanted)
    return 0, 0


def head_stats(patterns: np.ndarray, ids: list[int], causal: bool) -> dict:
    """probes.head_stats plus "top_score": [L][H] 'name 0.83', each head's highest score."""
    stats = probes.head_stats(patterns, ids, causal=causal)
    names = probes.SCORE_NAMES
    stack = np.stack([stats["scores"][n] for n in names])  # [K, L, H]
    best = stack.argmax(0)
    top = [[f"{names[b]} {stack[b, l, h]:.2f}" for h, b in enumerate(row)] for l, row in enumerate(best)]
    return {**stats, "top_score": top}


def head_score_row(stats: dict, layer: int, head: int) -> pd.DataFrame:
    """One head's scores beside the threshold that would name it."""
    return pd.DataFrame.from_records([
        {"score": n, "value": round(float(stats["scores"][n][layer, head]), 3),
         "label threshold": probes.HEAD_THRESHOLDS.get(n)}
        for n in probes.SCORE_NAMES
    ])


def scores_frame(stats: dict) -> pd.DataFrame:
    """Every head as a row: layer, head, label, entropy and each score (the CLI's `heads` table)."""
    return pd.DataFrame.from_records(probes.head_rows(stats))


def query_rows_frame(patterns: np.ndarray, tokens: list[str], query: int, causal: bool) -> pd.DataFrame:
    """The head view as a table: one row per layer, head and key token the query can see."""
    rows = plots.query_rows(patterns, query, causal)
    L, H, T = rows.shape
    return pd.DataFrame.from_records([
        {"layer": l, "head": h, "query": query, "query_token": tokens[query], "key": k, "key_token": tokens[k],
         "weight": round(float(rows[l, h, k]), 5)}
        for l in range(L) for h in range(H) for k in range(T) if not np.isnan(rows[l, h, k])
    ])


def head_from_selection(event) -> tuple[int, int] | None:
    """(layer, head) of the first clicked marker in a head grid's selection event, or None."""
    points = event["selection"]["points"] if event else []
    for point in points:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)) and len(data) >= 2:
            return int(data[0]), int(data[1])
    return None


def key_from_selection(event) -> int | None:
    """The key position of the first clicked cell in the head view's selection event ([key] customdata), or None."""
    points = event["selection"]["points"] if event else []
    for point in points:
        data = point.get("customdata")
        if isinstance(data, (list, tuple)) and len(data) == 1:
            return int(data[0])
    return None


def parse_head(name: str) -> tuple[int, int]:
    """'L1 H3' -> (1, 3)."""
    layer, head = name.split()
    return int(layer[1:]), int(head[1:])


AUTO_ABLATION_HEADS = 32  # more heads (an imported GPT-2 small has 144): the Heads page asks first


@st.cache_data(max_entries=32, show_spinner="Zeroing each head in turn...")
def single_head_ablation(run_id: str, step: int | None, version: int, ids: tuple) -> np.ndarray:
    """[L, H]: the loss increase on the prompt when each head alone is zeroed (weights at step)."""
    return dynamics.head_importance(loaders.model(run_id, step), list(ids)).astype(np.float32)


SAMPLES_KEPT = 64  # finished samples kept for every session, newest used last
DRAW_EVERY_S = 0.1  # a streamed sample is redrawn at most this often (and after its first token)


@st.cache_resource(show_spinner=False)
def _samples() -> tuple[OrderedDict, threading.Lock]:
    return OrderedDict(), threading.Lock()


def sample(run_id: str, step: int | None, version: int, prompt: str, cfg: SampleConfig,
           draw: Callable[[Generation], None] | None = None) -> SampleResult:
    """generate() with the weights at step (None: the latest), kept per prompt and settings (the last 64).

    A sample not kept yet is drawn token by token: draw(generation) is called after its first token and
    then at most every DRAW_EVERY_S while more come (generation.prompt, .steps and .notices so far), so a
    page can show the text as it grows. The result is generate()'s for the same arguments. A bad prompt
    raises ValueError before any token; a rerun of the page mid-stream stops it and keeps nothing.
    """
    key = (run_id, step, version, prompt, cfg)
    kept, lock = _samples()
    with lock:
        if key in kept:
            kept.move_to_end(key)
            return kept[key]
    gen = Generation(loaders.model(run_id, step), loaders.tokenizer(run_id), prompt, cfg)
    last = None
    for n, _ in enumerate(gen, 1):
        now = time.monotonic()
        if draw is not None and n < cfg.max_new_tokens and (last is None or now - last >= DRAW_EVERY_S):
            draw(gen)
            last = time.monotonic()  # drawing's own time does not count as waiting
    result = gen.result()
    with lock:
        kept[key] = result
        while len(kept) > SAMPLES_KEPT:
            kept.popitem(last=False)
    return result


def loss_tokens(tokenizer, ids: list[int], losses: np.ndarray, top_ids: np.ndarray):
    """(labels, losses, tooltips) for shading a prompt by per-token loss; the first token has none."""
    labels = [visible(tokenizer.decode([i]), spaces=False) for i in ids]
    values = [None] + [float(x) for x in losses]
    tips = ["first token: nothing predicts it"] + [
        f"loss {float(losses[j - 1]):.2f} nats; model's top guess {tokenizer.token_str(int(top_ids[j - 1, 0]))!r}"
        for j in range(1, len(ids))
    ]
    return labels, values, tips


def config_diff_frame(runs: list[Run]) -> pd.DataFrame:
    """Fields that differ between any of the runs (against the first), one column per run."""
    base = runs[0].config
    fields: list[str] = []
    for r in runs[1:]:
        fields += [f for f in base.diff(r.config) if f not in fields]
    return pd.DataFrame.from_records([
        {"field": f, **{loaders.display_label(str(r.path)): str(_field(r.config, f)) for r in runs}}
        for f in sorted(fields)
    ])


def _field(cfg: RunConfig, dotted: str):
    section, name = dotted.split(".")
    return getattr(getattr(cfg, section), name)

# -- training dynamics (the Dynamics page) -------------------------------------------------------------
@st.cache_resource(max_entries=4, show_spinner=False)
def _dynamics_inputs(run_id: str, version: int):
    """(probe ids, validation batch or None, note or None) of a run: the same tokens at every step."""
    run = loaders.open_run(run_id)
    tok = loaders.tokenizer(run_id)
    batch, note = dynamics_store.val_batch(run, tok)
    return dynamics_store.probe_ids(run, tok), batch, note


@st.cache_data(max_entries=2048, show_spinner=False)
def _step_dynamics(run_id: str, step: int, version: int) -> dict:
    probe, batch, _ = _dynamics_inputs(run_id, loaders.config_version(run_id))
    return dynamics.step_stats(loaders.model(run_id, step), probe, batch)


def training_dynamics(run_id: str, on_progress=None) -> dict:
    """analysis.dynamics.stack over the run's kept steps plus {"notes"}; each step is computed once and cached
    (a live run's new steps are the only work on the next rerun). A damaged history file is left out and
    named in a note."""
    steps = loaders.open_run(run_id).history.steps()
    _, _, note = _dynamics_inputs(run_id, loaders.config_version(run_id))
    notes = [note] if note else []
    kept, stats = [], []
    with every_core_while_idle():
        for i, step in enumerate(steps):
            try:
                stats.append(_step_dynamics(run_id, step, loaders.weights_version(run_id, step)))
                kept.append(step)
            except RunError as e:
                notes.append(str(e))
            if on_progress is not None:
                on_progress(i + 1, len(steps))
    return {**dynamics.stack(kept, stats), "notes": notes}


@st.cache_data(max_entries=64, show_spinner=False)
def loss_change(run_id: str, a: int, b: int, version: tuple, ids: tuple) -> np.ndarray:
    """[T-1] per-token loss at step b minus at step a on the prompt ids."""
    return dynamics.loss_change(loaders.model(run_id, a), loaders.model(run_id, b), list(ids))


def timeline_frame(steps: list[int], rows: list[dict]) -> pd.DataFrame:
    """The head timeline as a table: one row per head and kept step."""
    return pd.DataFrame.from_records([
        {"layer": r["layer"], "head": r["head"], "label": r["label"], "step": step,
         "score": round(float(r["score"][j]), 4), "threshold": r["threshold"], "first_crossing": r["crossed"]}
        for r in rows for j, step in enumerate(steps)
    ])


def replay_html(run_id: str) -> bytes:
    """The run's offline replay file (tinyviz.training.report), from the dynamics already measured here."""
    from tinyviz.training import report

    return report.replay_html(loaders.open_run(run_id), training_dynamics(run_id)).encode("utf-8")
