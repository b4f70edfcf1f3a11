"""The run registry: one training process per run, shared by every browser session.

It lives in ``st.cache_resource`` so a run keeps training when its page is left or reloaded.
A run trains in its own process, ``python -m tinyviz train --resume --out RUN`` (the CLI, so the
app trains exactly as fast and as exactly as the command line): a training thread in the server
shared one interpreter lock with every page rerun, and the live panel halved its speed. The run
folder is the interface: the server creates the run (or checks that it can resume) in-process, so a
bad config is a sentence at once, then starts the child; pages read the child's metrics.jsonl
incrementally (``Job.snapshot``) and its state.json when it ends; Stop is SIGINT, which the CLI
turns into "stop after this step and save a checkpoint".
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st
import torch

import tinyviz
from tinyviz.config import RunConfig
from tinyviz.training.runs import METRICS, STATE
from tinyviz.training.session import STOP_WITH_PARENT, TrainingSession

MAX_CONCURRENT = 2  # trainings at once; each gets its share of the cores
TRAIN_THREADS_ENV = "TINYVIZ_TRAIN_THREADS"  # torch threads per training the app starts (default: see train_threads)


def configure_threads() -> int:
    """Torch threads for the server's own work (page probes): the cores less one, split between the trainings.

    Trainings run in their own processes (see ``child_env`` for theirs)."""
    n = max(1, ((os.cpu_count() or 2) - 1) // MAX_CONCURRENT)
    torch.set_num_threads(n)
    return n


_cores = threading.Lock()
_cores_users = 0


@contextlib.contextmanager
def every_core_while_idle():
    """Page work that takes seconds (the Dynamics page's first pass over a run's kept steps) uses every
    core while no training runs in this app, and the server's share (configure_threads) again after.
    torch's thread count is process-wide, so overlapping users are counted and the last one restores it."""
    global _cores_users
    with _cores:
        _cores_users += 1
        if _cores_users == 1 and not registry().running():
            torch.set_num_threads(os.cpu_count() or 1)
    try:
        yield
    finally:
        with _cores:
            _cores_users -= 1
            if _cores_users == 0:
                configure_threads()


def train_threads(others: int) -> int:
    """Torch threads for a training started beside `others` running ones: TINYVIZ_TRAIN_THREADS if set,
    else every core for a training alone and an equal share beside others.

    Measured on 2 cores, induction preset, Train page open in Chromium (benchmarks/app_speed.py): one
    thread trained at 0.58x the CLI's steps/s, two at 0.84x (the live panel then cost the server 0.03
    and the browser 0.1-0.15 of a core). A training alone uses the CLI's thread count, so the app's run
    is bit for bit the CLI's. A second training started beside it gets one thread while the first keeps
    two (a thread count never changes mid-run: the bits depend on it); on 2 cores that overlap ran at
    0.5-0.65x of two one-thread trainings' speed, the price of the usual single training's 1.45x."""
    raw = os.environ.get(TRAIN_THREADS_ENV, "")
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    return max(1, (os.cpu_count() or 1) // (others + 1))


def child_env(others: int) -> dict[str, str]:
    """The training process's environment: this tinyviz on its import path and its torch threads
    (train_threads)."""
    env = dict(os.environ)
    root = str(Path(tinyviz.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    env.pop("OMP_WAIT_POLICY", None)  # app.py makes the server's idle threads sleep; a trainer spins as the CLI does
    env["OMP_NUM_THREADS"] = str(train_threads(others))
    env[STOP_WITH_PARENT] = str(os.getpid())  # a server killed mid-run leaves its runs stopped, not orphaned
    return env


class RegistryFull(RuntimeError):
    """Too many runs train already; the message names them."""


@dataclass
class Job:
    """One training process and what the pages need of it, read from its run folder."""

    run_id: str
    total: int
    proc: subprocess.Popen
    log: Path  # the child's stderr (its one-sentence error, if any)
    start_step: int = 0
    started: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)
    metrics: list = field(default_factory=list)
    _offset: int = 0  # bytes of metrics.jsonl already parsed
    _partial: bytes = b""  # a line the child is still writing
    _end: tuple[str, str] | None = None  # (status, message) once the process has ended

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    @property
    def status(self) -> str:
        return self.snapshot()["status"]

    def _read_new(self) -> None:
        """Parse the lines appended to metrics.jsonl since the last call (the file is only appended to)."""
        path = Path(self.run_id) / METRICS
        try:
            with open(path, "rb") as f:
                if os.fstat(f.fileno()).st_size < self._offset:  # rewritten shorter: read it again
                    self._offset, self._partial, self.metrics = 0, b"", []
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for line in lines:
            with contextlib.suppress(ValueError):
                rec = json.loads(line)
                if isinstance(rec, dict) and "step" in rec:
                    self.metrics.append(rec)

    def _ended(self) -> tuple[str, str]:
        """The final status and sentence: state.json's, or the child's error when it died before saying."""
        try:
            state = json.loads((Path(self.run_id) / STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            state = {}
        status, message = state.get("status"), state.get("message") or ""
        step = self.metrics[-1]["step"] if self.metrics else self.start_step
        if status == "done":
            return "done", message or f"finished at step {step}."
        if status in ("stopped", "failed"):
            return status, message
        if status == "ready" or self.proc.returncode in (130, -signal.SIGINT):  # stopped before its first step
            return "stopped", f"stopped by request at step {step}; resume to continue."
        return "failed", (f"the training process ended unexpectedly ({self.error()}); resume to continue from "
                          "the last checkpoint.")

    def error(self) -> str:
        """The CLI's one-sentence error, or the last line of its output."""
        try:
            lines = [ln for ln in self.log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        except OSError:
            lines = []
        errors = [ln.removeprefix("error: ") for ln in lines if ln.startswith("error:")]
        return (errors or lines[-1:] or [f"exit code {self.proc.returncode}"])[-1][-300:]

    def snapshot(self) -> dict:
        """A consistent copy for a page to draw: status, step, total, metrics, ETA in seconds."""
        with self.lock:
            self._read_new()
            if self._end is None and self.proc.poll() is not None:
                self._read_new()  # the last lines, written before the process ended
                self._end = self._ended()
            status, message = self._end or ("running", "")
            step = self.metrics[-1]["step"] if self.metrics else self.start_step
            done, elapsed = step - self.start_step, time.monotonic() - self.started
            eta = (self.total - step) * elapsed / done if done > 0 and status == "running" else None
            return {"run_id": self.run_id, "status": status, "message": message, "step": step,
                    "total": self.total, "metrics": list(self.metrics), "eta": eta}

    def stop(self) -> None:
        """Ask the child to stop after its current step (and save a checkpoint)."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)


class Registry:
    def __init__(self):
        self.lock = threading.Lock()  # guards jobs
        self.launching = threading.Lock()  # makes check-room-then-start atomic across sessions
        self.jobs: dict[str, Job] = {}

    def running(self) -> list[Job]:
        with self.lock:
            return [j for j in self.jobs.values() if j.alive]

    def get(self, run_id: str) -> Job | None:
        with self.lock:
            return self.jobs.get(run_id)

    def _check_room(self, run_id: str) -> None:
        busy = self.running()
        if any(j.run_id == run_id for j in busy):
            raise RegistryFull(f"{Path(run_id).name} is already training; stop it before starting it again.")
        if len(busy) >= MAX_CONCURRENT:
            names = " and ".join(Path(j.run_id).name for j in busy)
            raise RegistryFull(f"{len(busy)} runs are training already ({names}), the most this app trains at "
                               "once; stop one or wait for it to finish, then start this one.")

    def start(self, cfg: RunConfig, out: Path, overwrite: bool = False) -> Job:
        """Create a run at out and train it in the background.

        Raises RegistryFull, or the core's ValueError / CorpusError / RunError with a sentence."""
        with self.launching:
            self._check_room(str(out))
            return self._launch(TrainingSession.start(cfg, Path(out), overwrite=overwrite))

    def resume(self, run_id: str) -> Job:
        with self.launching:
            self._check_room(run_id)
            return self._launch(TrainingSession.resume(Path(run_id)))

    def _launch(self, session: TrainingSession) -> Job:
        """Train the run session prepared (created, or checked and truncated for a resume) in a child process."""
        run = session.run
        metrics_file = run.path / METRICS
        metrics, offset = run.metrics(), (metrics_file.stat().st_size if metrics_file.exists() else 0)
        fd, log = tempfile.mkstemp(prefix=f"tinyviz-train-{run.name}-", suffix=".log")
        with os.fdopen(fd, "wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "tinyviz", "train", "--resume", "--out", str(run.path)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                    env=child_env(len(self.running())))
        job = Job(run_id=str(run.path), total=run.config.train.steps, proc=proc, log=Path(log),
                  start_step=session.step)
        job.metrics, job._offset = metrics, offset
        with self.lock:
            self.jobs[job.run_id] = job
        return job

    def stop(self, run_id: str) -> None:
        job = self.get(run_id)
        if job is not None:
            job.stop()

    def stop_all(self, timeout: float = 30.0) -> None:
        """Ask every run to stop and wait for their processes (tests and shutdown)."""
        jobs = self.running()
        for j in jobs:
            j.stop()
        for j in jobs:
            try:
                j.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                j.proc.kill()
                j.proc.wait()


def training(run_id: str) -> bool:
    """Whether run_id trains now (in this app)."""
    job = registry().get(run_id)
    return job is not None and job.alive


def live_metrics(run_id: str, read_folder) -> list[dict]:
    """A training run's metrics from its job (read incrementally), else read_folder(run_id)."""
    job = registry().get(run_id)
    return job.snapshot()["metrics"] if job is not None and job.alive else read_folder(run_id)


def live_fragment(run_ids: list[str], seconds: float | None, draw) -> None:
    """draw() in a fragment that redraws every `seconds` while any of run_ids trains (None: when one of its
    elements asks), and reruns the whole page once when the last of them ends (so the page settles)."""
    running = any(training(r) for r in run_ids)

    @st.fragment(run_every=seconds if running else None)
    def fragment():
        if running and not any(training(r) for r in run_ids):
            st.rerun(scope="app")
        draw()

    fragment()


@st.cache_resource(show_spinner=False)
def registry() -> Registry:
    configure_threads()
    return Registry()
