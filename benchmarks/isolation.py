"""What isolating hooked forward passes per session costs: three ways measured side by side.

The app caches one model for every browser session; captures (Heads, Predictions, Compare) hook it.

- context: hooks in a ContextVar, read by each HookPoint (what tinyviz does, tinyviz/model/hooks.py);
- module hooks + a lock: hooks registered on the shared modules (the old way), every forward pass on
  the model serialised by one lock so no two interleave;
- a copy per session: copy.deepcopy of the model for each session, hooks registered on the copy.

Printed: the cost of one plain forward and one capture of every attention map (median of repeats, one
thread), captures per second with 2 threads at once, and a copy's time and memory.

    python -m benchmarks.isolation [--run checkpoints/demo] [--repeats 300]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import threading
import time
from pathlib import Path

import torch

from tinyviz.analysis import probes
from tinyviz.model import hooks as hooks_mod
from tinyviz.training.runs import Run


def _median_ms(fns: dict, repeats: int) -> dict[str, float]:
    """Median milliseconds per call of each function, calls interleaved so drifting load hits all alike."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def _bare(model, toks):
    """A forward with HookPoint as a bare identity (the cost floor)."""
    forward = hooks_mod.HookPoint.forward
    hooks_mod.HookPoint.forward = lambda self, x: x
    try:
        return model(toks)
    finally:
        hooks_mod.HookPoint.forward = forward


def _module_hook_capture(model, toks):
    """The old way: forward hooks registered on the shared modules, removed after the call."""
    cache, handles = {}, []
    for name, hp in model.hook_dict.items():
        if name.endswith("hook_pattern"):
            handles.append(hp.register_forward_hook(lambda m, i, o, n=name: cache.__setitem__(n, o.detach())))
    try:
        with torch.no_grad():
            model(toks)
    finally:
        for h in handles:
            h.remove()
    return cache


def _throughput(fn, seconds: float) -> float:
    """Calls per second of fn() run by 2 threads at once for `seconds`."""
    count, stop = [0, 0], threading.Event()

    def worker(i):
        while not stop.is_set():
            fn()
            count[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(count) / seconds


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", default="checkpoints/demo")
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--seconds", type=float, default=5.0)
    args = p.parse_args(argv)
    model = Run.open(Path(args.run)).load_model()
    cfg = model.cfg
    toks = torch.randint(0, cfg.d_vocab, (1, cfg.n_ctx))
    print(f"{args.run}: {cfg.n_layers} layers x {cfg.n_heads} heads, d_model {cfg.d_model}, prompt of {cfg.n_ctx} "
          f"tokens; torch threads {torch.get_num_threads()}; load average {os.getloadavg()[0]:.2f}")

    names = probes._pattern_names(cfg.n_layers)

    def ctx_capture():
        return model.run_with_cache(toks, names=names)[1]

    with torch.no_grad():
        t = _median_ms({"plain": lambda: model(toks), "bare": lambda: _bare(model, toks),
                        "ctx": ctx_capture, "module": lambda: _module_hook_capture(model, toks)}, args.repeats)
    print(f"plain forward: {t['plain']:.3f} ms with the ContextVar lookup, {t['bare']:.3f} ms with a bare identity "
          f"({100 * (t['plain'] / t['bare'] - 1):+.1f} %)")
    print(f"capture of every pattern: {t['ctx']:.3f} ms per-call hooks, {t['module']:.3f} ms module hooks "
          f"({100 * (t['ctx'] / t['module'] - 1):+.1f} %)")

    lock = threading.Lock()

    def locked():
        with lock:
            _module_hook_capture(model, toks)

    ctx_rate = _throughput(ctx_capture, args.seconds)
    lock_rate = _throughput(locked, args.seconds)
    print(f"2 threads capturing at once: {ctx_rate:.0f}/s per-call hooks, {lock_rate:.0f}/s module hooks + lock")

    t0 = time.perf_counter()
    for _ in range(20):
        copy.deepcopy(model)
    copy_ms = 1000 * (time.perf_counter() - t0) / 20
    n_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    print(f"a copy per session: {copy_ms:.2f} ms and {n_bytes / 1e6:.2f} MB each "
          f"({8 * n_bytes / 1e6:.1f} MB for 8 sessions; the lab preset's model is 3.3 MB, "
          "a 50 M-parameter import 200 MB)")


if __name__ == "__main__":
    main()
