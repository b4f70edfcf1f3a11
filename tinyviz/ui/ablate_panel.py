"""Compare page section: launch an ablation preset in the background, watch its progress, see its figure.

The ablation runs as ``python -m tinyviz ablate`` in a child process held in ``st.cache_resource``,
so it keeps going across reruns and page switches. A child process rather than a thread: its
workers are spawned processes, which would otherwise re-import the page script as their main
module, and the app's own torch threads stay untouched. Progress is read from the run folders'
metrics files, the figure and summary from the finished folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

from tinyviz.data import corpora
from tinyviz.experiments import ablate, ablations
from tinyviz.training.runs import metrics_lines_since
from tinyviz.ui import loaders, state, widgets


@dataclass
class AblationJob:
    preset: str
    out: Path
    folders: list[Path]  # the run folders it will write
    total: int  # steps over every run
    proc: subprocess.Popen
    log: Path  # the child's stderr
    started: float = field(default_factory=time.time)

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def done_steps(self) -> int:
        """Steps logged by this ablation's runs so far (a folder left from an earlier launch counts 0)."""
        return min(sum(metrics_lines_since(folder, self.started) for folder in self.folders), self.total)

    def error(self) -> str:
        """The CLI's one-sentence error, or the end of its output."""
        try:
            lines = [ln for ln in self.log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "the ablation process ended without output."
        errors = [ln for ln in lines if ln.startswith("error:")]
        return errors[-1] if errors else (lines[-1][-300:] if lines else f"exit code {self.proc.returncode}")

    def stop(self) -> None:
        if self.running:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the CLI and its workers


class AblationJobs:
    """One ablation at a time for the whole app (it already uses min(2, cores) worker processes)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.job: AblationJob | None = None

    def start(self, preset: str, root: Path, seeds: int, steps: int, corpus: str) -> AblationJob:
        ab = ablations.get(preset)
        ablations.base_config(ab, steps, corpus)  # a bad value fails here, in the page, with the config's sentence
        with self.lock:
            if self.job is not None and self.job.running:
                raise RuntimeError(f"the ablation {self.job.preset!r} is still running; stop it or wait for it.")
            out = root / f"ablate-{preset}"
            out.mkdir(parents=True, exist_ok=True)
            (out / ablate.RESULT).unlink(missing_ok=True)  # is_finished() says False until this run writes it
            log = out / "ablate.log"
            cmd = [sys.executable, "-m", "tinyviz", "ablate", preset, "--seeds", str(seeds), "--steps", str(steps),
                   "--corpus", corpus, "--out", str(out)]
            address = ray_address()
            if address:  # the grid goes to the cluster; the CLI says in one sentence if it cannot reach it
                cmd += ["--executor", "ray", "--ray-address", address]
            with open(log, "w", encoding="utf-8") as err:
                proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
            folders = [out / ablate.run_folder(a.name, s) for a in ab.arms for s in range(seeds)]
            self.job = AblationJob(preset, out, folders, len(folders) * steps, proc, log)
            return self.job


def ray_address() -> str:
    """The Ray cluster the launcher sends its grids to: $TINYVIZ_RAY_ADDRESS (HOST:PORT or auto), or ''."""
    return os.environ.get("TINYVIZ_RAY_ADDRESS", "").strip()


@st.cache_resource(show_spinner=False)
def jobs() -> AblationJobs:
    return AblationJobs()


def render(root: Path = Path("checkpoints")) -> None:
    """The 'launch an ablation preset' section."""
    st.subheader("Launch an ablation preset")
    st.caption("Trains every arm of a preset for each seed (same init and data order per seed) in parallel "
               "(local worker processes or Ray tasks), then draws the loss curves and checks the preset's claim; the "
               "same as `python -m tinyviz ablate PRESET` (see docs/ablations.md).")
    address = ray_address()
    if address:
        st.caption(f":material/hub: Runs on the Ray cluster at `{address}` (from TINYVIZ_RAY_ADDRESS), one task per "
                   "arm and seed; its runs come back into this app's run folder.")
    else:
        st.caption(":material/computer: Runs on this machine's cores. To send the grid to a Ray cluster, start "
                   "the app with TINYVIZ_RAY_ADDRESS=HOST:PORT (or auto) set; see docs/sweeps.md.")
    state.default(state.ABLATE_PRESET, "residual")
    name = st.selectbox("Preset", list(ablations.ABLATIONS), key=state.ABLATE_PRESET)
    ab = ablations.get(name)
    st.caption(f"Claim: {ab.claim}  \nArms: {', '.join(a.name for a in ab.arms)}.")
    cols = st.columns(3)
    seeds = cols[0].number_input("Seeds", 1, 5, ab.seeds, key=f"{state.ABLATE_SEEDS}_{name}")
    steps = cols[1].number_input("Steps per run", 10, 5000, ab.steps, step=50, key=f"{state.ABLATE_STEPS}_{name}")
    corpus = cols[2].text_input("Corpus", "tinytales", key=state.ABLATE_CORPUS,
                                help="a built-in corpus name or a path to a .txt file")
    registry = jobs()
    busy = registry.job is not None and registry.job.running
    if st.button("Run the ablation", icon=":material/play_arrow:", disabled=busy, key=f"{state.ABLATE_PRESET}_go"):
        try:
            if not corpora.is_builtin(corpus.strip()) and (off := loaders.server_paths_off()):
                raise ValueError(off)
            registry.start(name, root, int(seeds), int(steps), corpus.strip())
        except (ValueError, RuntimeError) as e:
            st.error(str(e))
    job = registry.job
    if job is not None and job.running:
        _progress()
    elif job is not None:
        _result(job)


@st.fragment(run_every=1.0)
def _progress() -> None:
    job = jobs().job
    if not job.running:
        st.rerun()  # the whole page, which draws the result outside this polling fragment
    done = job.done_steps()
    frac = done / job.total if job.total else 0.0
    elapsed = time.time() - job.started
    eta = f", about {elapsed * (1 - frac) / frac:.0f} s left" if frac > 0.02 else ""
    st.progress(frac, text=f"{job.preset}: {done:,} / {job.total:,} steps{eta}")
    st.button("Stop", key=f"{state.ABLATE_PRESET}_stop", on_click=job.stop, icon=":material/stop:")


def _result(job: AblationJob) -> None:
    if job.proc.returncode != 0 or not ablate.is_finished(job.out):
        st.warning(f"{job.preset}: " + ("stopped." if job.proc.returncode == -signal.SIGTERM else job.error()))
        return
    label, sentence = ablate.read_result(job.out)["verdict"]
    st.success(f"{job.preset}: Verdict: {label}. {sentence}")
    fig = ablate.loss_figure(ablate.load_metrics(job.out), f"ablation {job.preset}",
                             smoothing=widgets.smoothing(state.ABLATE_SMOOTHING))
    widgets.chart(fig, f"ablation-{job.preset}", key=f"ablate_fig_{job.preset}")
    with st.expander("Summary: table, arms and rule"):
        st.markdown(ablate.read_summary(job.out))
