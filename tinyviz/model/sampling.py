"""Sampling with temperature, top-k, top-p and a seed; temperature 0 is greedy.

The model reads the text from a window start. When the text outgrows n_ctx, the start jumps
so that the last 3/4 of n_ctx tokens stay, as llama.cpp shifts a full context; the KV cache is
refilled from them once and grows again. Re-reading the last n_ctx tokens at every step would
cost a full forward pass per token (learned positions shift, so no cached key stays valid).
Uncached generation reads the same windows, so both give the same text (tests/test_sample.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from tinyviz.config import SampleConfig
from tinyviz.model.transformer import KVCache, Transformer


@dataclass
class SampleStep:
    token: int
    text: str  # the token as text
    prob: float  # its probability under the distribution it was drawn from
    candidates: list[tuple[str, float]]  # the top candidates of that distribution


@dataclass
class SampleResult:
    prompt: str  # the prompt as the model saw it (after cropping)
    text: str  # the generated continuation only
    steps: list[SampleStep] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)


def next_token_probs(logits: torch.Tensor, cfg: SampleConfig) -> torch.Tensor:
    """The distribution a token is drawn from: logits [V] -> probs [V] after temperature, top-k, top-p.

    At temperature 0 this is the plain softmax (for display); the token is its argmax.
    """
    logits = logits.float()
    if cfg.temperature == 0:
        return torch.softmax(logits, dim=-1)
    logits = logits / cfg.temperature
    if 0 < cfg.top_k < logits.numel():
        kth = torch.topk(logits, cfg.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        # drop a token once the tokens before it already cover top_p; the first always stays
        drop = (cum - torch.softmax(sorted_logits, dim=-1)) >= cfg.top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return torch.softmax(logits, dim=-1)


def encode_prompt(tokenizer, prompt: str, n_ctx: int, room: int = 1) -> tuple[list[int], list[str]]:
    """Token ids of the prompt, cropped to its last n_ctx - room tokens, and notices for the person.

    room=1 leaves a position for the next token (sampling); room=0 fills the context (inspection).
    """
    if not prompt:
        raise ValueError("the prompt is empty; type at least one character to start from.")
    keep = n_ctx - room
    notices = []
    # Only the last tokens are read, so a huge paste (1 MB in a text box) is cut to a tail that surely
    # holds them before it is tokenized: a token is one character (char) or a few (BPE).
    limit = max(1, n_ctx) * MAX_CHARS_PER_TOKEN
    if len(prompt) > limit:
        notices.append(f"the prompt has {len(prompt):,} characters, far more than the model sees "
                       f"(n_ctx={n_ctx} tokens); only its end was read and its last {keep} tokens were used.")
        ids = tokenizer.encode(prompt[-limit:])[-keep:] if keep > 0 else []
        return ids, notices
    ids = tokenizer.encode(prompt)  # UnknownCharactersError names any character it does not know
    if len(ids) > keep:
        notices.append(
            f"the prompt has {len(ids)} tokens but the model sees at most n_ctx={n_ctx}; "
            f"only its last {keep} tokens were used."
        )
        ids = ids[-keep:]
    return ids, notices


MAX_CHARS_PER_TOKEN = 32  # longer than any token a small BPE learns on these corpora


@torch.no_grad()
def generate(model: Transformer, tokenizer, prompt: str, cfg: SampleConfig | None = None,
             use_cache: bool = True) -> SampleResult:
    """Continue prompt by cfg.max_new_tokens tokens (cfg None: SampleConfig's defaults)."""
    cfg = cfg if cfg is not None else SampleConfig()
    vocab = model.cfg.d_vocab
    if cfg.top_k > vocab:
        raise ValueError(f"top_k={cfg.top_k} is larger than the vocabulary ({vocab} tokens); use 0 (off) to {vocab}.")
    n_ctx = model.cfg.n_ctx
    ids, notices = encode_prompt(tokenizer, prompt, n_ctx)
    # a non-causal model's earlier positions see later ones, so cached keys would go stale
    use_cache = use_cache and model.cfg.causal
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(cfg.seed)
    tokens = list(ids)
    start, keep = 0, max(1, n_ctx * 3 // 4)  # the window is tokens[start:], at most n_ctx long

    def read_window():
        cache = KVCache(model.cfg, 1, device=device) if use_cache else None
        return model(torch.tensor([tokens[start:]], device=device), kv_cache=cache)[0, -1], cache

    logits, cache = read_window()
    steps = []
    for i in range(cfg.max_new_tokens):
        probs = next_token_probs(logits, cfg)
        if cfg.temperature == 0:
            tok = int(torch.argmax(probs))
        else:
            tok = int(torch.multinomial(probs.cpu(), 1, generator=gen))
        top = torch.topk(probs, min(cfg.n_candidates, vocab))
        steps.append(SampleStep(
            token=tok, text=tokenizer.decode([tok]), prob=float(probs[tok]),
            candidates=[(tokenizer.token_str(int(i)), float(p)) for p, i in zip(top.values, top.indices)],
        ))
        tokens.append(tok)
        if i + 1 == cfg.max_new_tokens:
            break  # no step reads the logits after the last token
        if len(tokens) - start > n_ctx:
            start = len(tokens) - keep
            logits, cache = read_window()
        elif cache is not None:
            logits = model(torch.tensor([[tok]], device=device), kv_cache=cache)[0, -1]
        else:
            logits, cache = read_window()
    model.train(was_training)
    return SampleResult(prompt=tokenizer.decode(ids), text=tokenizer.decode(tokens[len(ids):]),
                        steps=steps, notices=notices)
