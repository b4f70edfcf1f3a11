"""Run an ablation preset: one command trains every arm for each seed and says whether the claim holds.

The presets (arms, claim, verdict rule) are in ``tinyviz.experiments.ablations``. ``run_ablation`` trains
arm x seed in worker processes (one thread each, so a re-run gives bit-identical numbers) and
writes into its output folder:

    <arm>-seed<k>/      one run folder per arm and seed (readable with runs.Run)
    curves.csv          step, arm, seed, loss, val_loss
    loss.html/.svg/.png the loss-vs-step figure (log y, mean over seeds with a min-max band)
    ablation.json       per-run extras (sample, causal val loss, health codes) and the arm stats
    summary.md          the table and the verdict
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import math
import multiprocessing
import os
import queue as queue_mod
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinyviz.config import RunConfig
from tinyviz.experiments.ablations import (
    FINAL_WINDOW,
    Ablation,
    ArmStats,
    Stat,
    arm_config,
    base_config,
    get,
)

log = logging.getLogger(__name__)

SAMPLE_TOKENS = 120  # greedy sample per run, from the start of the probe prompt
PROGRESS_EVERY = 10  # a worker reports its step this often


# -- workers ---------------------------------------------------------------------------------------

_worker: dict[str, Any] = {}  # the progress queue and stop event of a worker process


def _init_worker(progress_queue, stop_event) -> None:
    import torch

    torch.set_num_threads(1)
    _worker.update(queue=progress_queue, stop=stop_event)


def _train_one(job: dict, on_step: Callable[[int, int], None] | None = None,
               stop: threading.Event | None = None) -> dict:
    """Train one arm x seed into job["path"]; return its extras (sample, causal val loss, health codes)."""
    from tinyviz.model.transformer import Transformer
    from tinyviz.training import health
    from tinyviz.training.session import TrainingSession

    q, mp_stop = _worker.get("queue"), _worker.get("stop")
    cfg = RunConfig.from_dict(job["config"])
    session = TrainingSession.start(cfg, Path(job["path"]), overwrite=True)

    def report(m) -> None:
        if on_step is not None:
            on_step(job["id"], m.step)
        elif q is not None and (m.step % PROGRESS_EVERY == 0 or m.step == cfg.train.steps):
            q.put((job["id"], m.step))

    status = session.train(stop=stop or mp_stop, on_step=report)
    trainer, model = session.trainer, session.trainer.model
    causal_val = None
    if status != "failed":
        if model.cfg.causal:
            causal_val = trainer.evaluate("val")
        else:  # the same weights with the mask on: what generation, which cannot see the future, faces
            masked = Transformer(dataclasses.replace(model.cfg, causal=True))
            masked.load_state_dict(model.state_dict())
            trainer.model, trainer.forward = masked, masked
            causal_val = trainer.evaluate("val")
            trainer.model, trainer.forward = model, model
    sample = session.preview(job.get("sample_tokens", SAMPLE_TOKENS)) if status != "failed" else ""
    metrics = session.run.metrics()
    unigram = health.unigram_entropy(trainer.data.train.numpy(), model.cfg.d_vocab)
    health = health.health_checks(metrics, vocab_size=model.cfg.d_vocab, unigram_entropy=unigram,
                                  causal=model.cfg.causal)
    return {
        "id": job["id"], "arm": job["arm"], "seed": job["seed"], "path": job["path"], "status": status,
        "message": session.message, "steps_done": session.step, "n_params": model.n_params(non_embedding=False),
        "d_vocab": session.run.config.model.d_vocab, "causal_val_loss": causal_val, "sample": sample,
        "health": sorted({w.code for w in health}), "elapsed": trainer.elapsed, "unigram": unigram,
    }


@contextlib.contextmanager
def _one_thread_env():
    """Spawned workers inherit this environment: one OpenMP thread each (two spinning pools on two cores crawl)."""
    old = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_jobs(jobs: list[dict], workers: int, on_step: Callable[[int, int], None],
              stop: threading.Event | None) -> list[dict]:
    if workers <= 1:  # in this process, with one thread for the duration, for the same numbers as the workers
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            results = []
            for job in jobs:
                if stop is not None and stop.is_set():
                    break
                results.append(_train_one(job, on_step=on_step, stop=stop))
            return results
        finally:
            torch.set_num_threads(threads)
    ctx = multiprocessing.get_context("spawn")
    progress, mp_stop = ctx.Queue(), ctx.Event()
    results = []
    with _one_thread_env(), ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                                initargs=(progress, mp_stop)) as pool:
        pending = {pool.submit(_train_one, job) for job in jobs}
        try:
            while pending:
                with contextlib.suppress(queue_mod.Empty):
                    job_id, step = progress.get(timeout=0.2)
                    on_step(job_id, step)
                if stop is not None and stop.is_set():
                    mp_stop.set()
                done = {f for f in pending if f.done()}
                pending -= done
                results += [f.result() for f in done]
        except BaseException:
            mp_stop.set()
            for f in pending:
                f.cancel()
            raise
    while True:  # the last progress messages
        try:
            on_step(*progress.get_nowait())
        except (queue_mod.Empty, OSError, ValueError):
            break
    return results


# -- results ---------------------------------------------------------------------------------------

def _cost(cfg: RunConfig) -> float:
    m = cfg.model
    return cfg.train.steps * m.n_layers * m.d_model * (3 * m.d_model + m.n_ctx) + 1


def arm_stats(arm: str, seed_metrics: dict[int, list[dict]], extras: dict[int, dict]) -> ArmStats:
    """Numbers of one arm over seeds, from the runs' metrics (and each run's extras)."""
    def at(ms, step):
        return [m["loss"] for m in ms if m["step"] == step]

    l1, l100, final, val, cval, failed = [], [], [], [], [], []
    for seed, ms in sorted(seed_metrics.items()):
        ex = extras.get(seed, {})
        l1 += at(ms, 1)
        l100 += at(ms, 100)
        if ex.get("status") == "failed":
            failed.append(f"seed {seed} at step {ex.get('steps_done')}")
            continue
        if ms:
            tail = ms[-FINAL_WINDOW:]
            final.append(sum(m["loss"] for m in tail) / len(tail))
        vals = [m["val_loss"] for m in ms if m.get("val_loss") is not None]
        if vals:
            val.append(vals[-1])
        if ex.get("causal_val_loss") is not None:
            cval.append(ex["causal_val_loss"])
    n_params = next((e["n_params"] for e in extras.values() if "n_params" in e), 0)
    unigram = next((e["unigram"] for e in extras.values() if e.get("unigram") is not None), math.nan)
    return ArmStats(arm, Stat(tuple(l1)), Stat(tuple(l100)), Stat(tuple(final)), Stat(tuple(val)),
                    Stat(tuple(cval)), n_params, failed, unigram)


@dataclass
class AblationResult:
    ablation: Ablation
    out: Path
    base: RunConfig
    seeds: list[int]
    runs: list[dict]  # the extras of each run, in arm then seed order
    stats: dict[str, ArmStats]
    verdict: tuple[str, str]
    wall_s: float
    workers: int
    notes: list[str]

    def metrics(self) -> dict[str, dict[int, list[dict]]]:
        from tinyviz.training.runs import Run

        out: dict[str, dict[int, list[dict]]] = {}
        for r in self.runs:
            out.setdefault(r["arm"], {})[r["seed"]] = Run.open(Path(r["path"])).metrics()
        return out


def curves_csv(metrics: dict[str, dict[int, list[dict]]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", "arm", "seed", "loss", "val_loss"])
    for arm, by_seed in metrics.items():
        for seed, ms in sorted(by_seed.items()):
            for m in ms:
                w.writerow([m["step"], arm, seed, repr(m["loss"]),
                            "" if m.get("val_loss") is None else repr(m["val_loss"])])
    return buf.getvalue()


COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def loss_figure(metrics: dict[str, dict[int, list[dict]]], title: str, max_points: int = 300):
    """Train loss per arm: mean over seeds with a min-max band; val loss dashed; log y.

    metrics: arm -> seed -> metrics records. Long curves are thinned to about max_points steps
    (the CSV keeps every step).
    """
    import numpy as np
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (arm, by_seed) in enumerate(metrics.items()):
        colour = COLOURS[i % len(COLOURS)]
        rgb = tuple(int(colour[j:j + 2], 16) for j in (1, 3, 5))
        n = max((len(ms) for ms in by_seed.values()), default=0)
        if n == 0:
            continue
        loss = np.full((len(by_seed), n), np.nan)
        for r, ms in enumerate(by_seed.values()):
            loss[r, :len(ms)] = [m["loss"] for m in ms]
        steps = np.arange(1, n + 1)
        keep = np.unique(np.r_[np.arange(0, n, max(1, math.ceil(n / max_points))), n - 1])
        x, lo, hi, mean = steps[keep], np.nanmin(loss, 0)[keep], np.nanmax(loss, 0)[keep], np.nanmean(loss, 0)[keep]
        fig.add_trace(go.Scatter(x=np.r_[x, x[::-1]], y=np.r_[hi, lo[::-1]], fill="toself", mode="none",
                                 fillcolor=f"rgba({rgb[0]},{rgb[1]},{rgb[2]},0.18)", legendgroup=arm,
                                 showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(x=x, y=mean, mode="lines", line=dict(color=colour, width=1.5), name=arm,
                                 legendgroup=arm))
        vals: dict[int, list[float]] = {}
        for ms in by_seed.values():
            for m in ms:
                if m.get("val_loss") is not None:
                    vals.setdefault(m["step"], []).append(m["val_loss"])
        if vals:
            vs = sorted(vals)
            fig.add_trace(go.Scatter(x=vs, y=[sum(vals[s]) / len(vals[s]) for s in vs], mode="lines+markers",
                                     line=dict(color=colour, dash="dash", width=1.5), marker=dict(size=5),
                                     name=f"{arm} (val)", legendgroup=arm))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="loss (nats, log scale)", yaxis_type="log",
                      template="plotly_white", width=900, height=520, legend=dict(font=dict(size=11)))
    return fig


def write_figure(fig, stem: Path, images: bool = True) -> list[str]:
    """stem.html (self-contained), .svg and .png; returns notes for anything that could not be written."""
    from tinyviz.analysis import export

    notes = []
    stem.with_suffix(".html").write_bytes(export.to_html(fig))
    for ext in ("svg", "png") if images else ():
        try:
            stem.with_suffix(f".{ext}").write_bytes(export.to_image(fig, ext, scale=1 if ext == "svg" else 1.5))
        except export.ExportError as e:  # no Chrome/Chromium: HTML and CSV are still written
            notes.append(f"no {ext.upper()} written: {e}")
    return notes


def _describe(cfg: RunConfig) -> str:
    m, t, d = cfg.model, cfg.train, cfg.data
    return (f"{m.n_layers} layers, {m.n_heads} heads, d_model {m.d_model}, d_ff {m.ff_size}, n_ctx {m.n_ctx}, "
            f"{m.pos_emb} positions, {m.norm_position}-{m.norm}, {m.mlp}, init {m.init}, tied {m.tie_embeddings}; "
            f"batch {t.batch_size}, lr {t.lr:g}, warmup {t.warmup_steps}, cosine to {t.min_lr_ratio:g}x, "
            f"{t.steps} steps; corpus {d.corpus}" + (f" ({d.corpus_chars:,} chars)" if "/" not in d.corpus else "")
            + f", {d.tokenizer} tokenizer")


def summary_markdown(res: AblationResult) -> str:
    ab = res.ablation
    diffs = {arm.name: arm_config(res.base, arm, 0).diff(arm_config(res.base, ab.arms[0], 0)) for arm in ab.arms}
    label, line = res.verdict
    vocab = res.runs[0]["d_vocab"] if res.runs else "?"
    out = [
        f"# Ablation `{ab.name}`", "",
        f"**Claim.** {ab.claim}", "",
        f"**Verdict: {label}.** {line}", "",
        f"Rule: {ab.rule}", "",
        f"Base: {_describe(res.base)}, vocab {vocab}. Seeds {', '.join(map(str, res.seeds))} (each seed fixes "
        f"the init and the data order of every arm). {len(res.runs)} runs on {res.workers} worker(s), one thread "
        f"each; {res.wall_s:.0f} s wall.", "",
        "Arms (fields that differ from the first arm):", "",
    ]
    for arm in ab.arms:
        d = diffs[arm.name]
        out.append(f"- `{arm.name}`: " + (", ".join(f"{k}={v[0]!r}" for k, v in d.items()) or "the base"))
    if ab.note:
        out += ["", ab.note]
    causal = ab.name == "causal"
    head = ["arm", "params", "loss @1", "loss @100", f"final (mean of last {FINAL_WINDOW})", "val loss (final)"]
    head += ["val loss, causal eval"] if causal else []
    head += ["health flags"]
    out += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    flags = {}
    for r in res.runs:
        flags.setdefault(r["arm"], set()).update(r["health"])
    for arm in ab.arms:
        s = res.stats[arm.name]
        row = [f"`{arm.name}`", f"{s.n_params:,}", s.loss_1.fmt(), s.loss_100.fmt(), s.final.fmt(), s.val.fmt()]
        if causal:
            row += [s.causal_val.fmt()]
        row += [", ".join(sorted(flags.get(arm.name, ()))) or "none"]
        if s.failed:
            row[0] += f" (NaN: {'; '.join(s.failed)})"
        out.append("| " + " | ".join(row) + " |")
    uni = next((r["unigram"] for r in res.runs if r.get("unigram") is not None), None)
    out += ["", f"Numbers are mean ± half the min–max range over {len(res.seeds)} seed(s), in nats"
                + (f"; the unigram entropy of the training text is {uni:.4f}" if uni is not None else "") + ". "
                "Curves: `curves.csv`; figure: `loss.svg` / `loss.png` / `loss.html`."]
    if causal:
        out += ["", "Greedy samples (seed 0, continuing the start of the probe prompt):", ""]
        for r in res.runs:
            if r["seed"] == res.seeds[0]:
                out += [f"- `{r['arm']}`:", "", "  ```", *("  " + ln for ln in r["sample"].splitlines()), "  ```"]
    if res.notes:
        out += ["", "Notes: " + " ".join(res.notes)]
    return "\n".join(out) + "\n"


def run_folder(arm: str, seed: int) -> str:
    """The folder name of one arm x seed inside an ablation's output folder."""
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', arm)}-seed{seed}"


def load_metrics(out: Path) -> dict[str, dict[int, list[dict]]]:
    """arm -> seed -> metrics records of a finished ablation folder (one with ablation.json)."""
    from tinyviz.training.runs import Run

    runs = json.loads((Path(out) / "ablation.json").read_text(encoding="utf-8"))["runs"]
    metrics: dict[str, dict[int, list[dict]]] = {}
    for r in runs:
        metrics.setdefault(r["arm"], {})[r["seed"]] = Run.open(Path(out) / Path(r["path"]).name).metrics()
    return metrics


def run_ablation(name: str, seeds: int | None = None, steps: int | None = None, corpus: str | None = None,
                 workers: int | None = None, out: Path | None = None, sets: tuple[str, ...] | list[str] = (),
                 on_progress: Callable[[int, int], None] | None = None,
                 stop: threading.Event | None = None, images: bool = True,
                 sample_tokens: int = SAMPLE_TOKENS) -> AblationResult:
    """Train every arm x seed of a preset and write runs, curves, figure and summary into out.

    Workers are spawned processes, so a script that calls this needs the usual
    ``if __name__ == "__main__":`` guard (the CLI and pytest have it). on_progress(done_steps,
    total_steps) is called from this thread as workers report. images=False
    skips the PNG/SVG export (kaleido starts a browser, seconds per image); HTML is always written.
    """
    ab = get(name)
    n_seeds = ab.seeds if seeds is None else seeds
    if n_seeds < 1:
        raise ValueError(f"--seeds {n_seeds} must be at least 1.")
    workers = min(2, os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ValueError(f"--workers {workers} must be at least 1.")
    base = base_config(ab, steps, corpus, sets)
    if "/" in base.data.corpus or base.data.corpus.endswith(".txt"):
        from tinyviz.data.text import load_corpus

        load_corpus(base.data)  # a bad path fails here, in one sentence, before any worker starts
    out = Path(out or f"checkpoints/ablate-{ab.name}")
    out.mkdir(parents=True, exist_ok=True)
    seed_list = [base.train.seed + k for k in range(n_seeds)]
    jobs = []
    for arm in ab.arms:
        for seed in seed_list:
            cfg = arm_config(base, arm, seed)
            jobs.append({"id": len(jobs), "arm": arm.name, "seed": seed, "config": cfg.to_dict(),
                         "path": str(out / run_folder(arm.name, seed)), "cost": _cost(cfg),
                         "sample_tokens": sample_tokens})
    total = sum(j["config"]["train"]["steps"] for j in jobs)
    done_by_job: dict[int, int] = {}

    def on_step(job_id: int, step: int) -> None:
        done_by_job[job_id] = step
        if on_progress is not None:
            on_progress(sum(done_by_job.values()), total)

    t0 = time.perf_counter()
    order = sorted(jobs, key=lambda j: -j["cost"])  # longest first, so the workers finish together
    results = {r["id"]: r for r in _run_jobs(order, min(workers, len(jobs)), on_step, stop)}
    wall = time.perf_counter() - t0
    runs = [results[j["id"]] for j in jobs if j["id"] in results]
    if len(runs) < len(jobs):
        raise ValueError(f"the ablation was stopped after {len(runs)} of {len(jobs)} runs; nothing was summarised.")
    if stop is not None and stop.is_set():
        raise ValueError("the ablation was stopped before every run finished; nothing was summarised.")
    res = AblationResult(ab, out, base, seed_list, runs, {}, ("", ""), wall, min(workers, len(jobs)), [])
    _finish(res, images)
    return res


def _finish(res: AblationResult, images: bool = True) -> None:
    """Stats, verdict, curves, figure, ablation.json and summary.md of a trained ablation."""
    ab, out = res.ablation, res.out
    metrics = res.metrics()
    extras = {arm: {r["seed"]: r for r in res.runs if r["arm"] == arm} for arm in metrics}
    res.stats = {arm.name: arm_stats(arm.name, metrics[arm.name], extras[arm.name]) for arm in ab.arms}
    try:
        res.verdict = ab.verdict(res.stats)
    except (ZeroDivisionError, KeyError, ValueError) as e:  # e.g. every seed of an arm hit NaN
        res.verdict = ("undecided", f"the rule could not be applied ({type(e).__name__}: {e}).")
    (out / "curves.csv").write_text(curves_csv(metrics), encoding="utf-8")
    fig = loss_figure(metrics, f"{ab.name}: train loss (mean, min-max over {len(res.seeds)} seeds), val dashed — "
                               f"{Path(res.base.data.corpus).name}")
    res.notes = write_figure(fig, out / "loss", images)
    (out / "ablation.json").write_text(json.dumps({
        "preset": ab.name, "claim": ab.claim, "rule": ab.rule, "verdict": list(res.verdict), "seeds": res.seeds,
        "base": res.base.to_dict(), "wall_s": res.wall_s, "workers": res.workers, "runs": res.runs,
        "stats": {k: dataclasses.asdict(v) for k, v in res.stats.items()},
    }, indent=1), encoding="utf-8")
    (out / "summary.md").write_text(summary_markdown(res), encoding="utf-8")


def summarize(out: Path, images: bool = True) -> AblationResult:
    """Recompute the stats, verdict, figure and summary of a finished ablation folder without training
    (after a change to a verdict rule, say). Runs written before the unigram entropy was recorded get it now."""
    from tinyviz.data.text import TokenData, load_corpus
    from tinyviz.training import health
    from tinyviz.training.runs import Run

    out = Path(out)
    saved = json.loads((out / "ablation.json").read_text(encoding="utf-8"))
    base = RunConfig.from_dict(saved["base"])
    for r in saved["runs"]:
        r["path"] = str(out / Path(r["path"]).name)
        if r.get("unigram") is None:
            run = Run.open(Path(r["path"]))
            data = TokenData.from_text(load_corpus(run.config.data), run.tokenizer(), run.config.data.val_fraction)
            r["unigram"] = health.unigram_entropy(data.train.numpy(), run.config.model.d_vocab)
            warnings = health.health_checks(run.metrics(), vocab_size=run.config.model.d_vocab,
                                            unigram_entropy=r["unigram"], causal=run.config.model.causal)
            r["health"] = sorted({w.code for w in warnings})
    res = AblationResult(get(saved["preset"]), out, base, saved["seeds"], saved["runs"], {}, ("", ""),
                         saved["wall_s"], saved["workers"], [])
    _finish(res, images)
    return res
