"""Models and files for the import tests, written from the formats' documented structure.

The oracle is ``transformers`` (a test dependency): small random GPT2LMHeadModel / LlamaForCausalLM
models, their weights re-laid as nanoGPT's ckpt.pt and llama2.c's .bin files (export.py's orders),
and a run.c-style forward pass in numpy (interleaved RoPE) as a second reference for llama2.c.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM
from transformers.utils import logging as hf_logging

from tinyviz.model.formats import LLAMA2C_MAGIC, half_to_interleaved

hf_logging.disable_progress_bar()  # save_pretrained's bar would land in the captured stderr
hf_logging.set_verbosity_error()


def randomize(model: torch.nn.Module, seed: int, std: float = 0.3) -> torch.nn.Module:
    """Weights big enough that logits differ by whole units (transformers' init gives tiny logits)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and "norm" in name or name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))
    return model.eval()


def gpt2(vocab=40, n_ctx=32, d=32, layers=2, heads=4, tied=True, act="gelu_new", seed=0) -> GPT2LMHeadModel:
    cfg = GPT2Config(vocab_size=vocab, n_positions=n_ctx, n_embd=d, n_layer=layers, n_head=heads,
                     activation_function=act, tie_word_embeddings=tied, bos_token_id=None, eos_token_id=None,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(seed)
    return randomize(GPT2LMHeadModel(cfg), seed)


def llama(vocab=40, n_ctx=32, d=32, layers=2, heads=4, kv_heads=2, ff=48, tied=False, theta=10000.0, eps=1e-5,
          seed=0, attention_bias=False) -> LlamaForCausalLM:
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=d, intermediate_size=ff, num_hidden_layers=layers,
                      num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=n_ctx,
                      rope_theta=theta, rms_norm_eps=eps, tie_word_embeddings=tied, attention_bias=attention_bias,
                      bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(seed)
    return randomize(LlamaForCausalLM(cfg), seed)


def word_tokenizer(vocab: int) -> Tokenizer:
    """A tokenizer.json of words w0..w{V-2} and [UNK]."""
    words = {f"w{i}": i for i in range(vocab - 1)}
    words["[UNK]"] = vocab - 1
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def save_hf(model, folder: Path, with_tokenizer: bool = True) -> Path:
    model.save_pretrained(folder)
    if with_tokenizer:
        word_tokenizer(model.config.vocab_size).save(str(folder / "tokenizer.json"))
    return folder


# -- nanoGPT -------------------------------------------------------------------------------------------
def nanogpt_state_dict(model: GPT2LMHeadModel, bias: bool = True, compiled: bool = True) -> dict[str, torch.Tensor]:
    """The HF model's weights under nanoGPT's names (nn.Linear [out, in], so Conv1D weights transposed).
    compiled: the '_orig_mod.' prefix torch.compile'd models are saved with."""
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        if k.endswith(".weight") and any(f".{m}." in k for m in ("c_attn", "c_proj", "c_fc")):
            v = v.t().contiguous()
        if k.endswith(".bias") and not bias:
            continue
        sd[k] = v.clone()
    sd["lm_head.weight"] = sd["transformer.wte.weight"]  # nanoGPT ties them; both keys are saved
    return {("_orig_mod." if compiled else "") + k: v for k, v in sd.items()}


def write_nanogpt(model: GPT2LMHeadModel, path: Path, bias: bool = True, **extra) -> Path:
    c = model.config
    sd = nanogpt_state_dict(model, bias=bias)
    model_args = dict(n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, block_size=c.n_positions, bias=bias,
                      vocab_size=c.vocab_size, dropout=0.0)
    opt = {"state": {0: {"step": torch.tensor(5.0), "exp_avg": torch.zeros(3)}},
           "param_groups": [{"lr": 6e-4, "betas": (0.9, 0.95), "weight_decay": 0.1, "params": [0]}]}
    ckpt = {"model": sd, "optimizer": opt, "model_args": model_args, "iter_num": 250,
            "best_val_loss": torch.tensor(1.47), "config": {"dataset": "shakespeare_char", "batch_size": 12,
                                                             "compile": True, "learning_rate": 6e-4}, **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


def zero_biases(model: GPT2LMHeadModel) -> GPT2LMHeadModel:
    """An HF GPT-2 that computes what a nanoGPT bias=False model computes: every bias zero."""
    with torch.no_grad():
        for k, p in model.named_parameters():
            if k.endswith(".bias"):
                p.zero_()
    return model


def write_meta_pkl(chars: list[str], path: Path) -> Path:
    """nanoGPT's data/shakespeare_char/prepare.py meta: plain dict pickled."""
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": {c: i for i, c in enumerate(chars)}}
    path.write_bytes(pickle.dumps(meta))
    return path


# -- llama2.c ------------------------------------------------------------------------------------------
def _llama_parts(model: LlamaForCausalLM) -> dict[str, list[torch.Tensor] | torch.Tensor]:
    c = model.config
    sd = model.state_dict()
    L = c.num_hidden_layers
    layer = lambda n: [sd[f"model.layers.{i}.{n}.weight"] for i in range(L)]  # noqa: E731
    return {
        "embed": sd["model.embed_tokens.weight"], "attn_norm": layer("input_layernorm"),
        # Meta's interleaved RoPE rows, as llama2.c's own training writes them (export.py permute_reverse)
        "q": [half_to_interleaved(w, c.num_attention_heads) for w in layer("self_attn.q_proj")],
        "k": [half_to_interleaved(w, c.num_key_value_heads) for w in layer("self_attn.k_proj")],
        "v": layer("self_attn.v_proj"), "o": layer("self_attn.o_proj"), "ffn_norm": layer("post_attention_layernorm"),
        "w1": layer("mlp.gate_proj"), "w2": layer("mlp.down_proj"), "w3": layer("mlp.up_proj"),
        "norm": sd["model.norm.weight"], "head": sd.get("lm_head.weight", sd["model.embed_tokens.weight"]),
    }


def _f32(t) -> bytes:
    if isinstance(t, list):
        return b"".join(_f32(x) for x in t)
    return t.detach().float().contiguous().numpy().astype("<f4").tobytes()


def write_llama2c(model: LlamaForCausalLM, path: Path, version: int = 0) -> Path:
    """A llama2.c .bin: version 0 = legacy_export (run.c), version 1 = version1_export ("ak42")."""
    c = model.config
    p = _llama_parts(model)
    shared = bool(c.tie_word_embeddings)
    d, H = c.hidden_size, c.num_attention_heads
    params = [d, c.intermediate_size, c.num_hidden_layers, H, c.num_key_value_heads, c.vocab_size,
              c.max_position_embeddings]
    with open(path, "wb") as f:
        if version == 0:
            params[5] = params[5] if shared else -params[5]
            f.write(struct.pack("<7i", *params))
            for key in ("embed", "attn_norm", "q", "k", "v", "o", "ffn_norm", "w1", "w2", "w3", "norm"):
                f.write(_f32(p[key]))
            head = d // H
            freqs = 1.0 / (10000.0 ** (torch.arange(0, head, 2)[: head // 2].float() / head))
            angles = torch.outer(torch.arange(c.max_position_embeddings).float(), freqs)
            f.write(_f32(angles.cos()) + _f32(angles.sin()))
        else:
            f.write(struct.pack("<Ii", LLAMA2C_MAGIC, 1) + struct.pack("<7i", *params) + struct.pack("B", shared))
            f.write(b"\0" * (256 - f.tell()))
            for key in ("attn_norm", "ffn_norm", "norm", "embed", "q", "k", "v", "o", "w1", "w2", "w3"):
                f.write(_f32(p[key]))
        if not shared:
            f.write(_f32(p["head"]))
    return path


def runc_forward(path: Path, tokens: list[int]) -> np.ndarray:
    """A transcription of run.c's forward() over a legacy .bin, in numpy float32, one token at a time
    (interleaved RoPE pairs, freq 10000^(-i/head_size), rmsnorm eps 1e-5): logits [T, V]."""
    raw = path.read_bytes()
    dim, hidden, L, H, KV, V, seq = struct.unpack_from("<7i", raw)
    shared, V = V > 0, abs(V)
    w = np.frombuffer(raw, dtype="<f4", offset=28)
    hs, kv_dim = dim // H, dim * KV // H
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        out = w[pos : pos + n].reshape(shape)
        pos += n
        return out

    emb, rms_att, wq, wk, wv, wo = take(V, dim), take(L, dim), take(L, dim, dim), take(L, kv_dim, dim), \
        take(L, kv_dim, dim), take(L, dim, dim)
    rms_ffn, w1, w2, w3 = take(L, dim), take(L, hidden, dim), take(L, dim, hidden), take(L, hidden, dim)
    rms_f = take(dim)
    take(seq * hs)
    wcls = emb if shared else take(V, dim)

    def rmsnorm(x, g):
        ss = np.float32(np.mean(x * x) + np.float32(1e-5))
        return g * (x / np.sqrt(ss))

    kc, vc = np.zeros((L, seq, kv_dim), np.float32), np.zeros((L, seq, kv_dim), np.float32)
    out = []
    for p, tok in enumerate(tokens):
        x = emb[tok].copy()
        for layer in range(L):
            xb = rmsnorm(x, rms_att[layer])
            q, k, v = wq[layer] @ xb, wk[layer] @ xb, wv[layer] @ xb
            for i in range(0, dim, 2):
                freq = 1.0 / 10000.0 ** ((i % hs) / hs)
                c, s = np.cos(p * freq), np.sin(p * freq)
                for vec in ((q, k) if i < kv_dim else (q,)):
                    v0, v1 = vec[i], vec[i + 1]
                    vec[i], vec[i + 1] = v0 * c - v1 * s, v0 * s + v1 * c
            kc[layer, p], vc[layer, p] = k, v
            att_out = np.zeros(dim, np.float32)
            for h in range(H):
                kvh = h // (H // KV)
                qh = q[h * hs : (h + 1) * hs]
                scores = kc[layer, : p + 1, kvh * hs : (kvh + 1) * hs] @ qh / np.sqrt(hs)
                a = np.exp(scores - scores.max())
                a /= a.sum()
                att_out[h * hs : (h + 1) * hs] = a @ vc[layer, : p + 1, kvh * hs : (kvh + 1) * hs]
            x = x + wo[layer] @ att_out
            xb = rmsnorm(x, rms_ffn[layer])
            h1, h3 = w1[layer] @ xb, w3[layer] @ xb
            x = x + w2[layer] @ (h1 / (1 + np.exp(-h1)) * h3)
        out.append(wcls @ rmsnorm(x, rms_f))
    return np.stack(out)


def tokenizer_bin(pieces: list[bytes], scores: list[float], path: Path) -> Path:
    """llama2.c's tokenizer.py export: max token length, then (score, length, bytes) per token."""
    with open(path, "wb") as f:
        f.write(struct.pack("<I", max(len(p) for p in pieces)))
        for p, s in zip(pieces, scores):
            f.write(struct.pack("<fI", s, len(p)) + p)
    return path


def sentencepiece_vocab(extra: list[tuple[str, float]], size: int | None = None) -> tuple[list[bytes], list[float]]:
    """<unk>, <s>, </s> as tokenizer.py writes them, the 256 byte tokens <0x00>..<0xFF>, then ``extra``
    (piece, score), padded with filler pieces up to ``size``."""
    pieces = [b"<unk>", b"\n<s>\n", b"\n</s>\n"] + [f"<0x{b:02X}>".encode() for b in range(256)]
    scores = [0.0] * 259
    for piece, score in extra:
        pieces.append(piece.encode())
        scores.append(score)
    while size is not None and len(pieces) < size:
        pieces.append(f"~filler{len(pieces)}~".encode())
        scores.append(-1e4 - len(pieces))
    return pieces, scores
