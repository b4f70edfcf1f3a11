"""A sweep on a real two-node Ray cluster on this machine: runs land on both nodes, the curves are byte-identical
to the local executor's, and a worker killed mid-sweep changes nothing.

The cluster is `ray start --head --num-cpus 1` plus a second `ray start --address ... --num-cpus 1`, each with
its own ports and a private temp dir, both asked for --node-ip-address 127.0.0.1. (Ray 2.60 replaces a loopback
address with the machine's own one, ray._private.services.resolve_ip_for_localhost, so the nodes advertise this
machine's address; the one switch that keeps Ray on loopback, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, refuses a
second node.) It is stopped by killing the processes that name that temp dir, not by `ray stop`, which would
stop every Ray process of this user on the machine (other people's clusters too).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from tinyviz.experiments.executors import LocalExecutor, RayExecutor
from tinyviz.experiments.sweep import grid_sweep, run_sweep

# Ray 2.60 turns token auth on for a head when ~/.ray/auth_token exists (a local ray.init() writes one) but
# not for a joining node, which then cannot connect. The cluster gets its own token, given to the nodes and to
# this process (the driver) through the environment, so nothing is read from or written to ~/.ray. Ray reads the
# mode when it is first imported, so the fixture sets it before that and the import happens after it.
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
if importlib.util.find_spec("ray") is None:
    pytest.skip("Ray is not installed (pip install -r requirements-ray.txt)", allow_module_level=True)
SAVED_AUTH = {k: os.environ.get(k) for k in AUTH}
os.environ.update(AUTH)  # at import, before anything in this process imports ray
pytestmark = pytest.mark.slow

TINY = ["d_model=16", "n_heads=2", "n_ctx=16", "batch_size=4", "corpus_chars=6000", "eval_interval=4",
        "eval_batches=1", "warmup_steps=1"]
# Ports: the head's and node managers' from TINYVIZ_TEST_RAY_PORTS, the agents' and workers' from
# TINYVIZ_TEST_RAY_AGENT_PORTS; each is the first free one in its range (another Ray on this machine, a private
# one started by ray.init say, takes random ports that may fall in them).
PORTS = os.environ.get("TINYVIZ_TEST_RAY_PORTS", "6390-6399")
AGENT_PORTS = os.environ.get("TINYVIZ_TEST_RAY_AGENT_PORTS", "10001-10099")


def _free_ports(spec: str, n: int) -> list[int]:
    lo, hi = (int(x) for x in spec.split("-"))
    found = []
    for port in range(lo, hi + 1):
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == n:
            return found
    pytest.skip(f"fewer than {n} free ports in {spec}; set TINYVIZ_TEST_RAY_PORTS / TINYVIZ_TEST_RAY_AGENT_PORTS")


def _pids_naming(text: str) -> list[int]:
    """Processes whose command line, or one of whose open files, names text (Ray's agents retitle themselves
    "ray::DashboardAgent", but keep their log files under the cluster's temp dir open)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(proc.name))
                continue
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if text in os.readlink(fd):
                        pids.append(int(proc.name))
                        break
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
    gcs, nm1, om1, nm2, om2 = _free_ports(PORTS, 5)
    a = _free_ports(AGENT_PORTS, 8 + 2 * 12)
    address = f"127.0.0.1:{gcs}"
    agents = lambda p: ["--dashboard-agent-listen-port", str(p[0]), "--dashboard-agent-grpc-port", str(p[1]),
                        "--runtime-env-agent-port", str(p[2]), "--metrics-export-port", str(p[3])]
    workers = lambda p: ["--worker-port-list", ",".join(map(str, p))]
    try:
        _ray_start(["--head", "--port", str(gcs), "--temp-dir", tmp, "--include-dashboard=false",
                    "--node-manager-port", str(nm1), "--object-manager-port", str(om1), *agents(a[0:4]),
                    *workers(a[8:20])], env)
        _ray_start(["--address", address, "--node-manager-port", str(nm2), "--object-manager-port", str(om2),
                    *agents(a[4:8]), *workers(a[20:32])], env)
        yield address, tmp
    finally:
        for k, v in SAVED_AUTH.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
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
    ex = RayExecutor(cluster[0], shared=False)  # no shared folder: every run's files travel back to the driver
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
    address, tmp = cluster
    ex = RayExecutor(address)  # one machine: the nodes see --out and write the runs in place
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
            ours = set(_pids_naming(tmp))  # this cluster's processes only, never another Ray's on the machine
            busy = [pid for pid in _pids_naming("ray::_ray_train") if pid in ours]
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


def test_ablate_runs_on_the_cluster_from_the_command_line(cluster, tmp_path, capsys):
    from tinyviz.cli import main

    out = tmp_path / "tying"
    assert main(["ablate", "tying", "--seeds", "1", "--steps", "4", *[a for s in TINY for a in ("--set", s)],
                 "--out", str(out), "--executor", "ray", "--ray-address", cluster[0]]) == 0
    err = capsys.readouterr().err
    assert "executor: Ray, 2 node(s)" in err and "tying:" in err
    assert (out / "summary.md").exists() and (out / "results.csv").read_text().count("\n") == 3
    import ray

    assert not ray.is_initialized()  # the CLI disconnected
