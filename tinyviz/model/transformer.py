"""One decoder-only transformer; every ablation is a ModelConfig field read at build time.

Shapes use TransformerLens names: batch B, positions T (query) and S (key), heads H,
key/value heads KV (grouped-query attention), d_head dh.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tinyviz.config import ModelConfig
from tinyviz.model.hooks import HookedRootModule, HookPoint


class KVCache:
    """Keys and values of the positions seen so far, per layer: [B, KV, n_ctx, dh]."""

    def __init__(self, cfg: ModelConfig, batch_size: int, device=None, dtype=torch.float32):
        shape = (batch_size, cfg.kv_heads, cfg.n_ctx, cfg.d_head)
        self.keys = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.values = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.pos = 0  # advanced by the model once every layer has written

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v [B, KV, T, dh] after the cached positions; return all of them [B, KV, pos+T, dh]."""
        end = self.pos + k.shape[2]
        self.keys[layer][:, :, self.pos : end] = k
        self.values[layer][:, :, self.pos : end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


class Rotary(nn.Module):
    """Rotary position embedding (GPT-NeoX half-split form), applied to q and k."""

    def __init__(self, d_head: int, n_ctx: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, d_head, 2).float() / d_head))
        angles = torch.outer(torch.arange(n_ctx).float(), inv_freq)  # [n_ctx, dh/2]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int) -> torch.Tensor:  # x: [B, H, T, dh]
        T = x.shape[-2]
        cos, sin = self.cos[offset : offset + T], self.sin[offset : offset + T]
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


GPT_INIT_STD = 0.02


def sinusoidal_table(n_ctx: int, d_model: int, rms: float = 1 / math.sqrt(2)) -> torch.Tensor:
    """The fixed sin/cos position table of 'Attention is all you need': [n_ctx, d_model], each entry's
    root mean square `rms` (1/sqrt(2), amplitude 1, by default)."""
    pos = torch.arange(n_ctx).float()[:, None]
    div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    table = torch.zeros(n_ctx, d_model)
    table[:, 0::2] = torch.sin(pos * div)
    table[:, 1::2] = torch.cos(pos * div)
    return table * (rms * math.sqrt(2))


def embedding_init_std(cfg: ModelConfig) -> float:
    """The token embeddings' standard deviation at init: 0.02 (gpt) or 1 (nn.Embedding's default)."""
    return GPT_INIT_STD if cfg.init == "gpt" else 1.0


def make_norm(cfg: ModelConfig) -> nn.Module:
    if cfg.norm == "layernorm":
        return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=cfg.bias)
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
    return nn.Identity()


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.layer, self.causal = layer, cfg.causal
        self.H, self.KV, self.dh = cfg.n_heads, cfg.kv_heads, cfg.d_head
        self.W_QKV = nn.Linear(cfg.d_model, (self.H + 2 * self.KV) * self.dh, bias=cfg.bias)
        self.W_O = nn.Linear(self.H * self.dh, cfg.d_model, bias=cfg.bias)
        self.scale = self.dh**-0.5 if cfg.attn_scale else 1.0
        self.rope = Rotary(self.dh, cfg.n_ctx, cfg.rope_base) if cfg.pos_emb == "rope" else None
        self.p_drop = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)
        self.explicit = False  # True forces the pattern-producing path even when nothing is hooked
        self.hook_q, self.hook_k, self.hook_v = HookPoint(), HookPoint(), HookPoint()  # [B, T, head, dh]
        self.hook_scores = HookPoint()  # [B, H, T, S], masked entries are -inf
        self.hook_pattern = HookPoint()  # [B, H, T, S], rows sum to 1
        self.hook_z = HookPoint()  # [B, T, H, dh], each head's output before W_O

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.W_QKV(x).split([self.H * self.dh, self.KV * self.dh, self.KV * self.dh], dim=-1)
        q = self.hook_q(q.view(B, T, self.H, self.dh)).transpose(1, 2)  # [B, H, T, dh]
        k = self.hook_k(k.view(B, T, self.KV, self.dh)).transpose(1, 2)  # [B, KV, T, dh]
        v = self.hook_v(v.view(B, T, self.KV, self.dh)).transpose(1, 2)
        offset = kv_cache.pos if kv_cache is not None else 0
        if self.rope is not None:
            q, k = self.rope(q, offset), self.rope(k, offset)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer, k, v)  # [B, KV, S, dh], S = offset + T
        if self.KV != self.H:
            k, v = k.repeat_interleave(self.H // self.KV, dim=1), v.repeat_interleave(self.H // self.KV, dim=1)
        # A query at position offset+i may see keys 0..offset+i (bottom-right aligned causal mask);
        # one new query (cached decoding) sees every key, so it needs no mask.
        S = k.shape[2]
        mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T) if self.causal and T > 1 else None
        if self.explicit or self.hook_scores.has_hooks() or self.hook_pattern.has_hooks():
            z = self._explicit(q, k, v, mask)
        else:  # fused kernel, same maths (pinned equal by tests/test_model.py)
            p = self.p_drop if self.training else 0.0
            # the square causal case (training, prefill) as is_causal, as nanoGPT calls it: the kernel
            # can skip the masked blocks instead of reading a mask
            square = mask is not None and T == S
            z = F.scaled_dot_product_attention(q, k, v, attn_mask=None if square else mask, dropout_p=p,
                                               is_causal=square, scale=self.scale)
        z = self.hook_z(z.transpose(1, 2))  # [B, T, H, dh]
        return self.resid_drop(self.W_O(z.reshape(B, T, self.H * self.dh)))

    def _explicit(self, q, k, v, mask):
        scores = (q @ k.transpose(-2, -1)) * self.scale  # [B, H, T, S]
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        pattern = self.hook_pattern(torch.softmax(self.hook_scores(scores), dim=-1))
        pattern = F.dropout(pattern, self.p_drop, self.training)
        return pattern @ v  # [B, H, T, dh]


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.W_in = nn.Linear(cfg.d_model, cfg.ff_size, bias=cfg.bias)
        self.W_gate = nn.Linear(cfg.d_model, cfg.ff_size, bias=cfg.bias) if cfg.mlp == "swiglu" else None
        # gelu is the exact erf form (nanoGPT, BERT); gelu_tanh the tanh approximation (GPT-2's "gelu_new")
        self.act = {"relu": nn.ReLU(), "gelu": nn.GELU(), "gelu_tanh": nn.GELU(approximate="tanh"),
                    "swiglu": nn.SiLU()}[cfg.mlp]
        self.W_out = nn.Linear(cfg.ff_size, cfg.d_model, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)
        self.hook_pre = HookPoint()  # [B, T, d_ff]
        self.hook_post = HookPoint()  # [B, T, d_ff], the hidden units after the nonlinearity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(self.W_in(x))
        post = self.act(self.W_gate(x)) * pre if self.W_gate is not None else self.act(pre)
        return self.drop(self.W_out(self.hook_post(post)))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int):
        super().__init__()
        self.pre_norm = cfg.norm_position == "pre"
        # residual off: each sub-layer's output replaces the stream instead of adding to it
        self.add = (lambda x, y: x + y) if cfg.residual else (lambda x, y: y)
        self.ln1, self.ln2 = make_norm(cfg), make_norm(cfg)
        self.attn, self.mlp = Attention(cfg, layer), MLP(cfg)
        self.hook_resid_pre, self.hook_resid_mid, self.hook_resid_post = HookPoint(), HookPoint(), HookPoint()
        self.hook_attn_out, self.hook_mlp_out = HookPoint(), HookPoint()  # [B, T, d_model]

    def forward(self, x: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        x = self.hook_resid_pre(x)
        if self.pre_norm:
            x = self.hook_resid_mid(self.add(x, self.hook_attn_out(self.attn(self.ln1(x), kv_cache))))
            x = self.hook_resid_post(self.add(x, self.hook_mlp_out(self.mlp(self.ln2(x)))))
        else:  # post-LN, as in the original Transformer: normalise after the residual sum
            x = self.hook_resid_mid(self.ln1(self.add(x, self.hook_attn_out(self.attn(x, kv_cache)))))
            x = self.hook_resid_post(self.ln2(self.add(x, self.hook_mlp_out(self.mlp(x)))))
        return x


class Transformer(HookedRootModule):
    """tokens [B, T] -> logits [B, T, d_vocab]."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.W_E = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.W_pos = nn.Embedding(cfg.n_ctx, cfg.d_model) if cfg.pos_emb == "learned" else None
        if cfg.pos_emb == "sinusoidal":
            # The paper scales token embeddings (std d_model^-1/2) by sqrt(d_model), so tokens and positions
            # start at the same size. Here the table is scaled to the embeddings instead: at amplitude 1
            # beside std-0.02 tokens, position swamps token identity and training stalls at the unigram loss.
            table = sinusoidal_table(cfg.n_ctx, cfg.d_model, rms=embedding_init_std(cfg))
            self.register_buffer("sin_pos", table, persistent=False)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(cfg.n_layers))
        # post-LN already ends every block in a norm; pre-LN needs one before the unembedding
        self.ln_final = make_norm(cfg) if cfg.norm_position == "pre" else nn.Identity()
        self.W_U = nn.Linear(cfg.d_model, cfg.d_vocab, bias=False)
        if cfg.tie_embeddings:
            self.W_U.weight = self.W_E.weight
        self.hook_embed, self.hook_final = HookPoint(), HookPoint()
        if cfg.pos_emb in ("learned", "sinusoidal"):  # rope and none add nothing to the stream
            self.hook_pos_embed = HookPoint()
        self._init_weights()
        self.setup_hooks()

    def _init_weights(self) -> None:
        """gpt: N(0, 0.02) for every matrix, embeddings included, zero biases. pytorch_default: untouched.

        scaled_residual_init (gpt init only) gives the projections that write into the
        residual stream (W_O, W_out) std 0.02 / sqrt(2 * n_layers), as GPT-2 does.
        """
        if self.cfg.init == "pytorch_default":
            return
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=GPT_INIT_STD)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)
        if self.cfg.scaled_residual_init:
            std = GPT_INIT_STD / math.sqrt(2 * self.cfg.n_layers)
            for block in self.blocks:
                nn.init.normal_(block.attn.W_O.weight, std=std)
                nn.init.normal_(block.mlp.W_out.weight, std=std)

    def set_attn_impl(self, impl: str) -> None:
        """'explicit' always computes the pattern; 'auto' uses the fused kernel unless it is hooked."""
        for block in self.blocks:
            block.attn.explicit = impl == "explicit"

    def n_params(self, non_embedding: bool = True) -> int:
        """Parameter count. non_embedding leaves out the lookup tables (W_pos, and W_E when untied):
        the N of the 6·N FLOPs-per-token estimate. A tied W_E stays in, since it is the unembedding matmul."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.W_pos.weight.numel() if self.W_pos is not None else 0
            n -= 0 if self.cfg.tie_embeddings else self.W_E.weight.numel()
        return n

    def forward(self, tokens: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        B, T = tokens.shape
        offset = kv_cache.pos if kv_cache is not None else 0
        if offset + T > self.cfg.n_ctx:
            raise ValueError(f"{offset + T} positions do not fit the context of n_ctx={self.cfg.n_ctx}; "
                             "crop the input.")
        x = self.hook_embed(self.W_E(tokens))  # [B, T, d_model]
        if self.W_pos is not None:
            x = x + self.hook_pos_embed(self.W_pos.weight[offset : offset + T])
        elif self.cfg.pos_emb == "sinusoidal":
            x = x + self.hook_pos_embed(self.sin_pos[offset : offset + T])
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, kv_cache)
        if kv_cache is not None:
            kv_cache.pos += T
        return self.W_U(self.hook_final(self.ln_final(x)))
