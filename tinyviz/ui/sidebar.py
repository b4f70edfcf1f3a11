"""The sidebar every page shares: the run picker, a zipped-run upload, the write-up bundle."""

from __future__ import annotations

import zlib
from pathlib import Path

import streamlit as st

from tinyviz.analysis import export
from tinyviz.training.runs import Run, RunError
from tinyviz.training.runzip import export_run_zip
from tinyviz.ui import bundle_store, live_feed, live_parts, loaders, state, widgets
from tinyviz.ui.registry import live_fragment, registry
from tinyviz.ui.uploads import UploadError, extract_run_zip, import_server_model, import_uploaded_model

LIVE_S = 10.0  # without the live feed: the status line's refresh while a run trains (a fragment rerun)
FEED_S = live_feed.EVERY_S  # with it: how often the feed pushes the status line (as the Train page's numbers)
SLIDER_S = 30.0  # with it: the slider takes a newly kept step at most this often (a rerun of its fragment)
URL_PARAM = "run"  # ?run=NAME: the current run's folder name
STEP_PARAM = "step"  # ?step=N: the step control's choice (absent: the latest)


def _label(run_id: str) -> str:
    """The run's name under the runs folder ('demo', 'ablate-residual/nores-2L-seed1'): unique, and the
    same while the run trains (the status is in the caption)."""
    return loaders.label(run_id)


def _status(run_id: str) -> str:
    """'step 3000 of 3000 · done · 2L 2H ...' from the run folder (while a run trains, _StatusView's line)."""
    try:
        return _line(loaders.open_run(run_id).summary())
    except RunError as e:
        return str(e)


def _line(summary: dict) -> str:
    return f"step {summary['step']} of {summary['steps']} · {summary['status']} · {summary['model']}"


def _download_run(run_id: str) -> None:
    """The current run as a zip that 'Open a zipped run folder' below opens again (made only when clicked)."""
    st.download_button("Download this run (.zip)", data=lambda: export_run_zip(Path(run_id)),
                       file_name=f"{Path(run_id).name}.zip", mime="application/zip", key="sidebar_run_zip",
                       on_click="ignore", icon=":material/download:", type="tertiary",
                       help="config, tokenizer, weights, optimizer state, metrics and snapshots: send it to "
                       "someone, or open it again with the upload below")


def _live_box(current: str | None) -> None:
    """The current run's status line, who trains, and its "Weights at step" slider.

    While anything trains they are one fragment, and a move of the slider then reruns the whole page, not only
    the fragment. The status lines are a light element the live feed (tinyviz.ui.live_feed) keeps up to date
    every FEED_S without a rerun; the fragment reruns when a new step is kept (at most every SLIDER_S, so the
    slider offers it) and once when the last run ends. Without the feed it reruns every LIVE_S: every rerun
    costs the browser 0.1-0.3 s of CPU, which a training on a 2-core laptop needs (benchmarks/app_speed.py)."""
    running = [j.run_id for j in registry().running()]
    if not running:
        state.put(state.STEP_MOVED, False)  # outside a fragment a move already reruns the whole page
        if current:
            st.caption(_status(current))
        _step_slider(current)
        return
    in_page_run = [True]  # False once this page run is over: the fragment's own reruns see False
    feed = live_feed.feed()

    def draw():
        view = _StatusView(current)
        answer = view()
        url = feed.publish(("sidebar", current), view) if feed else None
        source = {"url": url, "every_s": FEED_S, "version": answer["version"]} if url else None
        widgets.live_html(answer["parts"]["status"], "sidebar_status_live", source, "status", lead_s=SLIDER_S)
        _step_slider(current)
        if state.get(state.STEP_MOVED):
            state.put(state.STEP_MOVED, False)
            if not in_page_run[0]:
                st.rerun(scope="app")

    live_fragment(running, None if feed else LIVE_S, draw)
    in_page_run[0] = False


class _StatusView:
    """The feed's answer for the sidebar: the status lines ("step N of M · training · model", who trains),
    its version the current run's kept steps (a new one reruns the fragment: the slider offers it), ended
    when nothing trains any more. Called by the feed's threads: no Streamlit."""

    def __init__(self, current: str | None):
        self.registry, self.current = registry(), current
        self.line, self.model, self.run = "", "", None  # the run's line as the page run drew it
        if current:
            try:
                self.run = loaders.open_run(current)
                summary = self.run.summary()
                self.model, self.line = summary["model"], _line(summary)
            except RunError as e:
                self.run, self.line = None, str(e)

    def __call__(self) -> dict:
        jobs = self.registry.running()
        line = self.line
        job = self.registry.get(self.current) if self.run is not None else None
        if job is not None:  # trains, or trained in this server: its step and status as they are now
            snap = job.snapshot()
            status = "training" if job.alive else snap["status"]
            line = f"step {snap['step']} of {snap['total']} · {status} · {self.model}"
        html = live_parts.caption(line) if line else ""
        if jobs:
            html += live_parts.caption("Training now: " + ", ".join(Path(j.run_id).name for j in jobs))
        return {"parts": {"status": html}, "ended": not jobs,
                "version": len(self.run.history.steps()) if self.run is not None else 0}


def _on_pick(key: str) -> None:
    """Take a pick from the picker the person sees, the one the latest run drew, and no other.

    The browser can report a value for a picker drawn earlier (the key changes with the options and
    the current run): right after Start, a live-panel fragment rerun brought back the old box's
    'demo', and the session jumped to the demo run while its own run trained. Such a box is no
    longer on the page, so nobody can have picked in it."""
    if key == state.get(state.RUN_PICKER_DRAWN):
        state.set_run(st.session_state[key])


def _picker_key(ids: list[str], current: str) -> str:
    """A key that changes with the options and the current run.

    A keyed selectbox keeps its identity when its options change, and the browser then shows
    its first option (the demo) while the page shows another run; a later rerun sends that
    stale choice back and the page jumps runs. A new key draws a fresh box showing ``current``.
    """
    return f"{state.RUN_PICKER}_{zlib.crc32(chr(10).join([*ids, current]).encode()):08x}"


def _on_upload() -> None:
    file = st.session_state.get(state.UPLOAD)
    if file is None:
        return
    try:
        run = extract_run_zip(file.getvalue(), loaders.runs_root(), file.name)
    except (UploadError, RunError) as e:
        state.put(state.UPLOAD_MSG, ("error", f"Upload refused: {e}"))
        return
    state.set_run(str(run.path))
    state.put(state.UPLOAD_MSG, ("success", f"Added {run.name} from {file.name}."))


def _import(how: str) -> None:
    """Import from the uploaded files or the server path; the outcome is a sentence under the box."""
    try:
        if how == "upload":
            files = st.session_state.get(state.IMPORT_FILES) or []
            res = import_uploaded_model([(f.name, f.getvalue()) for f in files], loaders.runs_root())
        else:
            res = import_server_model(st.session_state.get(state.IMPORT_PATH, ""), loaders.runs_root(),
                                      st.session_state.get(state.IMPORT_TOKENIZER, ""))
    except (ValueError, OSError) as e:  # ImportRefused, UploadError, RunError: one sentence each
        state.put(state.IMPORT_MSG, ("error", f"Not imported: {_sentence(e)}"))
        return
    m = res.run.config.model
    state.set_run(str(res.run.path))
    notes = "".join(f" Note: {n}." for n in res.notes)
    state.put(state.IMPORT_MSG, ("success", f"Opened {res.run.name}: a {res.kind} model, {res.n_params:,} parameters, "
                                            f"{m.n_layers} layers x {m.n_heads} heads.{notes}"))


def _sentence(e: Exception) -> str:
    text = str(e) or type(e).__name__
    return text[0].upper() + text[1:]


def open_elsewhere_box() -> None:
    """'Open a model trained elsewhere': nanoGPT, llama2.c or Hugging Face, by upload or by a path on the server."""
    with st.expander("Open a model trained elsewhere", icon=":material/input:"):
        st.caption("A nanoGPT ckpt.pt with its meta.pkl, a llama2.c .bin with its tokenizer.bin, or a Hugging Face "
                   "GPT-2 / Llama folder (config.json, model.safetensors, tokenizer.json). It becomes a run here.")
        st.file_uploader("Upload the model and its tokenizer", accept_multiple_files=True, key=state.IMPORT_FILES,
                         help="50 MB per file (the app's upload cap): open bigger models by their path on "
                         "the server below")
        st.button("Open the uploaded files", key="sidebar_import_upload", on_click=_import, args=("upload",))
        st.text_input("...or a path on the server", key=state.IMPORT_PATH,
                      placeholder="out-shakespeare-char/ckpt.pt, stories15M.bin, hf/gpt2-folder")
        st.text_input("Tokenizer (optional)", key=state.IMPORT_TOKENIZER,
                      placeholder="default: the one beside the model",
                      help="tokenizer.json, meta.pkl or tokenizer.bin; needed for a GPT-2 BPE nanoGPT checkpoint")
        st.button("Open the path", key="sidebar_import_path_go", on_click=_import, args=("path",))
        msg = state.get(state.IMPORT_MSG)
        if msg:
            (st.error if msg[0] == "error" else st.success)(msg[1])


def current_run() -> tuple[list[str], str | None]:
    """Every run, and the session's current one: kept in session state; in a new session (a reload,
    a second tab, a link someone sent) the URL's ``?run=NAME``; else the first run (the demo).

    The URL's name is only looked up among the run folders' names, never used as a path. The URL
    is kept in step, and the page links carry it, so a reload or a new tab stays on this run."""
    ids = loaders.run_ids()
    current = state.get(state.RUN)
    if current not in ids:
        by_name = {_label(i): i for i in ids}
        wanted = st.query_params.get(URL_PARAM) if current is None else None
        current = by_name.get(wanted) or (ids[0] if ids else None)
        if current:
            state.set_run(current)
    if current and st.query_params.get(URL_PARAM) != _label(current):
        st.query_params[URL_PARAM] = _label(current)
    if current:
        _sync_step(current)
    return ids, current


def _sync_step(run_id: str) -> None:
    """The session's step in step with ``?step=N``: a new session takes the address's step (when the run
    kept it), later the address follows the session; no ``step`` in the address means the latest."""
    if state.STEP not in st.session_state:
        raw = st.query_params.get(STEP_PARAM)
        wanted = int(raw) if raw is not None and raw.isdigit() else None
        try:
            steps = loaders.kept_steps(run_id)
        except RunError:
            steps = []
        state.put(state.STEP, wanted if wanted in steps[:-1] else None)
    step = state.get(state.STEP)
    if step is None:
        st.query_params.pop(STEP_PARAM, None)
    elif st.query_params.get(STEP_PARAM) != str(step):
        st.query_params[STEP_PARAM] = str(step)


def link_params(current: str | None) -> dict | None:
    """Query parameters for page links: the current run's name and step, so the next page opens on them."""
    if not current:
        return None
    step = state.get(state.STEP)
    return {URL_PARAM: _label(current), **({STEP_PARAM: str(step)} if step is not None else {})}


def _on_step(key: str, latest: int) -> None:
    step = st.session_state[key]
    state.put(state.STEP, None if step == latest else step)
    state.put(state.STEP_MOVED, True)


def _step_slider(run_id: str | None) -> None:
    """The sidebar's "Weights at step" slider over the run's kept steps (latest by default); without
    weights history the slider is hidden and a sentence says why."""
    if not run_id:
        return
    try:
        run = loaders.open_run(run_id)
        steps = loaders.kept_steps(run_id)
    except RunError:
        return  # the page says what is wrong with the run
    if not run.has_weights():
        return
    if not steps:
        st.caption(f"**Weights at step**: {run.name} kept no weights history (it was trained before tinyviz "
                   "kept one, imported, or trained with history_keep=0), so every page shows its last "
                   f"weights, step {run.weights_step()}.")
        return
    shown = loaders.shown_step(run_id)
    key = f"{state.STEP_SLIDER}_{zlib.crc32(chr(10).join([run_id, *map(str, steps)]).encode()):08x}"
    st.session_state[key] = shown
    latest = steps[-1]
    st.select_slider("Weights at step", options=steps, key=key, on_change=_on_step, args=(key, latest),
                     format_func=lambda s: f"{s} (latest)" if s == latest else str(s),
                     help=f"{len(steps)} kept steps, dense early and sparse late. Heads, Predictions, Sample, "
                     "Compare and their ablations and logit lens show the model at this step.")


def run_picker(ids: list[str], current: str | None) -> None:
    """The sidebar's run selectbox, its status line, who is training, the step control and the run-zip
    upload."""
    with st.sidebar:
        st.markdown("### Run")
        if not ids:
            st.info(f"No runs in {loaders.runs_root()}/ yet. Train one on the Train page.")
        else:
            key = _picker_key(ids, current)
            state.put(state.RUN_PICKER_DRAWN, key)
            st.selectbox("Current run", ids, index=ids.index(current), key=key, format_func=loaders.display_label,
                         on_change=_on_pick, args=(key,),
                         label_visibility="collapsed", help="the demo run, every run folder in "
                         f"{loaders.runs_root()}/, then the runs of each ablation or sweep, grouped as "
                         "'folder / run' (type to filter)")
        _live_box(current if ids else None)
        if current:
            _download_run(current)
        st.file_uploader("Open a zipped run folder", type=["zip"], key=state.UPLOAD, on_change=_on_upload,
                         help="a zip of one run folder (config.json, tokenizer.json, model.safetensors, ...)")
        msg = state.get(state.UPLOAD_MSG)
        if msg:
            (st.error if msg[0] == "error" else st.success)(msg[1])
        open_elsewhere_box()


def bundle_box() -> None:
    """The figures collected with 'Add to bundle', and a zip of them with CSVs and the run's config."""
    items = state.get(state.BUNDLE)
    if items is None:  # a new session (a reload, another tab): the bundle kept on disk
        items = bundle_store.load()
        state.put(state.BUNDLE, items)
    with st.sidebar:
        st.markdown("### Write-up bundle")
        if not items:
            st.caption("Add figures with the **Bundle** button under each chart; download them here as one zip "
                       "(PNG, SVG, HTML, CSV and the run's config.json).")
            return
        for name in items:
            st.caption(f"• {name}")
        c1, c2 = st.columns(2)
        if c1.button("Build zip", key="bundle_build", icon=":material/folder_zip:"):
            with st.spinner("Rendering figures..."):
                config = _current_config()
                state.put(state.BUNDLE_ZIP, export.bundle([(n, f, d) for n, (f, d) in items.items()], config))
        if c2.button("Clear", key="bundle_clear"):
            bundle_store.clear()
            state.put(state.BUNDLE, {})
            state.put(state.BUNDLE_ZIP, None)
            st.rerun()
        built = state.get(state.BUNDLE_ZIP)
        if built:
            data, notes = built
            st.download_button("Download bundle.zip", data=data, file_name="tinyviz-bundle.zip",
                               mime="application/zip", key="bundle_download", on_click="ignore", type="primary")
            for note in notes:
                st.caption(note)


def _current_config() -> dict | None:
    run_id = state.get(state.RUN)
    if not run_id:
        return None
    try:
        run = Run.open(Path(run_id))
        return {**run.meta, **run.config.to_dict()}
    except RunError:
        return None
