"""Train: configure a run (corpus, tokenizer, preset, every switch), start it, watch it live."""

import hashlib

import streamlit as st

from tinyviz.config import BPE_VOCAB_MAX, BPE_VOCAB_MIN, CHOICES, PRESETS, preset
from tinyviz.data import corpora
from tinyviz.data.text import MAX_CORPUS_BYTES, CorpusError, decode_bytes
from tinyviz.training.runs import RunError, atomic_write, check_run_name
from tinyviz.ui import config_form, loaders, state, train_panel, widgets
from tinyviz.ui.registry import MAX_CONCURRENT, RegistryFull, registry

BUILTIN, UPLOAD, PATH = "Built-in corpus", "Upload a .txt", "A file path"


def _free_name(base: str) -> str:
    n = 1
    while (loaders.runs_root() / f"{base}-{n}").exists():
        n += 1
    return f"{base}-{n}"


def _corpus_widgets(preset_name: str) -> dict:
    """The data section's values, each field starting at the preset's value (keyed by the preset, as the
    model and training fields are); an uploaded text is saved under the runs folder so the run can resume."""
    base, prefix = preset(preset_name).data, f"cfg_{preset_name}_data"
    state.default(state.TRAIN_SOURCE, BUILTIN)
    source = st.segmented_control("Corpus", [BUILTIN, UPLOAD, PATH], key=state.TRAIN_SOURCE, required=True,
                                  persist_state="session")
    c = st.columns(4)
    data = {}
    if source == BUILTIN:
        names = list(corpora.CORPORA)
        # the corpus is the person's choice across presets, unless the preset names one itself
        key = f"{prefix}_corpus" if "corpus" in PRESETS[preset_name]["data"] else "train_corpus"
        name = c[0].selectbox("Built-in corpus", names, index=names.index(base.corpus) if base.corpus in names else 0,
                              key=key, persist_state="session")
        data["corpus_chars"] = c[1].number_input("Characters", 1_000, 5_000_000, base.corpus_chars, step=10_000,
                                                 key=f"{prefix}_corpus_chars", persist_state="session",
                                                 help="how much text to generate from the built-in corpus")
        data["corpus_seed"] = c[2].number_input("Corpus seed", 0, 10**6, base.corpus_seed, key=f"{prefix}_corpus_seed",
                                                persist_state="session")
        st.caption(corpora.CORPORA[name])
        data["corpus"] = name
    elif source == UPLOAD:
        cap = f"{MAX_CORPUS_BYTES // 1_000_000} MB"
        file = st.file_uploader(f"A UTF-8 text file, at most {cap}", type=["txt"], key="train_upload",
                                help=f"A bigger file is refused by the uploader itself (marked red, the reason on "
                                     f"hover) and never reaches tinyviz: cut the text below {cap} and upload it again.")
        if file is None:
            return {}
        try:
            text = decode_bytes(file.getvalue(), source=f"'{file.name}'")
        except CorpusError as e:
            st.error(widgets.sentence(e))
            return {}
        path = loaders.runs_root() / "_corpora" / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.txt"
        try:
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write(path, text.encode("utf-8"))
        except (OSError, RunError) as e:  # a full disk or a read-only runs folder
            reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or "the write failed"
            st.error(f"Could not save {file.name} in {path.parent}/ ({reason}), which a run needs to resume. "
                     "Free some disk space or make that folder writable, then upload the file again.")
            return {}
        st.caption(f"{len(text):,} characters, {len(set(text))} distinct; saved as {path}.")
        data["corpus"] = str(path)
    elif off := loaders.server_paths_off():
        st.warning(off, icon=":material/lock:")
    else:
        data["corpus"] = st.text_input("Path to a .txt file", key="train_corpus_path", persist_state="session")
    tokenizers = list(CHOICES["tokenizer"])
    data["tokenizer"] = c[-1].selectbox("Tokenizer", tokenizers, index=tokenizers.index(base.tokenizer),
                                        key=f"{prefix}_tokenizer", persist_state="session")
    if data["tokenizer"] == "bpe":
        data["bpe_vocab_size"] = c[-1].number_input("BPE vocabulary", BPE_VOCAB_MIN, BPE_VOCAB_MAX,
                                                    base.bpe_vocab_size, step=50,
                                                    key=f"{prefix}_bpe", persist_state="session")
    return data


def _start(name: str, cfg) -> None:
    try:
        check_run_name(name)
        job = registry().start(cfg, loaders.runs_root() / name)
    except (RegistryFull, RunError, CorpusError, ValueError) as e:
        state.put(state.TRAIN_MSG, ("error", widgets.sentence(e)))
        return
    state.set_run(job.run_id)
    state.put(state.TRAIN_MSG, ("success", f"Started {name}."))



st.title("Train")

with st.expander("New run", expanded=not registry().running(), icon=":material/add:"):
    state.default(state.TRAIN_PRESET, "micro")
    c1, c2 = st.columns(2)
    preset_name = c1.selectbox("Preset", list(PRESETS), key=state.TRAIN_PRESET, persist_state="session",
                               help="sizes and training settings to start from; change any field below")
    base = preset(preset_name)  # every field below starts at the preset's value: the CLI's `--preset` config
    prefix = f"cfg_{preset_name}"  # a new preset resets the fields below to its values
    data = _corpus_widgets(preset_name)
    st.markdown("#### Model")
    model = config_form.model_widgets(base.model, f"{prefix}_model")
    st.markdown("#### Training")
    train = config_form.train_widgets(base.train, f"{prefix}_train")
    corpus_label = data.get("corpus", "corpus") if data.get("corpus") in corpora.CORPORA else "text"
    suggested = _free_name(f"{preset_name}-{corpus_label}")  # keyed by it, so the box moves on after a start
    name = c2.text_input("Run name", value=suggested, key=f"train_name_{suggested}",
                         help=f"a folder in {loaders.runs_root()}/")
    busy = len(registry().running()) >= MAX_CONCURRENT
    if busy:
        st.warning(f"{MAX_CONCURRENT} runs are training, the most at once; stop one to start another.")
    if st.button("Start training", key="train_start", type="primary", icon=":material/play_arrow:",
                 disabled=not data.get("corpus")):
        try:
            cfg = config_form.build(base, model, train, {**base.data.to_dict(), **data})
        except ValueError as e:
            state.put(state.TRAIN_MSG, ("error", widgets.sentence(e)))
        else:
            _start(name.strip(), cfg)
        st.rerun()

msg = state.get(state.TRAIN_MSG)
if msg:
    if msg[0] == "error":
        st.error(msg[1])
    else:  # a toast, which goes away: a banner would stay for the whole run (the panel redraws only itself)
        st.toast(msg[1], icon=":material/play_arrow:")
    state.put(state.TRAIN_MSG, None)

run_id = state.get(state.RUN)
if run_id:
    st.caption("The run below is the sidebar's current run; runs keep training when you leave this page.")
    try:
        train_panel.live_panel(run_id)
    except RunError as e:
        st.error(str(e))
