"""A reference model written independently of tinyviz.model: nanoGPT's GPT at a tinyviz config.

Used by the benchmark (the speed to match) and by the tests (the logits and greedy tokens tinyviz's
model must agree with when both hold the same weights; see ``load_tinyviz_weights``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tinyviz.config import ModelConfig, TrainConfig
from tinyviz.data.text import TokenData


class RefAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.dropout = cfg.n_heads, cfg.dropout
        self.c_attn = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))  # [B, H, T, dh]
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class RefBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias), nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = RefAttention(cfg)
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, cfg.ff_size, bias=cfg.bias), nn.GELU(),
                                 nn.Linear(cfg.ff_size, cfg.d_model, bias=cfg.bias), nn.Dropout(cfg.dropout))

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class RefGPT(nn.Module):
    """nanoGPT's GPT: learned positions, pre-LN, GELU MLP, tied embeddings, N(0, 0.02) init."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(cfg.d_vocab, cfg.d_model), nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(RefBlock(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.d_vocab, bias=False)
        self.lm_head.weight = self.wte.weight
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, std=0.02 / (math.sqrt(2 * cfg.n_layers) if name.endswith("c_proj.weight") else 1))
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx):
        x = self.drop(self.wte(idx) + self.wpe.weight[: idx.shape[1]])
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# The ModelConfig values RefGPT computes; any other value is an architecture it does not have.
REF_ARCHITECTURE = dict(pos_emb="learned", norm="layernorm", norm_position="pre", residual=True, mlp="gelu",
                        tie_embeddings=True, causal=True, attn_scale=True)


def load_tinyviz_weights(ref: RefGPT, cfg: ModelConfig, state: dict[str, torch.Tensor]) -> RefGPT:
    """Copy a tinyviz Transformer's weights (its state dict, or model.safetensors as stored, where a tied
    W_U is left out) into ``ref``, which must be built from the same ``cfg``; returns ``ref``.

    The names map one to one (tinyviz's fused W_QKV is [q; k; v] stacked along the output dim, the order
    nanoGPT's c_attn splits in). Raises ValueError for a config RefGPT cannot compute (see REF_ARCHITECTURE).
    """
    unlike = {k: getattr(cfg, k) for k, v in REF_ARCHITECTURE.items() if getattr(cfg, k) != v}
    if cfg.kv_heads != cfg.n_heads:
        unlike["n_kv_heads"] = cfg.n_kv_heads
    if unlike:
        raise ValueError(f"RefGPT is nanoGPT's architecture only; this config differs in {unlike}.")
    names = {"W_E.weight": "wte.weight", "W_pos.weight": "wpe.weight"}
    for i in range(cfg.n_layers):
        for ours, theirs in (("ln1", "ln_1"), ("ln2", "ln_2"), ("attn.W_QKV", "attn.c_attn"),
                             ("attn.W_O", "attn.c_proj"), ("mlp.W_in", "mlp.0"), ("mlp.W_out", "mlp.2")):
            for kind in ("weight", "bias"):
                names[f"blocks.{i}.{ours}.{kind}"] = f"h.{i}.{theirs}.{kind}"
    for kind in ("weight", "bias"):
        names[f"ln_final.{kind}"] = f"ln_f.{kind}"
    mapped = {names[k]: v for k, v in state.items() if k != "W_U.weight"}  # W_U is W_E (tied)
    mapped["lm_head.weight"] = mapped["wte.weight"]
    ref.load_state_dict(mapped, strict=True)  # a key either side left unmapped is an error
    return ref


class RefTrainer:
    """nanoGPT's train.py step: AdamW with decay groups (fused only on CUDA, as nanoGPT has it, so
    foreach on CPU), the same lr schedule, clip 1.0, and no metrics and no host sync."""

    def __init__(self, model_cfg: ModelConfig, train_cfg: TrainConfig, data: TokenData):
        torch.manual_seed(train_cfg.seed)
        self.model, self.cfg, self.model_cfg, self.data = RefGPT(model_cfg), train_cfg, model_cfg, data
        params = list(self.model.parameters())
        groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": train_cfg.weight_decay},
                  {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
        self.optimizer = torch.optim.AdamW(groups, lr=train_cfg.lr, betas=(train_cfg.beta1, train_cfg.beta2))
        self.gen = torch.Generator().manual_seed(train_cfg.seed + 1)
        self.it = 0

    def step(self) -> torch.Tensor:
        from tinyviz.training.trainer import lr_at

        x, y = self.data.get_batch("train", self.cfg.batch_size, self.model_cfg.n_ctx, self.gen)
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(self.it, self.cfg)
        logits = self.model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.view(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.it += 1
        return loss.detach()
