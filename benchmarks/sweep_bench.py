"""Sweep executors on this machine: a 12-run grid of the micro preset, sequential vs the local process pool
vs Ray started on this machine. Prints figures (no assertions) and writes benchmarks/sweep_results.json.

    python -m benchmarks.sweep_bench [--steps 150] [--workers 2] [--no-ray]

For each mode: wall seconds, runs/minute, the throughput ratio to sequential, peak resident memory of the
processes it started (summed over the driver's descendants), and whether curves.csv is byte-identical to the
sequential one. For Ray also: seconds to start it (ray.init) and its overhead per run, (Ray wall - pool
wall) / runs. The load average is printed before and after: on a shared machine it is part of the figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path

from tinyviz.experiments.executors import LocalExecutor
from tinyviz.experiments.sweep import grid_sweep, run_sweep

GRID = ["lr=1e-3,2e-3,3e-3", "n_layers=1,2"]  # 6 cells x 2 seeds = 12 runs


TICK = os.sysconf("SC_CLK_TCK")


def _descendants(root: int) -> dict[int, tuple[int, float]]:
    """pid -> (resident bytes, CPU seconds so far) of every process below root (not root itself)."""
    children: dict[int, list[int]] = {}
    info: dict[int, tuple[int, float]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(proc.name))
            info[int(proc.name)] = (int(fields[21]) * os.sysconf("SC_PAGE_SIZE"),
                                    (int(fields[11]) + int(fields[12])) / TICK)
    out, stack = {}, list(children.get(root, []))
    while stack:
        pid = stack.pop()
        if pid in info:
            out[pid] = info[pid]
        stack += children.get(pid, [])
    return out


class Usage:
    """Peak resident memory of the driver's descendants, and the CPU seconds the driver and its descendants
    spend inside the block (a process alive before it, a Ray daemon say, counts from the block's start).
    Sampled every 0.5 s, so a process's last half second before it exits may be missed."""

    def __init__(self):
        self.peak, self.cpu0, self.cpu = 0, {}, {}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)

    def _sample(self) -> None:
        d = _descendants(os.getpid())
        self.peak = max(self.peak, sum(rss for rss, _ in d.values()))
        for pid, (_, cpu) in d.items():
            self.cpu[pid] = max(self.cpu.get(pid, 0.0), cpu)

    def _poll(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def __enter__(self):
        self.cpu0 = {pid: cpu for pid, (_, cpu) in _descendants(os.getpid()).items()}
        self.self0 = time.process_time()
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.cpu_s = time.process_time() - self.self0 + sum(c - self.cpu0.get(p, 0.0) for p, c in self.cpu.items())


def _run(name: str, executor, steps: int, root: Path) -> dict:
    sw = grid_sweep("micro", GRID, seeds=2, steps=steps)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with Usage() as mem:
        t0 = time.perf_counter()
        res = run_sweep(sw, root / name.replace(" ", "-"), executor, images=False, report=True, sample_tokens=20)
        wall = time.perf_counter() - t0
    curves = (res.out / "curves.csv").read_bytes()
    slots = getattr(executor, "workers", None) or int(getattr(executor, "slots", 1))
    # what the executor adds to each run: slot-seconds of the sweep not spent inside a run (its set-up, training,
    # evaluation and saving: the run's own wall_s), per run
    overhead = (wall * slots - sum(r["wall_s"] for r in res.runs)) / len(res.runs)
    driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"{name:>12} ({steps} steps): {wall:7.1f} s wall, {len(res.runs) * 60 / wall:6.2f} runs/min; peak RSS of "
          f"its child processes {mem.peak / 2**20:5.0f} MiB, driver max RSS {driver / 2**20:5.0f} MiB "
          f"(was {rss0 / 2**20:.0f}); {mem.cpu_s:.0f} CPU s; {overhead:.2f} s per run outside the runs; load "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    shutil.rmtree(res.out)
    return {"wall_s": wall, "runs": len(res.runs), "children_peak_rss_mib": mem.peak / 2**20,
            "driver_max_rss_mib": driver / 2**20, "cpu_s": mem.cpu_s,
            "overhead_per_run_s": overhead, "load_1min": os.getloadavg()[0], "curves": curves}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2, help="repeat sequential / pool / ray this often, interleaved")
    p.add_argument("--no-ray", action="store_true")
    p.add_argument("--overhead-only", action="store_true", help="only the 2-step runs (rounds 0)")
    args = p.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # a private Ray with its own token, so that ray.init() writes no ~/.ray/auth_token (which would turn token
    # auth on for every later `ray start --head` of this user on the machine)
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    load_before = os.getloadavg()
    print(f"12 runs of micro x {args.steps} steps ({GRID}, 2 seeds), {args.rounds} interleaved rounds; "
          f"{os.cpu_count()} cores; load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}",
          flush=True)
    out: dict = {"steps": args.steps, "grid": GRID, "cores": os.cpu_count(), "machine": platform.machine(),
                 "load_before": load_before, "rounds": []}
    ray_ex = None
    if not args.no_ray:
        from tinyviz.experiments.executors import RayExecutor

        t0 = time.perf_counter()
        ray_ex = RayExecutor(None, num_cpus=args.workers)  # a private Ray on this machine
        out["ray_start_s"] = time.perf_counter() - t0
        print(f"ray.init (a private Ray on this machine, {args.workers} CPUs): {out['ray_start_s']:.1f} s", flush=True)
    modes = [("sequential", LocalExecutor(1)), (f"pool x{args.workers}", LocalExecutor(args.workers))]
    modes += [("ray local", ray_ex)] if ray_ex else []
    walls: dict[str, list[float]] = {m: [] for m, _ in modes}
    cpus: dict[str, list[float]] = {m: [] for m, _ in modes}
    identical: dict[str, bool] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="sweep-bench-") as tmp:
            root = Path(tmp)
            reference = None
            for _ in range(0 if args.overhead_only else args.rounds):
                row = {}
                for name, ex in modes:
                    r = _run(name, ex, args.steps, root)
                    reference = reference or r["curves"]
                    identical[name] = identical.get(name, True) and r["curves"] == reference
                    walls[name].append(r["wall_s"])
                    cpus[name].append(r["cpu_s"])
                    row[name] = {k: v for k, v in r.items() if k != "curves"}
                out["rounds"].append(row)
            # overhead: the same 12 runs at 2 steps each, where training is negligible; Ray twice (its workers
            # are warm the second time, as on a cluster that outlives one sweep)
            over = {name: _run(name, ex, 2, root) for name, ex in modes[1:]}
            if ray_ex:
                over["ray local (warm)"] = _run("ray warm", ray_ex, 2, root)
            over = {k: {"wall_s": v["wall_s"], "overhead_per_run_s": v["overhead_per_run_s"]} for k, v in over.items()}
    finally:
        if ray_ex:
            ray_ex.close()
    if not args.overhead_only:
        seq = sum(walls["sequential"])
        out["throughput_vs_sequential"] = {m: seq / sum(w) for m, w in walls.items()}
        out["identical_curves"] = identical
        # On a shared machine the wall ratio measures the other tenants too (Linux autogroup splits the CPU
        # between sessions, so two workers of one session get no more than one): CPU seconds say what the same
        # sweep costs, and with an idle core per worker the throughput would be about workers x CPU(seq) / CPU.
        cpu_seq = sum(cpus["sequential"])
        out["cpu_s"] = {m: sum(c) / len(c) for m, c in cpus.items()}
        out["idle_estimate_vs_sequential"] = {m: (1 if m == "sequential" else args.workers) * cpu_seq / sum(c)
                                              for m, c in cpus.items()}
        print("throughput vs sequential (summed over rounds): " + ", ".join(
            f"{m} {r:.2f}x" for m, r in out["throughput_vs_sequential"].items()))
        print("CPU seconds per sweep: " + ", ".join(f"{m} {c:.0f}" for m, c in out["cpu_s"].items())
              + "; throughput on idle cores, estimated from them: " + ", ".join(
                  f"{m} {r:.2f}x" for m, r in out["idle_estimate_vs_sequential"].items()))
        print(f"curves.csv byte-identical to sequential: {identical}")
    out["two_step_runs"] = over
    print("12 two-step runs, seconds per run outside the runs: " + ", ".join(
        f"{m} {v['overhead_per_run_s']:.2f} s" for m, v in over.items()) + (
        f"; ray.init {out['ray_start_s']:.1f} s once" if ray_ex else ""))
    out["load_after"] = os.getloadavg()
    print(f"load average after: {out['load_after'][0]:.2f} {out['load_after'][1]:.2f} {out['load_after'][2]:.2f}")
    name = "sweep_overhead.json" if args.overhead_only else "sweep_results.json"
    Path(__file__).with_name(name).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
