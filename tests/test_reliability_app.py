"""Bad input in the app: each case ends in st.error with a sentence on the page, never an exception.

AppTest runs the pages in this process against a temporary runs folder (TINYVIZ_RUNS).
"""

import io
import json
import shutil
import tomllib
import zipfile
from pathlib import Path

import pytest

from tinyviz.config import apply_overrides, preset
from tinyviz.session import TrainingSession

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
        at.switch_page(f"pages/{page}.py").run()
    return at


def errors(at) -> list[str]:
    return [e.value for e in at.error]


def shows_error(at, *fragments) -> str:
    """The page shows an st.error saying every fragment, and raised nothing."""
    assert not at.exception, [e.value for e in at.exception]
    found = [e for e in errors(at) if all(f in e for f in fragments)]
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
    from tinyviz.data import MAX_CORPUS_BYTES
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
    finally:
        config.get_config_options(force_reparse=True)


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
