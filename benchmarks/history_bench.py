"""What weights history costs and how fast its views are (a section of benchmarks/bench.py).

    python -m benchmarks.history_bench [--quick] [--demo checkpoints/demo]

1. bytes per run for every preset: one kept step's file (float16 and float32), measured by saving
   it, times the preset's number of kept steps;
2. the share of a `lab` run's training time spent writing history: kept steps x the median time of
   one save / (steps x the median time of one training step);
3. the Dynamics page's first computation on a 3,000-step run (the `induction` preset's 38 kept steps
   and the `lab` model at 3,000 steps): every kept step's scores, importance (probe prompt and
   validation batch), ICL score and logit lens; after that the app's cache answers;
4. moving the step control: an AppTest run of the Heads, Sample and Predictions pages after the
   sidebar's "Weights at step" moves to a step not drawn before (model load + the page's work).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tinyviz.config import PRESETS, apply_overrides, preset
from tinyviz.training import dynamics as dynamics_store
from tinyviz.training.history import schedule
from tinyviz.training.runs import Run
from tinyviz.training.session import TrainingSession

QUICK = ["n_layers=1", "n_heads=2", "d_model=32", "d_ff=64", "n_ctx=32", "batch_size=4", "corpus_chars=20000",
         "bpe_vocab_size=300"]


def _median(fn, n: int) -> float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _fake_history(cfg, out: Path) -> Run:
    """A run whose every scheduled step holds a copy of its initial weights: the shapes and file count
    of the real thing, without training it (the views' cost does not depend on the values)."""
    session = TrainingSession.start(cfg, out)
    for step in schedule(cfg.train):
        session.run.history.save(step, session.trainer.model, cfg.train.history_dtype)
    return session.run


def bytes_per_run(tmp: Path, quick: bool) -> dict:
    out = {}
    for name in PRESETS:
        cfg = apply_overrides(preset(name), QUICK) if quick else preset(name)
        session = TrainingSession.start(cfg, tmp / f"bytes-{name}")
        kept = len(schedule(cfg.train))
        sizes = {}
        for dtype in ("float16", "float32"):
            session.run.history.save(0, session.trainer.model, dtype)
            sizes[dtype] = session.run.history.path(0).stat().st_size
        out[name] = {"kept_steps": kept, "params": session.trainer.model.n_params(non_embedding=False),
                     **{f"bytes_per_step_{d}": s for d, s in sizes.items()},
                     **{f"bytes_per_run_{d}": s * kept for d, s in sizes.items()}}
    return out


def lab_overhead(tmp: Path, quick: bool) -> dict:
    cfg = preset("lab")
    cfg = apply_overrides(cfg, QUICK) if quick else cfg
    session = TrainingSession.start(apply_overrides(cfg, ["eval_interval=0", "checkpoint_interval=0"]), tmp / "lab")
    trainer = session.trainer
    trainer.step()
    step_s = _median(trainer.step, 3 if quick else 20)
    save_s = _median(lambda: session.run.history.save(1, trainer.model, cfg.train.history_dtype), 3 if quick else 10)
    kept = len(schedule(cfg.train))
    return {"step_s": step_s, "save_s": save_s, "kept_steps": kept, "steps": cfg.train.steps,
            "overhead": kept * save_s / (cfg.train.steps * step_s)}


def dynamics_time(tmp: Path, quick: bool) -> dict:
    out = {}
    for name, extra in (("induction", []), ("lab", ["steps=3000"])):
        cfg = apply_overrides(preset(name), extra + (QUICK if quick else []))
        run = _fake_history(cfg, tmp / f"dyn-{name}")
        t0 = time.perf_counter()
        d = dynamics_store.compute(run)
        m = cfg.model
        out[name] = {"kept_steps": len(d["steps"]), "model": f"{m.n_layers}L x {m.n_heads}H d{m.d_model}",
                     "first_s": time.perf_counter() - t0}
    return out


def redraw(demo: Path, tmp: Path, quick: bool = False) -> dict:
    """Seconds of one AppTest rerun of a page after the step control moves to a step not seen before."""
    from streamlit.testing.v1 import AppTest

    root = tmp / "runs"
    shutil.copytree(demo, root / "demo")
    os.environ["TINYVIZ_RUNS"] = str(root)
    steps = Run.open(root / "demo").history.steps()
    if len(steps) < 4:
        return {"error": f"{demo} kept {len(steps)} steps; the step control needs a run with history"}
    out = {}
    app = str(Path(__file__).resolve().parents[1] / "app.py")
    for page in ("heads",) if quick else ("heads", "sample", "predictions"):
        at = AppTest.from_file(app, default_timeout=120).run()
        at.switch_page(f"app_pages/{page}.py").run()
        times = []
        for step in steps[len(steps) // 3::max(1, len(steps) // 6)][:1 if quick else 4]:
            slider = next(s for s in at.sidebar.select_slider if s.key.startswith("sidebar_step"))
            t0 = time.perf_counter()
            slider.set_value(step).run()
            times.append(time.perf_counter() - t0)
        out[page] = {"median_s": statistics.median(times), "max_s": max(times), "n": len(times)}
    return out


def run_all(quick: bool, demo: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="tinyviz-history-") as d:
        tmp = Path(d)
        res = {"loadavg_start": list(os.getloadavg()), "bytes": bytes_per_run(tmp, quick),
               "lab_overhead": lab_overhead(tmp, quick), "dynamics": dynamics_time(tmp, quick),
               "redraw": redraw(demo, tmp, quick)}
    res["loadavg_end"] = list(os.getloadavg())
    return res


def report(res: dict) -> str:
    lines = ["weights history, bytes per run (kept steps x one step's file):"]
    for name, b in res["bytes"].items():
        lines.append(f"  {name:<14} {b['kept_steps']:>3} steps x {b['params']:>9,} params: float16 "
                     f"{b['bytes_per_run_float16'] / 1e6:6.1f} MB, float32 {b['bytes_per_run_float32'] / 1e6:6.1f} MB")
    o = res["lab_overhead"]
    lines.append(f"lab: {o['kept_steps']} saves x {o['save_s'] * 1e3:.1f} ms over {o['steps']} steps x "
                 f"{o['step_s'] * 1e3:.0f} ms = {o['overhead']:.2%} of training time")
    for name, d in res["dynamics"].items():
        lines.append(f"dynamics, first computation, {name} ({d['model']}, {d['kept_steps']} kept steps): "
                     f"{d['first_s']:.1f} s")
    for page, r in res["redraw"].items():
        lines.append(f"step control -> {page} redrawn: " + (f"median {r['median_s']:.2f} s, max {r['max_s']:.2f} s "
                                                             f"({r['n']} moves)" if isinstance(r, dict) else str(r)))
    lines.append(f"load average {res['loadavg_start'][0]:.2f} at start, {res['loadavg_end'][0]:.2f} at end")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.history_bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--demo", default="checkpoints/demo")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    res = run_all(args.quick, Path(args.demo))
    print(report(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
