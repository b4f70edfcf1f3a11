"""Weights of models trained elsewhere <-> tinyviz's Transformer: pure name and layout mapping.

Each ``*_to_tinyviz`` takes the source's tensors (and its config) and returns a ``ModelConfig`` and a
state dict in tinyviz's parameter names (``Transformer.named_parameters``; a tied W_U is not stored).
Every source key must be used and every needed key present, else ``FormatError`` names them.

- nanoGPT ``ckpt.pt``: GPT-2 architecture with exact GELU, nn.Linear layout, optional biases.
- Hugging Face ``GPT2LMHeadModel``: Conv1D weights ([in, out], transposed here), tanh GELU ("gelu_new").
- Hugging Face ``LlamaForCausalLM``: half-split ("rotate_half") RoPE, RMSNorm, SwiGLU, GQA.
- llama2.c ``.bin`` (legacy v0 and version 1 "ak42"): the Llama architecture with q/k rows in Meta's
  interleaved RoPE order ((x0,x1),(x2,x3),... rotate together). tinyviz's RoPE is the half-split form,
  so the rows of each head are permuted at import (``interleaved_to_half``): q and k get the same
  permutation, their dot product is unchanged, and the model computes what run.c computes.

``tinyviz_to_hf`` goes the other way for ``export-hf``.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

import numpy as np
import torch

from tinyviz.config import ModelConfig


class FormatError(ValueError):
    """A model file that cannot be mapped; the message says what is wrong and what to do."""


@dataclass
class Mapped:
    config: ModelConfig
    tensors: dict[str, torch.Tensor]
    notes: list[str] = field(default_factory=list)


def _take(sd: dict[str, torch.Tensor], key: str, source: str) -> torch.Tensor:
    if key not in sd:
        raise FormatError(f"{source} has no tensor {key!r}; the file is incomplete or not the format it claims.")
    return sd.pop(key)


def _check_used(sd: dict[str, torch.Tensor], source: str) -> None:
    if sd:
        extra = sorted(sd)
        raise FormatError(f"{source} has {len(extra)} tensor(s) this architecture does not use "
                          f"({', '.join(extra[:3])}{', ...' if len(extra) > 3 else ''}); it is another model.")


def _shape(t: torch.Tensor, shape: tuple, key: str, source: str) -> torch.Tensor:
    if tuple(t.shape) != tuple(shape):
        raise FormatError(f"{source}'s {key} has shape {tuple(t.shape)} but its config needs {tuple(shape)}; "
                          "the weights and the config do not belong together.")
    return t.float().contiguous()


def _config(source: str, **kw) -> ModelConfig:
    try:
        return ModelConfig(**kw)
    except ValueError as e:
        raise FormatError(f"{source}'s configuration does not make a valid model: {e}") from None


# -- GPT-2 family: nanoGPT and Hugging Face GPT2LMHeadModel -------------------------------------------------
_GPT2_BUFFERS = re.compile(r".*\.attn\.(bias|masked_bias)$")  # causal-mask buffers older files carry


def _gpt2_like(sd: dict[str, torch.Tensor], cfg: ModelConfig, *, conv1d: bool, prefix: str, source: str) -> Mapped:
    """Shared mapping of GPT-2-shaped weights. conv1d: HF stores Linear weights as [in, out]."""
    sd = {k: v for k, v in sd.items() if not _GPT2_BUFFERS.match(k)}
    d, ff, V = cfg.d_model, cfg.ff_size, cfg.d_vocab

    def lin(name: str, out_f: int, in_f: int) -> torch.Tensor:
        w = _take(sd, f"{prefix}{name}.weight", source)
        return _shape(w.t() if conv1d else w, (out_f, in_f), f"{name}.weight", source)

    def vec(name: str, n: int) -> torch.Tensor:
        return _shape(_take(sd, f"{prefix}{name}", source), (n,), name, source)

    out = {"W_E.weight": _shape(_take(sd, f"{prefix}wte.weight", source), (V, d), "wte.weight", source),
           "W_pos.weight": _shape(_take(sd, f"{prefix}wpe.weight", source), (cfg.n_ctx, d), "wpe.weight", source)}
    for i in range(cfg.n_layers):
        h, b = f"h.{i}.", f"blocks.{i}."
        pairs = [("ln_1", "ln1", None), ("attn.c_attn", "attn.W_QKV", (3 * d, d)), ("attn.c_proj", "attn.W_O", (d, d)),
                 ("ln_2", "ln2", None), ("mlp.c_fc", "mlp.W_in", (ff, d)), ("mlp.c_proj", "mlp.W_out", (d, ff))]
        for src, dst, shape in pairs:
            if shape is None:
                out[f"{b}{dst}.weight"] = vec(f"{h}{src}.weight", d)
            else:
                out[f"{b}{dst}.weight"] = lin(f"{h}{src}", *shape)
            if cfg.bias:
                out[f"{b}{dst}.bias"] = vec(f"{h}{src}.bias", shape[0] if shape else d)
    out["ln_final.weight"] = vec("ln_f.weight", d)
    if cfg.bias:
        out["ln_final.bias"] = vec("ln_f.bias", d)
    head = sd.pop("lm_head.weight", None)
    if not cfg.tie_embeddings:
        if head is None:
            raise FormatError(f"{source} has untied embeddings but no lm_head.weight; the file is incomplete.")
        out["W_U.weight"] = _shape(head, (V, d), "lm_head.weight", source)
    _check_used(sd, source)
    return Mapped(cfg, out)


def nanogpt_to_tinyviz(state_dict: dict[str, torch.Tensor], model_args: dict, source: str = "ckpt.pt") -> Mapped:
    """nanoGPT's model state dict (keys 'transformer.h.0.attn.c_attn.weight', ..., optionally with the
    '_orig_mod.' prefix of a torch.compile'd model) and its ``model_args``."""
    try:
        n_layer, n_head, n_embd = (int(model_args[k]) for k in ("n_layer", "n_head", "n_embd"))
        block_size, vocab_size = int(model_args["block_size"]), int(model_args["vocab_size"])
        bias = bool(model_args.get("bias", True))
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"{source}'s model_args lack {e}; nanoGPT writes n_layer, n_head, n_embd, block_size, "
                          "bias and vocab_size.") from None
    cfg = _config(source, n_layers=n_layer, n_heads=n_head, d_model=n_embd, n_ctx=block_size, d_vocab=vocab_size,
                  bias=bias, pos_emb="learned", norm="layernorm", mlp="gelu", tie_embeddings=True, norm_eps=1e-5)
    sd = {k.removeprefix("_orig_mod."): v for k, v in state_dict.items()}
    sd.pop("lm_head.weight", None)  # tied to transformer.wte.weight in nanoGPT
    return _gpt2_like(sd, cfg, conv1d=False, prefix="transformer.", source=source)


_GPT2_ACT = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
             "gelu": "gelu", "relu": "relu"}


def _hf_get(hf: dict, key: str, source: str, default=None):
    value = hf.get(key, default)
    if value is None:
        raise FormatError(f"{source} has no {key!r}; it is not a complete Hugging Face config.json.")
    return value


def gpt2_config(hf: dict, source: str = "config.json") -> ModelConfig:
    act = hf.get("activation_function", "gelu_new")
    if act not in _GPT2_ACT:
        raise FormatError(f"{source} asks for activation_function={act!r}; tinyviz maps {', '.join(_GPT2_ACT)}.")
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("add_cross_attention"):
        name = "scale_attn_by_inverse_layer_idx" if hf.get("scale_attn_by_inverse_layer_idx") else "add_cross_attention"
        raise FormatError(f"{source} sets {name}, which tinyviz's transformer does not have.")
    n_embd = int(_hf_get(hf, "n_embd", source))
    return _config(source, n_layers=int(_hf_get(hf, "n_layer", source)), n_heads=int(_hf_get(hf, "n_head", source)),
                   d_model=n_embd, d_ff=hf.get("n_inner") or None, n_ctx=int(_hf_get(hf, "n_positions", source)),
                   d_vocab=int(_hf_get(hf, "vocab_size", source)), bias=True, pos_emb="learned", norm="layernorm",
                   mlp=_GPT2_ACT[act], tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
                   attn_scale=bool(hf.get("scale_attn_weights", True)),
                   norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)))


def gpt2_hf_to_tinyviz(sd: dict[str, torch.Tensor], hf: dict, source: str = "model.safetensors") -> Mapped:
    cfg = gpt2_config(hf)
    prefix = "transformer." if any(k.startswith("transformer.") for k in sd) else ""  # GPT2Model saves without it
    return _gpt2_like(dict(sd), cfg, conv1d=True, prefix=prefix, source=source)


# -- Llama family: Hugging Face LlamaForCausalLM and llama2.c ------------------------------------------------
def _rope_theta(hf: dict, source: str) -> float:
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    kind = params.get("rope_type", params.get("type")) or scaling.get("rope_type", scaling.get("type")) or "default"
    if kind != "default":
        raise FormatError(f"{source} asks for RoPE scaling of type {kind!r}; tinyviz implements plain RoPE only.")
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def llama_config(hf: dict, source: str = "config.json") -> ModelConfig:
    act = hf.get("hidden_act", "silu")
    if act != "silu":
        raise FormatError(f"{source} asks for hidden_act={act!r}; tinyviz's SwiGLU uses silu.")
    d, H = int(_hf_get(hf, "hidden_size", source)), int(_hf_get(hf, "num_attention_heads", source))
    head_dim = hf.get("head_dim") or d // H
    if head_dim * H != d:
        raise FormatError(f"{source} has head_dim={head_dim} with {H} heads of a {d}-wide model; tinyviz needs "
                          "head_dim = hidden_size / num_attention_heads.")
    return _config(source, n_layers=int(_hf_get(hf, "num_hidden_layers", source)), n_heads=H,
                   n_kv_heads=int(hf.get("num_key_value_heads") or H), d_model=d,
                   d_ff=int(_hf_get(hf, "intermediate_size", source)),
                   n_ctx=int(_hf_get(hf, "max_position_embeddings", source)),
                   d_vocab=int(_hf_get(hf, "vocab_size", source)),
                   bias=bool(hf.get("attention_bias") or hf.get("mlp_bias")), pos_emb="rope", norm="rmsnorm",
                   mlp="swiglu", tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
                   rope_base=_rope_theta(hf, source), norm_eps=float(hf.get("rms_norm_eps", 1e-6)))


def _llama_tensors(get, cfg: ModelConfig, source: str, *, interleaved: bool) -> dict[str, torch.Tensor]:
    """tinyviz tensors from a getter of (name, shape) -> tensor or None (a bias the file lacks)."""
    d, ff, V, dh = cfg.d_model, cfg.ff_size, cfg.d_vocab, cfg.d_head
    q_out, kv_out = cfg.n_heads * dh, cfg.kv_heads * dh
    out = {"W_E.weight": get("embed", (V, d))}
    for i in range(cfg.n_layers):
        b = f"blocks.{i}."
        q, k, v = get(f"{i}.q", (q_out, d)), get(f"{i}.k", (kv_out, d)), get(f"{i}.v", (kv_out, d))
        if interleaved:
            q, k = interleaved_to_half(q, cfg.n_heads), interleaved_to_half(k, cfg.kv_heads)
        out[b + "ln1.weight"] = get(f"{i}.attn_norm", (d,))
        out[b + "attn.W_QKV.weight"] = torch.cat([q, k, v])
        out[b + "attn.W_O.weight"] = get(f"{i}.o", (d, q_out))
        out[b + "ln2.weight"] = get(f"{i}.ffn_norm", (d,))
        out[b + "mlp.W_gate.weight"] = get(f"{i}.gate", (ff, d))  # w1: silu(w1 x) * w3 x
        out[b + "mlp.W_in.weight"] = get(f"{i}.up", (ff, d))  # w3
        out[b + "mlp.W_out.weight"] = get(f"{i}.down", (d, ff))  # w2
        if cfg.bias:  # a bias the file lacks is zero: Llama may have attention biases without MLP ones
            zero = lambda n: torch.zeros(n)  # noqa: E731
            qb, kb, vb = (get(f"{i}.{x}_bias", (n,)) for x, n in (("q", q_out), ("k", kv_out), ("v", kv_out)))
            out[b + "attn.W_QKV.bias"] = torch.cat([qb if qb is not None else zero(q_out),
                                                    kb if kb is not None else zero(kv_out),
                                                    vb if vb is not None else zero(kv_out)])
            for name, key, n in (("attn.W_O", "o", d), ("mlp.W_gate", "gate", ff), ("mlp.W_in", "up", ff),
                                 ("mlp.W_out", "down", d)):
                t = get(f"{i}.{key}_bias", (n,))
                out[b + name + ".bias"] = t if t is not None else zero(n)
    out["ln_final.weight"] = get("norm", (d,))
    if not cfg.tie_embeddings:
        out["W_U.weight"] = get("head", (V, d))
    return out


_LLAMA_HF_NAMES = {"embed": "model.embed_tokens.weight", "norm": "model.norm.weight", "head": "lm_head.weight",
                   "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
                   "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                   "gate": "mlp.gate_proj", "up": "mlp.up_proj", "down": "mlp.down_proj"}


def llama_hf_to_tinyviz(sd: dict[str, torch.Tensor], hf: dict, source: str = "model.safetensors") -> Mapped:
    cfg = llama_config(hf)
    sd = {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}  # a buffer older files carry
    if cfg.tie_embeddings:
        sd.pop("lm_head.weight", None)  # transformers ignores it when tied; so does tinyviz

    def get(name: str, shape: tuple):
        layer, _, part = name.rpartition(".")
        if not layer:
            return _shape(_take(sd, _LLAMA_HF_NAMES[part], source), shape, _LLAMA_HF_NAMES[part], source)
        part, is_bias = (part[:-5], True) if part.endswith("_bias") else (part, False)
        key = f"model.layers.{layer}.{_LLAMA_HF_NAMES[part]}.{'bias' if is_bias else 'weight'}"
        if is_bias:
            return _shape(sd.pop(key), shape, key, source) if key in sd else None
        return _shape(_take(sd, key, source), shape, key, source)

    out = _llama_tensors(get, cfg, source, interleaved=False)
    _check_used(sd, source)
    return Mapped(cfg, out)


def interleaved_to_half(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Rows [n_heads * dh, in] of a q/k projection from interleaved RoPE pairs (x0,x1),(x2,x3),... to
    the half-split pairs (x0,x_{dh/2}),(x1,x_{dh/2+1}),...: within each head, even rows first, then odd.
    (llama2.c's export.py writes Hugging Face weights with the inverse of this permutation.)"""
    rows, cols = w.shape
    return w.reshape(n_heads, rows // n_heads // 2, 2, cols).transpose(1, 2).reshape(rows, cols)


def half_to_interleaved(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The inverse of ``interleaved_to_half``."""
    rows, cols = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, cols).transpose(1, 2).reshape(rows, cols)


# -- llama2.c .bin ------------------------------------------------------------------------------------------
LLAMA2C_MAGIC = 0x616B3432  # "ak42", version-1 files written by llama2.c's export.py
_HEADER_FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")


@dataclass
class Llama2cHeader:
    version: int  # 0 legacy (run.c), 1 "ak42" float32
    dim: int
    hidden_dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    vocab_size: int
    seq_len: int
    shared: bool
    offset: int  # bytes before the first float

    def config(self, source: str) -> ModelConfig:
        return _config(source, n_layers=self.n_layers, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads,
                       d_model=self.dim, d_ff=self.hidden_dim, n_ctx=self.seq_len, d_vocab=self.vocab_size,
                       bias=False, pos_emb="rope", norm="rmsnorm", mlp="swiglu", tie_embeddings=self.shared,
                       rope_base=10000.0, norm_eps=1e-5)

    def n_floats(self) -> int:
        d, L, hd, V = self.dim, self.n_layers, self.hidden_dim, self.vocab_size
        kv_dim = d * self.n_kv_heads // self.n_heads
        n = V * d + L * (2 * d + 2 * d * d + 2 * d * kv_dim + 3 * d * hd) + d
        if self.version == 0:
            n += self.seq_len * (d // self.n_heads)  # freq_cis real + imag, each seq_len * head_size / 2
        return n + (0 if self.shared else V * d)


def read_llama2c_header(head: bytes, file_size: int, source: str = "the .bin file") -> Llama2cHeader:
    """The header of a llama2.c checkpoint, checked against the file's length before anything is read."""
    if len(head) < 28:
        raise FormatError(f"{source} is {file_size} bytes, too short for a llama2.c header (28 bytes); "
                          "the file is truncated or not a llama2.c model.")
    magic = struct.unpack_from("<I", head)[0]
    if magic == LLAMA2C_MAGIC:
        if len(head) < 256:
            raise FormatError(f"{source} is {file_size} bytes, too short for a version-1 llama2.c header (256 bytes).")
        version = struct.unpack_from("<i", head, 4)[0]
        if version != 1:
            raise FormatError(f"{source} is a llama2.c file of version {version}; tinyviz reads the float32 "
                              "versions 0 (legacy) and 1 (export.py --version 1), not the int8-quantized one.")
        values = struct.unpack_from("<7i", head, 8)
        shared, offset = bool(head[36]), 256
    else:
        version, values, offset = 0, struct.unpack_from("<7i", head, 0), 28
        shared = values[5] > 0  # run.c: a negative vocab_size means an unshared classifier
    fields = dict(zip(_HEADER_FIELDS, values))
    fields["vocab_size"] = abs(fields["vocab_size"])
    bad = [f"{k}={v}" for k, v in fields.items() if v <= 0 or v > 1_000_000]
    if bad or fields["dim"] % fields["n_heads"] or fields["n_heads"] % fields["n_kv_heads"] \
            or (fields["dim"] // fields["n_heads"]) % 2:
        why = ", ".join(bad) if bad else (f"dim={fields['dim']}, n_heads={fields['n_heads']}, "
                                          f"n_kv_heads={fields['n_kv_heads']} do not divide into even heads")
        raise FormatError(f"{source}'s header is not a llama2.c model ({why}); the file is damaged or another format.")
    header = Llama2cHeader(version=version, shared=shared, offset=offset, **fields)
    expected = offset + 4 * header.n_floats()
    if file_size != expected:
        raise FormatError(
            f"{source} is {file_size:,} bytes but its header (dim {header.dim}, hidden {header.hidden_dim}, "
            f"{header.n_layers} layers, {header.n_heads} heads, {header.n_kv_heads} kv heads, vocab "
            f"{header.vocab_size}, seq_len {header.seq_len}, {'shared' if shared else 'separate'} classifier) "
            f"needs {expected:,}; the file is "
            f"{'truncated' if file_size < expected else 'longer than its header says'}.")
    return header


def llama2c_to_tinyviz(floats: np.ndarray, header: Llama2cHeader, source: str = "the .bin file") -> Mapped:
    """Map the float32 array after the header (``floats``, e.g. a np.memmap) in run.c's / export.py's order."""
    cfg = header.config(source)
    d, L, hd, V = header.dim, header.n_layers, header.hidden_dim, header.vocab_size
    kv = d * header.n_kv_heads // header.n_heads
    pos = 0

    def nxt(*shape) -> torch.Tensor:
        nonlocal pos
        n = int(np.prod(shape))
        t = torch.from_numpy(np.array(floats[pos : pos + n], dtype=np.float32).reshape(shape))
        pos += n
        return t

    if header.version == 0:  # run.c's memory_map_weights order
        parts = {"embed": nxt(V, d), "attn_norm": nxt(L, d), "q": nxt(L, d, d), "k": nxt(L, kv, d),
                 "v": nxt(L, kv, d), "o": nxt(L, d, d), "ffn_norm": nxt(L, d), "gate": nxt(L, hd, d),
                 "down": nxt(L, d, hd), "up": nxt(L, hd, d), "norm": nxt(d)}
        pos += header.seq_len * (d // header.n_heads)  # skip the stored RoPE tables
    else:  # export.py's version1_export order: the norms first, then the matrices
        parts = {"attn_norm": nxt(L, d), "ffn_norm": nxt(L, d), "norm": nxt(d), "embed": nxt(V, d),
                 "q": nxt(L, d, d), "k": nxt(L, kv, d), "v": nxt(L, kv, d), "o": nxt(L, d, d),
                 "gate": nxt(L, hd, d), "down": nxt(L, d, hd), "up": nxt(L, hd, d)}
    if not header.shared:
        parts["head"] = nxt(V, d)

    def get(name: str, shape: tuple):
        layer, _, part = name.rpartition(".")
        if part.endswith("_bias"):
            return None
        return parts[part][int(layer)] if layer else parts[part]

    return Mapped(cfg, _llama_tensors(get, cfg, source, interleaved=True))


# -- tinyviz -> Hugging Face (export-hf) ---------------------------------------------------------------------
class ExportError(ValueError):
    """A run whose switches have no Hugging Face architecture; the message names the field."""


def _refuse(field_name: str, value, why: str) -> ExportError:
    return ExportError(f"this run cannot become a Hugging Face model: {field_name}={value!r} {why}.")


def hf_architecture(cfg: ModelConfig) -> str:
    """'gpt2' or 'llama', or ExportError naming the first field that maps onto neither."""
    for name, ok, why in (("causal", True, "(GPT-2 and Llama are causal language models)"),
                          ("residual", True, "(both architectures add every sub-layer to a residual stream)"),
                          ("norm_position", "pre", "(both normalise before each sub-layer)"),
                          ("attn_scale", True, "(both scale attention scores by 1/sqrt(d_head))")):
        if getattr(cfg, name) != ok:
            raise _refuse(name, getattr(cfg, name), why)
    if cfg.pos_emb == "learned":
        if cfg.norm != "layernorm":
            raise _refuse("norm", cfg.norm, "with learned positions needs layernorm to be GPT-2")
        if cfg.mlp not in ("gelu", "gelu_tanh", "relu"):
            raise _refuse("mlp", cfg.mlp, "with learned positions needs gelu, gelu_tanh or relu to be GPT-2")
        if cfg.kv_heads != cfg.n_heads:
            raise _refuse("n_kv_heads", cfg.n_kv_heads, "with learned positions: GPT-2 has no grouped-query attention")
        return "gpt2"
    if cfg.pos_emb == "rope":
        if cfg.norm != "rmsnorm":
            raise _refuse("norm", cfg.norm, "with RoPE needs rmsnorm to be Llama")
        if cfg.mlp != "swiglu":
            raise _refuse("mlp", cfg.mlp, "with RoPE needs swiglu to be Llama")
        return "llama"
    raise _refuse("pos_emb", cfg.pos_emb, "has no Hugging Face counterpart (GPT-2 learns positions, Llama uses rope)")


def tinyviz_to_hf(cfg: ModelConfig, tensors: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json dict, state dict in transformers' names) of a tinyviz model; ExportError if unmappable."""
    arch = hf_architecture(cfg)
    t = {k: v.detach().float().contiguous() for k, v in tensors.items()}
    d, ff, L = cfg.d_model, cfg.ff_size, cfg.n_layers
    sd: dict[str, torch.Tensor] = {}
    bias = lambda key, n: t.get(key, torch.zeros(n))  # noqa: E731  (bias=False: exact zeros)
    if arch == "gpt2":
        hf = {"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": cfg.d_vocab,
              "n_positions": cfg.n_ctx, "n_embd": d, "n_layer": L, "n_head": cfg.n_heads, "n_inner": ff,
              "activation_function": {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}[cfg.mlp],
              "layer_norm_epsilon": cfg.norm_eps, "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout,
              "attn_pdrop": cfg.dropout, "scale_attn_weights": True, "tie_word_embeddings": cfg.tie_embeddings,
              "bos_token_id": None, "eos_token_id": None}
        sd["transformer.wte.weight"], sd["transformer.wpe.weight"] = t["W_E.weight"], t["W_pos.weight"]
        for i in range(L):
            h, b = f"transformer.h.{i}.", f"blocks.{i}."
            for src, dst, n, conv in (("ln1", "ln_1", d, False), ("attn.W_QKV", "attn.c_attn", 3 * d, True),
                                      ("attn.W_O", "attn.c_proj", d, True), ("ln2", "ln_2", d, False),
                                      ("mlp.W_in", "mlp.c_fc", ff, True), ("mlp.W_out", "mlp.c_proj", d, True)):
                w = t[f"{b}{src}.weight"]
                sd[f"{h}{dst}.weight"] = w.t().contiguous() if conv else w  # Conv1D stores [in, out]
                sd[f"{h}{dst}.bias"] = bias(f"{b}{src}.bias", n)
        sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"] = t["ln_final.weight"], bias("ln_final.bias", d)
        head = "lm_head.weight"
    else:
        hf = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": cfg.d_vocab,
              "hidden_size": d, "intermediate_size": ff, "num_hidden_layers": L,
              "num_attention_heads": cfg.n_heads, "num_key_value_heads": cfg.kv_heads, "head_dim": cfg.d_head,
              "max_position_embeddings": cfg.n_ctx, "rms_norm_eps": cfg.norm_eps, "hidden_act": "silu",
              "rope_theta": cfg.rope_base, "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_base},
              "attention_bias": cfg.bias, "mlp_bias": cfg.bias, "attention_dropout": cfg.dropout,
              "tie_word_embeddings": cfg.tie_embeddings, "bos_token_id": None, "eos_token_id": None}
        sd["model.embed_tokens.weight"], sd["model.norm.weight"] = t["W_E.weight"], t["ln_final.weight"]
        qn, kvn = cfg.n_heads * cfg.d_head, cfg.kv_heads * cfg.d_head
        for i in range(L):
            m, b = f"model.layers.{i}.", f"blocks.{i}."
            q, k, v = t[b + "attn.W_QKV.weight"].split([qn, kvn, kvn])
            parts = {"self_attn.q_proj": q, "self_attn.k_proj": k, "self_attn.v_proj": v,
                     "self_attn.o_proj": t[b + "attn.W_O.weight"], "mlp.gate_proj": t[b + "mlp.W_gate.weight"],
                     "mlp.up_proj": t[b + "mlp.W_in.weight"], "mlp.down_proj": t[b + "mlp.W_out.weight"]}
            if cfg.bias:
                qb, kb, vb = t[b + "attn.W_QKV.bias"].split([qn, kvn, kvn])
                biases = {"self_attn.q_proj": qb, "self_attn.k_proj": kb, "self_attn.v_proj": vb,
                          "self_attn.o_proj": t[b + "attn.W_O.bias"], "mlp.gate_proj": t[b + "mlp.W_gate.bias"],
                          "mlp.up_proj": t[b + "mlp.W_in.bias"], "mlp.down_proj": t[b + "mlp.W_out.bias"]}
                sd.update({f"{m}{k_}.bias": v_.contiguous() for k_, v_ in biases.items()})
            sd.update({f"{m}{k_}.weight": v_.contiguous() for k_, v_ in parts.items()})
            sd[m + "input_layernorm.weight"], sd[m + "post_attention_layernorm.weight"] = \
                t[b + "ln1.weight"], t[b + "ln2.weight"]
        head = "lm_head.weight"
    if not cfg.tie_embeddings:
        sd[head] = t["W_U.weight"]
    hf.update({"dtype": "float32", "torch_dtype": "float32"})
    return hf, sd
