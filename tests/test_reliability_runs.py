"""Hostile and broken run files, and faults: kill -9, NaN, disk full, Stop.

Run zips and pickles must never run code or write outside their folder; a killed or failed
training must leave the previous checkpoint loadable and the run resumable.
"""

import errno
import io
import json
import os
import pickle
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch

import tinyviz
from tinyviz import cli, runs, runzip
from tinyviz.config import apply_overrides, preset
from tinyviz.runs import Run, RunError, check_run_name
from tinyviz.runzip import import_run_zip
from tinyviz.session import TrainingSession

ROOT = Path(__file__).resolve().parents[1]
TINY = ["n_layers=1", "n_heads=2", "d_model=16", "d_ff=32", "n_ctx=16", "batch_size=4", "eval_batches=1",
        "eval_interval=5", "snapshot_interval=5", "checkpoint_interval=5", "corpus_chars=3000",
        "steps=20", "warmup_steps=2"]


def tiny_cfg(*extra):
    return apply_overrides(preset("micro"), TINY + list(extra))


@pytest.fixture
def one_thread():
    """Bit-for-bit comparisons need one fixed thread count; restore torch's afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 10-step run (checkpoints at 5 and 10)."""
    out = tmp_path_factory.mktemp("trained") / "tiny"
    s = TrainingSession.start(tiny_cfg("steps=10"), out)
    assert s.train() == "done"
    return out


def weights(path) -> dict[str, torch.Tensor]:
    return dict(Run.open(path).load_model().state_dict())


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- pickles never run ----------------------------------------------------------------------------
class Payload:
    """Unpickling this creates ``marker``: the proof that foreign code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def payload_bytes(marker, kind: str) -> bytes:
    if kind == "pkl":
        return pickle.dumps({"weights": Payload(marker)})
    buf = io.BytesIO()
    torch.save({"W_E": Payload(marker)}, buf)  # the zip-of-pickle format of a .pt checkpoint
    return buf.getvalue()


@pytest.mark.parametrize("kind", ["pkl", "pt"])
def test_the_payload_is_live(tmp_path, kind):
    """Control: the same bytes do create the marker when something does unpickle them."""
    marker = tmp_path / "ran"
    data = payload_bytes(marker, kind)
    if kind == "pkl":
        pickle.loads(data)
    else:
        torch.load(io.BytesIO(data), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["pkl", "pt"])
def test_pickle_as_weights_is_refused_and_never_runs(tmp_path, trained, capsys, kind):
    marker = tmp_path / "ran"
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    (run / "model.safetensors").write_bytes(payload_bytes(marker, kind))
    assert cli.main(["sample", str(run), "--prompt", "a"]) == 2
    assert "model.safetensors is damaged or not a safetensors file" in capsys.readouterr().err
    with pytest.raises(RunError):
        TrainingSession.resume(run)
    (run / "model.safetensors").unlink()
    (run / f"model.{kind}").write_bytes(payload_bytes(marker, kind))
    assert cli.main(["sample", str(run), "--prompt", "a"]) == 2
    assert "model.safetensors is missing" in capsys.readouterr().err
    (run / "train_state.safetensors").write_bytes(payload_bytes(marker, kind))
    (run / "tokenizer.json").write_bytes(payload_bytes(marker, kind))
    with pytest.raises(RunError):
        TrainingSession.resume(run)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["pkl", "pt"])
def test_pickle_in_a_run_zip_is_refused_and_never_runs(tmp_path, trained, kind):
    marker = tmp_path / "ran"
    for name in (f"model.{kind}", "model.safetensors"):
        data = zip_of(trained, extra={name: payload_bytes(marker, kind)},
                      skip={"model.safetensors"} if name == "model.safetensors" else set())
        with pytest.raises(RunError, match="not part of a tinyviz run|not a safetensors file"):
            import_run_zip(data, tmp_path / "runs", "imported")
        assert not (tmp_path / "runs" / "imported").exists()
    assert not marker.exists()


def test_no_module_can_unpickle():
    """Weights load only through safetensors: nothing in tinyviz calls an unpickler."""
    pattern = re.compile(r"\bimport pickle\b|\bpickle\.|torch\.load\(|\bjoblib\b|\bdill\b|numpy\.load\(|np\.load\(")
    offenders = [f"{p.relative_to(ROOT)}:{i}" for p in ROOT.joinpath("tinyviz").rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == []


def test_torch_has_no_known_weights_only_unpickler_flaws():
    pin = re.search(r"^torch==(\d+)\.(\d+)", (ROOT / "requirements.txt").read_text(), re.M)
    assert pin and (int(pin[1]), int(pin[2])) >= (2, 10)
    assert tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 10)


# -- run names ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["a/b", "..", ".", "../up", "/abs", "x\\y", "ctl\x07", "nl\n", "nul\x00x",
                                  "", ".hidden", "-dash", "x" * 81, "sp ace", "é"])
def test_run_name_not_allowed(name):
    with pytest.raises(RunError, match="is not allowed; use 1-80 letters, digits"):
        check_run_name(name)


def test_run_name_allowed():
    for name in ("run-1", "my_run.v2", "A" * 80):
        assert check_run_name(name) == name


# -- run zips -----------------------------------------------------------------------------------
def zip_of(run: Path, *, prefix: str = "", extra: dict | None = None, skip=frozenset(),
           compression=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for f in sorted(run.rglob("*")):
            rel = f.relative_to(run).as_posix()
            if f.is_file() and rel not in skip:
                zf.write(f, prefix + rel)
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def nothing_left(root: Path):
    return not root.exists() or list(root.iterdir()) == []


@pytest.mark.parametrize("prefix", ["", "shared-run/"])
def test_run_zip_imports_a_good_run(tmp_path, trained, prefix):
    run = import_run_zip(zip_of(trained, prefix=prefix), tmp_path / "runs", None)
    assert run.name == (prefix.rstrip("/") or "imported-run")
    assert same_weights(weights(run.path), weights(trained))
    assert run.snapshot_steps() == Run.open(trained).snapshot_steps()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [run.name]  # no scratch folder left


def test_run_zip_from_a_path_and_a_file_object(tmp_path, trained):
    z = tmp_path / "r.zip"
    z.write_bytes(zip_of(trained))
    assert import_run_zip(z, tmp_path / "runs", "a").name == "a"
    with open(z, "rb") as f:
        assert import_run_zip(f, tmp_path / "runs", "b").name == "b"


@pytest.mark.parametrize("entry", ["../escaped.json", "run/../../escaped.json", "/tmp/escaped.json",
                                   "..\\escaped.json", "C:/escaped.json", "snapshots/../../escaped.json"])
def test_run_zip_entry_escaping_the_folder_is_refused(tmp_path, trained, entry):
    data = zip_of(trained, extra={entry: b"{}"})
    with pytest.raises(RunError, match="points outside the run folder"):
        import_run_zip(data, tmp_path / "runs", "x")
    assert nothing_left(tmp_path / "runs")
    assert not (tmp_path / "escaped.json").exists() and not Path("/tmp/escaped.json").exists()


def test_run_zip_symlink_is_refused(tmp_path, trained):
    buf = io.BytesIO(zip_of(trained, skip={"metrics.jsonl"}))
    with zipfile.ZipFile(buf, "a") as zf:
        info = zipfile.ZipInfo("metrics.jsonl")
        info.external_attr = (0o120777 << 16)  # S_IFLNK
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(RunError, match="is a symbolic link"):
        import_run_zip(buf.getvalue(), tmp_path / "runs", "x")
    assert nothing_left(tmp_path / "runs")


@pytest.mark.parametrize("entry", ["evil.py", "run.sh", "model.bin", "snapshots/notes.txt", ".bashrc"])
def test_run_zip_unknown_file_is_refused(tmp_path, trained, entry):
    with pytest.raises(RunError, match="is not part of a tinyviz run"):
        import_run_zip(zip_of(trained, extra={entry: b"x"}), tmp_path / "runs", "x")
    assert nothing_left(tmp_path / "runs")


def test_run_zip_duplicate_entry_is_refused(tmp_path, trained):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name it is asked to write
        data = zip_of(trained, extra={"config.json": b"{}"})
    with pytest.raises(RunError, match="holds 'config.json' twice"):
        import_run_zip(data, tmp_path / "runs", "x")


def test_run_zip_too_large_in_total(tmp_path, trained, monkeypatch):
    monkeypatch.setattr(runzip, "MAX_IMPORT_BYTES", 20_000)
    with pytest.raises(RunError, match="unpacks to more than 0.02 MB"):
        import_run_zip(zip_of(trained), tmp_path / "runs", "x")
    assert nothing_left(tmp_path / "runs")


def test_run_zip_bomb_is_refused_before_extracting(tmp_path, trained):
    bomb = b"\n" * 20_000_000  # 20 MB of newlines deflate to about 20 KB
    with pytest.raises(RunError, match="zip bomb"):
        import_run_zip(zip_of(trained, extra={"metrics.jsonl": bomb}, skip={"metrics.jsonl"}),
                       tmp_path / "runs", "x")
    assert nothing_left(tmp_path / "runs")


def test_run_zip_that_lies_about_its_sizes(tmp_path, trained):
    """The central directory declares 10 bytes for config.json; extraction stops there and the CRC fails."""
    data = bytearray(zip_of(trained, compression=zipfile.ZIP_STORED))
    cd = data.find(b"PK\x01\x02" + bytes(20))  # not needed: search by name below
    for m in re.finditer(rb"PK\x01\x02", bytes(data)):
        start = m.start()
        name_len = int.from_bytes(data[start + 28:start + 30], "little")
        if bytes(data[start + 46:start + 46 + name_len]) == b"config.json":
            data[start + 24:start + 28] = (10).to_bytes(4, "little")
    del cd
    with pytest.raises(RunError, match="damaged"):
        import_run_zip(bytes(data), tmp_path / "runs", "x")
    assert nothing_left(tmp_path / "runs")


@pytest.mark.parametrize("data, match", [
    (b"\x89PNG\r\n\x1a\n" + bytes(100), "not a readable zip archive"),
    (b"", "not a readable zip archive"),
])
def test_run_zip_not_a_zip(tmp_path, data, match):
    with pytest.raises(RunError, match=match):
        import_run_zip(data, tmp_path / "runs", "x")


def test_run_zip_without_config(tmp_path, trained):
    with pytest.raises(RunError, match="has no config.json"):
        import_run_zip(zip_of(trained, skip={"config.json"}), tmp_path / "runs", "x")


def test_run_zip_with_a_bad_config_names_the_run(tmp_path, trained):
    cfg = json.loads((trained / "config.json").read_text())
    cfg["format_version"] = tinyviz.FORMAT_VERSION + 1
    data = zip_of(trained, skip={"config.json"}, extra={"config.json": json.dumps(cfg)})
    with pytest.raises(RunError, match="^shared was written by a newer tinyviz"):
        import_run_zip(data, tmp_path / "runs", "shared")
    assert nothing_left(tmp_path / "runs")


def test_run_zip_with_mismatched_weights(tmp_path, trained):
    cfg = json.loads((trained / "config.json").read_text())
    cfg["model"]["d_model"] = 32
    data = zip_of(trained, skip={"config.json"}, extra={"config.json": json.dumps(cfg)})
    with pytest.raises(RunError, match="come from different runs"):
        import_run_zip(data, tmp_path / "runs", "x")


def test_run_zip_name_taken_or_invalid(tmp_path, trained):
    import_run_zip(zip_of(trained), tmp_path / "runs", "taken")
    with pytest.raises(RunError, match="'taken' already exists"):
        import_run_zip(zip_of(trained), tmp_path / "runs", "taken")
    with pytest.raises(RunError, match="is not allowed"):
        import_run_zip(zip_of(trained), tmp_path / "runs", "../up")


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
from tinyviz.session import TrainingSession
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
    s = straight_run(tmp_path / "r", tiny_cfg(), 3)
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


def test_run_zip_skips_what_zip_tools_add_and_can_pick_a_free_name(tmp_path, trained):
    data = zip_of(trained, prefix="shared/", extra={"__MACOSX/shared/._config.json": b"\x00\x05",
                                                     "shared/.DS_Store": b"\x00\x00\x00\x01Bud1"})
    a = import_run_zip(data, tmp_path / "runs", unique=True)
    b = import_run_zip(data, tmp_path / "runs", unique=True)
    assert (a.name, b.name) == ("shared", "shared-2")
    assert sorted(p.name for p in a.path.iterdir()) == sorted(p.name for p in trained.iterdir())


def test_the_apps_zip_upload_uses_the_same_checks(tmp_path, trained):
    """The sidebar's uploader (tinyviz.ui.uploads) delegates to import_run_zip: one implementation."""
    from tinyviz.ui.uploads import UploadError, extract_run_zip

    marker = tmp_path / "ran"
    run, notes = extract_run_zip(zip_of(trained), tmp_path / "runs", "my run.zip")
    assert run.name == "my-run" and notes == []
    for extra, match in [({"../escaped.json": b"{}"}, "points outside the run folder"),
                         ({"model.pt": payload_bytes(marker, "pt")}, "not part of a tinyviz run")]:
        with pytest.raises(UploadError, match=f"^evil.zip: .*{match}"):
            extract_run_zip(zip_of(trained, extra=extra), tmp_path / "runs", "evil.zip")
    assert not marker.exists() and not (tmp_path / "escaped.json").exists()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["my-run"]
