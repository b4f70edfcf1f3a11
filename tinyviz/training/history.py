"""Weights through training: a run's copies of its model at a schedule dense early and sparse late.

Owned by the run store: ``Run.history`` is the one handle; nothing else writes these files.

    history/step_NNNNNNN.safetensors   every parameter at that step, in ``train.history_dtype``
                                       (metadata: step, dtype)
    history/index.json                 {"dtype", "steps": [...]}: the steps whose file is complete

Write order: the weights file is written atomically (temp file, fsync, rename), then the index
is rewritten atomically. A kill between the two leaves a complete file the index does not name
yet; readers only trust steps the index names *and* whose file exists. Resume
(``reconcile(step)``) drops every file after the resumed checkpoint (training replays those
steps bit for bit and writes them again), sweeps dead writers' temp files and rebuilds the index
from the files on disk. A damaged index is ignored (the files are listed instead).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from tinyviz.config import TrainConfig

HISTORY = "history"
INDEX = "index.json"
DTYPES = {"float16": torch.float16, "float32": torch.float32}


def schedule(train: TrainConfig) -> list[int]:
    """The steps whose weights a run keeps: step 0, powers of two below the first regular step,
    every ``snapshot_interval`` (thinned to every k-th so at most ``history_keep`` steps in all)
    and the last step. [] when ``history_keep`` is 0."""
    keep, steps = train.history_keep, train.steps
    if keep <= 0:
        return []
    interval = train.snapshot_interval or max(1, steps // 20)
    early = {0, steps}
    p = 1
    while p < min(interval, steps) and len(early) < max(2, keep // 3):
        early.add(p)
        p *= 2
    regular = list(range(interval, steps, interval))
    budget = max(0, keep - len(early))
    if budget == 0:
        regular = []
    elif len(regular) > budget:
        stride = -(-len(regular) // budget)  # ceil
        regular = regular[stride - 1::stride]
    return sorted(early | set(regular))


def _name(step: int) -> str:
    return f"step_{step:07d}.safetensors"


class History:
    """The kept weights of one run folder. Reading never writes; only the training session saves."""

    def __init__(self, run_path: Path):
        self.folder = Path(run_path) / HISTORY
        self.run_name = Path(run_path).name

    def path(self, step: int) -> Path:
        return self.folder / _name(step)

    def _files(self) -> list[int]:
        out = []
        for f in self.folder.glob("step_*.safetensors") if self.folder.is_dir() else []:
            with contextlib.suppress(IndexError, ValueError):
                out.append(int(f.stem.split("_")[1]))
        return sorted(out)

    def _index(self) -> dict | None:
        try:
            data = json.loads((self.folder / INDEX).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, OSError):
            return None
        if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
            return None
        return data

    def steps(self) -> list[int]:
        """The kept steps, oldest first: named by the index and present on disk ([] without history)."""
        files = self._files()
        index = self._index()
        if index is None:
            return files
        named = {s for s in index["steps"] if isinstance(s, int)}
        return [s for s in files if s in named]

    def file_version(self, step: int) -> tuple[int, int]:
        """(mtime_ns, size) of step's file, (0, 0) while it is missing: a cache key."""
        try:
            st = self.path(step).stat()
        except FileNotFoundError:
            return 0, 0
        return st.st_mtime_ns, st.st_size

    def nbytes(self) -> int:
        return sum(self.path(s).stat().st_size for s in self.steps() if self.path(s).exists())

    def nearest(self, step: int) -> int | None:
        """The kept step closest to step (the earlier one on a tie), or None without history."""
        steps = self.steps()
        if not steps:
            return None
        return min(steps, key=lambda s: (abs(s - step), s))

    # -- writing (the training session only) ----------------------------------------------------
    def save(self, step: int, model: torch.nn.Module, dtype: str) -> None:
        """Write step's weights (file first, then the index that names it)."""
        from tinyviz.training.runs import atomic_save_tensors

        self.folder.mkdir(exist_ok=True)
        cast = DTYPES[dtype]
        weights = {n: p.detach().to("cpu", cast) for n, p in model.named_parameters()}
        atomic_save_tensors(self.path(step), weights, {"step": str(step), "dtype": dtype})
        steps = sorted({*self.steps(), step})
        self._write_index(steps, dtype)

    def _write_index(self, steps: list[int], dtype: str | None = None) -> None:
        from tinyviz.training.runs import atomic_write_json

        dtype = dtype or (self._index() or {}).get("dtype", "float16")
        atomic_write_json(self.folder / INDEX, {"dtype": dtype, "steps": steps})

    def reconcile(self, step: int) -> None:
        """On resume at checkpoint step: drop later files and dead writers' temp files, rebuild the index."""
        if not self.folder.is_dir():
            return
        from tinyviz.training.runs import _discard, _pid_alive

        for tmp in self.folder.glob(".*.tmp*"):
            pid = tmp.name.rpartition(".tmp")[2]
            if pid.isdigit() and not _pid_alive(int(pid)):
                _discard(tmp)
        for s in self._files():
            if s > step:
                self.path(s).unlink(missing_ok=True)
        self._write_index(self._files())

    def clear(self) -> None:
        if not self.folder.is_dir():
            return
        for f in [*self.folder.glob("step_*.safetensors"), self.folder / INDEX]:
            f.unlink(missing_ok=True)

    # -- reading ---------------------------------------------------------------------------------
    def load_into(self, model: torch.nn.Module, step: int) -> None:
        """Copy step's weights into model (float32), checking every key and shape.

        Raises RunError naming the file when it is missing, damaged or from another model."""
        from tinyviz.training.runs import RunError

        path = self.path(step)
        rel = f"{self.run_name}/{HISTORY}/{path.name}"
        if step not in self.steps():
            kept = self.steps()
            raise RunError(f"{self.run_name} kept no weights at step {step}; kept steps: "
                           f"{', '.join(map(str, kept[:12]))}{' ...' if len(kept) > 12 else ''}.")
        try:
            with safe_open(str(path), framework="pt") as f:
                tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise RunError(f"{rel} is damaged or not a safetensors file ({str(e)[:80]}); the run's other "
                           "steps still open; delete that file or re-train the run to get it back.") from None
        expected = {n: p.shape for n, p in model.named_parameters()}
        if set(tensors) != set(expected) or any(tensors[k].shape != s for k, s in expected.items()):
            raise RunError(f"{rel} does not match the run's config.json (other parameter names or shapes); "
                           "the run's other steps still open; delete that file.")
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(tensors[n].to(p.dtype))

