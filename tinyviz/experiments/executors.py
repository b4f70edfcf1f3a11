"""Where a sweep's runs train: this machine's cores (a process pool) or a Ray cluster.

Both executors take the same jobs (one dict per cell x seed, see ``tinyviz.experiments.sweep``) and
yield one result dict per finished run, in the order runs finish, so the driver can write each run's
folder and move the progress bar as they come. A job trains with one torch thread wherever it runs,
so the numbers of a run do not depend on the executor, the node or a retry.

Ray is an optional extra (``pip install -e '.[ray]'``); it is imported only by ``RayExecutor``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import queue as queue_mod
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from tinyviz.config import RunConfig

RAY_VERSION = "2.60.0"  # pinned in pyproject.toml's [ray] extra, requirements-ray.txt and requirements-dev.txt
RAY_INSTALL = f"pip install -e '.[ray]' (or pip install ray=={RAY_VERSION})"
SAMPLE_TOKENS = 120  # greedy sample per run, from the start of the probe prompt
PROGRESS_EVERY = 10  # a worker reports its step this often
CONNECT_TIMEOUT_S = 5.0  # how long to wait for a Ray head's port to answer before saying it does not

OnStep = Callable[[int, int], None]  # (job id, steps done)


# -- one run ----------------------------------------------------------------------------------------

_worker: dict[str, Any] = {}  # the progress queue and stop event of a pool worker process


def _init_worker(progress_queue, stop_event) -> None:
    import torch

    torch.set_num_threads(1)
    _worker.update(queue=progress_queue, stop=stop_event)


def node_name() -> str:
    """This process's node: the host name, plus the Ray node id's first 8 hex digits inside a Ray task
    (two Ray nodes on one machine share a host name)."""
    host = socket.gethostname()
    with contextlib.suppress(Exception):  # not inside Ray, or Ray not installed
        import ray

        if ray.is_initialized():
            return f"{host}/{ray.get_runtime_context().get_node_id()[:8]}"
    return host


def train_one(job: dict, on_step: OnStep | None = None, stop: threading.Event | None = None) -> dict:
    """Train one cell x seed into job["path"]; return its numbers and extras.

    The result holds: id, cell, seed, path, status, message, steps_done, n_params, d_vocab,
    causal_val_loss (val loss with the causal mask on), sample (greedy text), health (codes),
    elapsed (training seconds), wall_s (set-up + training + evaluation), tokens_per_s, unigram, node.
    """
    from tinyviz.model.transformer import Transformer
    from tinyviz.training import health
    from tinyviz.training.session import TrainingSession

    t0 = time.perf_counter()
    q, mp_stop = _worker.get("queue"), _worker.get("stop")
    cfg = RunConfig.from_dict(job["config"])
    if job.get("reused_from"):  # a finished copy (see adopt_run): open it where it stopped, at its last step
        session = TrainingSession.resume(Path(job["path"]))
    else:
        session = TrainingSession.start(cfg, Path(job["path"]), overwrite=True)

    def report(m) -> None:
        if on_step is not None:
            on_step(job["id"], m.step)
        elif q is not None and (m.step % PROGRESS_EVERY == 0 or m.step == cfg.train.steps):
            q.put((job["id"], m.step))

    status = session.train(stop=stop or mp_stop, on_step=report)
    trainer, model = session.trainer, session.trainer.model
    causal_val = None
    if status != "failed":
        if model.cfg.causal:
            causal_val = trainer.evaluate("val")
        else:  # the same weights with the mask on: what generation, which cannot see the future, faces
            masked = Transformer(dataclasses.replace(model.cfg, causal=True)).to(trainer.device)
            masked.load_state_dict(model.state_dict())
            trainer.model, trainer.forward = masked, masked
            causal_val = trainer.evaluate("val")
            trainer.model, trainer.forward = model, model
    sample = session.preview(job.get("sample_tokens", SAMPLE_TOKENS)) if status != "failed" else ""
    metrics = session.run.metrics()
    unigram = health.unigram_entropy(trainer.data.train.numpy(), model.cfg.d_vocab)
    warnings = health.health_checks(metrics, vocab_size=model.cfg.d_vocab, unigram_entropy=unigram,
                                    causal=model.cfg.causal)
    tokens = session.step * cfg.train.batch_size * cfg.model.n_ctx
    return {
        "id": job["id"], "cell": job["cell"], "seed": job["seed"], "path": job["path"], "status": status,
        "message": session.message, "steps_done": session.step, "n_params": model.n_params(non_embedding=False),
        "d_vocab": session.run.config.model.d_vocab, "causal_val_loss": causal_val, "sample": sample,
        "health": sorted({w.code for w in warnings}), "elapsed": trainer.elapsed,
        "wall_s": time.perf_counter() - t0, "tokens_per_s": tokens / trainer.elapsed if trainer.elapsed else None,
        "unigram": unigram, "node": node_name(), "reused_from": job.get("reused_from"),
    }


# -- runs trained before ----------------------------------------------------------------------------

def config_key(config: dict) -> str:
    """What fixes a run's numbers: its config without the preset (a label) and model.d_vocab (which the
    data and tokenizer fields fix: training sets it to the fitted tokenizer's size)."""
    c = {k: v for k, v in config.items() if k != "preset"}
    c["model"] = {k: v for k, v in c["model"].items() if k != "d_vocab"}
    return json.dumps(c, sort_keys=True)


def reuse_index(folders: list[str] | tuple[str, ...]) -> dict[str, Path]:
    """config key -> a finished run in one of folders (a sweep's or an ablation's output folder, or a runs
    folder): trained to its last step by this torch version. A seeded run is bit-for-bit repeatable, so such a
    run is what training its config again here would give."""
    import torch

    from tinyviz.training.runs import Run, RunError

    index: dict[str, Path] = {}
    for folder in folders:
        if not Path(folder).is_dir():
            raise ValueError(f"--reuse {folder}: no such folder; pass a sweep's or an ablation's output folder.")
        for path in sorted(p.parent for p in Path(folder).glob("*/config.json")):
            try:
                run = Run.open(path)
                done = run.state().get("status") == "done" and run.weights_step() == run.config.train.steps
            except (RunError, OSError, ValueError):
                continue
            if done and run.meta.get("torch_version") == torch.__version__:
                index.setdefault(config_key(run.config.to_dict()), path)
    return index


def adopt_run(job: dict, source: Path) -> dict | None:
    """Put the finished run at source in the job's folder (copied, its preset label the job's) and evaluate it
    as train_one does, with one thread; None when it cannot be opened exactly (its corpus changed, say) and
    the job must train."""
    from tinyviz.training.runs import RunError, atomic_write_json

    target = Path(job["path"])
    if source.resolve() != target.resolve():
        tmp = target.with_name(f".{target.name}.adopt")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        raw = json.loads((tmp / "config.json").read_text(encoding="utf-8"))
        atomic_write_json(tmp / "config.json", {**raw, "preset": job["config"]["preset"]})
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    try:
        with one_torch_thread():  # the numbers of a worker
            return train_one({**job, "reused_from": str(source)})
    except RunError:
        return None


@contextlib.contextmanager
def one_torch_thread():
    """This process trains with one torch thread for the duration, as every worker does, so its numbers are theirs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def one_thread_env():
    """Spawned workers inherit this environment: one OpenMP thread each (two spinning pools on two cores crawl)."""
    old = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -- this machine ----------------------------------------------------------------------------------

class LocalExecutor:
    """Runs on this machine: in this process when workers == 1, else in spawned worker processes."""

    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = min(2, os.cpu_count() or 1) if workers is None else workers
        if self.workers < 1:
            raise ValueError(f"--workers {self.workers} must be at least 1.")

    def describe(self) -> str:
        return f"{self.workers} local worker process(es)" if self.workers > 1 else "this process"

    def check(self, jobs: list[dict]) -> None:
        """Before anything is written: a run on a device this machine lacks fails here, in one sentence."""
        from tinyviz.training.trainer import pick_device

        for device in sorted({j["config"]["train"]["device"] for j in jobs}):
            pick_device(device)

    def run(self, jobs: list[dict], on_step: OnStep, stop: threading.Event | None = None) -> Iterator[dict]:
        workers = min(self.workers, len(jobs))
        if workers <= 1:
            yield from self._in_process(jobs, on_step, stop)
        else:
            yield from self._pool(jobs, workers, on_step, stop)

    @staticmethod
    def _in_process(jobs, on_step, stop) -> Iterator[dict]:
        with one_torch_thread():
            for job in jobs:
                if stop is not None and stop.is_set():
                    return
                yield train_one(job, on_step=on_step, stop=stop)

    @staticmethod
    def _pool(jobs, workers, on_step, stop) -> Iterator[dict]:
        ctx = multiprocessing.get_context("spawn")
        progress, mp_stop = ctx.Queue(), ctx.Event()

        def drain(block: bool) -> None:
            with contextlib.suppress(queue_mod.Empty, OSError, ValueError):
                on_step(*progress.get(timeout=0.2) if block else progress.get_nowait())
                while True:
                    on_step(*progress.get_nowait())

        with one_thread_env(), ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                                                   initargs=(progress, mp_stop)) as pool:
            pending = {pool.submit(train_one, job) for job in jobs}
            try:
                while pending:
                    drain(block=True)
                    if stop is not None and stop.is_set():
                        mp_stop.set()
                    done = {f for f in pending if f.done()}
                    pending -= done
                    for f in done:
                        drain(block=False)  # this run's last steps before its result
                        yield f.result()
            except BaseException:
                mp_stop.set()
                for f in pending:
                    f.cancel()
                raise


# -- a Ray cluster ---------------------------------------------------------------------------------

class RayMissing(ValueError):
    pass


def import_ray():
    """The ray module, or a sentence saying how to install it."""
    try:
        import ray
    except ImportError:
        raise RayMissing(f"--executor ray needs Ray, which is not installed here; install the extra with "
                         f"{RAY_INSTALL}, or use --executor local.") from None
    return ray


def task_resources(config: dict, gpus_per_run: float = 1.0) -> dict[str, float]:
    """What one run asks Ray for: one CPU (it trains with one thread), and gpus_per_run GPUs when the
    run's device is cuda (a fraction packs several small runs onto one GPU)."""
    if not 0 < gpus_per_run <= 8:
        raise ValueError(f"--gpus-per-run {gpus_per_run} must be above 0 and at most 8 (0.25 packs four runs "
                         "on one GPU).")
    res = {"num_cpus": 1.0, "num_gpus": 0.0}
    if config["train"]["device"] == "cuda":
        res["num_gpus"] = float(gpus_per_run)
    return res


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise a sentence when nothing listens at a host:port Ray address (ray.init would retry for a minute)."""
    if address in ("", "auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--ray-address {address!r} must look like HOST:PORT (e.g. 127.0.0.1:6379) or auto.")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise ValueError(f"no Ray cluster answers at {address} ({e.strerror or e}); start one with "
                         "`ray start --head` and pass the address it prints, or use --executor local.") from None


def _ray_train(job: dict, marker: str | None) -> dict:
    """A Ray task: train one job. When this node sees the sweep's folder (marker exists) the run is written
    in place; otherwise it trains in a temporary folder and its files travel back in the result."""
    import torch

    torch.set_num_threads(1)
    if marker is not None and os.path.exists(marker):
        return {**train_one(job), "shared": True}
    tmp = Path(tempfile.mkdtemp(prefix="tinyviz-run-"))
    try:
        local = tmp / Path(job["path"]).name
        res = train_one({**job, "path": str(local)})
        files = {str(p.relative_to(local)): p.read_bytes() for p in sorted(local.rglob("*")) if p.is_file()}
        return {**res, "path": job["path"], "shared": False, "files": files}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_returned_run(path: Path, files: dict[str, bytes]) -> None:
    """Write a run that came back from another node: into a hidden sibling, then renamed over path,
    so the folder is either the old one or the whole new run, never half of it."""
    path = Path(path)
    incoming = path.with_name(f".{path.name}.incoming")
    shutil.rmtree(incoming, ignore_errors=True)
    for rel, data in files.items():
        target = incoming / rel
        if incoming.resolve() not in target.resolve().parents:
            raise ValueError(f"a returned run holds a file outside its folder ({rel!r}); it was not written.")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    if path.exists():
        shutil.rmtree(path)
    os.replace(incoming, path)


class RayExecutor:
    """Runs each job as one Ray task on an existing cluster (address "auto" finds one started with
    `ray start`; None starts a private one on this machine). A task whose worker dies is retried
    (max_retries), from its first step, so its numbers equal an undisturbed run's."""

    name = "ray"

    def __init__(self, address: str | None = "auto", gpus_per_run: float = 1.0, max_retries: int = 3,
                 shared: bool | None = None, num_cpus: int | None = None):
        self.ray = import_ray()
        self.address, self.gpus_per_run, self.max_retries = address, gpus_per_run, max_retries
        self.shared = shared  # None: each task looks for the sweep folder; False: always send the files back
        task_resources({"train": {"device": "cpu"}}, gpus_per_run)  # a bad --gpus-per-run fails before connecting
        if address is not None:
            check_reachable(address)
        import logging

        try:
            self.ray.init(address=address, num_cpus=num_cpus if address is None else None,
                          include_dashboard=False if address is None else None, log_to_driver=False,
                          logging_level=logging.ERROR, configure_logging=True)
        except (ConnectionError, RuntimeError, TimeoutError, ValueError) as e:
            where = "a Ray cluster on this machine (auto)" if address == "auto" else f"Ray at {address}"
            raise ValueError(f"could not connect to {where} ({str(e).splitlines()[0][:160]}); start one with "
                             "`ray start --head`, pass its address with --ray-address, or use --executor local."
                             ) from None
        self._remote = self.ray.remote(_ray_train)

    def describe(self) -> str:
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        cpus = sum(n.get("Resources", {}).get("CPU", 0) for n in nodes)
        gpus = sum(n.get("Resources", {}).get("GPU", 0) for n in nodes)
        return f"Ray, {len(nodes)} node(s), {cpus:g} CPU(s)" + (f", {gpus:g} GPU(s)" if gpus else "")

    @property
    def slots(self) -> int:
        """How many one-CPU runs the cluster holds at once."""
        return int(self.ray.cluster_resources().get("CPU", 1))

    def check(self, jobs: list[dict]) -> None:
        """Runs that ask for GPUs the cluster does not have would wait forever: say so before anything runs."""
        need = max((task_resources(j["config"], self.gpus_per_run)["num_gpus"] for j in jobs), default=0.0)
        if need == 0:
            return
        per_node = [n.get("Resources", {}).get("GPU", 0) for n in self.ray.nodes() if n.get("Alive")]
        if not any(per_node):
            raise ValueError("the runs ask for a GPU (device=cuda) but the Ray cluster has none; start its nodes on "
                             "machines with GPUs (ray start --num-gpus N), or use device=cpu.")
        if need > max(per_node):
            raise ValueError(f"each run asks for {need:g} GPUs but no Ray node has more than {max(per_node):g}; "
                             "lower --gpus-per-run (a fraction packs several runs on one GPU).")

    def run(self, jobs: list[dict], on_step: OnStep, stop: threading.Event | None = None,
            marker: Path | None = None) -> Iterator[dict]:
        ray = self.ray
        use_marker = None if self.shared is False or marker is None else str(Path(marker).resolve())
        pending = {}
        for job in jobs:
            res = task_resources(job["config"], self.gpus_per_run)
            ref = self._remote.options(num_cpus=res["num_cpus"], num_gpus=res["num_gpus"],
                                       max_retries=self.max_retries, retry_exceptions=False,
                                       scheduling_strategy="SPREAD").remote(job, use_marker)
            pending[ref] = job
        try:
            while pending:
                if stop is not None and stop.is_set():
                    return
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        res = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:  # the run itself raised: its own sentence
                        cause = e.as_instanceof_cause()
                        raise ValueError(f"run {Path(job['path']).name} failed on the cluster: "
                                         f"{str(cause).strip().splitlines()[-1]}") from None
                    except ray.exceptions.RayError as e:  # its worker or node died more than max_retries times
                        raise ValueError(f"run {Path(job['path']).name} was lost {self.max_retries + 1} times "
                                         f"({type(e).__name__}); check the cluster's nodes and run the sweep "
                                         "again.") from None
                    if "files" in res:
                        write_returned_run(Path(job["path"]), res.pop("files"))
                    on_step(job["id"], res["steps_done"])
                    yield res
        finally:
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ray.shutdown()


def make_executor(name: str, workers: int | None = None, address: str | None = None,
                  gpus_per_run: float = 1.0) -> LocalExecutor | RayExecutor:
    """--executor local|ray. For ray, address None means $TINYVIZ_RAY_ADDRESS, else "auto"."""
    if name == "local":
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(address or os.environ.get("TINYVIZ_RAY_ADDRESS") or "auto", gpus_per_run)
    raise ValueError(f"--executor {name!r} is not known; use local or ray.")
