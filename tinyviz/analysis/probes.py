"""Probes: what a model's heads and activations do on a prompt, and whether training is healthy.

Pure functions over a model or its cache. Each runs under ``torch.no_grad()`` with the model
in eval mode and puts its previous mode back. A prompt is ``[T]`` or ``[1, T]`` token ids (a
tensor, array or list); ``activation_stats`` also takes a batch ``[B, T]``. Results are numpy
arrays (float32 unless said) or dicts and dataclasses of plain Python values.

Attention patterns are ``[L, H, T, T]`` (layer, head, query q, key k). A pattern is causal
when nothing above its diagonal exceeds 1e-6 (or say so with ``causal=``); the *allowed keys*
of query q are 0..q when causal and all T keys otherwise. A row with one allowed key (row 0 of
a causal pattern) has no choice to make: its entropy is 0 and it is left out of every mean.

Head scores, each ``[L, H]`` in [0, 1], are means over the query rows that have a choice:

- prev_token: attention on the previous token, pattern[q, q-1], over q >= 1.
- induction: attention on the tokens that followed earlier occurrences of the current token:
  the sum of pattern[q, k] over keys 1 <= k < q with tokens[k-1] == tokens[q], averaged over
  the queries that have at least one such key; 0 when no query has one (a prompt without
  repeats). k = q (the current token repeating the one before it) is left out: it would
  credit a head for attending to itself.
- sink: attention on the first token, pattern[q, 0].
- self: attention on the query's own position, pattern[q, q].
- local: attention on the 3 keys before the query, q-3..q-1, over q >= 1. Self is excluded,
  so a previous-token head is also local but a self head is not.
- uniform: 1 - the total-variation distance between the row and the uniform distribution
  over its allowed keys: 1 for an even spread, 1/n for a row that attends to one of n keys.

``head_entropy`` is the mean over query rows of each row's entropy in nats (at most ln(q+1)
for causal row q); ``normalized=True`` divides each row by that maximum, giving [0, 1].
``label_heads`` names each head by the score that clears its threshold in ``HEAD_THRESHOLDS``
by the largest factor (score / threshold), or "mixed" when none does.

``induction_scores`` measures induction twice. "random": a random sequence of token ids
(uniform over the vocabulary, seeded) repeated, with period 23 by default; the score is the
mean over the positions q >= period of pattern[q, q-period+1], the token after the previous
occurrence. The built-in corpora repeat words of 3 to 16 letters back to back (periods of at
most 17 characters), so a head that scores on random tokens at period 23 copies by content,
not by a memorised offset or familiar text. "in_distribution": the induction score above on
a real text.

Health checks over the metrics stream live in ``tinyviz.training.health``.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from tinyviz.model.hooks import zero_head

HEAD_THRESHOLDS = {"prev_token": 0.4, "induction": 0.3, "sink": 0.5, "self": 0.5, "local": 0.6, "uniform": 0.8}
SCORE_NAMES = tuple(HEAD_THRESHOLDS)  # the head scores, in the order tables and figures show them
LOCAL_WINDOW = 3  # keys q-3..q-1 count as local
CAUSAL_TOL = 1e-6  # largest entry above the diagonal of a pattern still called causal
RELU_ACTIVE = 1e-6  # a relu unit is active where its output exceeds this
RANDOM_PERIOD = 23  # the built-in copy lines repeat back to back with periods of at most 17


@contextlib.contextmanager
def _inference(model):
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def _batch(model, tokens, single: bool = True, min_len: int = 1) -> torch.Tensor:
    """Token ids [T], [1, T] (or [B, T] when not single) -> a LongTensor [B, T] on the model's device."""
    t = torch.as_tensor(tokens, dtype=torch.long)
    t = t[None] if t.dim() == 1 else t
    if t.dim() != 2 or (single and t.shape[0] != 1):
        want = "[T] or [1, T]" if single else "[T] or [B, T]"
        raise ValueError(f"tokens have shape {list(t.shape)}; pass a prompt of token ids as {want}.")
    if t.shape[1] < min_len:
        raise ValueError(f"this probe needs a prompt of at least {min_len} tokens; got {t.shape[1]}.")
    lo, hi, d_vocab = int(t.min()), int(t.max()), model.cfg.d_vocab
    if lo < 0 or hi >= d_vocab:
        raise ValueError(f"token ids must be in 0..{d_vocab - 1} (the model's vocabulary); got {lo}..{hi}.")
    return t.to(next(model.parameters()).device)


def _pattern_names(n_layers: int) -> set[str]:
    return {f"blocks.{l}.attn.hook_pattern" for l in range(n_layers)}


def _stat_names(n_layers: int) -> set[str]:
    kinds = ("hook_resid_post", "hook_attn_out", "hook_mlp_out", "mlp.hook_pre", "mlp.hook_post")
    return {f"blocks.{l}.{k}" for l in range(n_layers) for k in kinds}


def _patterns(cache: dict, n_layers: int) -> torch.Tensor:
    return torch.stack([cache[f"blocks.{l}.attn.hook_pattern"][0] for l in range(n_layers)]).float().cpu()


def _act_stats(cache: dict, cfg) -> list[dict]:
    out = []
    for l in range(cfg.n_layers):
        resid = cache[f"blocks.{l}.hook_resid_post"].float()
        post = cache[f"blocks.{l}.mlp.hook_post"].float().flatten(0, -2)  # [B*T, d_ff]
        if cfg.mlp == "swiglu":  # silu(gate) > 0 exactly where post and pre share a sign
            active = post * cache[f"blocks.{l}.mlp.hook_pre"].float().flatten(0, -2) > 0
        else:
            active = post > (RELU_ACTIVE if cfg.mlp == "relu" else 0.0)
        out.append({
            "layer": l,
            "resid_mean": float(resid.mean()),
            "resid_std": float(resid.std(correction=0)),
            "resid_max_abs": float(resid.abs().max()),
            "attn_out_std": float(cache[f"blocks.{l}.hook_attn_out"].float().std(correction=0)),
            "mlp_out_std": float(cache[f"blocks.{l}.hook_mlp_out"].float().std(correction=0)),
            "mlp_dead_frac": float((~active.any(0)).float().mean()),
        })
    return out


def attention_patterns(model, tokens) -> np.ndarray:
    """Every head's attention on one prompt: [n_layers, n_heads, T, T] float32, rows sum to 1."""
    toks = _batch(model, tokens)
    with _inference(model):
        _, cache = model.run_with_cache(toks, names=_pattern_names(model.cfg.n_layers))
    return _patterns(cache, model.cfg.n_layers).numpy()


def activation_stats(model, tokens) -> list[dict]:
    """Per layer, over every batch row, position and channel of tokens [T] or [B, T]:
    {"layer", "resid_mean", "resid_std", "resid_max_abs"} of the residual stream after the
    block, "attn_out_std", "mlp_out_std", and "mlp_dead_frac", the fraction of MLP hidden
    units active at no position. Active means: relu, output > 1e-6; gelu, output > 0 (its
    input > 0); swiglu, silu(gate) > 0 (the gate's input > 0), read as post * pre > 0.
    """
    toks = _batch(model, tokens, single=False)
    with _inference(model):
        _, cache = model.run_with_cache(toks, names=_stat_names(model.cfg.n_layers))
    return _act_stats(cache, model.cfg)


def _geometry(patterns, causal):
    """(patterns [..., T, T] float32, allowed keys [T, T] bool, rows with a choice [T] bool)."""
    p = np.asarray(patterns, dtype=np.float32)
    if p.ndim < 2 or p.shape[-1] != p.shape[-2]:
        raise ValueError(f"attention patterns must be [..., T, T] (query by key); got shape {list(p.shape)}.")
    T = p.shape[-1]
    if causal is None:
        causal = bool(np.all(np.triu(p, 1) <= CAUSAL_TOL))
    allowed = np.tril(np.ones((T, T), bool)) if causal else np.ones((T, T), bool)
    return p, allowed, allowed.sum(1) > 1


def _mean_rows(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Mean over the last axis [..., T] of the selected rows; 0 when none is selected."""
    return x[..., rows].mean(-1) if rows.any() else np.zeros(x.shape[:-1], np.float32)


def _mass(p: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Attention of each query on its selected keys: p [..., T, T], keys [T, T] bool -> [..., T]."""
    return np.einsum("...qk,qk->...q", p, keys.astype(np.float32))


def row_entropy(patterns: np.ndarray) -> np.ndarray:
    """Entropy in nats of each attention row: [..., T, S] -> [..., T]."""
    p = np.asarray(patterns, dtype=np.float32)
    log_p = np.zeros_like(p)
    np.log(p, out=log_p, where=p > 0)
    return -(p * log_p).sum(-1)


def head_entropy(patterns: np.ndarray, normalized: bool = False, causal: bool | None = None) -> np.ndarray:
    """Mean row entropy per head: [L, H, T, T] -> [L, H] nats, or in [0, 1] when normalized."""
    p, allowed, rows = _geometry(patterns, causal)
    h = row_entropy(p)
    if normalized:
        h = h / np.log(np.maximum(allowed.sum(1), 2))
    return _mean_rows(h, rows).astype(np.float32)


def head_scores(patterns: np.ndarray, tokens, causal: bool | None = None) -> dict[str, np.ndarray]:
    """The scores of the module docstring for patterns [L, H, T, T] of the prompt tokens [T]:
    {"prev_token", "induction", "sink", "self", "local", "uniform"}, each [L, H] in [0, 1]."""
    p, allowed, rows = _geometry(patterns, causal)
    T = p.shape[-1]
    toks = np.asarray(tokens).reshape(-1)
    if toks.shape[0] != T:
        raise ValueError(f"{toks.shape[0]} tokens do not match patterns over {T} positions.")
    q, k = np.arange(T)[:, None], np.arange(T)[None, :]
    after_repeat = (k >= 1) & (k < q) & (toks[np.maximum(k - 1, 0)] == toks[:, None])  # [T, T]
    local = (k >= q - LOCAL_WINDOW) & (k < q)
    uniform = (allowed / allowed.sum(1, keepdims=True)).astype(np.float32)
    back = rows & (np.arange(T) >= 1)
    prev = np.zeros(p.shape[:-1], np.float32)
    prev[..., 1:] = np.diagonal(p, offset=-1, axis1=-2, axis2=-1)
    scores = {
        "prev_token": _mean_rows(prev, back),
        "induction": _mean_rows(_mass(p, after_repeat), after_repeat.any(1)),
        "sink": _mean_rows(p[..., 0], rows),
        "self": _mean_rows(np.diagonal(p, axis1=-2, axis2=-1), rows),
        "local": _mean_rows(_mass(p, local), back),
        "uniform": 1.0 - _mean_rows(0.5 * np.abs(p - uniform).sum(-1), rows),
    }
    return {name: np.clip(scores[name], 0.0, 1.0).astype(np.float32) for name in SCORE_NAMES}


def label_heads(scores: dict[str, np.ndarray], thresholds: dict[str, float] = HEAD_THRESHOLDS) -> list[list[str]]:
    """[L][H] labels: the score that clears its threshold by the largest factor, else "mixed"."""
    names = [n for n in thresholds if n in scores]
    ratios = np.stack([np.asarray(scores[n], dtype=np.float64) / thresholds[n] for n in names])  # [K, L, H]
    best = ratios.argmax(0)
    return [
        [names[b] if ratios[b, l, h] >= 1.0 else "mixed" for h, b in enumerate(row)]
        for l, row in enumerate(best)
    ]


def head_stats(patterns: np.ndarray, tokens, causal: bool) -> dict:
    """What a per-head table shows, from patterns [L, H, T, T] of the prompt tokens [T]:
    {"scores": {name: [L, H]}, "entropy": [L, H] nats, "labels": [L][H]}.

    causal is the model's own flag, never guessed from the patterns: a non-causal model's heads can
    attend only backwards on a prompt and would then be scored over the wrong keys."""
    scores = head_scores(patterns, tokens, causal=causal)
    return {"scores": scores, "entropy": head_entropy(patterns, causal=causal), "labels": label_heads(scores)}


def head_rows(stats: dict) -> list[dict]:
    """head_stats as one row per head, layer-major: layer, head, label, entropy and each score (4 decimals)."""
    L, H = stats["entropy"].shape
    return [{"layer": l, "head": h, "label": stats["labels"][l][h], "entropy": round(float(stats["entropy"][l, h]), 4),
             **{n: round(float(stats["scores"][n][l, h]), 4) for n in SCORE_NAMES}}
            for l in range(L) for h in range(H)]


def induction_scores(
    model, tokenizer_or_vocab_size=None, *, in_distribution_text: str | None = None, tokenizer=None,
    period: int = RANDOM_PERIOD, reps: int = 2, seed: int = 0,
) -> dict:
    """{"random": [L, H], "in_distribution": [L, H] or None, "period": int} (see the module docstring).

    Random ids are drawn below the vocabulary size given (an int, or a tokenizer's
    ``vocab_size``), capped at the model's d_vocab, so ids the tokenizer never makes are not
    used. The text is encoded with ``tokenizer`` (or a tokenizer passed positionally) and cropped
    to n_ctx.
    """
    cfg, src = model.cfg, tokenizer_or_vocab_size
    is_size = isinstance(src, (int, np.integer))
    if tokenizer is None and src is not None and not is_size:
        tokenizer = src
    vocab = min(int(src) if is_size else int(getattr(tokenizer, "vocab_size", cfg.d_vocab)), cfg.d_vocab)
    if vocab < 2:
        raise ValueError(f"the vocabulary size {vocab} is too small for random tokens; it must be at least 2.")
    if not 2 <= period < cfg.n_ctx or reps < 2:
        raise ValueError(
            f"period={period}, reps={reps}: the period must be in 2..{cfg.n_ctx - 1} (n_ctx={cfg.n_ctx}) "
            "and the sequence must repeat at least twice (reps >= 2)."
        )
    rng = np.random.default_rng(seed)
    seq = np.tile(rng.integers(0, vocab, size=period), reps)[: cfg.n_ctx]
    q = np.arange(period, len(seq))
    random = attention_patterns(model, seq)[:, :, q, q - period + 1].mean(-1)
    in_dist = None
    if in_distribution_text is not None:
        if tokenizer is None:
            raise ValueError("in_distribution_text needs a tokenizer to encode it; pass tokenizer=...")
        ids = list(tokenizer.encode(in_distribution_text))[: cfg.n_ctx]
        if len(ids) < 3:
            raise ValueError("in_distribution_text is too short to hold a repeat; give at least a sentence.")
        in_dist = head_scores(attention_patterns(model, ids), ids, causal=cfg.causal)["induction"]
    return {"random": random.astype(np.float32), "in_distribution": in_dist, "period": int(period)}


def logit_lens(model, tokens, tokenizer=None, k: int = 1) -> dict:
    """Decode the residual stream after every block with the model's own unembedding.

    Row 0 is the embeddings (blocks.0.hook_resid_pre, position embedding included), row i
    the stream after block i-1; each goes through ``ln_final`` then ``W_U``, so the last row
    is the model's own prediction. Returns {"rows": [L+1] names, "top_token": [L+1, T] ids,
    "top_prob": [L+1, T], "topk_tokens"/"topk_probs": [L+1, T, k], "next_token_prob":
    [L+1, T-1] probability of the actual next token, and "labels": [L+1][T] token strings
    when a tokenizer is given}.
    """
    toks = _batch(model, tokens)
    L = model.cfg.n_layers
    if not 1 <= k <= model.cfg.d_vocab:
        raise ValueError(f"k={k} must be between 1 and the vocabulary size {model.cfg.d_vocab}.")
    names = ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(L)]
    with _inference(model):
        _, cache = model.run_with_cache(toks, names=names)
        resid = torch.stack([cache[n][0] for n in names])  # [L+1, T, d_model]
        probs = model.W_U(model.ln_final(resid)).float().softmax(-1)  # [L+1, T, d_vocab]
    top_p, top_i = probs.topk(k, dim=-1)
    T = toks.shape[1]
    out = {
        "rows": ["embed"] + [f"block {l}" for l in range(L)],
        "top_token": top_i[..., 0].cpu().numpy(),
        "top_prob": top_p[..., 0].cpu().numpy(),
        "topk_tokens": top_i.cpu().numpy(),
        "topk_probs": top_p.cpu().numpy(),
        "next_token_prob": probs[:, torch.arange(T - 1, device=probs.device), toks[0, 1:]].cpu().numpy(),
    }
    if tokenizer is not None:
        out["labels"] = [[tokenizer.token_str(int(i)) for i in row] for row in out["top_token"]]
    return out


def _logits(model, toks: torch.Tensor) -> torch.Tensor:
    return model(toks)[0].float()  # [T, d_vocab]


def loss_per_position(model, tokens) -> np.ndarray:
    """Cross-entropy (nats) of each actual next token: [T] prompt -> [T-1]."""
    toks = _batch(model, tokens, min_len=2)
    with _inference(model):
        logits = _logits(model, toks)
    return F.cross_entropy(logits[:-1], toks[0, 1:], reduction="none").cpu().numpy()


def top_predictions(model, tokens, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """The k likeliest next tokens after each position: (ids [T, k], probs [T, k])."""
    toks = _batch(model, tokens)
    if not 1 <= k <= model.cfg.d_vocab:
        raise ValueError(f"k={k} must be between 1 and the vocabulary size {model.cfg.d_vocab}.")
    with _inference(model):
        probs, ids = _logits(model, toks).softmax(-1).topk(k, dim=-1)
    return ids.cpu().numpy(), probs.cpu().numpy()


def ablation_loss(model, tokens, heads: list[tuple[int, int]]) -> dict:
    """Mean next-token loss on the prompt, clean and with ``heads`` [(layer, head)] zero-ablated:
    {"clean", "ablated", "delta" = ablated - clean}."""
    toks, cfg = _batch(model, tokens, min_len=2), model.cfg
    for layer, head in heads:
        if not (0 <= layer < cfg.n_layers and 0 <= head < cfg.n_heads):
            raise ValueError(
                f"head ({layer}, {head}) does not exist: layers are 0..{cfg.n_layers - 1}, heads 0..{cfg.n_heads - 1}."
            )

    def loss() -> float:
        return float(F.cross_entropy(_logits(model, toks)[:-1], toks[0, 1:]))

    with _inference(model):
        clean = loss()
        with model.hooks([zero_head(layer, head) for layer, head in heads]):
            ablated = loss()
    return {"clean": clean, "ablated": ablated, "delta": ablated - clean}


def probe_snapshot(model, tokens) -> dict:
    """What the trainer stores every snapshot, from one forward pass over the prompt:
    {"patterns": [L, H, T, T] float16, "act_stats": activation_stats list, "entropy": [L, H],
    "entropy_mean": float, "scores": {name: [L, H]}} (arrays float32 unless said)."""
    toks = _batch(model, tokens)
    cfg = model.cfg
    with _inference(model):
        _, cache = model.run_with_cache(toks, names=_pattern_names(cfg.n_layers) | _stat_names(cfg.n_layers))
    patterns = _patterns(cache, cfg.n_layers)
    entropy = head_entropy(patterns.numpy(), causal=cfg.causal)
    scores = head_scores(patterns.numpy(), toks[0].cpu().numpy(), causal=cfg.causal)
    return {
        "patterns": patterns.half().numpy(),  # torch converts to float16 far faster than numpy
        "act_stats": _act_stats(cache, cfg),
        "entropy": entropy,
        "entropy_mean": float(entropy.mean()),
        "scores": scores,
    }
