"""A sweep on a real two-node Ray cluster on this machine (loopback only): runs land on both nodes, the curves
are byte-identical to the local executor's, and a worker killed mid-sweep changes nothing.

The cluster is `ray start --head --num-cpus 1` plus a second `ray start --address ... --num-cpus 1`, each with
its own ports and a private temp dir. It is stopped by killing the processes that name that temp dir, not by
`ray stop`, which would stop every Ray process of this user on the machine (other people's clusters too).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tinyviz.experiments.executors import LocalExecutor, RayExecutor
from tinyviz.experiments.sweep import grid_sweep, run_sweep

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

TINY = ["d_model=16", "n_heads=2", "n_ctx=16", "batch_size=4", "corpus_chars=6000", "eval_interval=4",
        "eval_batches=1", "warmup_steps=1"]
PORT = int(os.environ.get("TINYVIZ_TEST_RAY_PORT", "6391"))  # the head; the nodes' other ports follow it
WORKER_PORTS = int(os.environ.get("TINYVIZ_TEST_RAY_WORKER_PORTS", "10010"))


def _pids_naming(text: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(proc.name))
    return pids


def _ray_start(args: list[str], env: dict) -> None:
    ray_cli = Path(sys.executable).with_name("ray")
    cmd = [str(ray_cli) if ray_cli.exists() else "ray", "start", "--num-cpus", "1", "--node-ip-address",
           "127.0.0.1", "--disable-usage-stats", *args]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")


@pytest.fixture(scope="module")
def cluster():
    tmp = tempfile.mkdtemp(prefix="tvray", dir="/tmp")  # short: Ray's unix sockets live under it
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"}
    address = f"127.0.0.1:{PORT}"
    w = WORKER_PORTS
    try:
        _ray_start(["--head", "--port", str(PORT), "--temp-dir", tmp, "--include-dashboard=false",
                    "--node-manager-port", str(PORT + 1), "--object-manager-port", str(PORT + 2),
                    "--dashboard-agent-listen-port", str(w - 8),
                    "--dashboard-agent-grpc-port", str(w - 7), "--runtime-env-agent-port", str(w - 6),
                    "--metrics-export-port", str(w - 5), "--min-worker-port", str(w), "--max-worker-port",
                    str(w + 29)], env)
        _ray_start(["--address", address, "--node-manager-port", str(PORT + 3), "--object-manager-port",
                    str(PORT + 4), "--dashboard-agent-listen-port", str(w - 4), "--dashboard-agent-grpc-port",
                    str(w - 3), "--runtime-env-agent-port", str(w - 2), "--metrics-export-port", str(w - 1),
                    "--min-worker-port", str(w + 30), "--max-worker-port", str(w + 59)], env)
        yield address
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _pids_naming(tmp):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.time() + 15
            while _pids_naming(tmp) and time.time() < deadline:
                time.sleep(0.3)
        shutil.rmtree(tmp, ignore_errors=True)


def _sweep(steps: int):
    return grid_sweep("micro", ["lr=1e-3,3e-3"], seeds=2, steps=steps, sets=TINY)


def _local(tmp_path, steps: int) -> bytes:
    res = run_sweep(_sweep(steps), tmp_path / "local", LocalExecutor(1), images=False, sample_tokens=4)
    return (res.out / "curves.csv").read_bytes()


def test_four_runs_land_on_both_nodes_with_the_local_numbers(cluster, tmp_path):
    ex = RayExecutor(cluster, shared=False)  # no shared folder: every run's files travel back to the driver
    try:
        assert "2 node(s), 2 CPU(s)" in ex.describe()
        res = run_sweep(_sweep(8), tmp_path / "ray", ex, images=False, sample_tokens=4)
    finally:
        ex.close()
    assert len(res.runs) == 4 and {r["shared"] for r in res.runs} == {False}
    assert len({r["node"] for r in res.runs}) == 2, [r["node"] for r in res.runs]
    assert (res.out / "curves.csv").read_bytes() == _local(tmp_path, 8)
    for r in res.runs:  # the returned folders are whole runs
        assert (Path(r["path"]) / "model.safetensors").exists() and (Path(r["path"]) / "metrics.jsonl").exists()


def test_a_worker_killed_mid_sweep_is_retried_with_identical_numbers(cluster, tmp_path):
    ex = RayExecutor(cluster)  # one machine: the nodes see --out and write the runs in place
    killed: list[int] = []
    result: dict = {}

    def sweep() -> None:
        try:
            result["res"] = run_sweep(_sweep(150), tmp_path / "ray", ex, images=False, sample_tokens=4)
        except BaseException as e:  # reported below, in the test's thread
            result["error"] = e

    t = threading.Thread(target=sweep)
    t.start()
    try:
        deadline = time.time() + 180
        while not killed and t.is_alive() and time.time() < deadline:
            busy = [pid for pid in _pids_naming("ray::_ray_train") if pid != os.getpid()]
            # wait until the run has written a few steps, so the kill lands mid-training
            started = [p for p in (tmp_path / "ray").glob("*-seed*/metrics.jsonl") if p.stat().st_size > 0]
            if busy and started:
                os.kill(busy[0], signal.SIGKILL)
                killed.append(busy[0])
            time.sleep(0.2)
        t.join(timeout=300)
    finally:
        ex.close()
    assert killed, "no running task was found to kill"
    assert "error" not in result, result.get("error")
    res = result["res"]
    assert len(res.runs) == 4 and {r["status"] for r in res.runs} == {"done"}
    assert (res.out / "curves.csv").read_bytes() == _local(tmp_path, 150)
