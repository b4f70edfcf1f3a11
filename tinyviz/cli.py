"""python -m tinyviz train | sample | heads | ablate | sweep | runs | import | export-hf

Bad input ends in one sentence on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from pathlib import Path

from tinyviz.config import PRESETS, RunConfig, SampleConfig, apply_overrides, option_overrides, preset

EXIT_BAD_INPUT = 2


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def build_config(args) -> RunConfig:
    cfg = preset(args.preset)
    return apply_overrides(cfg, option_overrides(cfg, args.corpus, args.steps, args.seed) + list(args.set or []))


def cmd_train(args) -> int:
    if args.resume and (args.set or args.preset_given):
        return _fail("--resume continues a run with its own config; drop --preset and --set.")
    out, stop = Path(args.out), threading.Event()
    # from here on, so that a stop while the run loads (the app's Stop right after Start) is a clean stop too
    previous = signal.signal(signal.SIGINT, _stop_handler(stop))
    from tinyviz.training.session import stop_with_parent

    stop_with_parent(stop)  # a training the app started stops cleanly if the app's server dies
    try:
        session = _open_session(args, out)
        cfg, trainer = session.run.config, session.trainer
        print(f"{cfg.preset}: {trainer.model.n_params(non_embedding=False):,} parameters "
              f"(decayed {trainer.n_decay:,}, not decayed {trainer.n_no_decay:,}), vocab {cfg.model.d_vocab}, "
              f"corpus {cfg.data.corpus} -> {out}", file=sys.stderr)
        with _progress_bar(session) as on_step:
            status = session.train(stop=stop, on_step=on_step)
    finally:
        signal.signal(signal.SIGINT, previous)
    print(f"{_outcome(session, status)}; {session.trainer.elapsed:.1f} s of training. Run saved in {out}",
          file=sys.stderr)
    return _fail(session.message) if status == "failed" else 0


def _stop_handler(stop: threading.Event):
    """A SIGINT handler: the first Ctrl-C asks the session to stop after this step, the second aborts."""
    def on_sigint(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this step and saving a checkpoint (Ctrl-C again to abort)...", file=sys.stderr)

    return on_sigint


def _open_session(args, out: Path):
    from tinyviz.training.session import TrainingSession

    if args.resume:
        return TrainingSession.resume(out)
    return TrainingSession.start(build_config(args), out, overwrite=args.overwrite)


@contextlib.contextmanager
def _progress_bar(session):
    """A tqdm bar on stderr over the run's steps; yields the on_step callback that moves it."""
    from tqdm import tqdm

    bar = tqdm(total=session.run.config.train.steps, initial=session.step, unit="step", dynamic_ncols=True,
               file=sys.stderr)
    last_val = [None]

    def on_step(m):
        if m.val_loss is not None:
            last_val[0] = m.val_loss
        post = {"loss": f"{m.loss:.3f}", "tok/s": f"{m.tokens_per_s:,.0f}"}
        if last_val[0] is not None:
            post["val"] = f"{last_val[0]:.3f}"
        bar.set_postfix(post, refresh=False)
        bar.update(1)

    try:
        yield on_step
    finally:
        bar.close()


def _outcome(session, status: str) -> str:
    """'done at step 300: loss 1.2345, val loss 1.3456'."""
    metrics = session.run.metrics()
    vals = [m["val_loss"] for m in metrics if m.get("val_loss") is not None]
    line = f"{status} at step {session.step}"
    if metrics:
        line += f": loss {metrics[-1]['loss']:.4f}"
    if vals:
        line += f", val loss {vals[-1]:.4f}"
    return line


def model_at_step(run, step: int | None):
    """(model, step shown) for --step: the nearest kept step, said on stderr when it is not the one asked
    for; a step beyond the run's or a run without history (unless its last step is asked for) is a RunError."""
    from tinyviz.training.runs import RunError

    last = run.weights_step()
    if step is None:
        return run.load_model(), last
    if not 0 <= step <= last:
        raise RunError(f"--step {step} is beyond {run.name}'s steps: it was trained from step 0 to {last}; "
                       f"pick a step in 0..{last}.")
    kept = sorted({*run.history.steps(), last})
    if len(kept) == 1 and step != last:
        raise RunError(f"{run.name} kept no weights history (trained before tinyviz kept one, imported, or with "
                       f"history_keep=0), so only its last step {last} can be shown; drop --step.")
    nearest = min(kept, key=lambda s: (abs(s - step), s))
    if nearest != step:
        print(f"note: step {step} was not kept; showing the nearest kept step, {nearest}.", file=sys.stderr)
    return run.model_at(nearest), nearest


def cmd_sample(args) -> int:
    from tinyviz.model.sampling import generate
    from tinyviz.training.runs import Run

    run = Run.open(Path(args.run))
    model, _ = model_at_step(run, args.step)
    tokenizer = run.tokenizer()
    cfg = SampleConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                       top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    prompt = args.prompt if args.prompt is not None else run.meta.get("probe_prompt", "")[:20]
    result = generate(model, tokenizer, prompt, cfg)
    for notice in result.notices:
        print(f"note: {notice}", file=sys.stderr)
    print(result.prompt + result.text)
    return 0


def cmd_heads(args) -> int:
    from tinyviz.analysis import probes
    from tinyviz.model.sampling import encode_prompt
    from tinyviz.training.runs import Run

    run = Run.open(Path(args.run))
    model, step = model_at_step(run, args.step)
    tokenizer = run.tokenizer()
    prompt = args.prompt if args.prompt is not None else run.meta.get("probe_prompt", "")
    ids, notices = encode_prompt(tokenizer, prompt, model.cfg.n_ctx, room=0)
    for notice in notices:
        print(f"note: {notice}", file=sys.stderr)
    rows = probes.head_rows(probes.head_stats(probes.attention_patterns(model, ids), ids, causal=model.cfg.causal))
    induction = probes.induction_scores(model, tokenizer)["random"]  # [L, H]
    for row in rows:
        row["induction_random"] = round(float(induction[row["layer"], row["head"]]), 4)
    if args.json:
        print(json.dumps({"run": run.name, "step": step, "prompt": prompt, "heads": rows}, indent=2))
        return 0
    cols = list(rows[0])
    print(f"{run.name} at step {step}; prompt of {len(ids)} tokens")
    print("  ".join(f"{c:>10}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]:>10.3f}" if isinstance(r[c], float) else f"{r[c]:>10}" for c in cols))
    return 0


def cmd_report(args) -> int:
    from tinyviz.training.report import replay_html
    from tinyviz.training.runs import Run, atomic_write

    run = Run.open(Path(args.run))
    if not run.has_weights():
        return _fail(f"{run.name} has no trained weights yet; train it first, then write its replay file.")
    out = Path(args.out)
    if out.is_dir():
        return _fail(f"--out {out} is a folder; give a file name such as {out / (run.name + '-replay.html')}.")
    text = replay_html(run)
    atomic_write(out, text.encode("utf-8"))
    print(f"wrote {out} ({len(text) / 1e6:.1f} MB): open it in any browser, no network needed.", file=sys.stderr)
    return 0


def cmd_runs(args) -> int:
    from tinyviz.training.runs import list_runs, run_label

    runs = list_runs(Path(args.root))
    if not runs:
        print(f"no runs under {args.root}/; train one with "
              f"`python -m tinyviz train --preset micro --out {args.root}/first`")
        return 0
    width = max(24, *(len(run_label(r.path, Path(args.root))) for r in runs))
    print(f"{'name':<{width}} {'step':>11} {'loss':>7} {'val':>7}  {'status':<8} model / corpus")
    for run in runs:
        s = run.summary()
        fmt = lambda v: f"{v:7.3f}" if isinstance(v, (int, float)) else f"{'-':>7}"
        name = run_label(run.path, Path(args.root))  # 'ablate-residual/full-seed0' for a run of an ablation
        print(f"{name:<{width}} {s['step']:>5}/{s['steps']:<5} {fmt(s['loss'])} {fmt(s['val_loss'])}  "
              f"{s['status']:<8} {s['model']} / {s['corpus']}")
    return 0


class _Progress:
    """A progress bar over every step of a sweep, with the runs finished and an ETA (tqdm's)."""

    def __init__(self, desc: str):
        from tqdm import tqdm

        self.bar = tqdm(total=0, unit="step", dynamic_ncols=True, file=sys.stderr, desc=desc)

    def __call__(self, done: int, total: int, runs_done: int = 0, runs: int = 0) -> None:
        self.bar.total = total
        if runs:
            self.bar.set_postfix_str(f"{runs_done}/{runs} runs", refresh=False)
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def _executor(args):
    from tinyviz.experiments.executors import make_executor

    if args.executor != "ray" and args.ray_address is not None:
        raise ValueError("--ray-address needs --executor ray.")
    ex = make_executor(args.executor, workers=args.workers, address=args.ray_address, gpus_per_run=args.gpus_per_run)
    print(f"executor: {ex.describe()}", file=sys.stderr)
    return ex


def cmd_ablate(args) -> int:
    from tinyviz.experiments.ablate import default_out, run_ablation
    from tinyviz.experiments.sweep import ablation_sweep

    ablation_sweep(args.preset, args.seeds, args.steps, args.corpus, args.set or [])  # bad input: before connecting
    executor = _executor(args)
    bar = _Progress(f"ablate {args.preset}")
    out = Path(args.out) if args.out else default_out(args.preset)
    try:
        res = run_ablation(args.preset, seeds=args.seeds, steps=args.steps, corpus=args.corpus,
                           workers=args.workers, out=out, sets=args.set or [], on_progress=bar,
                           executor=executor, reuse=args.reuse or [])
    except KeyboardInterrupt:
        return _aborted(out)
    finally:
        bar.close()
        getattr(executor, "close", lambda: None)()
    label, line = res.verdict
    print(f"{res.ablation.name}: {label}. {line}", file=sys.stderr)
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{len(res.runs)} runs in {res.wall_s:.0f} s{_reused(res.runs)}; summary, figure and curves in {res.out}",
          file=sys.stderr)
    return 0


def _aborted(out: Path) -> int:
    """Ctrl-C during a sweep: what is kept and how to go on."""
    print(f"aborted. The finished runs' folders in {out} are kept: the same command with --reuse {out} trains "
          "only the rest.", file=sys.stderr)
    return 130


def _reused(runs: list[dict]) -> str:
    n = sum(1 for r in runs if r.get("reused_from"))
    return f" ({n} of them finished runs with the same config, copied from --reuse)" if n else ""


def cmd_sweep(args) -> int:
    from tinyviz.experiments.sweep import check_corpus, grid_sweep, run_sweep

    sweep = grid_sweep(args.preset, args.grid or [], args.seeds, args.steps, args.corpus, args.set or [],
                       yes=args.yes)
    check_corpus(sweep.base)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the sweep.")
    executor = _executor(args)  # connects to Ray: an unreachable address fails here, before --out is made
    print(f"sweep: {len(sweep.cells)} cells x {len(sweep.seeds)} seed(s) = {sweep.n_runs} runs of "
          f"{sweep.base.train.steps} steps -> {out}", file=sys.stderr)
    bar = _Progress("sweep")
    try:
        res = run_sweep(sweep, out, executor, on_progress=bar, images=not args.no_images, reuse=args.reuse or [])
    except KeyboardInterrupt:
        return _aborted(out)
    finally:
        bar.close()
        getattr(executor, "close", lambda: None)()
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    nodes = sorted({r["node"] for r in res.runs})
    print(f"{len(res.runs)} runs in {res.wall_s:.0f} s on {len(nodes)} node(s){_reused(res.runs)}; results.csv, "
          f"summary.md, curves.csv and loss.html in {out}", file=sys.stderr)
    return 0


def _executor_args(p) -> None:
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local: this machine's cores (default); ray: a Ray cluster (pip install -e '.[ray]')")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="HOST:PORT of the Ray head, or auto (default: $TINYVIZ_RAY_ADDRESS, else auto)")
    p.add_argument("--workers", type=int, default=None, help="local worker processes (default min(2, cores))")
    p.add_argument("--gpus-per-run", type=float, default=1.0,
                   help="GPUs each device=cuda run asks Ray for; a fraction packs runs on one GPU (default 1)")
    p.add_argument("--reuse", action="append", metavar="DIR",
                   help="a folder of finished runs (another sweep's or ablation's --out, or this one's to finish a "
                        "stopped sweep): a run there with exactly a cell's config is copied, not trained again")
def cmd_import(args) -> int:
    from tinyviz.training.importer import import_model

    res = import_model(Path(args.source), Path(args.out), args.tokenizer, overwrite=args.overwrite)
    m = res.run.config.model
    print(f"imported {res.kind} model: {res.n_params:,} parameters, {m.n_layers} layers x {m.n_heads} heads, "
          f"d_model {m.d_model}, vocab {m.d_vocab}, context {m.n_ctx} -> {res.run.path}", file=sys.stderr)
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def cmd_export_hf(args) -> int:
    from tinyviz.training.importer import export_hf
    from tinyviz.training.runs import Run

    run = Run.open(Path(args.run))
    files = export_hf(run, Path(args.out))
    print(f"wrote {', '.join(files)} to {args.out}; load it with "
          f"transformers.AutoModelForCausalLM.from_pretrained({str(args.out)!r})", file=sys.stderr)
    return 0


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tinyviz", description="Train tiny transformers and watch them learn.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a preset (or resume a run)")
    t.add_argument("--preset", default=None, help=f"one of: {', '.join(PRESETS)} (default micro)")
    t.add_argument("--corpus", default=None, help="a built-in corpus name or a path to a .txt file")
    t.add_argument("--steps", type=int, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--out", required=True, help="the run folder, e.g. checkpoints/my-run")
    t.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override any model, train or data field")
    t.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    t.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    t.set_defaults(func=cmd_train)

    s = sub.add_parser("sample", help="generate text from a run")
    s.add_argument("run")
    s.add_argument("--prompt", default=None)
    d = SampleConfig()
    s.add_argument("--max-new-tokens", type=int, default=d.max_new_tokens)
    s.add_argument("--temperature", type=float, default=d.temperature)
    s.add_argument("--top-k", type=int, default=d.top_k)
    s.add_argument("--top-p", type=float, default=d.top_p)
    s.add_argument("--seed", type=int, default=d.seed)
    s.add_argument("--step", type=int, default=None, help="the weights at this step (the nearest kept one)")
    s.set_defaults(func=cmd_sample)

    h = sub.add_parser("heads", help="per-head scores, entropy and labels on a prompt")
    h.add_argument("run")
    h.add_argument("--prompt", default=None, help="default: the run's probe prompt")
    h.add_argument("--json", action="store_true")
    h.add_argument("--step", type=int, default=None, help="the weights at this step (the nearest kept one)")
    h.set_defaults(func=cmd_heads)

    a = sub.add_parser("ablate", help="train every arm of an ablation preset over seeds; figure, CSV, verdict")
    a.add_argument("preset", help="init, posemb, tying, residual, norm, mlp, causal or scale")
    a.add_argument("--seeds", type=int, default=None, help="seeds per arm (default: the preset's, 2 or 3)")
    a.add_argument("--steps", type=int, default=None, help="steps per run (default: the preset's)")
    a.add_argument("--corpus", default=None, help="a built-in corpus name or a path to a .txt file")
    a.add_argument("--out", default=None, help="output folder (default checkpoints/ablate-PRESET)")
    a.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a base field for every arm")
    _executor_args(a)
    a.set_defaults(func=cmd_ablate)

    w = sub.add_parser("sweep", help="train the cartesian product of grids x seeds; results table, curves, figure")
    w.add_argument("--preset", default="micro", help=f"the base config: one of {', '.join(PRESETS)} (default micro)")
    w.add_argument("--grid", action="append", metavar="FIELD=V1,V2,...",
                   help="a field and its values; repeat for more fields (their cartesian product)")
    w.add_argument("--seeds", type=int, default=1, help="seeds per cell (default 1)")
    w.add_argument("--steps", type=int, default=None, help="steps per run (default: the preset's)")
    w.add_argument("--corpus", default=None, help="a built-in corpus name or a path to a .txt file")
    w.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a base field for every cell")
    w.add_argument("--out", required=True, help="output folder, e.g. checkpoints/sweep-lr")
    w.add_argument("--yes", action="store_true", help=f"run a sweep of more than {1000:,} runs")
    w.add_argument("--no-images", action="store_true", help="skip the PNG/SVG figure (HTML is always written)")
    _executor_args(w)
    w.set_defaults(func=cmd_sweep)

    i = sub.add_parser("import", help="turn a nanoGPT ckpt.pt, a llama2.c .bin or a Hugging Face folder into a run")
    i.add_argument("source", help="ckpt.pt (or its out_dir), a llama2.c model .bin, or a GPT-2/Llama HF folder")
    i.add_argument("--out", required=True, help="the run folder to write, e.g. checkpoints/stories15M")
    i.add_argument("--tokenizer", default=None,
                   help="tokenizer.json, meta.pkl or llama2.c tokenizer.bin (default: the one beside the model)")
    i.add_argument("--overwrite", action="store_true", help="replace files already in --out")
    i.set_defaults(func=cmd_import)

    e = sub.add_parser("export-hf", help="write a run as a Hugging Face GPT-2 or Llama folder")
    e.add_argument("run", help="the run folder, e.g. checkpoints/my-run")
    e.add_argument("--out", required=True, help="an empty folder to write config.json and model.safetensors to")
    e.set_defaults(func=cmd_export_hf)

    o = sub.add_parser("report", help="write a run's offline replay file (one HTML page)")
    o.add_argument("run")
    o.add_argument("--out", required=True, help="the HTML file to write, e.g. demo-replay.html")
    o.set_defaults(func=cmd_report)

    r = sub.add_parser("runs", help="list the runs under checkpoints/")
    r.add_argument("--root", default="checkpoints")
    r.set_defaults(func=cmd_runs)
    return p


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    if args.command == "train":
        args.preset_given = args.preset is not None
        args.preset = args.preset or "micro"
    try:
        return args.func(args)
    except ValueError as e:  # RunError, CorpusError, UnknownCharactersError are ValueErrors
        return _fail(str(e))
    except OSError as e:  # disk full, permissions, ...: say which file and what to do, not "[Errno 28]"
        where = f" {e.filename!r}" if e.filename else ""
        return _fail(f"could not read or write{where} ({e.strerror or e}); free some disk space or check "
                     "the folder's permissions, then try again.")
    except KeyboardInterrupt:
        print("aborted.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
