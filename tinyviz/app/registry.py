"""The run registry: one background training thread per run, shared by every browser session.

It lives in ``st.cache_resource`` so a run keeps training when its page is left or reloaded.
A training thread never calls ``st.*``: it appends metrics under a lock, and pages poll
``Job.snapshot()``. Stop is a ``threading.Event`` handed to ``TrainingSession.train``.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st
import torch

from tinyviz.config import RunConfig
from tinyviz.training.session import TrainingSession

MAX_CONCURRENT = 2  # trainings at once; each gets its share of the cores


def configure_threads() -> int:
    """Torch threads for this process: the cores less one for page requests, split between the trainings.

    One process holds every training and page, so threads are set once, process-wide; on a
    2-core laptop that is 1 thread each (two runs with 2 threads each spin against each other).
    """
    n = max(1, ((os.cpu_count() or 2) - 1) // MAX_CONCURRENT)
    torch.set_num_threads(n)
    return n


class RegistryFull(RuntimeError):
    """Too many runs train already; the message names them."""


@dataclass
class Job:
    run_id: str
    total: int
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    metrics: list = field(default_factory=list)
    status: str = "starting"  # starting | running | done | stopped | failed
    message: str = ""
    step: int = 0
    start_step: int = 0
    started: float = field(default_factory=time.monotonic)
    thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def snapshot(self) -> dict:
        """A consistent copy for a page to draw: status, step, total, metrics, ETA in seconds."""
        with self.lock:
            done = self.step - self.start_step
            elapsed = time.monotonic() - self.started
            eta = (self.total - self.step) * elapsed / done if done > 0 and self.status == "running" else None
            return {"run_id": self.run_id, "status": self.status, "message": self.message, "step": self.step,
                    "total": self.total, "metrics": list(self.metrics), "eta": eta}

    def _on_step(self, m) -> None:
        rec = m.to_dict()
        with self.lock:
            self.metrics.append(rec)
            self.step = m.step

    def _run(self, session: TrainingSession) -> None:
        try:
            status = session.train(stop=self.stop, on_step=self._on_step)
            message = session.message
        except Exception as e:  # a thread has nowhere to raise to; the page shows the sentence
            status, message = "failed", f"training stopped with an error: {e}"
        with self.lock:
            self.status = status
            self.message = message or {"done": f"finished at step {self.step}."}.get(status, "")


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
        run_id = str(session.run.path)
        job = Job(run_id=run_id, total=session.run.config.train.steps, step=session.step,
                  start_step=session.step, metrics=session.run.metrics(), status="running")
        job.thread = threading.Thread(target=job._run, args=(session,), name=f"train-{session.run.name}",
                                      daemon=True)
        with self.lock:
            self.jobs[run_id] = job
        job.thread.start()
        return job

    def stop(self, run_id: str) -> None:
        job = self.get(run_id)
        if job is not None:
            job.stop.set()

    def stop_all(self, timeout: float = 30.0) -> None:
        """Ask every run to stop and wait for their threads (tests and shutdown)."""
        jobs = self.running()
        for j in jobs:
            j.stop.set()
        for j in jobs:
            j.thread.join(timeout)


@st.cache_resource(show_spinner=False)
def registry() -> Registry:
    configure_threads()
    return Registry()
