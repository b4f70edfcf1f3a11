"""Run an ablation preset: one command trains every arm for each seed and says whether the claim holds.

The presets (arms, claim, verdict rule) are in ``tinyviz.experiments.ablations``. ``run_ablation`` runs
the preset as a sweep (``tinyviz.experiments.sweep``: one grid field, the arm) on an executor (local
worker processes or Ray; one thread per run, so a re-run gives bit-identical numbers) and writes into its
output folder:

    <arm>-seed<k>/      one run folder per arm and seed (readable with runs.Run)
    curves.csv          step, arm, seed, loss, val_loss
    loss.html/.svg/.png the loss-vs-step figure (log y, mean over seeds with a min-max band)
    ablation.json       per-run extras (sample, causal val loss, health codes) and the arm stats
    summary.md          the table and the verdict
    results.csv/.json   one row per run (arm, seed, final losses, tokens/s, wall time, node), and sweep.json
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tinyviz.config import RunConfig
from tinyviz.experiments.ablations import (
    FINAL_WINDOW,
    Ablation,
    ArmStats,
    Stat,
    arm_config,
    get,
)
from tinyviz.experiments.executors import SAMPLE_TOKENS, LocalExecutor
from tinyviz.experiments.sweep import (  # noqa: F401  (run_folder: part of this module's API, used by the app)
    CURVES,
    SUMMARY,
    ablation_sweep,
    curves_csv,
    loss_figure,
    run_folder,
    run_sweep,
    runs_metrics,
    write_figure,
)

log = logging.getLogger(__name__)

RESULT = "ablation.json"  # in an ablation's output folder, beside the sweep's files (sweep.CURVES, sweep.SUMMARY)


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
    workers: int | str  # where the runs trained (an executor's description; a count in older folders)
    notes: list[str]

    def metrics(self) -> dict[str, dict[int, list[dict]]]:
        """arm -> seed -> metrics records."""
        return runs_metrics(self.runs, "arm")


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
    where = f"{res.workers} worker(s)" if isinstance(res.workers, int) else res.workers
    out = [
        f"# Ablation `{ab.name}`", "",
        f"**Claim.** {ab.claim}", "",
        f"**Verdict: {label}.** {line}", "",
        f"Rule: {ab.rule}", "",
        f"Base: {_describe(res.base)}, vocab {vocab}. Seeds {', '.join(map(str, res.seeds))} (each seed fixes "
        f"the init and the data order of every arm). {len(res.runs)} runs on {where}, one thread "
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


def is_finished(out: Path) -> bool:
    """Whether out holds a finished ablation (its ablation.json is written last but one, before summary.md)."""
    return (Path(out) / RESULT).is_file()


def read_result(out: Path) -> dict:
    """ablation.json of a finished ablation folder: preset, claim, rule, "verdict" [label, sentence], seeds,
    base config, wall_s, workers, runs (each run's extras) and the arm stats."""
    return json.loads((Path(out) / RESULT).read_text(encoding="utf-8"))


def read_summary(out: Path) -> str:
    """summary.md of a finished ablation folder (Markdown: claim, verdict, arms, the table)."""
    return (Path(out) / SUMMARY).read_text(encoding="utf-8")


def load_metrics(out: Path) -> dict[str, dict[int, list[dict]]]:
    """arm -> seed -> metrics records of a finished ablation folder (one with ablation.json)."""
    return runs_metrics(read_result(out)["runs"], "arm", folder=out)


def default_out(name: str) -> Path:
    """Where `ablate NAME` writes without --out."""
    return Path(f"checkpoints/ablate-{name}")


def run_ablation(name: str, seeds: int | None = None, steps: int | None = None, corpus: str | None = None,
                 workers: int | None = None, out: Path | None = None, sets: tuple[str, ...] | list[str] = (),
                 on_progress: Callable[[int, int], None] | None = None,
                 stop: threading.Event | None = None, images: bool = True,
                 sample_tokens: int = SAMPLE_TOKENS, executor=None,
                 reuse: list[str] | tuple[str, ...] = ()) -> AblationResult:
    """Train every arm x seed of a preset and write runs, curves, figure, results and summary into out.

    The preset runs as a sweep (``tinyviz.experiments.sweep``) whose one grid field is the arm, on
    executor (default: ``LocalExecutor(workers)``, spawned processes, so a script that calls this needs
    the usual ``if __name__ == "__main__":`` guard). on_progress(done_steps, total_steps) is called from
    this thread as runs report. images=False skips the PNG/SVG export (kaleido starts a browser, seconds
    per image); HTML is always written. reuse: see ``run_sweep``.
    """
    sw = ablation_sweep(name, seeds, steps, corpus, sets)
    executor = executor or LocalExecutor(workers)
    out = Path(out or default_out(sw.name))
    progress = None if on_progress is None else (lambda done, total, *_: on_progress(done, total))
    swept = run_sweep(sw, out, executor, progress, stop, images=images, report=False, sample_tokens=sample_tokens,
                      reuse=reuse)
    runs = [{**r, "arm": r["cell"]} for r in swept.runs]
    res = AblationResult(get(name), out, sw.base, sw.seeds, runs, {}, ("", ""), swept.wall_s, swept.executor, [])
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
    (out / CURVES).write_text(curves_csv(metrics), encoding="utf-8")
    fig = loss_figure(metrics, f"{ab.name}: train loss (mean, min-max over {len(res.seeds)} seeds), val with markers — "
                               f"{Path(res.base.data.corpus).name}")
    res.notes = write_figure(fig, out / "loss", images)
    (out / RESULT).write_text(json.dumps({
        "preset": ab.name, "claim": ab.claim, "rule": ab.rule, "verdict": list(res.verdict), "seeds": res.seeds,
        "base": res.base.to_dict(), "wall_s": res.wall_s, "workers": res.workers, "runs": res.runs,
        "stats": {k: dataclasses.asdict(v) for k, v in res.stats.items()},
    }, indent=1), encoding="utf-8")
    (out / SUMMARY).write_text(summary_markdown(res), encoding="utf-8")


def summarize(out: Path, images: bool = True) -> AblationResult:
    """Recompute the stats, verdict, figure and summary of a finished ablation folder without training
    (after a change to a verdict rule, say). Runs written before the unigram entropy was recorded get it now."""
    from tinyviz.data.text import prepare
    from tinyviz.training import health
    from tinyviz.training.runs import Run

    out = Path(out)
    saved = read_result(out)
    base = RunConfig.from_dict(saved["base"])
    for r in saved["runs"]:
        r["path"] = str(out / Path(r["path"]).name)
        if r.get("unigram") is None:
            run = Run.open(Path(r["path"]))
            data = prepare(run.config, run.tokenizer()).data
            r["unigram"] = health.unigram_entropy(data.train.numpy(), run.config.model.d_vocab)
            warnings = health.health_checks(run.metrics(), vocab_size=run.config.model.d_vocab,
                                            unigram_entropy=r["unigram"], causal=run.config.model.causal)
            r["health"] = sorted({w.code for w in warnings})
    res = AblationResult(get(saved["preset"]), out, base, saved["seeds"], saved["runs"], {}, ("", ""),
                         saved["wall_s"], saved["workers"], [])
    _finish(res, images)
    return res
