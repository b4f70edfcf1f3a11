"""Property-based fuzzing (Hypothesis) of every parser a person or a sent file can feed.

- tokenizers: any text the vocabulary covers round-trips; any other text raises UnknownCharactersError
  naming exactly the characters it lacks; tokenizer JSON of any shape is a tokenizer or a ValueError;
- config dicts (config.json): any JSON-like dict gives a valid RunConfig or a ValueError naming a field;
- --set: any list of strings gives a RunConfig or a ValueError;
- run zips and the safetensors / config / tokenizer readers: any bytes give a valid run or a RunError,
  never another exception, and nothing is written outside the runs folder.

Example counts are modest (the whole file runs in about a minute on 2 cores); the Hypothesis example
database (.hypothesis/) is git-ignored. docs/reliability.md, section "Fuzzing".
"""

import contextlib
import io
import json
import math
import shutil
import tempfile
import zipfile
from dataclasses import fields
from pathlib import Path

import pytest
from reliability_helpers import tiny_cfg

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from tinyviz.config import DataConfig, ModelConfig, RunConfig, TrainConfig, apply_overrides, preset  # noqa: E402
from tinyviz.data.text import BPETokenizer, CharTokenizer, UnknownCharactersError, tokenizer_from_json  # noqa: E402
from tinyviz.training.runs import Run, RunError  # noqa: E402
from tinyviz.training.runzip import import_run_zip  # noqa: E402
from tinyviz.training.session import TrainingSession  # noqa: E402

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_FILES = settings(max_examples=60, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

SECTIONS = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig}
FIELD_NAMES = {f.name for cls in SECTIONS.values() for f in fields(cls)}
ALPHABET = sorted(set("Mara met Tobin by the river.\nTOBIN, gave: a red stone! é☃"))


# -- tokenizers -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def char_tok():
    return CharTokenizer(ALPHABET)


@pytest.fixture(scope="module")
def bpe_tok():
    return BPETokenizer.train("Mara met Tobin by the river. Tobin gave Mara a red stone.\n" * 50, 300)


@FUZZ
@given(text=st.text(alphabet=ALPHABET, max_size=300))
def test_char_tokenizer_round_trips_any_text_it_covers(char_tok, text):
    assert char_tok.decode(char_tok.encode(text)) == text


@FUZZ
@given(text=st.text(max_size=200))
def test_char_tokenizer_names_exactly_the_characters_it_lacks(char_tok, text):
    lacking = list(dict.fromkeys(c for c in text if c not in ALPHABET))
    if not lacking:
        assert char_tok.decode(char_tok.encode(text)) == text
        return
    with pytest.raises(UnknownCharactersError) as e:
        char_tok.encode(text)
    assert e.value.chars == lacking
    assert str(e.value).startswith("the prompt has characters this model never saw:")


@FUZZ
@given(text=st.text(max_size=200))
def test_bpe_tokenizer_round_trips_any_unicode(bpe_tok, text):
    assert bpe_tok.decode(bpe_tok.encode(text)) == text


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)


@FUZZ
@given(doc=st.one_of(JSON, st.fixed_dictionaries({"kind": st.sampled_from(["char", "bpe"])},
                                                 optional={"chars": JSON, "tokenizer": JSON})))
def test_tokenizer_json_of_any_shape_is_a_tokenizer_or_a_sentence(doc):
    try:
        tok = tokenizer_from_json(json.dumps(doc))
    except ValueError:
        return
    assert tok.vocab_size >= 1


# -- config dicts and --set -----------------------------------------------------------------------
VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.integers(), st.floats(),
                   st.sampled_from(["learned", "rope", "gpt", "char", "bpe", "cpu", "tinytales", "", "x"]),
                   st.text(max_size=10), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3),
                                                                                             st.integers(), max_size=2))
SECTION = st.dictionaries(st.sampled_from(sorted(FIELD_NAMES)) | st.text(max_size=8), VALUES, max_size=6)
CONFIG = st.dictionaries(st.sampled_from(["model", "train", "data", "preset", "format_version"]),
                         st.one_of(SECTION, VALUES), max_size=5)


@FUZZ
@given(doc=CONFIG)
def test_any_json_config_is_valid_or_a_value_error_naming_a_field(doc):
    """A config.json of any JSON-like shape: a RunConfig, or a ValueError whose sentence names a field or a
    section; never a TypeError, OverflowError or the like from deep inside."""
    try:
        cfg = RunConfig.from_dict(doc)
    except ValueError as e:
        words = str(e)
        assert any(name in words for name in FIELD_NAMES | set(SECTIONS) | {"run config"}), words
        return
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg  # what it accepts round-trips
    for section in (cfg.model, cfg.train, cfg.data):
        for f in fields(section):
            value = getattr(section, f.name)
            assert not isinstance(value, float) or math.isfinite(value), (f.name, value)


ASSIGNMENT = st.one_of(
    st.text(max_size=30),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(sorted(FIELD_NAMES)), st.text(max_size=12)),
    st.builds(lambda s, k, v: f"{s}.{k}={v}", st.sampled_from(["model", "train", "data", "optim", ""]),
              st.sampled_from(sorted(FIELD_NAMES)), st.sampled_from(["1", "0", "-1", "1e400", "nan", "inf", "on",
                                                                      "none", "2.5", "1e-3", "rope", " 7 "])),
)


@FUZZ
@given(assignments=st.lists(ASSIGNMENT, max_size=4))
def test_any_set_arguments_give_a_config_or_a_sentence(assignments):
    try:
        cfg = apply_overrides(preset("micro"), assignments)
    except ValueError as e:
        assert str(e) and "Traceback" not in str(e)
        return
    assert isinstance(cfg, RunConfig)


# -- run zips and the run-file readers ----------------------------------------------------------
@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz") / "good"
    assert TrainingSession.start(tiny_cfg("steps=2", "checkpoint_interval=0", "snapshot_interval=0",
                                          "eval_interval=0"), out).train() == "done"
    return out


def _run_files(run: Path) -> dict[str, bytes]:
    return {f.relative_to(run).as_posix(): f.read_bytes() for f in run.rglob("*") if f.is_file()}


@st.composite
def damaged(draw, original: bytes) -> bytes:
    """original with a few bytes flipped, a piece cut out, or cut short; or random bytes."""
    kind = draw(st.sampled_from(["flip", "cut", "truncate", "random"]))
    data = bytearray(original)
    if kind == "random" or not data:
        return draw(st.binary(max_size=400))
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
    elif kind == "cut":
        i = draw(st.integers(0, len(data) - 1))
        del data[i: i + draw(st.integers(1, 64))]
    else:
        data = data[: draw(st.integers(0, len(data) - 1))]
    return bytes(data)


NAMES = st.one_of(st.sampled_from(["config.json", "tokenizer.json", "model.safetensors", "state.json",
                                   "metrics.jsonl", "train_state.safetensors", "snapshots/step_0000002.safetensors",
                                   "../escape.json", "/abs.json", "C:/x.json", "a\\b.json", "run/config.json",
                                   "model.pt", "snapshots/../../up.json", "__MACOSX/._config.json"]),
                  st.text(min_size=1, max_size=12))


@FUZZ_FILES
@given(data=st.data())
def test_any_run_zip_imports_or_is_a_run_error_and_writes_nothing_outside(good_run, data):
    files = _run_files(good_run)
    entries = {}
    for name in data.draw(st.lists(st.sampled_from(sorted(files)), max_size=len(files), unique=True), label="keep"):
        entries[name] = files[name]
    for name in data.draw(st.lists(st.sampled_from(sorted(files)), max_size=3, unique=True), label="damage"):
        entries[name] = data.draw(damaged(files[name]), label=f"damaged {name}")
    for name, content in data.draw(st.lists(st.tuples(NAMES, st.binary(max_size=64)), max_size=2), label="extra"):
        entries.setdefault(name, content)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, content in entries.items():
            with contextlib.suppress(ValueError, UnicodeEncodeError):  # names zipfile cannot store
                z.writestr(name, content)
    blob = buf.getvalue()
    if data.draw(st.booleans(), label="damage the zip itself"):
        blob = data.draw(damaged(blob), label="zip bytes")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "runs"
        try:
            run = import_run_zip(blob, root, "sent")
        except RunError:
            assert not (root / "sent").exists()
        else:
            assert run.path == root / "sent"
            run.tokenizer()
            if run.has_weights():
                run.load_model()
        outside = [p for p in Path(tmp).rglob("*") if root not in p.parents and p != root]
        assert outside == []
        leftovers = [p.name for p in root.iterdir()] if root.exists() else []
        assert set(leftovers) <= {"sent"}  # no scratch folder is left behind either


@FUZZ_FILES
@given(data=st.data())
def test_damaged_run_files_open_or_are_a_run_error(good_run, data):
    """config.json, tokenizer.json and model.safetensors of a run folder, each possibly damaged: opening,
    reading the tokenizer, loading the weights, listing and summarising give results or RunError."""
    files = _run_files(good_run)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "r"
        shutil.copytree(good_run, run_dir)
        for name in data.draw(st.lists(st.sampled_from(["config.json", "tokenizer.json", "model.safetensors",
                                                         "state.json", "metrics.jsonl"]), min_size=1, max_size=3,
                                       unique=True)):
            (run_dir / name).write_bytes(data.draw(damaged(files[name]), label=name))
        try:
            run = Run.open(run_dir)
            run.tokenizer()
            run.load_model()
            run.summary()
            run.metrics()
        except RunError:
            pass
