"""One description of a sweep: cells (a grid's cartesian product, or an ablation preset's arms) x seeds.

``grid_sweep`` builds one from ``--grid FIELD=v1,v2,...`` options, ``ablation_sweep`` from an ablation
preset; ``run_sweep`` trains every cell x seed on an executor (``tinyviz.experiments.executors``:
local processes or a Ray cluster) and writes into its output folder:

    <cell>-seed<k>/        one run folder per cell and seed (readable with runs.Run)
    curves.csv             step, arm, seed, loss, val_loss (arm = the cell's label)
    loss.html/.svg/.png    train loss per cell, mean over seeds with a min-max band, val with markers, log y
    results.csv/.json      one row per run: grid values, seed, final train/val loss, tokens/s, wall time, node
    sweep.json             the sweep's description (fields, cells, seeds, base config, executor)
    summary.md             final losses per cell (an ablation writes its verdict here instead)
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinyviz.config import RunConfig, apply_overrides, option_overrides, preset

MAX_RUNS = 1000  # a bigger sweep needs --yes
CURVES, SUMMARY = "curves.csv", "summary.md"  # in a sweep's (and an ablation's) output folder
FINAL_WINDOW = 20  # "final loss" = mean train loss of the last FINAL_WINDOW steps (one batch is noisy)
# A sweep's runs keep only what a comparison needs: no periodic attention snapshots or checkpoints
# (the final weights are still saved), so a run costs its steps.
SWEEP_BASE = ["snapshot_interval=0", "checkpoint_interval=0"]
GRID_EXAMPLE = "e.g. --grid lr=1e-3,3e-3 --grid d_model=32,64"


@dataclass(frozen=True)
class Cell:
    name: str  # the label: "lr=0.001 d_model=64", or an ablation arm's name
    values: dict[str, Any]  # grid field -> value (an ablation's field is "arm")
    folder: str  # run folder stem; a run is <folder>-seed<k>


@dataclass
class Sweep:
    kind: str  # "grid" or "ablation"
    name: str  # the config preset (grid) or the ablation preset
    base: RunConfig
    fields: list[str]
    cells: list[Cell]
    seeds: list[int]
    make_config: Callable[[Cell, int], RunConfig] = field(repr=False)

    @property
    def n_runs(self) -> int:
        return len(self.cells) * len(self.seeds)

    def jobs(self, out: Path, sample_tokens: int) -> list[dict]:
        """One job per cell x seed (cell-major): what an executor needs to train it, as plain data."""
        jobs = []
        for cell in self.cells:
            for seed in self.seeds:
                cfg = self.make_config(cell, seed)
                jobs.append({"id": len(jobs), "cell": cell.name, "values": cell.values, "seed": seed,
                             "config": cfg.to_dict(), "path": str(Path(out) / f"{cell.folder}-seed{seed}"),
                             "cost": _cost(cfg), "sample_tokens": sample_tokens})
        return jobs

    def describe(self) -> dict:
        return {"kind": self.kind, "name": self.name, "fields": self.fields, "seeds": self.seeds,
                "cells": [{"name": c.name, "values": c.values, "folder": c.folder} for c in self.cells],
                "base": self.base.to_dict()}


def _cost(cfg: RunConfig) -> float:
    m = cfg.model
    return cfg.train.steps * m.n_layers * m.d_model * (3 * m.d_model + m.n_ctx) + 1


def run_folder(cell: str, seed: int) -> str:
    """The folder name of one cell x seed inside a sweep's output folder."""
    return f"{re.sub(r'[^A-Za-z0-9._-]', '_', cell)}-seed{seed}"


# -- building a sweep ------------------------------------------------------------------------------

def _grid_error(e: ValueError) -> ValueError:
    return ValueError(str(e).replace("in --set", "in --grid").replace("--set ", "--grid "))


def parse_grid(specs: list[str]) -> list[tuple[str, list[str]]]:
    """['lr=1e-3,3e-3', ...] -> [('lr', ['1e-3', '3e-3']), ...]; a sentence for an empty or repeated grid."""
    if not specs:
        raise ValueError(f"a sweep needs at least one --grid FIELD=v1,v2,... ({GRID_EXAMPLE}).")
    grid: list[tuple[str, list[str]]] = []
    for spec in specs:
        name, sep, raw = spec.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--grid {spec!r} must look like FIELD=v1,v2,... ({GRID_EXAMPLE}).")
        values = [v.strip() for v in raw.split(",")]
        if not raw.strip() or "" in values:
            raise ValueError(f"--grid {name}={raw} has an empty value; give one or more comma-separated "
                             f"values ({GRID_EXAMPLE}).")
        if name.rpartition(".")[2] == "seed":
            raise ValueError("the seed is not a grid field; use --seeds K for K seeds per cell.")
        if name in (g[0] for g in grid):
            raise ValueError(f"--grid {name} is given twice; put all its values in one --grid {name}=v1,v2,...")
        if len(set(values)) < len(values):
            raise ValueError(f"--grid {name}={raw} repeats a value; give each value once.")
        grid.append((name, values))
    return grid


def _folder_part(name: str, value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]", "_", f"{name.rpartition('.')[2]}{value}")


def sweep_base(preset_name: str, steps: int | None = None, corpus: str | None = None,
               sets: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """A config preset with a sweep's base changes (no snapshots or periodic checkpoints), --corpus,
    --steps (warmup kept proportional, as `train` does) and --set."""
    cfg = apply_overrides(preset(preset_name), SWEEP_BASE)
    return apply_overrides(cfg, option_overrides(cfg, corpus, steps) + list(sets))


def grid_sweep(preset_name: str, grids: list[str], seeds: int, steps: int | None = None,
               corpus: str | None = None, sets: list[str] | tuple[str, ...] = (), yes: bool = False) -> Sweep:
    """The cartesian product of the grids over a config preset, x seeds. Every value is checked (type,
    field, the config's own rules) before anything runs; more than MAX_RUNS runs needs yes=True."""
    if seeds < 1:
        raise ValueError(f"--seeds {seeds} must be at least 1.")
    base = sweep_base(preset_name, steps, corpus, sets)
    grid = parse_grid(grids)
    for name, values in grid:
        for v in values:
            try:
                apply_overrides(base, [f"{name}={v}"])
            except ValueError as e:
                raise _grid_error(e) from None
    n_cells = math.prod(len(v) for _, v in grid)
    if n_cells * seeds > MAX_RUNS and not yes:
        raise ValueError(f"this sweep is {n_cells:,} cells x {seeds} seed(s) = {n_cells * seeds:,} runs, more than "
                         f"{MAX_RUNS:,}; pass --yes if you mean it, or narrow the grid.")
    cells, folders = [], set()
    for i, combo in enumerate(itertools.product(*(values for _, values in grid))):
        assign = [f"{name}={v}" for (name, _), v in zip(grid, combo)]
        try:
            cfg = apply_overrides(base, assign)
        except ValueError as e:  # a combination the config refuses (d_model not divisible by n_heads, ...)
            raise ValueError(f"the grid cell {' '.join(assign)} is not a valid config: {e}") from None
        values = {name: _value(cfg, name) for name, _ in grid}
        folder = "-".join(_folder_part(name, v) for (name, _), v in zip(grid, combo))
        if len(folder) > 64 or not folder[:1].isalnum() or folder in folders:
            folder = f"cell{i:04d}"
        folders.add(folder)
        cells.append(Cell(" ".join(assign), values, folder))
    seed_list = [base.train.seed + k for k in range(seeds)]

    def make_config(cell: Cell, seed: int) -> RunConfig:
        return apply_overrides(base, [f"{k}={v}" for k, v in cell.values.items()] + [f"seed={seed}"])

    return Sweep("grid", preset_name, base, [name for name, _ in grid], cells, seed_list, make_config)


def _value(cfg: RunConfig, name: str) -> Any:
    sec, _, attr = name.rpartition(".")
    for part in (sec,) if sec else ("model", "train", "data"):
        obj = getattr(cfg, part)
        if hasattr(obj, attr):
            return getattr(obj, attr)
    raise KeyError(name)


def ablation_sweep(name: str, seeds: int | None = None, steps: int | None = None, corpus: str | None = None,
                   sets: list[str] | tuple[str, ...] = ()) -> Sweep:
    """An ablation preset as a sweep: one grid field, "arm", whose values are the preset's arms."""
    from tinyviz.experiments.ablations import arm_config, base_config, get

    ab = get(name)
    n_seeds = ab.seeds if seeds is None else seeds
    if n_seeds < 1:
        raise ValueError(f"--seeds {n_seeds} must be at least 1.")
    base = base_config(ab, steps, corpus, sets)
    arms = {arm.name: arm for arm in ab.arms}
    cells = [Cell(arm.name, {"arm": arm.name}, run_folder(arm.name, 0)[:-len("-seed0")]) for arm in ab.arms]
    seed_list = [base.train.seed + k for k in range(n_seeds)]
    return Sweep("ablation", ab.name, base, ["arm"], cells, seed_list,
                 lambda cell, seed: arm_config(base, arms[cell.name], seed))


# -- running it ------------------------------------------------------------------------------------

@dataclass
class SweepResult:
    sweep: Sweep
    out: Path
    runs: list[dict]  # one result per run, in cell then seed order (see executors.train_one)
    wall_s: float
    executor: str
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, dict[int, list[dict]]]:
        """cell -> seed -> metrics records."""
        return runs_metrics(self.runs, "cell")


def runs_metrics(runs: list[dict], key: str, folder: Path | None = None) -> dict[str, dict[int, list[dict]]]:
    """run[key] (the cell, or an ablation's arm) -> seed -> the metrics records of each run in runs; with
    folder, a run is looked up there by its folder's name (a sweep folder that was moved or copied)."""
    from tinyviz.training.runs import Run

    out: dict[str, dict[int, list[dict]]] = {}
    for r in runs:
        path = Path(r["path"]) if folder is None else Path(folder) / Path(r["path"]).name
        out.setdefault(r[key], {})[r["seed"]] = Run.open(path).metrics()
    return out


def check_corpus(base: RunConfig) -> None:
    """A bad corpus path fails here, in one sentence, before any worker starts or any folder is made."""
    if "/" in base.data.corpus or base.data.corpus.endswith(".txt"):
        from tinyviz.data.text import load_corpus

        load_corpus(base.data)


def run_sweep(sweep: Sweep, out: Path, executor, on_progress: Callable[[int, int, int, int], None] | None = None,
              stop: threading.Event | None = None, images: bool = True, report: bool = True,
              sample_tokens: int | None = None, reuse: list[str] | tuple[str, ...] = ()) -> SweepResult:
    """Train every cell x seed on executor (LocalExecutor or RayExecutor) and write the sweep's folder.

    on_progress(done_steps, total_steps, done_runs, total_runs) is called from this thread. Runs are
    handed out longest first, so parallel workers finish together. report=False leaves the figure,
    curves and summary to the caller (an ablation writes its own, with the verdict); results.csv/.json
    and sweep.json are always written. reuse: folders whose finished runs with a job's exact config are copied
    in instead of trained again (the output folder itself finishes a stopped sweep); see executors.reuse_index.
    """
    from tinyviz.experiments.executors import SAMPLE_TOKENS, adopt_run, config_key, reuse_index

    out = Path(out)
    check_corpus(sweep.base)
    jobs = sweep.jobs(out, SAMPLE_TOKENS if sample_tokens is None else sample_tokens)
    total = sum(j["config"]["train"]["steps"] for j in jobs)
    done_by_job: dict[int, int] = {}
    finished: dict[int, dict] = {}

    def on_step(job_id: int, step: int) -> None:
        done_by_job[job_id] = step
        if on_progress is not None:
            on_progress(sum(done_by_job.values()), total, len(finished), len(jobs))

    # --reuse on the output folder itself is fine before it exists (a script that always passes it)
    index = reuse_index([r for r in reuse if out.is_dir() or Path(r).resolve() != out.resolve()])
    executor.check(jobs)  # e.g. device=cuda where there is no GPU: a sentence, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    marker = out / f".sweep-{uuid.uuid4().hex[:12]}"  # a Ray task that sees this file writes its run in place
    marker.touch()
    t0 = time.perf_counter()
    order = []
    try:
        for job in sorted(jobs, key=lambda j: -j["cost"]):
            source = index.get(config_key(job["config"]))
            res = None if source is None or (stop is not None and stop.is_set()) else adopt_run(job, source)
            if res is None:
                order.append(job)
            else:
                finished[job["id"]] = {**res, "values": job["values"]}
                on_step(job["id"], res["steps_done"])
        stream = executor.run(order, on_step, stop, marker=marker) if executor.name == "ray" else \
            executor.run(order, on_step, stop)
        for res in stream:
            finished[res["id"]] = {**res, "values": jobs[res["id"]]["values"]}
            on_step(res["id"], res["steps_done"])
    finally:
        marker.unlink(missing_ok=True)
    wall = time.perf_counter() - t0
    if len(finished) < len(jobs) or (stop is not None and stop.is_set()):
        raise ValueError(f"the sweep was stopped after {len(finished)} of {len(jobs)} runs; nothing was "
                         f"summarised. The finished runs' folders are kept: the same command with --reuse {out} "
                         "trains only the rest.")
    res = SweepResult(sweep, out, [finished[j["id"]] for j in jobs], wall, executor.describe())
    write_results(res)
    if report:
        metrics = res.metrics()
        (out / CURVES).write_text(curves_csv(metrics), encoding="utf-8")
        fig = loss_figure(metrics, f"{sweep.name} sweep: train loss (mean, min-max over {len(sweep.seeds)} "
                                   f"seeds), val with markers — {Path(sweep.base.data.corpus).name}")
        res.notes = write_figure(fig, out / "loss", images)
        (out / SUMMARY).write_text(summary_markdown(res), encoding="utf-8")
    return res


# -- results ---------------------------------------------------------------------------------------

RESULT_COLUMNS = ["run", "cell", "seed", "status", "steps", "final_loss", "val_loss", "tokens_per_s", "wall_s",
                  "node", "n_params", "reused_from"]


def result_rows(res: SweepResult) -> list[dict]:
    """One row per run: grid values, seed, final train loss (mean of the last FINAL_WINDOW steps), last
    val loss, training tokens/s, wall seconds (set-up, training, evaluation), node, and the run it was copied
    from when --reuse found it finished (empty when it trained here)."""
    from tinyviz.training.runs import Run

    rows = []
    for r in res.runs:
        ms = Run.open(Path(r["path"])).metrics()
        tail = ms[-FINAL_WINDOW:]
        vals = [m["val_loss"] for m in ms if m.get("val_loss") is not None]
        row = {"run": Path(r["path"]).name, "cell": r["cell"], **r["values"], "seed": r["seed"],
               "status": r["status"], "steps": r["steps_done"],
               "final_loss": sum(m["loss"] for m in tail) / len(tail) if tail else None,
               "val_loss": vals[-1] if vals else None, "tokens_per_s": r.get("tokens_per_s"),
               "wall_s": r.get("wall_s"), "node": r.get("node"), "n_params": r.get("n_params"),
               "reused_from": r.get("reused_from")}
        rows.append(row)
    return rows


def write_results(res: SweepResult) -> None:
    rows = result_rows(res)
    cols = ["run", "cell", *res.sweep.fields] + [c for c in RESULT_COLUMNS if c not in ("run", "cell")]
    buf = io.StringIO()
    w = csv.DictWriter(buf, cols, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: "" if row.get(k) is None else row[k] for k in cols})
    (res.out / "results.csv").write_text(buf.getvalue(), encoding="utf-8")
    (res.out / "results.json").write_text(json.dumps({"fields": res.sweep.fields, "rows": rows}, indent=1),
                                          encoding="utf-8")
    (res.out / "sweep.json").write_text(json.dumps({**res.sweep.describe(), "executor": res.executor,
                                                    "wall_s": res.wall_s}, indent=1), encoding="utf-8")


def summary_markdown(res: SweepResult) -> str:
    """The final losses per cell (mean ± half the min-max range over seeds)."""
    from tinyviz.experiments.ablations import Stat

    rows = result_rows(res)
    by_cell: dict[str, list[dict]] = {}
    for row in rows:
        by_cell.setdefault(row["cell"], []).append(row)
    stat = lambda rs, k: Stat(tuple(r[k] for r in rs if r[k] is not None))
    val = {c: stat(rs, "val_loss") for c, rs in by_cell.items()}
    best = min((c for c in val if val[c].ok), key=lambda c: val[c].mean, default=None)
    sw = res.sweep
    out = [f"# Sweep over `{sw.name}`: {', '.join(sw.fields)}", "",
           f"{len(sw.cells)} cells x {len(sw.seeds)} seed(s) (seeds {', '.join(map(str, sw.seeds))}; each seed fixes "
           f"the init and the data order of every cell) = {len(rows)} runs on {res.executor}; {res.wall_s:.0f} s "
           f"wall. Base: {sw.base.train.steps} steps, corpus {sw.base.data.corpus}.", "",
           "| cell | params | final train loss | val loss | tokens/s |", "|---|---|---|---|---|"]
    for cell, rs in by_cell.items():
        tps = [r["tokens_per_s"] for r in rs if r["tokens_per_s"]]
        mark = " (lowest val)" if cell == best else ""
        out.append(f"| `{cell}`{mark} | {rs[0]['n_params'] or 0:,} | {stat(rs, 'final_loss').fmt()} | "
                   f"{val[cell].fmt()} | {sum(tps) / len(tps) if tps else 0:,.0f} |")
    out += ["", f"Final train loss: the mean of the last {FINAL_WINDOW} steps; val loss: the last evaluation; "
                "mean ± half the min–max range over seeds, in nats. One row per run: `results.csv`; curves: "
                "`curves.csv`; figure: `loss.html`."]
    if res.notes:
        out += ["", "Notes: " + " ".join(res.notes)]
    return "\n".join(out) + "\n"


def curves_csv(metrics: dict[str, dict[int, list[dict]]]) -> str:
    """step, arm, seed, loss, val_loss for every step of every run (arm: the cell's label)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["step", "arm", "seed", "loss", "val_loss"])
    for arm, by_seed in metrics.items():
        for seed, ms in sorted(by_seed.items()):
            for m in ms:
                w.writerow([m["step"], arm, seed, repr(m["loss"]),
                            "" if m.get("val_loss") is None else repr(m["val_loss"])])
    return buf.getvalue()


def loss_figure(metrics: dict[str, dict[int, list[dict]]], title: str, max_points: int = 300,
                smoothing: float = 0.0):
    """Train loss per cell: mean over seeds with a min-max band; val loss with markers; log y.

    metrics: cell -> seed -> metrics records. The app's one loss chart (tinyviz.analysis.plots.loss_figure,
    one colour-blind-safe palette); long curves are thinned to about max_points steps (the CSV keeps every step).
    """
    from tinyviz.analysis import plots

    return plots.loss_figure({arm: list(by_seed.values()) for arm, by_seed in metrics.items()}, title_text=title,
                             max_points=max_points, smoothing=smoothing, train_suffix="", val_suffix=" (val)",
                             width=900, height=520, legend=dict(font=dict(size=11)))


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


def load_sweep(out: Path) -> tuple[dict, list[dict]]:
    """(sweep.json, results rows) of a finished sweep folder; ValueError with a sentence if it is not one."""
    out = Path(out)
    try:
        desc = json.loads((out / "sweep.json").read_text(encoding="utf-8"))
        rows = json.loads((out / "results.json").read_text(encoding="utf-8"))["rows"]
    except FileNotFoundError:
        raise ValueError(f"{out} is not a finished sweep folder (no sweep.json/results.json); run "
                         "`python -m tinyviz sweep` or `ablate` into it first.") from None
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{out.name}/results.json or sweep.json is damaged ({e}).") from None
    if not isinstance(desc, dict) or not isinstance(rows, list):
        raise ValueError(f"{out.name}/sweep.json or results.json does not hold a sweep.")
    return desc, rows


def load_metrics(out: Path, rows: list[dict]) -> dict[str, dict[int, list[dict]]]:
    """cell -> seed -> metrics records of a sweep folder's runs (rows from load_sweep)."""
    from tinyviz.training.runs import Run

    metrics: dict[str, dict[int, list[dict]]] = {}
    for r in rows:
        metrics.setdefault(r["cell"], {})[r["seed"]] = Run.open(Path(out) / Path(r["run"]).name).metrics()
    return metrics


def _axis(values: list) -> dict:
    """A parallel-coordinates dimension for a grid field: its levels evenly spaced (sorted when numeric, so a
    learning rate of 1e-3, 3e-3, 1e-2 reads as three steps, not two points squeezed at one end), labelled."""
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    levels = sorted(set(values)) if numeric else list(dict.fromkeys(str(v) for v in values))
    codes = [levels.index(v if numeric else str(v)) for v in values]
    return {"values": codes, "tickvals": list(range(len(levels))), "ticktext": [f"{v:g}" if numeric else v
                                                                                  for v in levels],
            "range": [-0.25, len(levels) - 0.75] if len(levels) > 1 else [-1, 1]}


def parallel_figure(rows: list[dict], fields: list[str], title: str = "sweep"):
    """One line per finished run through its grid values and its final val loss (the colour too)."""
    import plotly.graph_objects as go

    rows = [r for r in rows if r.get("val_loss") is not None]
    dims = [{"label": f, **_axis([r.get(f) for r in rows])} for f in fields]
    if len({r["seed"] for r in rows}) > 1:
        dims.append({"label": "seed", **_axis([r["seed"] for r in rows])})
    val = [r["val_loss"] for r in rows]
    dims.append({"label": "final val loss", "values": val})
    fig = go.Figure(go.Parcoords(line=dict(color=val, colorscale="Viridis", showscale=True,
                                           colorbar=dict(title="val loss")), dimensions=dims))
    fig.update_layout(title=f"{title}: grid values against final val loss (one line per run)",
                      template="plotly_white", width=900, height=440, margin=dict(l=60, r=40, t=90, b=40))
    return fig


def heatmap_figure(rows: list[dict], fields: list[str], title: str = "sweep"):
    """Mean final val loss over seeds for each pair of values of a two-field grid (rows: the first field)."""
    import plotly.graph_objects as go

    if len(fields) != 2:
        raise ValueError(f"a heatmap needs a grid over exactly two fields; this one has {len(fields)}.")
    fy, fx = fields
    ys = list(dict.fromkeys(r.get(fy) for r in rows))
    xs = list(dict.fromkeys(r.get(fx) for r in rows))
    cells: dict[tuple, list[float]] = {}
    for r in rows:
        if r.get("val_loss") is not None:
            cells.setdefault((r.get(fy), r.get(fx)), []).append(r["val_loss"])
    z = [[sum(cells[(y, x)]) / len(cells[(y, x)]) if (y, x) in cells else None for x in xs] for y in ys]
    text = [[f"{v:.4f}" if v is not None else "–" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=[str(x) for x in xs], y=[str(y) for y in ys], text=text,
                               texttemplate="%{text}", colorscale="Viridis", colorbar=dict(title="val loss"),
                               hovertemplate=f"{fy}=%{{y}}<br>{fx}=%{{x}}<br>val loss %{{z:.4f}}<extra></extra>"))
    fig.update_layout(title=f"{title}: final val loss, mean over seeds (lower is better)", xaxis_title=fx,
                      yaxis_title=fy, xaxis_type="category", yaxis_type="category", template="plotly_white", width=700,
                      height=420)
    return fig
