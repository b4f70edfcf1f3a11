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
import torch
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


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
    from tinyviz.app.registry import registry
    from tinyviz.app.train_panel import control_key

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
