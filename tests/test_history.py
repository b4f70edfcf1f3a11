"""Weights through training: the schedule, the files, resume and kill consistency, damaged files."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from reliability_helpers import ROOT, TINY, tiny_cfg
from safetensors.torch import load_file

from tinyviz import cli
from tinyviz.config import preset
from tinyviz.data.text import prepare
from tinyviz.training.history import INDEX, History, schedule
from tinyviz.training.runs import Run, RunError
from tinyviz.training.session import TrainingSession
from tinyviz.training.trainer import Trainer


def test_schedule_is_dense_early_sparse_late_and_bounded():
    train = preset("induction").train
    steps = schedule(train)
    assert steps[0] == 0 and steps[-1] == train.steps and len(steps) <= train.history_keep
    assert {1, 2, 4, 8}.issubset(steps)  # dense early
    assert all(s % train.snapshot_interval == 0 for s in steps if s >= train.snapshot_interval)
    long = dataclasses.replace(train, steps=50_000, history_keep=40)
    assert len(schedule(long)) <= 40 and schedule(long)[-1] == 50_000
    assert schedule(dataclasses.replace(train, history_keep=0)) == []


def test_history_keep_rejects_values_that_cannot_hold_a_schedule():
    with pytest.raises(ValueError, match="history_keep=2"):
        dataclasses.replace(preset("micro").train, history_keep=2)


def test_a_run_keeps_its_scheduled_steps_and_the_last_equals_the_checkpoint(tmp_path):
    s = TrainingSession.start(tiny_cfg(), tmp_path / "r")
    s.train()
    run = Run.open(tmp_path / "r")
    assert run.history.steps() == schedule(run.config.train)
    last = run.model_at(run.history.steps()[-1])
    # float16 copies: the latest weights come from the float32 checkpoint instead
    assert all(torch.equal(a, b) for a, b in zip(last.state_dict().values(), run.load_model().state_dict().values()))
    early = run.model_at(0)
    assert not torch.equal(early.W_E.weight, last.W_E.weight)


@pytest.mark.parametrize("dtype,tol", [("float32", 0.0), ("float16", 2e-3)])
def test_a_kept_step_reproduces_its_logged_val_loss(tmp_path, one_thread, dtype, tol):
    cfg = tiny_cfg(f"history_dtype={dtype}", "threads=1")
    TrainingSession.start(cfg, tmp_path / "r").train()
    run = Run.open(tmp_path / "r")
    logged = {m["step"]: m["val_loss"] for m in run.metrics() if m.get("val_loss") is not None}
    data = prepare(run.config, run.tokenizer()).data
    checked = 0
    for step in run.history.steps():
        if step in logged and step != run.weights_step():
            trainer = Trainer(run.config.model, run.config.train, data)
            run.history.load_into(trainer.model, step)
            assert abs(trainer.evaluate("val") - logged[step]) <= tol, step
            checked += 1
    assert checked >= 2


def test_resume_keeps_history_consistent_and_equal_to_a_straight_run(tmp_path, one_thread):
    cfg = tiny_cfg("threads=1")
    TrainingSession.start(cfg, tmp_path / "straight").train()
    s = TrainingSession.start(cfg, tmp_path / "resumed")
    s.train(max_steps=12)  # checkpoint at 10 (interval 5) and at the stop (12)
    run = Run.open(tmp_path / "resumed")
    h = run.history
    # what a kill leaves: a complete file the index does not name (later than the checkpoint),
    # a dead writer's temp file, and the index naming a step whose file is gone
    stray = h.path(16)
    stray.write_bytes(h.path(4).read_bytes())
    (h.folder / ".step_0000020.safetensors.tmp999999").write_bytes(b"half")
    assert 16 not in h.steps()  # the index does not name it, so readers do not trust it
    del s
    r = TrainingSession.resume(tmp_path / "resumed")
    assert not stray.exists() and not list(h.folder.glob(".*.tmp*"))
    r.train()
    a, b = History(tmp_path / "straight"), History(tmp_path / "resumed")
    assert a.steps() == b.steps() == schedule(cfg.train)
    for step in a.steps():
        wa, wb = load_file(str(a.path(step))), load_file(str(b.path(step)))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), step


@pytest.mark.slow
def test_kill_9_mid_training_leaves_history_the_index_trusts(tmp_path):
    out = tmp_path / "killed"
    sets = [a for s in TINY + ["steps=300", "threads=1", "history_keep=60", "snapshot_interval=5"]
            for a in ("--set", s)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "tinyviz", "train", "--out", str(out), *sets],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and len(History(out).steps()) < 12:
            time.sleep(0.02)
        assert proc.poll() is None, "training ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    run = Run.open(out)
    for step in run.history.steps():  # every step the index names opens
        run.model_at(step)
    assert cli.main(["train", "--out", str(out), "--resume"]) == 0
    run = Run.open(out)
    assert run.history.steps() == schedule(run.config.train)
    for step in run.history.steps():
        run.model_at(step)


def test_a_damaged_history_file_is_named_and_the_other_steps_open(tmp_path):
    TrainingSession.start(tiny_cfg(), tmp_path / "r").train()
    run = Run.open(tmp_path / "r")
    steps = run.history.steps()
    run.history.path(steps[1]).write_bytes(b"\x00garbage" * 10)
    with pytest.raises(RunError, match=f"history/step_{steps[1]:07d}.safetensors is damaged"):
        run.model_at(steps[1])
    run.model_at(steps[2])
    run.load_model()


def test_a_damaged_index_falls_back_to_the_files(tmp_path):
    TrainingSession.start(tiny_cfg(), tmp_path / "r").train()
    run = Run.open(tmp_path / "r")
    (run.history.folder / INDEX).write_text("{not json")
    assert run.history.steps() == schedule(run.config.train)


def test_a_run_without_history_has_no_kept_steps(tmp_path):
    TrainingSession.start(tiny_cfg("history_keep=0"), tmp_path / "r").train()
    run = Run.open(tmp_path / "r")
    assert run.history.steps() == [] and run.history.nearest(10) is None
    assert not (run.path / "history").exists()
    with pytest.raises(RunError, match="kept no weights at step 5"):
        run.model_at(5)


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "r"
    TrainingSession.start(tiny_cfg("n_ctx=32"), out).train()  # the heads command's induction probe needs 24 tokens
    return out


def test_cli_step_uses_the_nearest_kept_step_and_says_so(kept_run, capsys):
    assert cli.main(["heads", str(kept_run), "--step", "6", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["step"] == 5 and "step 6 was not kept; showing the nearest kept step, 5" in err
    assert cli.main(["sample", str(kept_run), "--step", "0", "--max-new-tokens", "5", "--prompt", "the"]) == 0
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("step", ["21", "-1"])
def test_cli_step_beyond_the_run_is_a_sentence(kept_run, capsys, step):
    assert cli.main(["sample", str(kept_run), "--step", step]) == 2
    err = capsys.readouterr().err
    assert "is beyond r's steps: it was trained from step 0 to 20" in err and "Traceback" not in err


def test_cli_step_on_a_run_without_history_is_a_sentence(tmp_path, capsys):
    TrainingSession.start(tiny_cfg("history_keep=0", "n_ctx=32"), tmp_path / "plain").train()
    assert cli.main(["heads", str(tmp_path / "plain"), "--step", "10"]) == 2
    assert "kept no weights history" in capsys.readouterr().err
    assert cli.main(["heads", str(tmp_path / "plain"), "--step", "20"]) == 0
