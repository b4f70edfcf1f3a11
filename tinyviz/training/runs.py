"""A run is a folder, read and written only through this module (the file names are its constants).
Nothing is ever unpickled.

    config.json               RunConfig + versions + corpus fingerprint + probe prompt
    tokenizer.json            the tokenizer (JSON, never pickle)
    model.safetensors         weights at the last checkpoint (metadata: step)
    train_state.safetensors   AdamW moments + RNG states matching model.safetensors
    state.json                step, elapsed seconds, status, message
    metrics.jsonl             one JSON object per step (val_loss on eval steps, entropy_mean on snapshot steps)
    snapshots/step_NNNNNNN.safetensors  the probe prompt's attention [L, H, T, T] (float16), its tokens,
                              each head score and the entropy [L, H] (float32), and (metadata) activation stats
    history/                  the weights at kept steps + index.json (tinyviz.training.history)

Every file but metrics.jsonl is replaced atomically (temp file, fsync, rename): a reader sees the old
or the new version, never half. metrics.jsonl is append-only, one line per step, flushed as written; a
crash can leave its last line torn, and readers skip a line that is not a JSON object. Resuming rewrites
the file atomically with only the steps up to the checkpoint, so a torn line never stays in the middle.

A checkpoint commits in two phases so a kill at any moment leaves a matching pair of
model and optimizer state: train_state.next -> model -> rename next over train_state.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from tinyviz import FORMAT_VERSION, __version__
from tinyviz.analysis.probes import SCORE_NAMES
from tinyviz.config import RunConfig
from tinyviz.data.text import tokenizer_from_json
from tinyviz.model.transformer import Transformer
from tinyviz.resources import ResourceError, check_fits
from tinyviz.training.history import History

CONFIG, TOKENIZER, MODEL, TRAIN_STATE, STATE, METRICS, SNAPSHOTS = (
    "config.json", "tokenizer.json", "model.safetensors", "train_state.safetensors",
    "state.json", "metrics.jsonl", "snapshots",
)
_NEXT_STATE = "train_state.next.safetensors"
_SCORE = "score."  # snapshot tensor name prefix of a head score [L, H]
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")


class RunError(ValueError):
    """A run folder that cannot be used; the message says what is wrong and what to do."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file beside path, fsync, rename over path: readers see old or new, never half."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise _write_error(path, e) from None
    finally:
        _discard(tmp)
    _fsync_dir(path.parent)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except OSError:
        return True  # someone else's live process, or we cannot tell: keep its file
    return True


def _process_start(pid: int) -> str | None:
    """When the process started, in clock ticks since boot (Linux), to tell a reused pid apart; else None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


# Who writes a run: recorded in state.json while it trains, so a reader can tell a run that trains from
# one whose writer was killed (a server restarted after kill -9 would otherwise show "running" forever).
_THIS_PROCESS = {"pid": os.getpid(), "started": _process_start(os.getpid()), "host": socket.gethostname()}
_WRITING: set[str] = set()  # run folders this process is training right now
_WRITING_LOCK = threading.Lock()


def _writer_alive(writer: Any) -> bool:
    """Whether the process recorded as a run's writer still trains it (True when it cannot be told)."""
    if not isinstance(writer, dict) or not isinstance(writer.get("pid"), int):
        return False
    if writer.get("host") != _THIS_PROCESS["host"]:
        return True  # a shared folder written by another machine: assume it knows what it does
    if writer["pid"] == _THIS_PROCESS["pid"] and writer.get("started") == _THIS_PROCESS["started"]:
        return None  # this process: the caller checks _WRITING
    if not _pid_alive(writer["pid"]):
        return False
    started = _process_start(writer["pid"])
    return started is None or writer.get("started") in (None, started)


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        tmp.unlink(missing_ok=True)


def _write_error(path: Path, e: Exception) -> RunError:
    """A failed write as a sentence; the file it would have replaced is untouched (writes are atomic)."""
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)[:120]
    err = RunError(
        f"could not write {path.parent.name}/{path.name} ({reason}); the previous version is unchanged. "
        "Free some disk space or check that the folder is writable, then resume the run."
    )
    err.reason = reason  # for callers that say it in their own sentence
    return err


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode())


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, SafetensorError) as e:
        raise _write_error(path, e) from None
    finally:
        _discard(tmp)
    _fsync_dir(path.parent)


def file_version(run_path: Path, name: str) -> tuple[int, int]:
    """(mtime_ns, size) of one of a run's files, (0, 0) while it is missing: a cache key that changes
    whenever the file does (an append to metrics.jsonl, a new checkpoint)."""
    try:
        st = (Path(run_path) / name).stat()
    except FileNotFoundError:
        return 0, 0
    return st.st_mtime_ns, st.st_size


def metrics_lines_since(run_path: Path, since: float) -> int:
    """How many steps the run folder's metrics file holds, counting only a file written at or after
    `since` (epoch seconds): the progress of a run that may still be starting or may be left from before."""
    path = Path(run_path) / METRICS
    try:
        if path.stat().st_mtime < since:
            return 0
        with open(path, "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return 0


def check_run_name(name: str) -> str:
    """A run name that is a single safe folder name, or RunError."""
    if not isinstance(name, str) or not _NAME_OK.fullmatch(name):  # fullmatch: "$" alone lets "x\n" through
        raise RunError(
            f"run name {name!r} is not allowed; use 1-80 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit."
        )
    return name


def _read_tensors(path: Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        return load_file(str(path)), metadata
    except FileNotFoundError:
        raise RunError(f"{path.parent.name}/{path.name} is missing; this run has no {what}.") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise RunError(
            f"{path.parent.name}/{path.name} is damaged or not a safetensors file ({str(e)[:80]}); "
            "re-download or re-train the run."
        ) from None


def state_dict_keys(model: Transformer) -> dict[str, torch.Size]:
    """The stored parameter names and shapes (a tied W_U is stored once, as W_E)."""
    return {n: p.shape for n, p in model.named_parameters()}


class Run:
    """A handle on a run folder. Opening validates config.json; weights load on demand."""

    def __init__(self, path: Path, config: RunConfig, meta: dict[str, Any]):
        self.path, self.config, self.meta = Path(path), config, meta

    @property
    def name(self) -> str:
        return self.path.name

    @classmethod
    def create(cls, path: Path, config: RunConfig, tokenizer, meta: dict | None = None, overwrite: bool = False) -> Run:
        path = Path(path)
        check_run_name(path.name)
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise RunError(f"{path} already holds a run; pick another --out, or resume it with --resume.")
        path.mkdir(parents=True, exist_ok=True)
        for stale in (MODEL, TRAIN_STATE, _NEXT_STATE, STATE, METRICS):
            (path / stale).unlink(missing_ok=True)
        if (path / SNAPSHOTS).exists():
            for f in (path / SNAPSHOTS).glob("*.safetensors"):
                f.unlink()
        History(path).clear()
        meta = {"format_version": FORMAT_VERSION, "tinyviz_version": __version__,
                "torch_version": torch.__version__, **(meta or {})}
        atomic_write(path / TOKENIZER, tokenizer.to_json().encode())
        atomic_write_json(path / CONFIG, {**meta, **config.to_dict()})
        return cls(path, config, meta)

    @classmethod
    def open(cls, path: Path) -> Run:
        path = Path(path)
        if not path.is_dir():
            raise RunError(f"no run folder at '{path}'; list runs with `python -m tinyviz runs`.")
        try:
            raw = json.loads((path / CONFIG).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunError(f"'{path}' has no config.json, so it is not a tinyviz run folder.") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise RunError(f"{path.name}/config.json is not valid JSON ({e}); the run folder is damaged.") from None
        if not isinstance(raw, dict):
            raise RunError(f"{path.name}/config.json must hold a JSON object; the run folder is damaged.")
        version = raw.get("format_version", 0)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise RunError(
                f"{path.name} was written by a newer tinyviz (run format {version}, this one reads up to "
                f"{FORMAT_VERSION}); upgrade tinyviz to open it."
            )
        try:
            config = RunConfig.from_dict(raw)
        except (TypeError, ValueError) as e:
            raise RunError(f"{path.name}/config.json has an invalid configuration: {e}") from None
        meta = {k: v for k, v in raw.items() if k not in ("model", "train", "data", "preset")}
        # No checkpoint repair here: a reader must not touch files a training thread may be writing.
        return cls(path, config, meta)

    # -- tokenizer and weights -------------------------------------------------------------
    def tokenizer(self):
        try:
            return tokenizer_from_json((self.path / TOKENIZER).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RunError(f"{self.name}/tokenizer.json is missing; the run folder is incomplete.") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise RunError(f"{self.name}/tokenizer.json is damaged: {e}") from None

    def has_weights(self) -> bool:
        return (self.path / MODEL).exists()

    def load_weights(self, model: Transformer) -> int:
        """Load model.safetensors into model after checking every key and shape; returns the step."""
        tensors, metadata = _read_tensors(self.path / MODEL, "trained weights yet (train it first)")
        expected = state_dict_keys(model)
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        if missing or extra:
            raise RunError(
                f"{self.name}/model.safetensors does not match its config.json "
                f"(missing {missing[:3]}, unexpected {extra[:3]}); the files come from different runs."
            )
        for k, shape in expected.items():
            if tensors[k].shape != shape:
                raise RunError(
                    f"{self.name}/model.safetensors has {k} of shape {tuple(tensors[k].shape)} but the config "
                    f"needs {tuple(shape)}; the files come from different runs."
                )
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(tensors[n])
        return int(metadata.get("step", 0))

    def check_memory(self) -> None:
        """RunError unless this run's model fits in memory for loading and inspecting (checked before
        anything is allocated: a config.json anyone can edit or send may ask for any size)."""
        try:
            check_fits(self.config, "inference", label=f"the run {self.name!r}",
                       advice="open it on a machine with more memory")
        except ResourceError as e:
            raise RunError(str(e)) from None

    def load_model(self) -> Transformer:
        """A ready model in eval mode with the run's latest weights."""
        self.check_memory()
        model = Transformer(self.config.model)
        self.load_weights(model)
        return model.eval()

    @property
    def history(self) -> History:
        """The weights kept through training (empty for runs trained before it existed or imported)."""
        return History(self.path)

    def model_at(self, step: int | None) -> Transformer:
        """A model in eval mode with the weights of a kept step; None or the checkpoint's step gives the
        latest (float32) weights. RunError names a missing or damaged history file."""
        if step is None or step == self.weights_step():
            return self.load_model()
        model = Transformer(self.config.model)
        self.history.load_into(model, step)
        return model.eval()

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self, model: Transformer, train_state: dict[str, torch.Tensor], step: int,
                        elapsed: float, status: str = "running", message: str = "") -> None:
        meta = {"step": str(step)}
        atomic_save_tensors(self.path / _NEXT_STATE, train_state, meta)
        weights = {n: p.detach().cpu() for n, p in model.named_parameters()}
        atomic_save_tensors(self.path / MODEL, weights, meta)
        try:
            os.replace(self.path / _NEXT_STATE, self.path / TRAIN_STATE)
        except OSError as e:
            raise _write_error(self.path / TRAIN_STATE, e) from None
        _fsync_dir(self.path)
        self.write_state(step=step, elapsed=elapsed, status=status, message=message)

    def _sweep_temp_files(self) -> None:
        """Delete the temp files (.NAME.tmpPID) of writers that died mid-write.

        A temp file whose process still lives is left alone: it may be mid-write."""
        for folder in (self.path, self.path / SNAPSHOTS, self.history.folder):
            for tmp in folder.glob(".*.tmp*") if folder.is_dir() else []:
                pid = tmp.name.rpartition(".tmp")[2]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    _discard(tmp)

    def _finish_interrupted_checkpoint(self) -> None:
        """Roll a checkpoint killed between its two renames forward (or drop its unused half)."""
        self._sweep_temp_files()
        nxt = self.path / _NEXT_STATE
        if not nxt.exists():
            return
        try:
            with safe_open(str(nxt), framework="pt") as f:
                nxt_step = (f.metadata() or {}).get("step")
            with safe_open(str(self.path / MODEL), framework="pt") as f:
                model_step = (f.metadata() or {}).get("step")
        except (SafetensorError, OSError):
            nxt_step, model_step = None, "unreadable"
        if nxt_step is not None and nxt_step == model_step:
            os.replace(nxt, self.path / TRAIN_STATE)
        else:
            nxt.unlink(missing_ok=True)

    def load_train_state(self) -> tuple[dict[str, torch.Tensor], int]:
        """The optimizer state matching model.safetensors; only the run's (single) writer calls this."""
        self._finish_interrupted_checkpoint()
        tensors, metadata = _read_tensors(self.path / TRAIN_STATE, "optimizer state to resume from")
        return tensors, int(metadata.get("step", -1))

    def weights_step(self) -> int:
        try:
            with safe_open(str(self.path / MODEL), framework="pt") as f:
                return int((f.metadata() or {}).get("step", 0))
        except (FileNotFoundError, SafetensorError, OSError, ValueError):
            return 0

    def write_state(self, **fields) -> None:
        atomic_write_json(self.path / STATE, {**self._stored_state(), **fields})

    def _stored_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path / STATE).read_text(encoding="utf-8"))
            return data if isinstance(data, dict) else {}
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return {}

    def state(self) -> dict[str, Any]:
        """state.json: step, elapsed, status, message. A run that says "running" but whose writer is gone
        (killed, crashed, the server restarted) reads as "stopped", with a message saying so."""
        data = self._stored_state()
        if data.get("status") == "running" and not self.is_training():
            step = self.weights_step()
            data = {**data, "status": "stopped",
                    "message": f"training was interrupted (the process that trained it ended); the checkpoint "
                               f"at step {step} is kept. Resume to continue from there."}
        return data

    def is_training(self) -> bool:
        """Whether a live process (this one or another) trains this run now."""
        alive = _writer_alive(self._stored_state().get("writer"))
        if alive is None:
            with _WRITING_LOCK:
                return str(self.path.resolve()) in _WRITING
        return alive

    @contextlib.contextmanager
    def writing(self):
        """Mark this process as the run's writer for the block (state.json names it; see state())."""
        key = str(self.path.resolve())
        with _WRITING_LOCK:
            _WRITING.add(key)
        try:
            self.write_state(writer=_THIS_PROCESS)
            yield self
        finally:
            with _WRITING_LOCK:
                _WRITING.discard(key)

    # -- metrics -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def metrics_log(self) -> Iterator[Callable[[dict[str, Any]], None]]:
        """Open metrics.jsonl for appending; yields append(record), which writes one line and flushes it."""
        with open(self.path / METRICS, "a", encoding="utf-8") as f:
            def append(record: dict[str, Any]) -> None:
                f.write(json.dumps(record) + "\n")
                f.flush()

            yield append

    def metrics(self) -> list[dict[str, Any]]:
        """Every logged step. A line torn by a crash mid-append is skipped. entropy_mean is at the top
        level of a record (runs written before kept it under "extra")."""
        out = []
        try:
            with open(self.path / METRICS, "rb") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except ValueError:  # a torn line, or bytes that are not UTF-8 (found by tests/test_fuzz.py)
                        continue
                    if isinstance(rec, dict) and type(rec.get("step")) is int:
                        out.append(_lift_entropy(rec))
        except FileNotFoundError:
            pass
        return out

    def truncate_after(self, step: int) -> None:
        """Forget metrics and snapshots later than step (resume continues from there)."""
        kept = [m for m in self.metrics() if m["step"] <= step]
        atomic_write(self.path / METRICS, "".join(json.dumps(m) + "\n" for m in kept).encode())
        for s in self.snapshot_steps():
            if s > step:
                self._snapshot_path(s).unlink(missing_ok=True)
        self.history.reconcile(step)

    # -- attention snapshots -----------------------------------------------------------------
    def _snapshot_path(self, step: int) -> Path:
        return self.path / SNAPSHOTS / f"step_{step:07d}.safetensors"

    def save_snapshot(self, step: int, tokens: list[int], snap: dict[str, Any]) -> None:
        """snap as returned by probes.probe_snapshot: patterns [L, H, T, T], "scores" {name: [L, H]} and
        "entropy" [L, H] are stored as tensors; the other entries (JSON-able) as metadata."""
        (self.path / SNAPSHOTS).mkdir(exist_ok=True)
        tensors = {"patterns": torch.as_tensor(np.asarray(snap["patterns"]), dtype=torch.float16),
                   "tokens": torch.tensor(tokens, dtype=torch.int64)}
        arrays = {"entropy": snap.get("entropy"), **{_SCORE + k: v for k, v in snap.get("scores", {}).items()}}
        tensors.update({k: torch.as_tensor(np.asarray(v, np.float32)) for k, v in arrays.items() if v is not None})
        info = {k: v for k, v in snap.items() if k not in ("patterns", "scores", "entropy")}
        atomic_save_tensors(self._snapshot_path(step), tensors, {"step": str(step), "info": json.dumps(info)})

    def snapshot_steps(self) -> list[int]:
        folder = self.path / SNAPSHOTS
        steps = []
        for f in folder.glob("step_*.safetensors") if folder.exists() else []:
            try:
                steps.append(int(f.stem.split("_")[1]))
            except (IndexError, ValueError):
                continue
        return sorted(steps)

    def load_snapshot(self, step: int) -> dict[str, Any]:
        """{"step", "patterns": np [L, H, T, T] float32, "tokens": list[int], "scores": {name: np [L, H]},
        "entropy": np [L, H], **info}. Snapshots written before scores were tensors kept them (and the
        entropy) as nested lists in the metadata; they come back as arrays too."""
        tensors, metadata = _read_tensors(self._snapshot_path(step), "snapshot")
        try:
            info = json.loads(metadata.get("info", "{}"))
        except json.JSONDecodeError:
            info = {}
        out = {"step": step, **info, "patterns": tensors["patterns"].float().numpy(),
               "tokens": tensors["tokens"].tolist()}
        scores = {k[len(_SCORE):]: v.numpy() for k, v in tensors.items() if k.startswith(_SCORE)}
        scores = scores or {k: np.asarray(v, np.float32) for k, v in info.get("scores", {}).items()}
        if scores:
            out["scores"] = {n: scores[n] for n in sorted(scores, key=_score_order)}
        entropy = tensors["entropy"].numpy() if "entropy" in tensors else info.get("entropy")
        if entropy is not None:
            out["entropy"] = np.asarray(entropy, np.float32)
        return out

    def summary(self) -> dict[str, Any]:
        """One line about the run for listings: step, last loss, config highlights."""
        m = self.config.model
        metrics = self.metrics()
        vals = [r["val_loss"] for r in metrics if r.get("val_loss") is not None]
        return {
            "name": self.name, "path": str(self.path), "preset": self.config.preset,
            "step": self.weights_step(), "steps": self.config.train.steps,
            "loss": metrics[-1].get("loss") if metrics else None, "val_loss": vals[-1] if vals else None,
            "status": self.state().get("status", "new"), "corpus": self.config.data.corpus,
            "model": (f"{m.n_layers}L {m.n_heads}H d{m.d_model} ctx{m.n_ctx} "
                      f"{m.pos_emb} {m.norm_position}-{m.norm} {m.mlp}"),
        }


def _score_order(name: str) -> tuple[int, str]:
    return (SCORE_NAMES.index(name), "") if name in SCORE_NAMES else (len(SCORE_NAMES), name)


def _lift_entropy(record: dict[str, Any]) -> dict[str, Any]:
    """A metrics record with entropy_mean at the top level, where older runs kept it in "extra"."""
    extra = record.get("extra")
    if isinstance(extra, dict) and "entropy_mean" in extra:
        record = {**record, "entropy_mean": extra["entropy_mean"],
                  "extra": {k: v for k, v in extra.items() if k != "entropy_mean"}}
    return record


def _open_into(path: Path, runs: list[Run]) -> None:
    with contextlib.suppress(RunError):  # an unreadable folder is left out of the list
        runs.append(Run.open(path))


def list_runs(root: Path = Path("checkpoints")) -> list[Run]:
    """Every readable run folder under root, sorted by name: first the ones directly under it, then those
    one level down in a group folder, by group (an ablation's or a sweep's output folder holds one run per
    arm or cell and seed: ``root/ablate-residual/nores-2L-seed1``). Unreadable ones are skipped; folders
    starting with '.' or '_' (uploaded texts, temporary files) are not groups."""
    root = Path(root)
    top: list[Run] = []
    grouped: list[Run] = []
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if (path / CONFIG).exists():
            _open_into(path, top)
        elif path.is_dir() and not path.name.startswith((".", "_")):
            for sub in sorted(path.iterdir()):
                if (sub / CONFIG).exists():
                    _open_into(sub, grouped)
    return top + grouped


def run_label(path: Path, root: Path) -> str:
    """A run's name in the store: its folder's path under root, '/'-separated ('demo',
    'ablate-residual/nores-2L-seed1'); the folder's name for a run outside root."""
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return Path(path).name
