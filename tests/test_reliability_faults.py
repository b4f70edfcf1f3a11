"""Faults: kill -9, Ctrl-C, NaN, disk full, Stop.

A killed or failed training must leave the previous checkpoint loadable and the run resumable,
and a resumed run must equal an uninterrupted one bit for bit.
"""

import errno
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from reliability_helpers import ROOT, TINY, same_weights, tiny_cfg, weights

from tinyviz import cli
from tinyviz.training import runs
from tinyviz.training.runs import Run, RunError
from tinyviz.training.session import TrainingSession


# -- faults: kill -9 ------------------------------------------------------------------------------
def subprocess_env():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["OMP_NUM_THREADS"] = "1"
    return env


def straight_run(path: Path, cfg, steps: int):
    s = TrainingSession.start(cfg, path)
    s.train(max_steps=steps)
    return s


@pytest.mark.slow
def test_resume_from_a_checkpoint_equals_a_straight_run(tmp_path, one_thread):
    """The design's promise: train to N, stop, resume, train to M == train straight to M, bit for bit."""
    cfg = tiny_cfg("dropout=0.1", "threads=1")  # dropout draws random numbers, so RNG state must resume too
    a = straight_run(tmp_path / "straight", cfg, 20)
    b = straight_run(tmp_path / "resumed", cfg, 7)
    assert b.run.state()["status"] == "stopped" and b.run.weights_step() == 7
    del b
    r = TrainingSession.resume(tmp_path / "resumed")
    assert r.step == 7 and r.train() == "done"
    assert same_weights(weights(tmp_path / "straight"), weights(tmp_path / "resumed"))
    losses = lambda p: [(m["step"], m["loss"], m.get("val_loss")) for m in Run.open(p).metrics()]
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")
    assert a.step == r.step == 20


@pytest.mark.slow
def test_kill_9_during_training_leaves_a_resumable_run(tmp_path, one_thread):
    out = tmp_path / "killed"
    sets = [a for s in TINY + ["steps=400", "threads=1", "eval_interval=50", "snapshot_interval=50"]
            for a in ("--set", s)]
    proc = subprocess.Popen([sys.executable, "-m", "tinyviz", "train", "--out", str(out), *sets],
                            env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if (out / "model.safetensors").exists() and Run.open(out).weights_step() >= 10:
                break
            time.sleep(0.05)
        time.sleep(random.uniform(0, 0.2))
        assert proc.poll() is None, "training ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    run = Run.open(out)
    step = run.weights_step()
    assert step >= 10 and step % 5 == 0
    assert all(torch.isfinite(t).all() for t in weights(out).values())
    metrics_steps = [m["step"] for m in run.metrics()]
    assert metrics_steps[: step] == list(range(1, step + 1))  # the log reaches the checkpoint

    # resume to the end, then compare with an uninterrupted run of the same config
    assert cli.main(["train", "--out", str(out), "--resume"]) == 0
    assert Run.open(out).state()["status"] == "done"
    straight = tmp_path / "straight"
    straight_run(straight, Run.open(out).config, 400)
    assert same_weights(weights(out), weights(straight))
    assert [m["step"] for m in Run.open(out).metrics()] == list(range(1, 401))


CHECKPOINT_LOOP = r"""
import sys, torch
from pathlib import Path
from tinyviz.config import apply_overrides, preset
from tinyviz.training.session import TrainingSession
torch.set_num_threads(1)
cfg = apply_overrides(preset("micro"), sys.argv[2:])
s = TrainingSession.start(cfg, Path(sys.argv[1]))
state = s.trainer.state_tensors()
i = 0
while True:  # nothing but checkpoint writes, so a kill lands inside one
    i += 1
    with torch.no_grad():
        for p in s.trainer.model.parameters():
            p.fill_(i / 1000)
    s.run.save_checkpoint(s.trainer.model, state, i, 0.0)
    print(i, flush=True)
"""


@pytest.mark.slow
def test_kill_9_inside_a_checkpoint_write_keeps_a_matching_pair(tmp_path):
    script = tmp_path / "loop.py"
    script.write_text(CHECKPOINT_LOOP)
    rng = random.Random()
    for attempt in range(3):
        out = tmp_path / f"loop{attempt}"
        args = TINY + ["d_model=64", "n_heads=4", "d_ff=256", "steps=100000", "warmup_steps=0"]
        proc = subprocess.Popen([sys.executable, str(script), str(out), *args], env=subprocess_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        target = rng.randint(2, 25)
        try:
            last = 0
            for line in proc.stdout:
                last = int(line)
                if last >= target:
                    break
            time.sleep(rng.uniform(0, 0.01))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert last >= target
        run = Run.open(out)
        step = run.weights_step()
        assert step >= last  # nothing committed is lost
        model = run.load_model()  # loads: every key and shape present
        assert all(torch.all(p == step / 1000) for p in model.parameters())  # one whole checkpoint
        s = TrainingSession.resume(out)  # rolls forward or drops a half-written optimizer state
        assert s.step == step
        assert run.load_train_state()[1] == step
        assert not (out / "train_state.next.safetensors").exists()
        assert not list(out.glob(".*.tmp*")), "a dead writer's temp files are swept on resume"
        assert s.train(max_steps=1) == "stopped" and Run.open(out).weights_step() == step + 1


def test_resume_sweeps_dead_writers_temp_files_only(tmp_path):
    straight_run(tmp_path / "r", tiny_cfg(), 3)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / "r" / f".model.safetensors.tmp{dead.pid}",
             tmp_path / "r" / "snapshots" / f".step_0000003.safetensors.tmp{dead.pid}"]
    live = tmp_path / "r" / f".state.json.tmp{os.getpid()}"  # a live writer's file may be mid-write
    for f in (*stale, live):
        f.write_bytes(b"half a file")
    Run.open(tmp_path / "r")
    runs.list_runs(tmp_path)
    assert all(f.exists() for f in stale)  # readers never touch them
    r = TrainingSession.resume(tmp_path / "r")
    assert r.step == 3
    assert not any(f.exists() for f in stale) and live.exists()


def test_interrupted_checkpoint_is_left_alone_by_readers_and_repaired_on_resume(tmp_path):
    s = straight_run(tmp_path / "r", tiny_cfg(), 5)
    nxt = tmp_path / "r" / "train_state.next.safetensors"
    # phase 1 of the step-6 checkpoint happened, then the process died
    runs.atomic_save_tensors(nxt, s.trainer.state_tensors(), {"step": "6"})
    Run.open(tmp_path / "r")
    runs.list_runs(tmp_path)
    assert nxt.exists()  # a reader (the app's run picker) never touches a writer's files
    r = TrainingSession.resume(tmp_path / "r")
    assert r.step == 5 and not nxt.exists()
    # phase 2 happened too (weights of step 6), the rename did not: roll forward
    r.trainer.step()
    runs.atomic_save_tensors(nxt, r.trainer.state_tensors(), {"step": "6"})
    runs.atomic_save_tensors(tmp_path / "r" / "model.safetensors",
                             {n: p.detach() for n, p in r.trainer.model.named_parameters()}, {"step": "6"})
    r2 = TrainingSession.resume(tmp_path / "r")
    assert r2.step == 6 and not nxt.exists()
    assert Run.open(tmp_path / "r").load_train_state()[1] == 6


@pytest.mark.slow
def test_ctrl_c_in_the_cli_stops_and_saves(tmp_path):
    out = tmp_path / "r"
    sets = [a for s in TINY + ["steps=100000", "threads=1", "eval_interval=0", "snapshot_interval=0",
                               "checkpoint_interval=0"] for a in ("--set", s)]
    proc = subprocess.Popen([sys.executable, "-m", "tinyviz", "train", "--out", str(out), *sets],
                            env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "metrics.jsonl").exists():
            time.sleep(0.05)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopping after this step" in err
    run = Run.open(out)
    assert run.state()["status"] == "stopped" and run.weights_step() > 0
    assert "resume to continue" in run.state()["message"]


# -- faults: NaN, write errors, Stop -------------------------------------------------------------
def test_nan_from_a_huge_learning_rate_stops_with_a_diagnosis(tmp_path, capsys):
    sets = [a for s in TINY + ["lr=1000", "grad_clip=0", "warmup_steps=0"] for a in ("--set", s)]
    rc = cli.main(["train", "--out", str(tmp_path / "r"), *sets])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    line = [x for x in err.splitlines() if x.startswith("error: ")][0]
    assert re.search(r"the loss became (nan|inf) at step \d+ .*the weights from step \d+ are kept\. "
                     r"Lower the learning rate", line)
    run = Run.open(tmp_path / "r")
    state = run.state()
    assert state["status"] == "failed" and state["message"] in line
    assert all(torch.isfinite(t).all() for t in weights(tmp_path / "r").values())


def test_nan_loss_keeps_the_last_good_weights(tmp_path, monkeypatch):
    s = straight_run(tmp_path / "r", tiny_cfg(), 6)
    good = {k: v.clone() for k, v in s.trainer.model.state_dict().items()}
    real = s.trainer.loss_on
    monkeypatch.setattr(s.trainer, "loss_on", lambda x, y: real(x, y) * float("nan"))
    assert s.train() == "failed"
    assert "the loss became nan at step 7" in s.message and "the weights from step 6 are kept" in s.message
    run = Run.open(tmp_path / "r")
    assert run.state()["status"] == "failed" and run.weights_step() == 6
    assert same_weights(weights(tmp_path / "r"), good)
    monkeypatch.undo()
    r = TrainingSession.resume(tmp_path / "r")  # still resumable, e.g. after lowering nothing
    assert r.step == 6


@pytest.mark.parametrize("where", ["os.replace", "save_file", "open"])
def test_disk_full_during_a_checkpoint_is_a_sentence_and_corrupts_nothing(tmp_path, monkeypatch, where):
    """Tests run as root, where chmod does not block writes, so the OSError is injected."""
    s = straight_run(tmp_path / "r", tiny_cfg(), 5)
    before = {f: (tmp_path / "r" / f).read_bytes() for f in ("model.safetensors", "train_state.safetensors")}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "os.replace":
        monkeypatch.setattr(runs.os, "replace", full)
    elif where == "save_file":
        from safetensors import SafetensorError

        def failing_save(*a, **k):
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        monkeypatch.setattr(runs, "save_file", failing_save)
    else:
        import builtins
        real_open = builtins.open
        monkeypatch.setattr(builtins, "open", lambda f, mode="r", *a, **k: full() if ".tmp" in str(f)
                            else real_open(f, mode, *a, **k))
    with pytest.raises(RunError) as e:
        s.train(max_steps=5)
    monkeypatch.undo()
    msg = str(e.value)
    assert re.match(r"could not write \S+ \(.*No space left on device.*\); the previous version is unchanged\. "
                    r"Free some disk space", msg), msg
    for f, data in before.items():
        assert (tmp_path / "r" / f).read_bytes() == data
    assert not [p.name for p in (tmp_path / "r").iterdir() if ".tmp" in p.name]
    r = TrainingSession.resume(tmp_path / "r")
    assert r.step == 5 and r.train(max_steps=5) == "stopped" and Run.open(tmp_path / "r").weights_step() == 10


def test_disk_full_in_the_cli_is_one_sentence(tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(runs.os, "replace", full)
    sets = [a for s in TINY for a in ("--set", s)]
    rc = cli.main(["train", "--out", str(tmp_path / "r"), *sets])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "error: could not write r/tokenizer.json (No space left on device)" in err


def test_stop_mid_run_ends_cleanly_and_resumes(tmp_path):
    s = TrainingSession.start(tiny_cfg("steps=100000"), tmp_path / "r")
    stop = threading.Event()
    result = {}
    steps = []

    def on_step(m):
        steps.append(m.step)
        if m.step == 3:
            stop.set()  # like the app's Stop button: set from elsewhere while a step runs

    t = threading.Thread(target=lambda: result.setdefault("status", s.train(stop=stop, on_step=on_step)))
    t.start()
    t.join(timeout=60)
    assert not t.is_alive()
    assert result["status"] == "stopped" and steps == [1, 2, 3]
    state = Run.open(tmp_path / "r").state()
    assert state["status"] == "stopped" and state["message"] == "stopped by request at step 3; resume to continue."
    assert Run.open(tmp_path / "r").weights_step() == 3
    assert TrainingSession.resume(tmp_path / "r").step == 3


def test_stop_from_another_thread_at_a_random_moment(tmp_path):
    s = TrainingSession.start(tiny_cfg("steps=100000", "checkpoint_interval=3"), tmp_path / "r")
    stop = threading.Event()
    t = threading.Thread(target=s.train, kwargs={"stop": stop})
    t.start()
    time.sleep(random.uniform(0.2, 0.8))
    stop.set()
    t.join(timeout=60)
    assert not t.is_alive() and s.status == "stopped"
    run = Run.open(tmp_path / "r")
    assert run.weights_step() == s.step and run.load_train_state()[1] == s.step
    assert [m["step"] for m in run.metrics()] == list(range(1, s.step + 1))
