"""How fast is tinyviz on this machine, next to a plain PyTorch model of the same size?

    python -m benchmarks                 # the full run (under 10 minutes on 2 cores)
    python -m benchmarks --quick         # a tiny smoke run of every section (seconds)
    python -m benchmarks --json out/bench.json --presets lab

Every figure is the median of several repeats, shown with its min-max. Every ratio is taken
in this one process with the two sides interleaved (A B A B ...), so a neighbour that steals
the CPU for a while slows both sides alike. Sections:

1. training tokens/s (forward + backward + AdamW, batch 32, n_ctx 128) of tinyviz with all
   per-step metrics, and with the probe snapshot every 100 steps amortised, next to
   ``RefGPT``, the nanoGPT-style model in benchmarks/reference.py (no hooks, no metrics);
2. MFU against the matmul peak measured here (fp32; bf16 only if the CPU has it natively);
3. capture of one 128-token prompt: every attention pattern, activation stats, head scores;
4. 200 new tokens with and without the KV cache;
5. interaction on the demo run: head click -> figure ready, temperature change -> new sample;
6. peak RSS of a training run per preset and of a process with the demo run loaded;
7. an imported model's size (a random GPT-2 small, 124 M parameters, built in memory): what each
   page computes on a 128-token prompt (Heads, Predictions, logit lens, Sample: its first token, its
   default length for this size, ms per new token, forward passes per token), 2 threads and 1;
8. weights history (benchmarks/history_bench.py): bytes per run per preset, its share of a lab run's
   training time, the Dynamics views' first computation on a 3,000-step run, and the step control's
   page redraw;
9. app vs CLI (benchmarks/app_speed.py): the same preset trained by the CLI and by the real app with the
   Train page open in headless Chromium, steps/s of wall clock; skipped with the reason without Chromium.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks import app_speed, history_bench
from benchmarks.reference import RefTrainer
from tinyviz.analysis import probes
from tinyviz.config import (
    ModelConfig,
    SampleConfig,
    apply_overrides,
    preset,
)
from tinyviz.data.text import prepare
from tinyviz.model.sampling import Generation, default_new_tokens, encode_prompt, generate
from tinyviz.training.runs import Run
from tinyviz.training.session import TrainingSession
from tinyviz.training.trainer import Trainer

PRESETS = ("lab", "mini-gpt", "stories-0.8m")
SNAPSHOT_EVERY = 100
FAST_MODES = {"compile": {"compile": True}, "bfloat16": {"dtype": "bfloat16"}}  # TrainConfig opt-ins
# --quick shrinks every model and batch so the whole file runs in seconds (tests/test_perf_modes.py)
QUICK = ["n_layers=1", "n_heads=2", "d_model=32", "d_ff=64", "n_ctx=32", "batch_size=4",
         "steps=20", "warmup_steps=2", "corpus_chars=20000", "bpe_vocab_size=300"]


# -- measuring ------------------------------------------------------------------------------------

def summary(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, calls: int = 1) -> dict[str, list[float]]:
    """Seconds per call of each fn: `rounds` rounds, each running every fn `calls` times in turn."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        order = list(fns) if r % 2 == 0 else list(fns)[::-1]  # ABBA: neither side always goes first
        for name in order:
            t0 = time.perf_counter()
            for _ in range(calls):
                fns[name]()
            times[name].append((time.perf_counter() - t0) / calls)
    return times


def repeat(fn: Callable[[], object], n: int, warmup: int = 1) -> list[float]:
    return interleaved({"f": fn}, n + warmup)["f"][warmup:]


def flops_per_token(model_cfg: ModelConfig, n_params: int) -> float:
    """6·N (N = non-embedding parameters) plus the attention scores and mixing, 12·L·d_model·n_ctx."""
    return 6 * n_params + 12 * model_cfg.n_layers * model_cfg.d_model * model_cfg.n_ctx


def bf16_native() -> bool:
    """bf16 matmuls run in hardware (AVX512-BF16 or AMX); without it oneDNN emulates them, far slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def matmul_peak(quick: bool) -> dict:
    """GFLOP/s of square matmuls; the best size's best repeat is the peak."""
    out = {}
    for dtype in ("float32", "bfloat16"):
        native = dtype == "float32" or bf16_native()
        sizes = [256] if quick or not native else [1024, 2048]
        best = None
        for n in sizes:
            a, b = torch.randn(n, n, dtype=getattr(torch, dtype)), torch.randn(n, n, dtype=getattr(torch, dtype))
            ts = repeat(lambda a=a, b=b: a @ b, 1 if not native else (3 if quick else 8), warmup=0 if not native else 1)
            g = [2 * n**3 / t / 1e9 for t in ts]
            if best is None or max(g) > best["peak"]:
                best = {"size": n, "gflops": summary(g), "peak": max(g), "native": native}
        out[dtype] = best
    return out


# -- 1 & 2: training ------------------------------------------------------------------------------

def bench_training(name: str, args, tmp: Path, peak: dict, fast: bool) -> dict:
    """fast: also time the opt-in modes (the first preset only: compiling takes minutes on 2 cores)."""
    cfg = preset(name)
    if args.quick:
        cfg = apply_overrides(cfg, QUICK)
    cfg = apply_overrides(cfg, ["eval_interval=0", "checkpoint_interval=0", f"threads={args.threads}"])
    session = TrainingSession.start(cfg, tmp / name)
    tv, mcfg, tcfg = session.trainer, session.run.config.model, session.run.config.train
    modes, warm = _training_modes(session, args.modes if fast else [])
    for fn in modes.values():  # warm up allocator, kernels, optimizer state
        fn()
    times = interleaved(modes, args.rounds, args.calls)
    snap = repeat(session._snapshot, 3 if args.quick else 5)
    tokens = tcfg.batch_size * mcfg.n_ctx
    fpt = flops_per_token(mcfg, tv.model.n_params())
    out = {"config": {"n_layers": mcfg.n_layers, "n_heads": mcfg.n_heads, "d_model": mcfg.d_model,
                      "d_ff": mcfg.ff_size, "n_ctx": mcfg.n_ctx, "d_vocab": mcfg.d_vocab, "dropout": mcfg.dropout,
                      "batch_size": tcfg.batch_size, "non_embedding_params": tv.model.n_params(),
                      "flops_per_token": fpt},
           "snapshot_s": summary(snap),
           "modes": _mode_figures(times, warm, tokens, fpt * 1e-9 / peak["float32"]["peak"])}
    step = statistics.median(times["tinyviz"])
    with_snap = step + statistics.median(snap) / SNAPSHOT_EVERY
    overhead = with_snap / step - 1
    out["modes"]["tinyviz+snapshots"] = {
        "tokens_per_s": tokens / with_snap, "overhead": overhead,
        "vs_reference": out["modes"]["tinyviz"]["vs_reference"]["median"] / (1 + overhead),
    }
    return out


def _training_modes(session, fast_modes) -> tuple[dict[str, Callable[[], object]], dict[str, float]]:
    """The training steps to time, by mode (the reference, tinyviz's step with its metrics record, and each
    opt-in fast mode that runs natively here), and each fast mode's first step in seconds (it compiles)."""
    tv, mcfg, tcfg = session.trainer, session.run.config.model, session.run.config.train
    ref = RefTrainer(mcfg, tcfg, tv.data)
    modes: dict[str, Callable[[], object]] = {
        "reference": ref.step,
        "tinyviz": lambda: json.dumps(tv.step().to_dict()),  # the metrics record, as the session logs it
    }
    warm: dict[str, float] = {}
    for mode in fast_modes:
        if "dtype" in FAST_MODES[mode] and not bf16_native():
            continue  # emulated bf16 is hundreds of times slower than fp32 here; see matmul_peak
        fast = Trainer(mcfg, dataclasses.replace(tcfg, **FAST_MODES[mode]), tv.data)
        t0 = time.perf_counter()
        fast.step()  # compiles on the first step
        warm[mode] = time.perf_counter() - t0
        modes[mode] = lambda fast=fast: json.dumps(fast.step().to_dict())
    return modes, warm


def _mode_figures(times: dict[str, list[float]], warm: dict[str, float], tokens: int, mfu_per_tps: float) -> dict:
    """Per mode: step time, tokens/s, the ratio to the reference (round by round: the same minute on the CPU),
    the fp32 MFU (tokens/s x mfu_per_tps) and, for a compiling mode, its first step and payback in steps."""
    ref_tps = [tokens / t for t in times["reference"]]
    out = {}
    for mode, ts in times.items():
        tps = [tokens / t for t in ts]
        ratio = [a / b for a, b in zip(tps, ref_tps)]
        out[mode] = {"step_s": summary(ts), "tokens_per_s": summary(tps), "vs_reference": summary(ratio),
                     "mfu_fp32": statistics.median(tps) * mfu_per_tps}
        if mode in warm:
            extra = warm[mode] - statistics.median(ts)
            saved = statistics.median(times["tinyviz"]) - statistics.median(ts)
            out[mode]["first_step_s"] = warm[mode]
            out[mode]["payback_steps"] = extra / saved if saved > 0 else None
    return out


# -- 3 & 4: capture and generation ----------------------------------------------------------------

def bench_inspection(args, tmp: Path) -> dict:
    cfg = apply_overrides(preset("lab"), QUICK) if args.quick else preset("lab")
    prep = prepare(cfg)
    text, tokenizer, mcfg = prep.text, prep.tokenizer, prep.config.model
    torch.manual_seed(0)
    from tinyviz.model.transformer import Transformer

    model = Transformer(mcfg).eval()
    ids = torch.tensor(tokenizer.encode(text[: mcfg.n_ctx * 4])[: mcfg.n_ctx])
    n = 5 if args.quick else 30
    capture = repeat(lambda: probes.probe_snapshot(model, ids), n)
    patterns_only = repeat(lambda: probes.attention_patterns(model, ids), n)
    new = 20 if args.quick else 200
    prompt = text[:20]
    sc = SampleConfig(max_new_tokens=new, temperature=1.0, seed=0)
    fns = {"cached": lambda: generate(model, tokenizer, prompt, sc, use_cache=True),
           "uncached": lambda: generate(model, tokenizer, prompt, sc, use_cache=False)}
    for f in fns.values():
        f()
    gen = interleaved(fns, 3 if args.quick else 7)
    same = fns["cached"]().text == fns["uncached"]().text
    return {
        "capture": {"prompt_tokens": len(ids), "probe_snapshot_s": summary(capture),
                    "attention_patterns_s": summary(patterns_only)},
        "generation": {"new_tokens": new, "prompt_chars": len(prompt), "n_ctx": mcfg.n_ctx, "same_text": same,
                       **{k: summary(v) for k, v in gen.items()},
                       "per_token_ms": {k: 1e3 * statistics.median(v) / new for k, v in gen.items()},
                       "speedup": summary([u / c for c, u in zip(gen["cached"], gen["uncached"])])},
    }


# -- 5: interaction on the demo run ---------------------------------------------------------------

def demo_run(args, tmp: Path) -> Path:
    """checkpoints/demo when it exists, else a micro run trained here (a clean clone always has one)."""
    path = Path(args.demo)
    if (path / "model.safetensors").exists():
        return path
    cfg = apply_overrides(preset("micro"), (QUICK if args.quick else []) + ["steps=100", "warmup_steps=10"])
    session = TrainingSession.start(cfg, tmp / "demo")
    session.train()
    return session.run.path


def bench_interaction(args, tmp: Path) -> dict:
    """What the Heads and Sample pages call on a click or a slider move (tinyviz.ui.analysis and
    loaders wrap these same functions in Streamlit caches, which this times as misses)."""
    from tinyviz.analysis import plots

    path = demo_run(args, tmp)
    run = Run.open(path)
    model, tokenizer = run.load_model(), run.tokenizer()
    prompt = run.meta.get("probe_prompt") or "Once upon a time"
    ids, _ = encode_prompt(tokenizer, prompt, model.cfg.n_ctx, room=0)
    tokens = [tokenizer.token_str(i) for i in ids]
    L, H, causal = model.cfg.n_layers, model.cfg.n_heads, model.cfg.causal
    clicks = iter(range(10**6))

    def head_click():  # patterns (a cache miss), scores and labels, the grid and the big heatmap, serialised
        i = next(clicks)
        layer, head = (i // H) % L, i % H
        patterns = probes.attention_patterns(model, ids)
        scores = probes.head_scores(patterns, ids, causal=causal)
        probes.head_entropy(patterns, causal=causal)
        labels = probes.label_heads(scores)
        grid = plots.head_grid(patterns, run.name, None, labels, selected=(layer, head))
        big = plots.head_heatmap(patterns[layer, head], tokens, run.name, layer, head, None, labels[layer][head])
        return grid.to_json(), big.to_json()

    temps = iter(x for _ in range(10**6) for x in (0.7, 1.0, 1.3))
    new = 20 if args.quick else 200

    def temperature_change():  # the Sample page's prompt default is the probe prompt's first 40 characters
        return generate(model, tokenizer, prompt[:40], SampleConfig(max_new_tokens=new, temperature=next(temps)))

    n = 3 if args.quick else 10
    out = {"run": str(path), "prompt_tokens": len(ids), "new_tokens": new, "n_ctx": model.cfg.n_ctx}
    threads = torch.get_num_threads()
    for label, t in (("", threads), ("_1thread", 1)):  # the app gives page requests one thread
        torch.set_num_threads(t)
        head_click(), temperature_change()
        out[f"head_click_s{label}"] = summary(repeat(head_click, n))
        out[f"temperature_change_s{label}"] = summary(repeat(temperature_change, n))
    torch.set_num_threads(threads)
    return out


# -- 7: a model of GPT-2 small's size, as `import` makes it ---------------------------------------

GPT2_SMALL = dict(n_layers=12, n_heads=12, d_model=768, n_ctx=1024, d_vocab=50257, mlp="gelu_tanh",
                  init="pytorch_default")


def bench_big(args, tmp: Path) -> dict:
    """Page work on a GPT-2-small-size model (random weights; a word-level tokenizer of 50257 'w<i>'
    words stands in for GPT-2's BPE, so a prompt of 128 words is 128 tokens). Nothing is downloaded."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from tinyviz.analysis import plots
    from tinyviz.data.foreign import HFTokenizer
    from tinyviz.model.transformer import Transformer
    from tinyviz.ui import widgets  # the Sample page's html of the shaded tokens

    big = dict(GPT2_SMALL, n_layers=2, n_heads=2, d_model=64, d_vocab=1000) if args.quick else GPT2_SMALL
    cfg = ModelConfig(**big)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = Transformer(cfg).eval()
    build_s = time.perf_counter() - t0
    vocab = Tokenizer(models.WordLevel({f"w{i}": i for i in range(cfg.d_vocab)}, unk_token="w0"))
    vocab.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = HFTokenizer(vocab)
    T = 32 if args.quick else 128
    prompt = " ".join(f"w{(i * 7919) % cfg.d_vocab}" for i in range(T))
    ids = tok.encode(prompt)
    new = 8 if args.quick else 32

    def heads_page():  # patterns, scores, labels and the two figures, serialised as Streamlit sends them
        patterns = probes.attention_patterns(model, ids)
        scores = probes.head_scores(patterns, ids, causal=True)
        probes.head_entropy(patterns, causal=True)
        labels = probes.label_heads(scores)
        grid = plots.head_grid(patterns, "gpt2-small", None, labels, selected=(0, 0))
        big_fig = plots.head_heatmap(patterns[0, 0], [tok.token_str(i) for i in ids], "gpt2-small", 0, 0, None,
                                     labels[0][0])
        return len(grid.to_json()) + len(big_fig.to_json())

    # The Sample page's default length for this size, its first token (what a streamed page shows first)
    # and what drawing the growing text costs; the sampler makes exactly one forward pass per new token.
    n_default = default_new_tokens(sum(p.numel() for p in model.parameters()))
    sample_cfg = SampleConfig(max_new_tokens=n_default, temperature=1.0, seed=0)

    def first_token():
        return next(iter(Generation(model, tok, prompt, sample_cfg)))

    def sample_page_draw(result):  # the html the page sends at each redraw, for the whole text at the end
        labels, values, tips = widgets.sample_tokens(tok, result)
        return widgets.token_html(labels, [None if v is None else 1 - v for v in values], tips, (255, 127, 14))

    timings = {
        "capture (attention patterns)": lambda: probes.attention_patterns(model, ids),
        "heads page (patterns, scores, grid + heatmap JSON)": heads_page,
        "predictions (top-5 + loss per position)": lambda: (probes.top_predictions(model, ids, 5),
                                                            probes.loss_per_position(model, ids)),
        f"logit lens ({cfg.n_layers + 1} rows x {len(ids)} positions)": lambda: probes.logit_lens(model, ids, tok),
        f"sample {new} new tokens (KV cache)": lambda: generate(model, tok, prompt, SampleConfig(
            max_new_tokens=new, temperature=1.0, seed=0)),
        "one head zero-ablated (one forward)": lambda: probes.ablation_loss(model, ids, [(0, 0)]),
        "Sample page: first token (prompt pass + draw)": first_token,
        f"Sample page: default {n_default} new tokens": lambda: generate(model, tok, prompt, sample_cfg),
    }
    forwards = []
    hook = model.register_forward_pre_hook(lambda m, a: forwards.append(a[0].shape[1]))
    result = generate(model, tok, prompt, sample_cfg)
    hook.remove()
    t0 = time.perf_counter()
    html = sample_page_draw(result)
    draw_s = time.perf_counter() - t0
    out = {"config": big, "n_params": sum(p.numel() for p in model.parameters()), "prompt_tokens": len(ids),
           "build_s": build_s, "new_tokens": new, "heads_json_bytes": heads_page(), "pages": {}, "cpu_s": {},
           "sample_default_tokens": n_default, "forwards_per_new_token": (len(forwards) - 1) / (n_default - 1),
           "sample_draw_ms": draw_s * 1e3, "sample_draw_bytes": len(html), "per_token_ms": {}}
    n = 2 if args.quick else 3
    threads = torch.get_num_threads()
    for label, t in (("threads", threads), ("1 thread", 1)):
        torch.set_num_threads(t)
        out["pages"][label] = {name: summary(repeat(fn, n)) for name, fn in timings.items()}
        rows = out["pages"][label]
        whole, first = rows[f"Sample page: default {n_default} new tokens"], rows["Sample page: first token "
                                                                                     "(prompt pass + draw)"]
        out["per_token_ms"][label] = (whole["median"] - first["median"]) / (n_default - 1) * 1e3
    # On a shared machine wall time grows with the neighbours' load; one thread's CPU seconds do not
    # (much): they are what the page would take on an idle core.
    torch.set_num_threads(1)
    for name, fn in timings.items():
        t0 = time.process_time()
        fn()
        out["cpu_s"][name] = time.process_time() - t0
    torch.set_num_threads(threads)
    out["loadavg"] = list(os.getloadavg())
    out["threads"] = threads
    return out


# -- 6: memory, each in a fresh process -----------------------------------------------------------

def _child(argv: list[str], module: str = "benchmarks.bench") -> dict:
    out = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _maxrss_mb() -> float:
    """This process's peak RSS. VmHWM, since ru_maxrss after fork + exec starts at the parent's peak."""
    try:
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform != "darwin" else 1024**2)


def child_train(name: str, steps: int, quick: bool) -> None:
    cfg = apply_overrides(preset(name), (QUICK if quick else []))
    prep = prepare(cfg)
    trainer = Trainer(prep.config.model, cfg.train, prep.data)
    for _ in range(steps):
        trainer.step()
    print(json.dumps({"peak_rss_mb": _maxrss_mb(), "steps": steps}))


def bench_memory(args, tmp: Path, presets: list[str]) -> dict:
    steps = 2 if args.quick else 3  # the peak comes with the first step (activations, grads, AdamW state)
    out = {} if args.quick else {"python+torch": _child(["--child-baseline"])}
    for name in presets:
        quick = ["--quick"] if args.quick else []
        out[f"train {name}"] = _child(["--child-train", name, "--child-steps", str(steps), *quick])
    # the app's process is measured by benchmarks.memprobe, in a child that imports what the app imports
    out["app with demo run"] = _child([str(demo_run(args, tmp))], module="benchmarks.memprobe")
    return out


# -- the report -----------------------------------------------------------------------------------

def machine() -> dict:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
        model = next(l.split(":", 1)[1].strip() for l in cpuinfo if l.startswith("model name"))
        flags = next(l.split(":", 1)[1].split() for l in cpuinfo if l.startswith("flags"))
    except (OSError, StopIteration):
        model, flags = platform.processor(), []
    return {"cpu": model, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "avx512": any(f.startswith("avx512") for f in flags), "bf16_native": bf16_native(),
            "loadavg": list(os.getloadavg())}


def fmt(s: dict, scale: float = 1.0, digits: int = 1) -> str:
    return f"{s['median'] * scale:,.{digits}f} ({s['min'] * scale:,.{digits}f}-{s['max'] * scale:,.{digits}f})"


def report(res: dict) -> str:
    m = res["machine"]
    lines = [f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['cpu_capability']}), {m['threads']} threads, "
             f"load average {m['loadavg'][0]:.2f} at start, {res['loadavg_end'][0]:.2f} at end",
             "", "matmul peak GFLOP/s: " + ", ".join(
                 f"{k} {v['peak']:.1f}" + ("" if v["native"] else " (emulated)") for k, v in res["peak"].items())]
    lines += ["", f"{'training':<24}{'tokens/s median (min-max)':>30}{'vs reference':>26}{'MFU fp32':>10}"]
    for name, t in res["training"].items():
        for mode, r in t["modes"].items():
            if "tokens_per_s" in r and isinstance(r["tokens_per_s"], dict):
                extra = f"  first step {r['first_step_s']:.0f} s" if "first_step_s" in r else ""
                lines.append(f"{name + ' ' + mode:<24}{fmt(r['tokens_per_s'], 1, 0):>30}"
                             f"{fmt(r['vs_reference'], 1, 2):>26}{r['mfu_fp32']:>10.0%}{extra}")
            else:
                lines.append(f"{name + ' ' + mode:<24}{r['tokens_per_s']:>30,.0f}{r['vs_reference']:>26.2f}"
                             f"  snapshot {t['snapshot_s']['median'] * 1e3:.0f} ms, +{r['overhead']:.1%} per step")
    c, g = res["inspection"]["capture"], res["inspection"]["generation"]
    lines += ["", f"capture of a {c['prompt_tokens']}-token prompt (patterns + stats + scores): "
                  f"{fmt(c['probe_snapshot_s'], 1e3)} ms; patterns only {fmt(c['attention_patterns_s'], 1e3)} ms",
              f"generate {g['new_tokens']} tokens: cached {fmt(g['cached'], 1e3, 0)} ms, uncached "
              f"{fmt(g['uncached'], 1e3, 0)} ms, speed-up {fmt(g['speedup'], 1, 2)}x, per token "
              f"{g['per_token_ms']['cached']:.2f} / {g['per_token_ms']['uncached']:.2f} ms, "
              f"same text: {g['same_text']}"]
    i = res["interaction"]
    lines += [f"head click -> figures: {fmt(i['head_click_s'], 1e3, 0)} ms "
              f"(1 thread: {fmt(i['head_click_s_1thread'], 1e3, 0)}); "
              f"temperature change -> {i['new_tokens']}-token sample: {fmt(i['temperature_change_s'], 1e3, 0)} ms "
              f"(1 thread: {fmt(i['temperature_change_s_1thread'], 1e3, 0)})"]
    b = res.get("gpt2_small") or {}
    if b:
        lines += ["", f"a {b['n_params'] / 1e6:.0f} M-parameter model (GPT-2 small's shape), "
                      f"{b['prompt_tokens']}-token prompt, seconds median (min-max):"]
        for label, rows in b["pages"].items():
            for name, s in rows.items():
                lines.append(f"  {name + ' (' + (str(b['threads']) if label == 'threads' else '1') + ' thr)':<62}"
                             f"{fmt(s, 1, 2):>20}")
        lines += [f"  {name + ' (CPU s, 1 thread)':<62}{b['cpu_s'][name]:>20.2f}" for name in b["cpu_s"]]
        if "per_token_ms" in b:
            lines += [f"  Sample page: {b['sample_default_tokens']} new tokens by default; per new token "
                      + ", ".join(f"{ms:.0f} ms ({b['threads'] if label == 'threads' else 1} thr)"
                                  for label, ms in b["per_token_ms"].items())
                      + f"; forward passes per new token {b['forwards_per_new_token']:.2f}; drawing the text "
                      f"{b['sample_draw_ms']:.1f} ms ({b['sample_draw_bytes'] / 1e3:.0f} kB of html)"]
    if res.get("history"):
        lines += ["", history_bench.report(res["history"])]
    lines += ["", app_speed.report(res.get("app") or {"skipped": "not run"})]
    lines += ["", "peak RSS MB: " + ", ".join(
        f"{k} {v['peak_rss_mb']:.0f}" if "peak_rss_mb" in v else f"{k} failed: {v.get('error')}"
        for k, v in res["memory"].items())]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny models and few repeats: a smoke run in seconds")
    p.add_argument("--json", default="benchmarks/results.json", help="where to write the results")
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--modes", default="compile,bfloat16", help="opt-in fast modes to time next to the default")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per training figure")
    p.add_argument("--calls", type=int, default=None, help="training steps per mode per round")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 leaves torch's default)")
    p.add_argument("--demo", default="checkpoints/demo")
    p.add_argument("--skip", default="",
                   help="comma-separated sections to skip: "
                        "training,inspection,interaction,memory,gpt2_small,history,app")
    p.add_argument("--app-preset", default="induction", help="the preset the app section trains in the app and CLI")
    p.add_argument("--app-steps", type=int, default=600)
    p.add_argument("--child-train"), p.add_argument("--child-steps", type=int, default=10)
    p.add_argument("--child-baseline", action="store_true")
    args = p.parse_args(argv)
    if args.child_train:
        return child_train(args.child_train, args.child_steps, args.quick) or 0
    if args.child_baseline:
        print(json.dumps({"peak_rss_mb": _maxrss_mb()}))
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)
    args.rounds = args.rounds or (1 if args.quick else 4)
    args.calls = args.calls or 2
    args.modes = [m for m in args.modes.split(",") if m]
    presets = [n for n in args.presets.split(",") if n]
    skip = set(args.skip.split(","))
    t_start = time.perf_counter()
    res: dict = {"machine": machine(), "args": {k: v for k, v in vars(args).items() if not k.startswith("child")}}
    res["peak"] = matmul_peak(args.quick)
    sections = {
        "training": lambda tmp: {n: bench_training(n, args, tmp, res["peak"], fast=n == presets[0]) for n in presets},
        "inspection": lambda tmp: bench_inspection(args, tmp),
        "interaction": lambda tmp: bench_interaction(args, tmp),
        "memory": lambda tmp: bench_memory(args, tmp, presets),
        "gpt2_small": lambda tmp: bench_big(args, tmp),
        "history": lambda tmp: history_bench.run_all(args.quick, Path(args.demo)),
        # the real app (server + headless Chromium, Train page open) against the CLI; minutes, so not in --quick
        "app": lambda tmp: ({"skipped": "--quick (the app section trains a preset twice)"} if args.quick
                            else app_speed.measure(args.app_preset, args.app_steps)),
    }
    res["section_s"] = {}
    with tempfile.TemporaryDirectory(prefix="tinyviz-bench-") as d:
        for name, run_section in sections.items():
            t0 = time.perf_counter()
            res[name] = {} if name in skip else run_section(Path(d))
            res["section_s"][name] = time.perf_counter() - t0
    res["loadavg_end"], res["wall_s"] = list(os.getloadavg()), time.perf_counter() - t_start
    if not skip - {""}:
        print(report(res))
    print(f"\n{res['wall_s']:.0f} s; results in {args.json}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(res, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
