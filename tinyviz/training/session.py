"""A training session: a Trainer writing into a Run folder.

It evaluates, snapshots the probe prompt's attention, checkpoints, and stops cleanly on
request, on NaN, or at the last step. It fires callbacks and never prints, so the CLI,
the app's background thread and the tests drive it the same way.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import torch

from tinyviz.analysis import probes
from tinyviz.config import RunConfig, SampleConfig
from tinyviz.data import corpora
from tinyviz.data.text import load_corpus, prepare
from tinyviz.model.sampling import generate
from tinyviz.resources import check_fits
from tinyviz.training.history import schedule
from tinyviz.training.runs import Run, RunError
from tinyviz.training.trainer import NonFiniteLoss, StepMetrics, Trainer

log = logging.getLogger(__name__)

PROBE_CHARS = 100  # the probe prompt is at most this many characters (and tokens)


def corpus_fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def probe_prompt_for(cfg: RunConfig, text: str) -> str:
    """A fixed, in-distribution prompt whose attention is snapshotted during training."""
    if corpora.is_builtin(cfg.data.corpus):
        prompt = corpora.default_prompt(cfg.data.corpus)
    else:
        prompt = text[:PROBE_CHARS]
    return prompt


class TrainingSession:
    def __init__(self, run: Run, trainer: Trainer, probe_ids: list[int], tokenizer):
        self.run, self.trainer, self.probe_ids, self.tokenizer = run, trainer, probe_ids, tokenizer
        self.status = "ready"  # ready | running | done | stopped | failed
        self.message = ""
        self.keep_steps = set(schedule(run.config.train))

    @classmethod
    def start(cls, cfg: RunConfig, out: Path, overwrite: bool = False) -> TrainingSession:
        """A new run at out: load the corpus, fit the tokenizer, size the vocab, save step 0."""
        prep = prepare(cfg)
        text, tokenizer, cfg, data = prep.text, prep.tokenizer, prep.config, prep.data
        data.check_fits(cfg.model.n_ctx, cfg.train.batch_size)
        check_fits(cfg, "train")  # before the run folder is created: a refused config leaves nothing behind
        probe = probe_prompt_for(cfg, text)
        # a small corpus may lack some of the default prompt's characters; pages start from this prompt
        probe = "".join(ch for ch in probe if not tokenizer.unknown_chars(ch))
        meta = {"corpus_sha256": corpus_fingerprint(text), "probe_prompt": probe}
        run = Run.create(out, cfg, tokenizer, meta=meta, overwrite=overwrite)
        session = cls(run, Trainer(cfg.model, cfg.train, data), _probe_ids(tokenizer, probe, cfg), tokenizer)
        session._snapshot()
        session._keep()
        session._checkpoint("ready")
        return session

    @classmethod
    def resume(cls, path: Path) -> TrainingSession:
        """Continue a run exactly where its last checkpoint left it."""
        run = Run.open(path)
        cfg = run.config
        text = load_corpus(cfg.data)
        if run.meta.get("corpus_sha256") not in (None, corpus_fingerprint(text)):
            raise RunError(
                f"the corpus {cfg.data.corpus!r} has changed since {run.name} was trained, so it cannot resume "
                "exactly; start a new run, or restore the original text file."
            )
        tokenizer = run.tokenizer()
        trainer = Trainer(cfg.model, cfg.train, prepare(cfg, tokenizer, text).data)
        step = run.load_weights(trainer.model)
        state, state_step = run.load_train_state()
        if state_step != step:
            raise RunError(f"{run.name}: optimizer state (step {state_step}) does not match the weights (step {step}).")
        trainer.load_state_tensors(state, step, float(run.state().get("elapsed", 0.0)))
        run.truncate_after(step)
        probe = run.meta.get("probe_prompt") or probe_prompt_for(cfg, text)
        return cls(run, trainer, _probe_ids(tokenizer, probe, cfg), tokenizer)

    @property
    def step(self) -> int:
        return self.trainer.step_count

    def train(self, stop: threading.Event | None = None,
              on_step: Callable[[StepMetrics], None] | None = None,
              on_snapshot: Callable[[int], None] | None = None,
              max_steps: int | None = None) -> str:
        """Train until cfg.train.steps (or max_steps more), a stop request, or a NaN. Returns the status."""
        cfg = self.run.config.train
        end = cfg.steps if max_steps is None else min(cfg.steps, self.step + max_steps)
        self.status, self.message = "running", ""
        # state.json names this process as the writer, so a reader can tell a run whose process died
        with self.run.writing(), self.run.metrics_log() as log_metrics:
            self.run.write_state(status="running", message="")
            try:
                while self.step < end:
                    if stop is not None and stop.is_set():
                        self.status = "stopped"
                        self.message = f"stopped by request at step {self.step}; resume to continue."
                        break
                    metrics = self.trainer.step()
                    self._periodic(metrics, cfg, on_snapshot)
                    log_metrics(metrics.to_dict())
                    if on_step is not None:
                        on_step(metrics)
                    if cfg.checkpoint_interval and self.step % cfg.checkpoint_interval == 0 and self.step < end:
                        self._checkpoint("running")
                else:
                    self.status = "done" if self.step >= cfg.steps else "stopped"
            except NonFiniteLoss as e:
                self.status, self.message = "failed", str(e)
            self._checkpoint(self.status, self.message)
        return self.status

    def _periodic(self, m: StepMetrics, cfg, on_snapshot) -> None:
        last = self.step == cfg.steps
        if cfg.eval_interval and (self.step % cfg.eval_interval == 0 or last):
            m.val_loss = self.trainer.evaluate("val")
        if cfg.snapshot_interval and (self.step % cfg.snapshot_interval == 0 or last):
            m.entropy_mean = self._snapshot()
            if on_snapshot is not None:
                on_snapshot(self.step)
        if cfg.sample_interval and self.step % cfg.sample_interval == 0:
            m.extra["sample"] = self.preview()
        self._keep()

    def _keep(self) -> None:
        """Save this step's weights to the run's history when the schedule keeps it."""
        if self.step in self.keep_steps:
            self.run.history.save(self.step, self.trainer.model, self.run.config.train.history_dtype)

    def _snapshot(self) -> float:
        model = self.trainer.model
        snap = probes.probe_snapshot(model, torch.tensor(self.probe_ids, device=self.trainer.device))
        self.run.save_snapshot(self.step, self.probe_ids, snap)
        return snap["entropy_mean"]

    def preview(self, n_tokens: int = 80) -> str:
        """A short greedy continuation of the probe prompt's start, to see what the model writes."""
        start = self.tokenizer.decode(self.probe_ids[: max(1, len(self.probe_ids) // 4)])
        greedy = SampleConfig(max_new_tokens=n_tokens, temperature=0)
        result = generate(self.trainer.model, self.tokenizer, start, greedy)
        return start + result.text

    def _checkpoint(self, status: str, message: str = "") -> None:
        self.run.save_checkpoint(self.trainer.model, self.trainer.state_tensors(), self.step,
                                 self.trainer.elapsed, status=status, message=message)


def _probe_ids(tokenizer, prompt: str, cfg: RunConfig) -> list[int]:
    known = "".join(ch for ch in prompt if not tokenizer.unknown_chars(ch))
    ids = tokenizer.encode(known)
    return ids[: min(PROBE_CHARS, cfg.model.n_ctx)]


STOP_WITH_PARENT = "TINYVIZ_STOP_WITH_PARENT"  # the app sets it to its pid for the training processes it starts


def stop_with_parent(stop: threading.Event, poll: float = 1.0) -> None:
    """When the app that started this training dies (kill -9 of the server), stop after the current step and
    save a checkpoint, so a restarted app shows the run "stopped" with a Resume, not an orphan it cannot stop.

    The parent's death is seen as this process being re-parented (its parent pid changes)."""
    parent = os.environ.get(STOP_WITH_PARENT, "")
    if not parent.isdigit() or os.getppid() != int(parent):
        return

    def watch():
        while not stop.wait(poll):
            if os.getppid() != int(parent):
                print("the app that started this run has gone; stopping after this step and saving a checkpoint",
                      file=sys.stderr)
                stop.set()

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()
