"""Bad input through the CLI: each case ends in one ``error: <sentence>`` line on stderr and exit 2.

docs/reliability.md lists every case with the sentence a person sees; the test names here match it.
"""

import json
import shutil
import struct
from pathlib import Path

import pytest

from tinyviz import cli
from tinyviz.training.runs import Run

TINY = ["--steps", "4", "--set", "n_layers=1", "--set", "n_heads=2", "--set", "d_model=16", "--set", "d_ff=32",
        "--set", "n_ctx=16", "--set", "batch_size=4", "--set", "eval_batches=1", "--set", "eval_interval=2",
        "--set", "snapshot_interval=2", "--set", "checkpoint_interval=2", "--set", "corpus_chars=3000"]
TEXT = "Mara met Tobin by the river. Tobin gave Mara a red stone, and Mara kept it.\n" * 8


def run_cli(capsys, *argv):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_sentence(rc, err, *fragments):
    """Exit code 2, exactly one ``error:`` line, no traceback, and the line says each fragment."""
    assert rc == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def train(capsys, tmp_path, *extra, corpus=None):
    args = ["train", "--out", tmp_path / "run", *TINY, *extra]
    if corpus is not None:
        args += ["--corpus", corpus]
    return run_cli(capsys, *args)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A trained 4-step run; tests copy it before damaging it."""
    out = tmp_path_factory.mktemp("runs") / "tiny"
    assert cli.main(["train", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(tiny_run, dst)
    return dst


def write(tmp_path, name, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


# -- corpus files ---------------------------------------------------------------------------------
CORPUS_CASES = {
    "empty": (b"", ["is empty", "at least a few thousand characters"]),
    "whitespace": (b" \n\t\n   \r\n", ["only whitespace"]),
    "png": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, ["looks like a PNG image", "plain UTF-8 .txt"]),
    "nul": (b"hello\x00world\x00" * 50, ["NUL bytes", "binary file"]),
    "latin1": ("Café crème, señor. Voilà!\n".encode("latin-1") * 50,
               ["is not UTF-8", "Latin-1", "re-save it as UTF-8"]),
    "utf16_no_bom": (TEXT.encode("utf-16-le"), ["NUL bytes", "UTF-16 without a byte-order mark"]),
    "control_chars": (("abc\x07def\n" * 50).encode(), ["control characters", "U+0007", "line 1"]),
    "one_char": (b"a" * 500, ["only one distinct character"]),
}


@pytest.mark.parametrize("case", CORPUS_CASES)
def test_corpus_file_is_refused_with_a_sentence(capsys, tmp_path, case):
    data, fragments = CORPUS_CASES[case]
    rc, _, err = train(capsys, tmp_path, corpus=write(tmp_path, f"{case}.txt", data))
    one_sentence(rc, err, f"{case}.txt", *fragments)
    assert not (tmp_path / "run").exists()  # nothing half-made


def test_corpus_utf16_with_bom_is_decoded_and_trains(capsys, tmp_path):
    """UTF-16 with a byte-order mark is unambiguous, so it is accepted rather than refused."""
    rc, _, err = train(capsys, tmp_path, corpus=write(tmp_path, "u16.txt", TEXT.encode("utf-16")))
    assert rc == 0, err
    assert "Mara" in Run.open(tmp_path / "run").meta["probe_prompt"]


def test_corpus_utf16_bom_that_does_not_decode(capsys, tmp_path):
    rc, _, err = train(capsys, tmp_path, corpus=write(tmp_path, "u16.txt", b"\xff\xfe" + b"a\x00b"))
    one_sentence(rc, err, "starts like UTF-16 text but does not decode", "re-save it as UTF-8")


def test_corpus_shorter_than_one_example(capsys, tmp_path):
    rc, _, err = train(capsys, tmp_path, corpus=write(tmp_path, "short.txt", b"A tiny text, far too short."))
    one_sentence(rc, err, "tokens for", "n_ctx + 1 = 17", "use a longer text or a smaller n_ctx")


def test_corpus_larger_than_the_limit_says_the_limit(capsys, tmp_path):
    big = tmp_path / "big.txt"
    with open(big, "wb") as f:  # sparse: 50 MB + 1 byte without writing them
        f.truncate(50_000_001)
    rc, _, err = train(capsys, tmp_path, corpus=big)
    one_sentence(rc, err, "big.txt", "(50,000,001 bytes), over the 50 MB limit", "use a smaller file")


def test_corpus_is_a_directory(capsys, tmp_path):
    (tmp_path / "folder").mkdir()
    rc, _, err = train(capsys, tmp_path, corpus=tmp_path / "folder")
    one_sentence(rc, err, "is a folder, not a file")


def test_corpus_path_is_missing(capsys, tmp_path):
    rc, _, err = train(capsys, tmp_path, corpus=tmp_path / "nope.txt")
    one_sentence(rc, err, "no file at", "nope.txt", "check the path")


def test_corpus_unknown_builtin_name_lists_the_builtins(capsys, tmp_path):
    rc, _, err = train(capsys, tmp_path, corpus="tinytalez")
    one_sentence(rc, err, "unknown corpus 'tinytalez'", "tinytales")


# -- configs --------------------------------------------------------------------------------------
CONFIG_CASES = {
    "heads_do_not_divide": (["d_model=18", "n_heads=4"], "d_model=18 must be divisible by n_heads=4"),
    "kv_heads_do_not_divide": (["n_heads=2", "n_kv_heads=3"], "n_heads=2 must be divisible by n_kv_heads=3"),
    "kv_heads_zero": (["n_kv_heads=0"], "n_kv_heads=0 must be at least 1"),
    "zero_layers": (["n_layers=0"], "n_layers=0 must be at least 1"),
    "negative_d_model": (["d_model=-16"], "d_model=-16 must be at least 1"),
    "zero_heads": (["n_heads=0"], "n_heads=0 must be at least 1"),
    "zero_ctx": (["n_ctx=0"], "n_ctx=0 must be at least 1"),
    "zero_d_ff": (["d_ff=0"], "d_ff=0 must be at least 1"),
    "unknown_pos_emb": (["pos_emb=alibi"], "pos_emb='alibi' is not a valid choice; use one of: learned"),
    "unknown_norm": (["norm=batchnorm"], "norm='batchnorm' is not a valid choice"),
    "unknown_norm_position": (["norm_position=middle"], "norm_position='middle' is not a valid choice"),
    "unknown_mlp": (["mlp=tanh"], "mlp='tanh' is not a valid choice"),
    "unknown_init": (["init=xavier"], "init='xavier' is not a valid choice"),
    "unknown_tokenizer": (["tokenizer=wordpiece"], "tokenizer='wordpiece' is not a valid choice"),
    "bad_bool": (["residual=maybe"], "residual='maybe' is not a valid on/off value"),
    "bad_int": (["n_layers=two"], "n_layers='two' is not a valid int value"),
    "rope_odd_head": (["pos_emb=rope", "d_model=12", "n_heads=4"], "pos_emb='rope' needs an even head size"),
    "sinusoidal_odd_d_model": (["pos_emb=sinusoidal", "d_model=15", "n_heads=3"], "needs an even d_model"),
    "dropout_one": (["dropout=1"], "dropout=1.0 must be in [0, 1)"),
    "lr_zero": (["lr=0"], "lr=0.0 must be a positive number"),
    "lr_negative": (["lr=-0.001"], "lr=-0.001 must be a positive number"),
    "lr_nan": (["lr=nan"], "lr=nan must be a positive number"),
    "warmup_longer_than_steps": (["warmup_steps=10"], "warmup_steps=10 is longer than steps=4"),
    "batch_larger_than_data": (["batch_size=5000"], "batch_size=5000 is larger than the"),
    "batch_zero": (["batch_size=0"], "batch_size=0 must be at least 1"),
    "bpe_vocab_too_small": (["bpe_vocab_size=100"], "bpe_vocab_size=100 must be between 300 and 8192"),
    "val_fraction": (["val_fraction=0.9"], "val_fraction=0.9 must be between 0 and 0.5"),
    "unknown_field": (["n_layer=2"], "unknown field 'n_layer' in --set; valid fields:"),
    "unknown_section": (["optim.lr=1"], "unknown section 'optim'"),
    "no_equals": (["lr"], "must look like field=value"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_invalid_config_is_refused_with_a_sentence(capsys, tmp_path, case):
    sets, fragment = CONFIG_CASES[case]
    extra = [a for s in sets for a in ("--set", s)]
    rc, _, err = train(capsys, tmp_path, *extra)
    one_sentence(rc, err, fragment)
    assert not (tmp_path / "run").exists()


def test_unknown_set_field_lists_every_valid_field(capsys, tmp_path):
    line = one_sentence(*train(capsys, tmp_path, "--set", "learning_rate=1")[::2])
    for name in ("n_layers", "d_model", "pos_emb", "lr", "warmup_steps", "corpus", "tokenizer"):
        assert f" {name}," in line or f" {name}." in line


def test_steps_zero(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "train", "--out", tmp_path / "run", "--steps", "0")
    one_sentence(rc, err, "steps=0 must be at least 1")


def test_unknown_preset(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "train", "--out", tmp_path / "run", "--preset", "huge")
    one_sentence(rc, err, "unknown preset 'huge'; choose one of: micro")


def test_resume_with_set_is_refused(capsys, tiny_run):
    rc, _, err = run_cli(capsys, "train", "--out", tiny_run, "--resume", "--set", "lr=1")
    one_sentence(rc, err, "--resume continues a run with its own config")


def test_existing_run_is_not_overwritten(capsys, run_copy):
    before = (run_copy / "model.safetensors").read_bytes()
    rc, _, err = run_cli(capsys, "train", "--out", run_copy, *TINY)
    one_sentence(rc, err, "already holds a run", "--resume")
    assert (run_copy / "model.safetensors").read_bytes() == before


# -- prompts --------------------------------------------------------------------------------------
def test_prompt_empty(capsys, tiny_run):
    rc, _, err = run_cli(capsys, "sample", tiny_run, "--prompt", "")
    one_sentence(rc, err, "the prompt is empty")


def test_prompt_with_unknown_characters_names_them(capsys, tiny_run):
    rc, _, err = run_cli(capsys, "sample", tiny_run, "--prompt", "Mara ☃ saw €")
    one_sentence(rc, err, "never saw", "'☃' (U+2603)", "'€' (U+20AC)", "remove or replace them")


def test_prompt_longer_than_context_is_cropped_with_a_notice(capsys, tiny_run):
    run = Run.open(tiny_run)
    tok = run.tokenizer()
    prompt = "".join(c for c in run.meta["probe_prompt"] if not tok.unknown_chars(c))
    assert len(prompt) > 16
    rc, out, err = run_cli(capsys, "sample", tiny_run, "--prompt", prompt, "--max-new-tokens", "5")
    assert rc == 0, err
    assert f"note: the prompt has {len(prompt)} tokens but the model sees at most n_ctx=16; " \
           "only its last 15 tokens were used." in err
    assert out.startswith(prompt[-15:])


SAMPLE_CASES = {
    "temperature_negative": (["--temperature", "-0.5"], "temperature=-0.5 must be 0 (greedy) or positive"),
    "top_k_negative": (["--top-k", "-1"], "top_k=-1 must be 0 (off)"),
    "top_k_above_vocab": (["--top-k", "100000"], "top_k=100000 is larger than the vocabulary"),
    "top_p_zero": (["--top-p", "0"], "top_p=0.0 must be in (0, 1]"),
    "top_p_above_one": (["--top-p", "1.5"], "top_p=1.5 must be in (0, 1]"),
    "max_new_tokens_zero": (["--max-new-tokens", "0"], "max_new_tokens=0 must be at least 1"),
}


@pytest.mark.parametrize("case", SAMPLE_CASES)
def test_invalid_sampling_setting(capsys, tiny_run, case):
    args, fragment = SAMPLE_CASES[case]
    rc, _, err = run_cli(capsys, "sample", tiny_run, "--prompt", "Mara", *args)
    one_sentence(rc, err, fragment)


# -- runs and checkpoints -------------------------------------------------------------------------
def edit_config(run: Path, **changes):
    cfg = json.loads((run / "config.json").read_text())
    for key, value in changes.items():
        if "." in key:
            sec, name = key.split(".")
            cfg[sec][name] = value
        else:
            cfg[key] = value
    (run / "config.json").write_text(json.dumps(cfg))


def test_run_config_missing(capsys, run_copy):
    (run_copy / "config.json").unlink()
    one_sentence(*run_cli(capsys, "sample", run_copy, "--prompt", "Mara")[::2], "has no config.json",
                 "not a tinyviz run folder")


@pytest.mark.parametrize("content", ['{"model": {"n_layers": 1,', "\xff\xfe garbage", "[1, 2, 3]"])
def test_run_config_corrupt(capsys, run_copy, content):
    (run_copy / "config.json").write_bytes(content.encode("latin-1"))
    one_sentence(*run_cli(capsys, "sample", run_copy, "--prompt", "Mara")[::2], "config.json", "damaged")


def test_run_config_invalid_values(capsys, run_copy):
    edit_config(run_copy, **{"model.n_heads": 3})
    one_sentence(*run_cli(capsys, "sample", run_copy, "--prompt", "Mara")[::2],
                 "config.json has an invalid configuration", "d_model=16 must be divisible by n_heads=3")


def test_run_from_a_newer_format_version(capsys, run_copy):
    edit_config(run_copy, format_version=99)
    one_sentence(*run_cli(capsys, "sample", run_copy, "--prompt", "Mara")[::2],
                 "written by a newer tinyviz (run format 99", "upgrade tinyviz")


def test_model_weights_truncated(capsys, run_copy):
    p = run_copy / "model.safetensors"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    one_sentence(*run_cli(capsys, "sample", run_copy, "--prompt", "Mara")[::2],
                 "model.safetensors is damaged or not a safetensors file", "re-download or re-train")


def _rewrite_header(path: Path, edit) -> None:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    edit(header)
    new = json.dumps(header).encode()
    new += b" " * (n - len(new)) if len(new) <= n else b""
    path.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])


def test_model_weights_header_tampered_offsets(capsys, run_copy):
    def edit(h):
        name = next(k for k in h if k != "__metadata__")
        h[name]["data_offsets"] = [0, 10**12]
    _rewrite_header(run_copy / "model.safetensors", edit)
    one_sentence(*run_cli(capsys, "sample", run_copy, "--prompt", "Mara")[::2], "damaged or not a safetensors file")


def test_model_weights_header_tampered_shape(capsys, run_copy):
    """Same byte count, transposed shape: safetensors accepts it, the shape check before loading does not."""
    def edit(h):
        name = next(k for k, v in h.items() if k != "__metadata__" and len(v["shape"]) == 2
                    and v["shape"][0] != v["shape"][1])
        h[name]["shape"] = h[name]["shape"][::-1]
    _rewrite_header(run_copy / "model.safetensors", edit)
    one_sentence(*run_cli(capsys, "sample", run_copy, "--prompt", "Mara")[::2], "has ", "of shape",
                 "but the config needs", "come from different runs")


def test_model_weights_shape_mismatch_with_config(capsys, run_copy):
    edit_config(run_copy, **{"model.d_model": 32})
    one_sentence(*run_cli(capsys, "sample", run_copy, "--prompt", "Mara")[::2],
                 "model.safetensors has", "but the config needs", "come from different runs")


def test_model_weights_missing_key(capsys, run_copy):
    edit_config(run_copy, **{"model.n_layers": 2})
    one_sentence(*run_cli(capsys, "sample", run_copy, "--prompt", "Mara")[::2],
                 "does not match its config.json", "missing ['blocks.1")


def test_model_weights_missing(capsys, run_copy):
    (run_copy / "model.safetensors").unlink()
    one_sentence(*run_cli(capsys, "sample", run_copy, "--prompt", "Mara")[::2],
                 "model.safetensors is missing", "train it first")


def test_tokenizer_missing_or_damaged(capsys, run_copy):
    (run_copy / "tokenizer.json").write_text("{}")
    one_sentence(*run_cli(capsys, "sample", run_copy, "--prompt", "Mara")[::2], "tokenizer.json is damaged")
    (run_copy / "tokenizer.json").unlink()
    one_sentence(*run_cli(capsys, "sample", run_copy, "--prompt", "Mara")[::2], "tokenizer.json is missing")


def test_run_path_missing_or_a_file(capsys, tmp_path):
    one_sentence(*run_cli(capsys, "sample", tmp_path / "nope")[::2], "no run folder at", "tinyviz runs")
    f = write(tmp_path, "model.pt", b"not a folder")
    one_sentence(*run_cli(capsys, "sample", f)[::2], "no run folder at")


@pytest.mark.parametrize("out", ["..", "bad\x07name", "tab\tname", "new\nline", ".hidden", "x" * 81])
def test_run_name_not_allowed(capsys, tmp_path, out):
    rc, _, err = run_cli(capsys, "train", "--out", tmp_path / out, *TINY)
    one_sentence(rc, err, "is not allowed", "use 1-80 letters, digits")


def test_resume_of_a_run_whose_corpus_changed(capsys, tmp_path):
    corpus = write(tmp_path, "c.txt", TEXT.encode())
    assert train(capsys, tmp_path, corpus=corpus)[0] == 0
    corpus.write_text(TEXT.replace("river", "rivet"))
    rc, _, err = run_cli(capsys, "train", "--out", tmp_path / "run", "--resume")
    one_sentence(rc, err, "has changed since run was trained", "restore the original text file")


def test_write_error_in_the_cli_is_a_sentence(capsys, tmp_path, monkeypatch):
    """Any stray OSError (here: disk full while appending metrics) names the file and what to do."""
    import builtins
    import errno

    real_open = builtins.open

    def full_disk_open(file, mode="r", *args, **kwargs):
        if str(file).endswith("metrics.jsonl") and "a" in mode:
            raise OSError(errno.ENOSPC, "No space left on device", str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_disk_open)
    rc, _, err = train(capsys, tmp_path)
    one_sentence(rc, err, "metrics.jsonl", "No space left on device", "free some disk space")
