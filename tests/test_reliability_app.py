"""Bad input in the app: each case ends in st.error with a sentence on the page, never an exception.

AppTest runs the pages in this process against a temporary runs folder (TINYVIZ_RUNS).
"""

import errno
import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import tomllib

from tinyviz.config import apply_overrides, preset
from tinyviz.training.session import TrainingSession

AppTest = pytest.importorskip("streamlit.testing.v1").AppTest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["n_layers=1", "n_heads=2", "d_model=16", "d_ff=32", "n_ctx=16", "batch_size=4", "eval_batches=1",
        "eval_interval=5", "snapshot_interval=5", "checkpoint_interval=5", "corpus_chars=3000",
        "steps=10", "warmup_steps=2"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "tiny"
    assert TrainingSession.start(apply_overrides(preset("micro"), TINY), out).train() == "done"
    return out


@pytest.fixture
def runs_root(tmp_path, trained, monkeypatch):
    """A runs folder holding one good run, 'tiny'."""
    root = tmp_path / "runs"
    root.mkdir()
    shutil.copytree(trained, root / "tiny")
    monkeypatch.setenv("TINYVIZ_RUNS", str(root))
    return root


def app(page=None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    at.run()
    if page:
        at.switch_page(f"app_pages/{page}.py").run()
    return at


def errors(at) -> list[str]:
    return [e.value for e in at.error]


def shows_error(at, *fragments) -> str:
    """The page shows an st.error saying every fragment, and raised nothing."""
    assert not at.exception, [e.value for e in at.exception]
    found = [e for e in errors(at) if all(f.lower() in e.lower() for f in fragments)]
    assert found, errors(at)
    return found[0]


def no_exception(at):
    assert not at.exception, [e.value for e in at.exception]


# -- server defaults ------------------------------------------------------------------------------
def test_server_defaults(monkeypatch):
    """Localhost only, XSRF and CORS protection on, an upload cap, no usage statistics, no file watcher."""
    raw = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    server = raw["server"]
    assert server["address"] in ("localhost", "127.0.0.1")
    assert server.get("enableXsrfProtection", True) is True
    assert server.get("enableCORS", True) is True
    assert server["fileWatcherType"] == "none"
    assert raw["browser"]["gatherUsageStats"] is False
    from tinyviz.data.text import MAX_CORPUS_BYTES
    from tinyviz.ui.uploads import MAX_ZIP_BYTES
    # the cap fits what the app accepts: a corpus (checked again in code) or a zipped run
    assert MAX_CORPUS_BYTES / 1e6 <= server["maxUploadSize"] <= MAX_ZIP_BYTES / 1e6
    # and Streamlit reads it so: the effective options, as `streamlit run` in the repo sees them
    from streamlit import config
    monkeypatch.chdir(ROOT)
    config.get_config_options(force_reparse=True)
    try:
        assert config.get_option("server.address") == server["address"]
        assert config.get_option("server.enableXsrfProtection") is True
        assert config.get_option("server.enableCORS") is True
        assert config.get_option("server.maxUploadSize") == server["maxUploadSize"]
        # no gc.collect(2) after every (fragment) run: it took most of the server's CPU while a run trained
        assert config.get_option("runner.postScriptGC") is False
    finally:
        config.get_config_options(force_reparse=True)


def test_training_threads_follow_the_cores_or_the_setting(monkeypatch):
    from tinyviz.ui import registry
    monkeypatch.delenv(registry.TRAIN_THREADS_ENV, raising=False)
    monkeypatch.setattr(registry.os, "cpu_count", lambda: 9)
    assert [registry.train_threads(k) for k in (0, 1)] == [9, 4]
    monkeypatch.setenv(registry.TRAIN_THREADS_ENV, "3")
    assert registry.child_env(1)["OMP_NUM_THREADS"] == "3"
    monkeypatch.setenv(registry.TRAIN_THREADS_ENV, "many")  # not a count: the default
    assert registry.child_env(0)["OMP_NUM_THREADS"] == "9"


# -- prompts --------------------------------------------------------------------------------------
def set_prompt(at, key, text):
    at.text_area(key=key).set_value(text).run()
    return at


@pytest.mark.parametrize("page, key", [("sample", "sample_prompt"), ("predictions", "pred_prompt"),
                                       ("heads", "heads_prompt")])
def test_prompt_empty(runs_root, page, key):
    at = app(page)
    no_exception(at)
    shows_error(set_prompt(at, key, ""), "mpty")


@pytest.mark.parametrize("page, key", [("sample", "sample_prompt"), ("predictions", "pred_prompt"),
                                       ("heads", "heads_prompt")])
def test_prompt_unknown_characters_are_named(runs_root, page, key):
    at = app(page)
    shows_error(set_prompt(at, key, "ab ☃ cd €"), "never saw", "'☃' (U+2603)", "'€' (U+20AC)")


PROMPT_KEYS = {"sample": "sample_prompt", "predictions": "pred_prompt", "heads": "heads_prompt"}


def known_text(runs_root, text):
    """text without the characters the tiny run's tokenizer does not know."""
    chars = json.loads((runs_root / "tiny" / "tokenizer.json").read_text())["chars"]
    return "".join(c for c in text if c in chars)


def test_prompt_longer_than_context_is_cropped_with_a_notice(runs_root):
    at = app("sample")
    long_prompt = known_text(runs_root, "the tale of the man and the dog and the cat")
    set_prompt(at, "sample_prompt", long_prompt)
    no_exception(at)
    assert any("only its last 15 tokens were used" in i.value for i in at.info), [i.value for i in at.info]


def test_sampling_sliders_cannot_leave_their_valid_ranges(runs_root):
    """Temperature < 0, top-k < 0 or > vocab, top-p outside (0, 1] cannot be entered in the app."""
    at = app("sample")
    vocab = len(json.loads((runs_root / "tiny" / "tokenizer.json").read_text())["chars"])
    t, k, p = (at.slider(key=k) for k in ("sample_temperature", "sample_top_k", "sample_top_p"))
    assert t.min == 0 and k.min == 0 and k.max == vocab and p.min > 0 and p.max == 1


# -- damaged runs ---------------------------------------------------------------------------------
def damage_weights(run: Path):
    p = run / "model.safetensors"
    p.write_bytes(p.read_bytes()[:300])


def mismatch_shapes(run: Path):
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["d_model"] = 32
    (run / "config.json").write_text(json.dumps(cfg))


def pickle_weights(run: Path):
    import pickle
    (run / "model.safetensors").write_bytes(pickle.dumps({"x": 1}))


@pytest.mark.parametrize("damage, fragment", [
    (damage_weights, "model.safetensors is damaged or not a safetensors file"),
    (mismatch_shapes, "come from different runs"),
    (pickle_weights, "not a safetensors file"),
])
@pytest.mark.parametrize("page", ["sample", "predictions", "heads"])
def test_damaged_weights_are_an_error_on_every_page(runs_root, page, damage, fragment):
    damage(runs_root / "tiny")
    shows_error(app(page), fragment)


def test_a_run_with_a_corrupt_config_does_not_break_the_app(runs_root, trained):
    shutil.copytree(trained, runs_root / "broken")
    (runs_root / "broken" / "config.json").write_text("{not json")
    at = app("sample")
    no_exception(at)
    assert not errors(at)  # the good run is shown


# -- run zip uploads ------------------------------------------------------------------------------
def zip_bytes(run: Path, extra=None, prefix="") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(run.rglob("*")):
            if f.is_file():
                zf.write(f, prefix + f.relative_to(run).as_posix())
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return buf.getvalue()


def upload_zip(at, name, data):
    at.sidebar.file_uploader(key="sidebar_upload").set_value((name, data, "application/zip")).run()
    return at


def test_upload_of_a_good_run_zip(runs_root, trained):
    at = upload_zip(app(), "shared.zip", zip_bytes(trained, prefix="shared/"))
    no_exception(at)
    assert (runs_root / "shared" / "model.safetensors").exists()
    assert any("shared" in s.value for s in at.sidebar.success)


@pytest.mark.parametrize("extra, fragment", [
    ({"../escaped.json": b"{}"}, "points outside the run folder"),
    ({"model.pkl": b"\x80\x04N."}, "not part of a tinyviz run"),
])
def test_upload_of_a_hostile_run_zip_is_refused(runs_root, trained, extra, fragment):
    at = upload_zip(app(), "evil.zip", zip_bytes(trained, extra=extra))
    shows_error(at, "Upload refused", fragment)
    assert sorted(p.name for p in runs_root.iterdir()) == ["tiny"]
    assert not (runs_root.parent / "escaped.json").exists()


def test_upload_of_something_that_is_not_a_zip(runs_root):
    at = upload_zip(app(), "photo.zip", b"\x89PNG\r\n\x1a\n" + bytes(64))
    shows_error(at, "Upload refused", "not a readable zip archive")


# -- the Train page -------------------------------------------------------------------------------
TEXT = "Mara met Tobin by the river. Tobin gave Mara a red stone, and Mara kept it.\n" * 40
TINY_FORM = {"model_n_layers": 1, "model_n_heads": 2, "model_d_model": 16, "model_d_ff": 32, "model_n_ctx": 16,
             "train_batch_size": 4, "train_warmup_steps": 0, "train_eval_interval": 5,
             "train_snapshot_interval": 5, "train_sample_interval": 0, "train_checkpoint_interval": 5}


@pytest.fixture
def registry_cleanup():
    from tinyviz.ui.registry import registry
    yield registry
    registry().stop_all()


def train_page(**form) -> AppTest:
    at = app("train")
    for name, value in {**TINY_FORM, **form}.items():
        at.number_input(key=f"cfg_micro_{name}").set_value(value)
    at.run()
    return at


def upload_corpus(at, name: str, data: bytes) -> AppTest:
    at.button_group(key="train_source").set_value("Upload a .txt").run()
    at.file_uploader(key="train_upload").set_value((name, data, "text/plain")).run()
    return at


def start(at, name="r1") -> AppTest:
    at.text_input(key=[w.key for w in at.text_input if w.key.startswith("train_name_")][0]).set_value(name)
    at.button(key="train_start").click().run()
    return at


UPLOAD_CASES = {
    "empty": (b"", "is empty"),
    "whitespace": (b"  \n\n\t ", "only whitespace"),
    "png": (b"\x89PNG\r\n\x1a\n" + bytes(300), "looks like a PNG image"),
    "nul": (b"text\x00text\x00" * 40, "NUL bytes"),
    "latin1": ("Café crème señor\n".encode("latin-1") * 40, "is not UTF-8"),
    "control": (b"abc\x1bdef\n" * 40, "control characters"),
    "one_char": (b"z" * 400, "only one distinct character"),
}


@pytest.mark.parametrize("case", UPLOAD_CASES)
def test_corpus_upload_is_checked_in_app_code(runs_root, case):
    data, fragment = UPLOAD_CASES[case]
    at = upload_corpus(app("train"), f"{case}.txt", data)
    shows_error(at, f"'{case}.txt'", fragment)
    assert at.button(key="train_start").disabled


def test_corpus_upload_over_the_limit_is_checked_in_app_code(runs_root):
    """The server cap rejects bigger uploads before the app sees them; below it the app checks the size."""
    at = upload_corpus(app("train"), "big.txt", b"a b\n" * 12_500_001)
    shows_error(at, "'big.txt' is 50 MB (50,000,004 bytes), over the 50 MB limit")
    assert not (runs_root / "_corpora").exists() or not list((runs_root / "_corpora").iterdir())


def test_corpus_upload_on_a_full_disk_is_a_sentence(runs_root, monkeypatch):
    from tinyviz.training import runs

    def disk_full(path, data):
        raise runs._write_error(path, OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(runs, "atomic_write", disk_full)
    at = upload_corpus(app("train"), "story.txt", TEXT.encode())
    shows_error(at, "Could not save story.txt", "(No space left on device)", "upload the file again")
    assert at.button(key="train_start").disabled
    assert not (runs_root / "_corpora").exists() or not list((runs_root / "_corpora").iterdir())


def test_corpus_upload_utf16_with_bom_is_decoded(runs_root):
    at = upload_corpus(app("train"), "u16.txt", TEXT.encode("utf-16"))
    no_exception(at)
    assert not errors(at) and not at.button(key="train_start").disabled


def test_corpus_shorter_than_one_example_is_an_error_at_start(runs_root, registry_cleanup):
    at = start(upload_corpus(train_page(), "short.txt", b"A tiny text, far too short."))
    shows_error(at, "tokens for", "n_ctx + 1 = 17", "use a longer text or a smaller n_ctx")
    assert not (runs_root / "r1").exists()


@pytest.mark.parametrize("path, fragment", [("{root}/nope.txt", "no file at"), ("{root}", "is a folder")])
def test_corpus_path_missing_or_a_folder(runs_root, registry_cleanup, path, fragment):
    at = train_page()
    at.button_group(key="train_source").set_value("A file path").run()
    at.text_input(key="train_corpus_path").set_value(path.format(root=runs_root)).run()
    shows_error(start(at), fragment)


@pytest.mark.parametrize("form, fragment", [
    ({"model_d_model": 18, "model_n_heads": 4}, "d_model=18 must be divisible by n_heads=4"),
    ({"model_n_kv_heads": 3}, "n_heads=2 must be divisible by n_kv_heads=3"),
    ({"model_n_layers": 0}, "n_layers=0 must be at least 1"),
    ({"train_steps": 0}, "steps=0 must be at least 1"),
    ({"train_lr": 0.0}, "lr=0.0 must be a positive number"),
    ({"train_warmup_steps": 400}, "warmup_steps=400 is longer than steps=300"),
    ({"train_batch_size": 100_000}, "batch_size=100000 is larger than the"),
])
def test_invalid_config_in_the_form_is_an_error(runs_root, registry_cleanup, form, fragment):
    at = start(train_page(**form))
    assert shows_error(at, fragment).startswith(fragment)  # a field name keeps its spelling
    assert not (runs_root / "r1").exists()


def test_a_model_too_big_for_memory_is_refused_at_start(runs_root, registry_cleanup):
    """Every size within the widgets' maxima, together far beyond memory: a sentence, no run folder."""
    at = start(train_page(model_n_layers=64, model_d_model=16_384, model_d_ff=65_536))
    shows_error(at, "training this model needs about", "of memory", "available", "make the model smaller")
    assert not (runs_root / "r1").exists()


def test_the_train_form_widgets_have_maxima(runs_root):
    """No size, step count or rate can be typed beyond a bound (a 10**12-wide model would overflow)."""
    at = app("train")
    no_exception(at)
    unbounded = [w.key for w in at.number_input if w.key.startswith("cfg_") and not w.proto.has_max]
    assert unbounded == []


@pytest.fixture
def server_address():
    """Set server.address as `streamlit run app.py --server.address X` would; put the default back after."""
    from streamlit import config
    before = config.get_option("server.address")
    yield lambda value: config.set_option("server.address", value)
    config.set_option("server.address", before)


@pytest.mark.parametrize("address, allow, readable", [
    ("localhost", "", True), ("127.0.0.1", "", True), ("::1", "", True),
    ("0.0.0.0", "", False), ("", "", False), ("192.168.1.20", "", False), ("myhost.lan", "", False),
    ("0.0.0.0", "1", True),
])
def test_a_file_path_corpus_is_off_beyond_loopback_unless_enabled(runs_root, server_address, monkeypatch,
                                                                  address, allow, readable):
    server_address(address)
    monkeypatch.setenv("TINYVIZ_ALLOW_SERVER_PATHS", allow)
    at = app("train")
    at.button_group(key="train_source").set_value("A file path").run()
    no_exception(at)
    boxes = [w for w in at.text_input if w.key == "train_corpus_path"]
    warnings = [w.value for w in at.warning if "Reading a file on the server is off" in w.value]
    if readable:
        assert boxes and not warnings
    else:
        assert not boxes and len(warnings) == 1
        assert "TINYVIZ_ALLOW_SERVER_PATHS=1" in warnings[0] and "Upload the text instead" in warnings[0]
        assert at.button(key="train_start").disabled


def test_the_ablation_panel_refuses_a_path_beyond_loopback(runs_root, server_address, tmp_path):
    server_address("0.0.0.0")
    secret = tmp_path / "secret.txt"
    secret.write_text("the server's private text " * 400)
    at = app("compare")
    at.text_input(key="ablate_corpus").set_value(str(secret)).run()
    at.button(key="ablate_preset_go").click().run()
    shows_error(at, "Reading a file on the server is off")


def test_rope_with_an_odd_head_size_is_an_error(runs_root, registry_cleanup):
    at = train_page(model_d_model=12, model_n_heads=4)
    at.selectbox(key="cfg_micro_model_pos_emb").set_value("rope").run()
    shows_error(start(at), "pos_emb='rope' needs an even head size")


@pytest.mark.parametrize("name", ["../escape", "a/b", "bad\x07name", ".hidden"])
def test_run_name_not_allowed_in_the_app(runs_root, registry_cleanup, name):
    at = start(train_page(), name)
    shows_error(at, "is not allowed")
    assert sorted(p.name for p in runs_root.iterdir()) == ["tiny"]
    assert not (runs_root.parent / "escape").exists()


def wait_for(predicate, timeout=60.0):
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_stop_in_the_app_mid_run_ends_cleanly(runs_root, registry_cleanup):
    from tinyviz.training.runs import Run
    at = start(train_page(train_steps=100_000, train_checkpoint_interval=0))
    no_exception(at)
    job = registry_cleanup().get(str(runs_root / "r1"))
    assert job is not None and wait_for(lambda: job.snapshot()["step"] >= 3)
    at.run()
    from tinyviz.ui.train_panel import control_key
    at.button(key=control_key("stop", job.run_id)).click().run()  # keyed per run
    assert wait_for(lambda: not job.alive)
    at.run()
    no_exception(at)
    run = Run.open(runs_root / "r1")
    assert run.state()["status"] == "stopped" and run.weights_step() == job.snapshot()["step"] >= 3
    assert any("resume to continue" in i.value for i in at.info), [i.value for i in at.info]
    assert at.button(key=control_key("resume", job.run_id))


def test_the_concurrent_training_limit_is_explained(runs_root, registry_cleanup):
    from tinyviz.ui.registry import MAX_CONCURRENT
    reg = registry_cleanup()
    cfg = apply_overrides(preset("micro"), TINY + ["steps=100000", "checkpoint_interval=0"])
    for i in range(MAX_CONCURRENT):
        reg.start(cfg, runs_root / f"busy{i}")
    at = train_page()
    assert any("the most at once; stop one to start another" in w.value for w in at.warning)
    start(at, "third")
    line = shows_error(at, f"{MAX_CONCURRENT} runs are training already", "busy0", "busy1",
                       "stop one or wait for it to finish")
    assert line.startswith(f"{MAX_CONCURRENT} runs are training already")
    assert not (runs_root / "third").exists()
