"""Models trained elsewhere open exactly: transformers is the oracle (logits within 1e-4, same greedy tokens).

nanoGPT ckpt.pt and llama2.c .bin files are written here from the formats' documented structure out of
transformers models' weights; llama2.c is also checked against a numpy transcription of run.c's forward.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from import_helpers import (
    gpt2,
    llama,
    runc_forward,
    save_hf,
    sentencepiece_vocab,
    tokenizer_bin,
    word_tokenizer,
    write_llama2c,
    write_meta_pkl,
    write_nanogpt,
    zero_biases,
)
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from tinyviz import cli, resources
from tinyviz.config import ModelConfig, RunConfig, SampleConfig
from tinyviz.data.foreign import Llama2cTokenizer, TokenizerFileError, read_meta_pkl
from tinyviz.model.sampling import generate
from tinyviz.model.transformer import Transformer
from tinyviz.training import importer
from tinyviz.training.runs import Run

TOL = 1e-4


def _tokens(vocab: int, n_ctx: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (2, n_ctx), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def _greedy(forward, start: list[int], n: int) -> list[int]:
    ids = list(start)
    for _ in range(n):
        ids.append(int(forward(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(start):]


@torch.no_grad()
def assert_same_model(hf_model, run: Run, vocab: int, n_ctx: int) -> float:
    """Logits of the HF oracle and the imported run on the same tokens; returns max |diff|."""
    model = run.load_model()
    x = _tokens(vocab, n_ctx)
    want, got = hf_model(x).logits, model(x)
    diff = float((want - got).abs().max())
    assert want.abs().max() > 1.0, "the oracle's logits are too small to tell models apart"
    assert diff <= TOL, f"max |logit diff| {diff:.2e}"
    start = x[0, :5].tolist()
    assert _greedy(lambda t: model(t), start, 12) == _greedy(lambda t: hf_model(t).logits, start, 12)
    return diff


def _import(src, out, *extra) -> int:
    return cli.main(["import", str(src), "--out", str(out), *map(str, extra)])


# -- exactness ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tied", [True, False])
def test_hf_gpt2_imports_exactly(tmp_path, tied):
    hf = gpt2(tied=tied)
    save_hf(hf, tmp_path / "hf")
    assert _import(tmp_path / "hf", tmp_path / "run") == 0
    run = Run.open(tmp_path / "run")
    assert run.config.model.mlp == "gelu_tanh" and run.config.model.tie_embeddings == tied
    assert run.state()["status"] == "imported"
    assert_same_model(hf, run, 40, 32)


@pytest.mark.parametrize("tied,kv,theta,bias", [(False, 2, 500.0, False), (True, 4, 10000.0, False),
                                                (False, 1, 10000.0, True)])
def test_hf_llama_imports_exactly(tmp_path, tied, kv, theta, bias):
    hf = llama(tied=tied, kv_heads=kv, theta=theta, eps=1e-6, attention_bias=bias)
    save_hf(hf, tmp_path / "hf")
    assert _import(tmp_path / "hf", tmp_path / "run") == 0
    run = Run.open(tmp_path / "run")
    m = run.config.model
    assert (m.kv_heads, m.rope_base, m.norm_eps, m.tie_embeddings, m.bias) == (kv, theta, 1e-6, tied, bias)
    assert_same_model(hf, run, 40, 32)


@pytest.mark.parametrize("bias", [True, False])
def test_nanogpt_ckpt_imports_exactly(tmp_path, bias):
    # nanoGPT is GPT-2 with exact GELU; bias=False nanoGPT = an HF GPT-2 whose biases are all zero
    hf = gpt2(vocab=65, act="gelu", seed=3)
    if not bias:
        zero_biases(hf)
    chars = sorted(set("\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"))
    assert len(chars) == 65
    out_dir = tmp_path / "out-shakespeare-char"
    write_nanogpt(hf, out_dir / "ckpt.pt", bias=bias)
    write_meta_pkl(chars, out_dir / "meta.pkl")
    assert _import(out_dir, tmp_path / "run") == 0  # the out_dir: ckpt.pt and meta.pkl found inside
    run = Run.open(tmp_path / "run")
    assert (run.config.model.mlp, run.config.model.bias, run.weights_step()) == ("gelu", bias, 250)
    assert run.tokenizer().decode(run.tokenizer().encode("To be, or not")) == "To be, or not"
    assert_same_model(hf, run, 65, 32)
    meta = run.meta["imported_from"]
    assert meta["format"] == "nanogpt" and len(meta["sha256"]) == 64 and meta["model_file"] == "ckpt.pt"


def test_nanogpt_meta_pkl_in_another_order_reorders_the_embeddings(tmp_path):
    hf = gpt2(vocab=6, act="gelu", seed=4)
    chars = ["z", "a", "\n", "q", " ", "b"]  # not sorted: ids must keep meaning the same characters
    write_nanogpt(hf, tmp_path / "ckpt.pt")
    write_meta_pkl(chars, tmp_path / "meta.pkl")
    assert _import(tmp_path / "ckpt.pt", tmp_path / "run") == 0
    run = Run.open(tmp_path / "run")
    tok, model = run.tokenizer(), run.load_model()
    text = "za q\nb a"
    with torch.no_grad():
        want = hf(torch.tensor([[chars.index(c) for c in text]])).logits[0]
        got = model(torch.tensor([tok.encode(text)]))[0]
    order = [chars.index(c) for c in tok.chars]  # tinyviz id j is the source id order[j]
    assert float((want[:, order] - got).abs().max()) <= TOL


@pytest.mark.parametrize("version,tied,kv", [(0, True, 2), (0, False, 4), (1, True, 1), (1, False, 2)])
def test_llama2c_bin_imports_exactly(tmp_path, version, tied, kv):
    hf = llama(vocab=300, tied=tied, kv_heads=kv, eps=1e-5, seed=version)
    write_llama2c(hf, tmp_path / "model.bin", version=version)
    pieces, scores = sentencepiece_vocab([(" ", -1.0), ("a", -2.0), ("b", -3.0)], size=300)
    tokenizer_bin(pieces, scores, tmp_path / "tokenizer.bin")
    assert _import(tmp_path / "model.bin", tmp_path / "run") == 0
    run = Run.open(tmp_path / "run")
    assert run.config.model.n_ctx == 32 and run.tokenizer().kind == "llama2c"
    assert_same_model(hf, run, 300, 32)


def test_llama2c_import_computes_what_run_c_computes(tmp_path):
    # a second reference, independent of transformers: run.c's forward with interleaved RoPE, in numpy
    hf = llama(vocab=50, n_ctx=16, tied=False, kv_heads=2, seed=7)
    write_llama2c(hf, tmp_path / "m.bin")
    pieces, scores = sentencepiece_vocab([], size=None)
    tokenizer_bin(pieces[:50], scores[:50], tmp_path / "tok.bin")
    assert _import(tmp_path / "m.bin", tmp_path / "run", "--tokenizer", tmp_path / "tok.bin") == 0
    tokens = [1, 7, 3, 44, 12, 9, 30, 2, 17, 5]
    want = runc_forward(tmp_path / "m.bin", tokens)
    with torch.no_grad():
        got = Run.open(tmp_path / "run").load_model()(torch.tensor([tokens]))[0].numpy()
    assert np.abs(want).max() > 1.0
    assert np.abs(want - got).max() <= TOL


def test_imported_run_samples_with_the_kv_cache_as_without(tmp_path):
    hf = llama(vocab=300, tied=True, seed=5)
    write_llama2c(hf, tmp_path / "model.bin")
    pieces, scores = sentencepiece_vocab([(" ", -1.0), ("a", -2.0)], size=300)
    tokenizer_bin(pieces, scores, tmp_path / "tokenizer.bin")
    assert _import(tmp_path, tmp_path / "run") == 0  # a folder with one model .bin and tokenizer.bin
    run = Run.open(tmp_path / "run")
    model, tok = run.load_model(), run.tokenizer()
    cfg = SampleConfig(max_new_tokens=10, temperature=0)
    cached, plain = generate(model, tok, "ab a", cfg), generate(model, tok, "ab a", cfg, use_cache=False)
    assert [s.token for s in cached.steps] == [s.token for s in plain.steps]
    ids = tok.encode("ab a")
    assert [s.token for s in cached.steps] == _greedy(lambda t: hf(t).logits, ids, 10)


# -- the llama2.c tokenizer --------------------------------------------------------------------------------------
def _toy_tokenizer() -> Llama2cTokenizer:
    extra = [(" ", -100.0), ("t", -100.0), ("h", -100.0), ("e", -100.0), ("c", -100.0), ("a", -100.0),
             ("th", -1.0), ("the", -2.0), (" the", -3.0), ("at", -4.0), ("ca", -5.0), (" c", -6.0)]
    return Llama2cTokenizer(*sentencepiece_vocab(extra))


def test_llama2c_encode_merges_by_score_as_run_c():
    tok = _toy_tokenizer()
    ids = {p.decode(): i for i, p in enumerate(tok.pieces) if i >= 259}
    # BOS, dummy " ", t h e " " c a t -> th -> the -> " the" -> at -> " c" (worked by hand from run.c's loop)
    assert tok.encode("the cat") == [1, ids[" the"], ids[" c"], ids["at"]]
    assert tok.decode(tok.encode("the cat")) == "the cat"  # the space after BOS is stripped
    assert tok.encode("") == [1]


def test_llama2c_byte_fallback_and_decode_as_run_c_prints():
    tok = _toy_tokenizer()
    space = tok.pieces.index(b" ")
    assert tok.encode("é") == [1, space, 0xC3 + 3, 0xA9 + 3]  # not a piece: its UTF-8 bytes, id = byte + 3
    assert tok.decode([1, space, 0xC3 + 3, 0xA9 + 3]) == ""  # safe_printf drops lone non-ASCII bytes
    assert tok.decode([5, 0x0A + 3, ord("A") + 3]) == "\nA"  # <0x0A>, <0x41>: printable bytes print
    assert tok.decode([5, 0x07 + 3]) == ""  # a bell is neither printable nor whitespace
    assert tok.token_str(space) == "␣" and tok.token_str(0x0A + 3) == "<0x0A>"


def test_llama2c_tie_breaks_to_the_leftmost_pair():
    tok = Llama2cTokenizer(*sentencepiece_vocab([(" ", -9.0), ("a", -9.0), ("aa", -1.0)]))
    aa, a, sp = tok.pieces.index(b"aa"), tok.pieces.index(b"a"), tok.pieces.index(b" ")
    assert tok.encode("aaa") == [1, sp, aa, a]


@pytest.mark.parametrize("size", [361, 512, 4096])
def test_llama2c_custom_vocab_sizes_round_trip(tmp_path, size):
    pieces, scores = sentencepiece_vocab([(" ", -1.0), ("o", -2.0), ("n", -3.0), ("on", -0.5), (" on", -0.7)],
                                         size=size)
    path = tokenizer_bin(pieces, scores, tmp_path / f"tok{size}.bin")
    tok = Llama2cTokenizer.from_file(path.read_bytes(), size)
    assert tok.vocab_size == size
    assert tok.encode("on no") == [1, pieces.index(b" on"), pieces.index(b" "), pieces.index(b"n"), pieces.index(b"o")]
    assert tok.decode(tok.encode("on no!")) == "on no!"
    with pytest.raises(TokenizerFileError, match="bigger vocabulary"):
        Llama2cTokenizer.from_file(path.read_bytes(), size - 1)
    with pytest.raises(TokenizerFileError, match="ends after"):
        Llama2cTokenizer.from_file(path.read_bytes(), size + 1)


def test_llama2c_tokenizer_survives_the_run_folder(tmp_path):
    from tinyviz.data.text import tokenizer_from_json

    tok = _toy_tokenizer()
    again = tokenizer_from_json(tok.to_json())
    assert again.pieces == tok.pieces and again.encode("the cat é") == tok.encode("the cat é")


# -- config switches ----------------------------------------------------------------------------------------------
def test_gelu_tanh_is_gpt2s_gelu_new_and_gelu_stays_exact():
    x = torch.linspace(-6, 6, 1001)
    tanh = Transformer(ModelConfig(mlp="gelu_tanh")).blocks[0].mlp.act(x)
    gelu_new = 0.5 * x * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x + 0.044715 * x**3)))
    assert torch.allclose(tanh, gelu_new, atol=1e-6)
    exact = Transformer(ModelConfig(mlp="gelu")).blocks[0].mlp.act(x)
    assert not torch.allclose(exact, gelu_new, atol=1e-5)  # the two differ by up to ~5e-4


def test_norm_eps_reaches_both_norms_and_defaults_stay():
    assert Transformer(ModelConfig()).blocks[0].ln1.eps == 1e-5  # old runs load as they were
    assert Transformer(ModelConfig(norm="rmsnorm", norm_eps=1e-6)).blocks[0].ln1.eps == 1e-6
    assert Transformer(ModelConfig(norm_eps=1e-3)).ln_final.eps == 1e-3
    with pytest.raises(ValueError, match="norm_eps"):
        ModelConfig(norm_eps=0)
    old = ModelConfig().to_dict()
    del old["norm_eps"]
    assert RunConfig.from_dict({"model": old}).model == ModelConfig()


# -- export-hf ----------------------------------------------------------------------------------------------------
def _random_run(tmp_path, **model) -> Run:
    from tinyviz.data.text import CharTokenizer

    cfg = RunConfig(model=ModelConfig(d_vocab=30, n_ctx=24, d_model=32, n_heads=4, n_layers=2, **model))
    run = Run.create(tmp_path / "run", cfg, CharTokenizer(list("abcdefghijklmnopqrstuvwxyz .,")))
    torch.manual_seed(0)
    net = Transformer(cfg.model)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    run.save_checkpoint(net, {}, step=1, elapsed=0.0)
    return run


@pytest.mark.parametrize("model", [
    dict(mlp="gelu_tanh", tie_embeddings=False), dict(mlp="gelu", bias=False), dict(mlp="relu"),
    dict(pos_emb="rope", norm="rmsnorm", mlp="swiglu", n_kv_heads=2, rope_base=500.0, norm_eps=1e-6),
    dict(pos_emb="rope", norm="rmsnorm", mlp="swiglu", bias=True, tie_embeddings=False),
])
def test_export_hf_loads_in_transformers_with_the_same_logits(tmp_path, model):
    run = _random_run(tmp_path, **model)
    assert cli.main(["export-hf", str(run.path), "--out", str(tmp_path / "hf")]) == 0
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    x = _tokens(30, 24)
    with torch.no_grad():
        assert float((hf(x).logits - run.load_model()(x)).abs().max()) <= TOL
    # and back: the exported folder imports to the same weights
    (tmp_path / "hf" / "tokenizer.json").write_text(word_tokenizer(30).to_str())
    assert _import(tmp_path / "hf", tmp_path / "again") == 0
    x = _tokens(30, 24, seed=2)
    with torch.no_grad():
        assert torch.equal(Run.open(tmp_path / "again").load_model()(x), run.load_model()(x))


@pytest.mark.parametrize("model,field", [
    (dict(norm_position="post"), "norm_position"), (dict(residual=False), "residual"),
    (dict(causal=False), "causal"), (dict(pos_emb="sinusoidal"), "pos_emb"), (dict(pos_emb="none"), "pos_emb"),
    (dict(pos_emb="rope", norm="layernorm", mlp="swiglu"), "norm"), (dict(mlp="swiglu"), "mlp"),
    (dict(attn_scale=False), "attn_scale"), (dict(n_kv_heads=2), "n_kv_heads"),
])
def test_export_hf_refuses_a_run_that_cannot_map_naming_the_field(tmp_path, capsys, model, field):
    run = _random_run(tmp_path, **model)
    assert cli.main(["export-hf", str(run.path), "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert f"{field}=" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "hf").exists()


# -- bad input: one sentence, exit 2, nothing written, nothing run -----------------------------------------------------
class _Payload:
    """Unpickling this runs os.system: the file it touches proves whether it ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _refused(capsys, tmp_path, code: int, *words: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    assert not (tmp_path / "run").exists()
    return err


def test_pickle_payload_in_ckpt_pt_is_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    hf = gpt2(vocab=65, act="gelu")
    write_nanogpt(hf, tmp_path / "ckpt.pt", evil=_Payload(marker))
    write_meta_pkl([chr(33 + i) for i in range(65)], tmp_path / "meta.pkl")
    _refused(capsys, tmp_path, _import(tmp_path / "ckpt.pt", tmp_path / "run"), "weights_only", "nothing in it was run")
    assert not marker.exists()


def test_pickle_payload_in_meta_pkl_is_refused_and_never_run(tmp_path, capsys):
    marker = tmp_path / "pwned"
    (tmp_path / "meta.pkl").write_bytes(pickle.dumps({"itos": {0: "a"}, "x": _Payload(marker)}))
    write_nanogpt(gpt2(vocab=65, act="gelu"), tmp_path / "ckpt.pt")
    _refused(capsys, tmp_path, _import(tmp_path / "ckpt.pt", tmp_path / "run"), "posix.system", "nothing in it was run")
    assert not marker.exists()
    # and directly: even a payload without a dict around it
    with pytest.raises(TokenizerFileError, match="refused"):
        read_meta_pkl(pickle.dumps(_Payload(marker)))
    assert not marker.exists()


def test_llama2c_truncated_and_mismatched_files_are_refused(tmp_path, capsys):
    hf = llama(vocab=300, seed=1)
    good = write_llama2c(hf, tmp_path / "good.bin").read_bytes()
    pieces, scores = sentencepiece_vocab([(" ", -1.0)], size=300)
    tokenizer_bin(pieces, scores, tmp_path / "tokenizer.bin")
    (tmp_path / "short.bin").write_bytes(good[:20])
    _refused(capsys, tmp_path, _import(tmp_path / "short.bin", tmp_path / "run"), "too short")
    (tmp_path / "cut.bin").write_bytes(good[:-4])
    _refused(capsys, tmp_path, _import(tmp_path / "cut.bin", tmp_path / "run"), "truncated", f"{len(good):,}")
    (tmp_path / "long.bin").write_bytes(good + b"\0" * 8)
    _refused(capsys, tmp_path, _import(tmp_path / "long.bin", tmp_path / "run"), "longer than its header says")
    bad_header = struct.pack("<7i", 32, 48, 2, 5, 2, 300, 32) + good[28:]  # 32 is not 5 heads
    (tmp_path / "hdr.bin").write_bytes(bad_header)
    _refused(capsys, tmp_path, _import(tmp_path / "hdr.bin", tmp_path / "run"), "header")
    # a tokenizer with another vocabulary size
    tokenizer_bin(pieces[:290], scores[:290], tmp_path / "small.bin")
    _refused(capsys, tmp_path, _import(tmp_path / "good.bin", tmp_path / "run", "--tokenizer", tmp_path / "small.bin"),
             "vocabulary of 300")


def test_vocab_mismatch_between_weights_and_tokenizer_is_refused(tmp_path, capsys):
    write_nanogpt(gpt2(vocab=65, act="gelu"), tmp_path / "ckpt.pt")
    write_meta_pkl(list("abcdefghij"), tmp_path / "meta.pkl")
    _refused(capsys, tmp_path, _import(tmp_path / "ckpt.pt", tmp_path / "run"), "10 characters", "65 tokens")
    save_hf(gpt2(vocab=40), tmp_path / "hf", with_tokenizer=False)
    word_tokenizer(60).save(str(tmp_path / "hf" / "tokenizer.json"))
    _refused(capsys, tmp_path, _import(tmp_path / "hf", tmp_path / "run"), "60 tokens", "only 40")


def test_missing_tokenizer_says_what_to_pass_and_downloads_nothing(tmp_path, capsys):
    write_nanogpt(gpt2(vocab=50304, d=16, layers=1, heads=2, act="gelu"), tmp_path / "ckpt.pt")
    err = _refused(capsys, tmp_path, _import(tmp_path / "ckpt.pt", tmp_path / "run"), "--tokenizer", "tokenizer.json",
                   "50304")
    assert "downloads nothing" in err
    # with GPT-2's 50257-token tokenizer.json the 47 padding rows of nanoGPT's 50304 are accepted and said
    word_tokenizer(50257).save(str(tmp_path / "gpt2-tokenizer.json"))
    assert _import(tmp_path / "ckpt.pt", tmp_path / "run", "--tokenizer", tmp_path / "gpt2-tokenizer.json") == 0
    assert "47 padding rows" in capsys.readouterr().err
    run = Run.open(tmp_path / "run")
    assert run.config.model.d_vocab == 50304 and run.tokenizer().token_str(50300) == "<unused 50300>"
    shutil.rmtree(tmp_path / "run")
    save_hf(llama(), tmp_path / "hf", with_tokenizer=False)
    _refused(capsys, tmp_path, _import(tmp_path / "hf", tmp_path / "run"), "tokenizer.json", "--tokenizer")


def test_unknown_architecture_and_empty_folder_are_refused(tmp_path, capsys):
    save_hf(gpt2(), tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    cfg.update(architectures=["BertForMaskedLM"], model_type="bert")
    (tmp_path / "hf" / "config.json").write_text(json.dumps(cfg))
    _refused(capsys, tmp_path, _import(tmp_path / "hf", tmp_path / "run"), "BertForMaskedLM", "GPT2LMHeadModel")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    _refused(capsys, tmp_path, _import(tmp_path / "empty", tmp_path / "run"), "none of the files")
    _refused(capsys, tmp_path, _import(tmp_path / "nowhere", tmp_path / "run"), "nothing at")


@pytest.mark.parametrize("change", ["missing", "extra", "shape"])
def test_safetensors_with_missing_or_extra_keys_is_refused(tmp_path, capsys, change):
    save_hf(llama(), tmp_path / "hf")
    st = tmp_path / "hf" / "model.safetensors"
    sd = load_file(st)
    if change == "missing":
        del sd["model.layers.1.mlp.up_proj.weight"]
    elif change == "extra":
        sd["model.layers.2.mlp.up_proj.weight"] = torch.zeros(3)
    else:
        sd["model.norm.weight"] = torch.zeros(31)
    save_file(sd, st)
    word = {"missing": "layers.1.mlp.up_proj", "extra": "layers.2.mlp.up_proj", "shape": "(31,)"}[change]
    _refused(capsys, tmp_path, _import(tmp_path / "hf", tmp_path / "run"), word)


def test_a_model_bigger_than_memory_is_refused_before_loading(tmp_path, capsys, monkeypatch):
    save_hf(gpt2(), tmp_path / "hf")
    monkeypatch.setattr(resources, "available_bytes", lambda: (100_000, "free memory"))
    loaded = []
    monkeypatch.setattr(importer, "safe_open", lambda *a, **k: loaded.append(a))
    err = _refused(capsys, tmp_path, _import(tmp_path / "hf", tmp_path / "run"), "needs about", "100.0 kB",
                   "nothing was loaded")
    assert not loaded and "parameters" in err
    # a llama2.c header is enough to refuse: the weights are never read
    write_llama2c(llama(vocab=300), tmp_path / "m.bin")
    monkeypatch.setattr(importer.np, "memmap", lambda *a, **k: loaded.append(a))
    _refused(capsys, tmp_path, _import(tmp_path / "m.bin", tmp_path / "run"), "needs about")
    assert not loaded


def test_import_refuses_to_overwrite_a_run(tmp_path, capsys):
    save_hf(gpt2(), tmp_path / "hf")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("mine")
    assert _import(tmp_path / "hf", tmp_path / "run") == 2
    assert "already holds files" in capsys.readouterr().err
    assert (tmp_path / "run" / "keep.txt").read_text() == "mine"
    shutil.rmtree(tmp_path / "run")


def test_hf_tokenizer_of_either_kind_labels_tokens_readably():
    from tokenizers import SentencePieceBPETokenizer

    from tinyviz.data.foreign import HFTokenizer

    text = "Once upon a time there was a little girl. She liked the park. " * 20
    sp = SentencePieceBPETokenizer()  # Llama's style: ▁ for spaces
    sp.train_from_iterator([text], vocab_size=120, show_progress=False)
    tok = HFTokenizer(sp._tokenizer)
    ids = tok.encode("the park")
    assert tok.decode(ids) == "the park"
    labels = [tok.token_str(i) for i in ids]
    assert "\u2581" not in "".join(labels) and labels[0].startswith("␣")
    bpe = word_tokenizer(10)
    assert HFTokenizer(bpe).token_str(3) == "w3" and HFTokenizer(bpe).token_str(99) == "<unused 99>"


def test_cli_sample_and_heads_work_on_an_imported_run(tmp_path, capsys):
    hf = llama(vocab=300, tied=True, seed=8)
    write_llama2c(hf, tmp_path / "model.bin")
    tokenizer_bin(*sentencepiece_vocab([(" ", -1.0), ("a", -2.0), ("b", -3.0)], size=300), tmp_path / "tokenizer.bin")
    assert _import(tmp_path / "model.bin", tmp_path / "run") == 0
    capsys.readouterr()
    assert cli.main(["sample", str(tmp_path / "run"), "--prompt", "ab", "--max-new-tokens", "5",
                     "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("ab")
    assert cli.main(["heads", str(tmp_path / "run"), "--prompt", "a b ab ba", "--json"]) == 0
    heads = json.loads(capsys.readouterr().out)["heads"]
    assert len(heads) == 2 * 4


def test_a_llama2c_sample_ends_where_the_model_draws_bos_as_run_c_stops(tmp_path):
    # run.c's generate loop breaks when the next token is BOS (id 1) and prints nothing for it. A model
    # whose blocks add nothing and whose classifier row for BOS is the prompt's last token's embedding
    # draws BOS right after the prompt (greedy): the sample is that one token, and a notice says why.
    hf = llama(vocab=300, tied=False, seed=4)
    pieces, scores = sentencepiece_vocab([(" ", -1.0), ("a", -2.0)], size=300)
    tok = Llama2cTokenizer(pieces, scores)
    last = tok.encode("ab a")[-1]
    with torch.no_grad():
        for layer in hf.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        hf.lm_head.weight.zero_()
        hf.lm_head.weight[1] = 10 * hf.model.embed_tokens.weight[last]
    write_llama2c(hf, tmp_path / "model.bin")
    tokenizer_bin(pieces, scores, tmp_path / "tokenizer.bin")
    assert _import(tmp_path / "model.bin", tmp_path / "run") == 0
    run = Run.open(tmp_path / "run")
    model, tok = run.load_model(), run.tokenizer()
    for use_cache in (True, False):
        result = generate(model, tok, "ab a", SampleConfig(max_new_tokens=10, temperature=0), use_cache=use_cache)
        assert [s.token for s in result.steps] == [1] and result.text == ""
        assert any("ends a sequence" in n and "after 1 of 10 new tokens" in n for n in result.notices), result.notices
    tok.stop_ids = frozenset()  # a tokenizer that names no stop token: the same model samples on past BOS
    assert len(generate(model, tok, "ab a", SampleConfig(max_new_tokens=10, temperature=0)).steps) == 10
