"""Restarts: a process that trains two runs (as the app's server does) is killed with SIGKILL; afterwards
both runs read as "stopped" (not "running" forever), a torn last line of metrics.jsonl is skipped by
readers and cut by resume, and each run resumes to exactly the numbers of an uninterrupted run.

docs/reliability.md, section "Restarts"; `restarts::x` there is a test here.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from reliability_helpers import ROOT, same_weights, tiny_cfg, weights

from tinyviz.training.runs import Run
from tinyviz.training.session import TrainingSession

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

STEPS = 400
EXTRA = (f"steps={STEPS}", "threads=1", "eval_interval=50", "snapshot_interval=50", "checkpoint_interval=5")

# Two trainings in two threads of one process, like the Streamlit server's registry.
SERVER = """
import sys, threading
sys.path.insert(0, "tests")
from reliability_helpers import tiny_cfg
from tinyviz.training.session import TrainingSession
extra = sys.argv[1].split(",")
sessions = [TrainingSession.start(tiny_cfg(*extra, f"seed={i}"), p) for i, p in enumerate(sys.argv[2:])]
threads = [threading.Thread(target=s.train) for s in sessions]
for t in threads:
    t.start()
for t in threads:
    t.join()
"""


def metric_lines(path):
    return (path / "metrics.jsonl").read_text().splitlines()


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """Two runs whose training process was SIGKILLed once both had a checkpoint past step 10."""
    root = tmp_path_factory.mktemp("killed")
    paths = [root / "a", root / "b"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", SERVER, ",".join(EXTRA), *map(str, paths)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if all((p / "model.safetensors").exists() and Run.open(p).weights_step() >= 10 for p in paths):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "training ended before it could be killed"
        assert all(json.loads((p / "state.json").read_text())["status"] == "running" for p in paths)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return paths


def test_runs_of_a_killed_process_read_as_stopped(killed):
    for path in killed:
        run = Run.open(path)
        state = run.state()
        assert state["status"] == "stopped", state
        assert "training was interrupted" in state["message"] and f"step {run.weights_step()}" in state["message"]
        assert not run.is_training()
        assert run.summary()["status"] == "stopped"  # what `python -m tinyviz runs` and the sidebar show


def test_a_torn_last_metrics_line_is_skipped_by_readers_and_cut_by_resume(killed, tmp_path, one_thread):
    """The kill may land mid-append; make sure one run's last line is torn, then read and resume both."""
    runs = []
    for path in killed:
        copy = tmp_path / path.name
        shutil.copytree(path, copy)
        runs.append(copy)
    with open(runs[0] / "metrics.jsonl", "a") as f:
        f.write('{"step": 99999, "loss": 2.')  # no newline: a cut line
    records = Run.open(runs[0]).metrics()
    assert records and all(isinstance(r["loss"], float) for r in records) and records[-1]["step"] != 99999
    for run in runs:
        s = TrainingSession.resume(run)
        assert s.train() == "done"
        lines = metric_lines(run)
        assert [json.loads(line)["step"] for line in lines] == list(range(1, STEPS + 1))  # every line whole
        straight = tmp_path / f"straight-{run.name}"
        seed = 0 if run.name == "a" else 1
        assert TrainingSession.start(tiny_cfg(*EXTRA, f"seed={seed}"), straight).train() == "done"
        assert same_weights(weights(run), weights(straight))
        key = lambda p: [(m["step"], m["loss"], m.get("val_loss")) for m in Run.open(p).metrics()]
        assert key(run) == key(straight)


def test_the_train_page_offers_resume_for_a_run_whose_server_died(killed, tmp_path, monkeypatch):
    """After a restart (a new process: no registry job), the page says stopped and Resume finishes it."""
    root = tmp_path / "runs"
    shutil.copytree(killed[0], root / "a")
    monkeypatch.setenv("TINYVIZ_RUNS", str(root))
    from tinyviz.ui.registry import registry
    from tinyviz.ui.train_panel import control_key

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.query_params["run"] = "a"
    at.run()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    run_id = str(root / "a")
    assert any("· stopped" in m.value for m in at.markdown), [m.value for m in at.markdown][:5]
    assert any("training was interrupted" in i.value.lower() for i in at.info), [i.value for i in at.info]
    try:
        at.button(key=control_key("resume", run_id)).click().run()
        job = registry().get(run_id)
        assert job is not None
        job.proc.wait(180)  # the registry trains each run in a child process
        assert Run.open(root / "a").state()["status"] == "done"
    finally:
        registry().stop_all()


# A stand-in for the app's server: starts a training the way its registry does (child_env, the CLI
# in a child process), prints the child's pid, then waits to be killed.
APP = """
import subprocess, sys, time
sys.path.insert(0, "tests")
from reliability_helpers import TINY
from tinyviz.ui.registry import child_env
sets = [a for s in TINY + sys.argv[2].split(",") for a in ("--set", s)]
child = subprocess.Popen([sys.executable, "-m", "tinyviz", "train", "--preset", "micro", *sets, "--out", sys.argv[1]],
                         env=child_env(0), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(child.pid, flush=True)
time.sleep(600)
"""


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = f"/proc/{pid}/stat"  # a zombie (exited, not yet reaped by init) has gone as far as we care
    return os.path.exists(stat) and open(stat).read().rpartition(")")[2].split()[0] == "Z"


def test_a_training_the_app_started_stops_cleanly_when_the_server_is_killed(tmp_path):
    """kill -9 of the server: its training process sees it has gone, stops after the step it is in and
    saves a checkpoint, so a restarted app shows the run stopped with a Resume (not an orphan it cannot stop)."""
    out = tmp_path / "run"
    app = subprocess.Popen([sys.executable, "-c", APP, str(out), ",".join(("steps=100000", "threads=1"))], cwd=ROOT,
                           env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.PIPE, text=True)
    child = None
    try:
        child = int(app.stdout.readline())
        deadline = time.time() + 120
        while time.time() < deadline and not ((out / "metrics.jsonl").exists() and metric_lines(out)):
            time.sleep(0.1)
        assert metric_lines(out), "the training never started"
        app.send_signal(signal.SIGKILL)
        app.wait(30)
        deadline = time.time() + 60
        while time.time() < deadline and not _gone(child):
            time.sleep(0.2)
        assert _gone(child), "the training outlived the server that started it"
        state = Run.open(out).state()
        assert state["status"] == "stopped", state
        assert 0 < state["step"] < 100000 and Run.open(out).weights_step() == state["step"]
    finally:
        for pid in filter(None, [child]):
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        if app.poll() is None:
            app.kill()
