"""Sampling with temperature, top-k, top-p and a seed; temperature 0 is greedy.

The model reads the text from a window start. When the text outgrows n_ctx, the start jumps
so that the last 3/4 of n_ctx tokens stay, as llama.cpp shifts a full context; the KV cache is
refilled from them once and grows again. Re-reading the last n_ctx tokens at every step would
cost a full forward pass per token (learned positions shift, so no cached key stays valid).
Uncached generation reads the same windows, so both give the same text (tests/test_sample.py).
"""

from __future__ import annotations

from collections.abc import Iterator
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


class Generation:
    """One sampling run that yields its tokens as they are drawn (the Sample page streams them).

    Generation(...) encodes the prompt at once (a bad prompt or top_k raises ValueError before any
    forward pass); iterating draws cfg.max_new_tokens tokens, yielding each SampleStep, or fewer when
    the model draws one of the tokenizer's ``stop_ids`` (a notice says so); result() runs
    to the end if needed and gives the SampleResult, the same one generate() returns for the same
    arguments: generate is this class run to its end.
    """

    def __init__(self, model: Transformer, tokenizer, prompt: str, cfg: SampleConfig | None = None,
                 use_cache: bool = True):
        self.model, self.tokenizer = model, tokenizer
        self.cfg = cfg if cfg is not None else SampleConfig()
        vocab = model.cfg.d_vocab
        if self.cfg.top_k > vocab:
            raise ValueError(f"top_k={self.cfg.top_k} is larger than the vocabulary ({vocab} tokens); "
                             f"use 0 (off) to {vocab}.")
        self.ids, self.notices = encode_prompt(tokenizer, prompt, model.cfg.n_ctx)
        self.prompt = tokenizer.decode(self.ids)
        # a non-causal model's earlier positions see later ones, so cached keys would go stale
        self.use_cache = use_cache and model.cfg.causal
        self.steps: list[SampleStep] = []
        self._tokens = None  # set once the iteration has run to its end

    def __iter__(self) -> Iterator[SampleStep]:
        if self._tokens is not None or self.steps:
            raise RuntimeError("a Generation is iterated once; make a new one to sample again.")
        yield from self._draw()

    @torch.no_grad()  # torch enters no_grad only while the generator runs, not across its yields
    def _draw(self) -> Iterator[SampleStep]:
        model, tokenizer, cfg = self.model, self.tokenizer, self.cfg
        vocab, n_ctx = model.cfg.d_vocab, model.cfg.n_ctx
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        gen = torch.Generator().manual_seed(cfg.seed)
        tokens = list(self.ids)
        stop_ids = getattr(tokenizer, "stop_ids", frozenset())  # a token that ends a sample (llama2.c's BOS)
        start, keep = 0, max(1, n_ctx * 3 // 4)  # the window is tokens[start:], at most n_ctx long

        def read_window():
            cache = KVCache(model.cfg, 1, device=device) if self.use_cache else None
            return model(torch.tensor([tokens[start:]], device=device), kv_cache=cache)[0, -1], cache

        try:
            logits, cache = read_window()
            for i in range(cfg.max_new_tokens):
                probs = next_token_probs(logits, cfg)
                if cfg.temperature == 0:
                    tok = int(torch.argmax(probs))
                else:
                    tok = int(torch.multinomial(probs.cpu(), 1, generator=gen))
                top = torch.topk(probs, min(cfg.n_candidates, vocab))
                step = SampleStep(
                    token=tok, text=tokenizer.decode([tok]), prob=float(probs[tok]),
                    candidates=[(tokenizer.token_str(int(j)), float(p)) for p, j in zip(top.values, top.indices)],
                )
                self.steps.append(step)
                tokens.append(tok)
                if tok in stop_ids:
                    self.notices.append(
                        f"the model drew {tokenizer.token_str(tok)!r}, which ends a sequence for this tokenizer, after "
                        f"{i + 1} of {cfg.max_new_tokens} new tokens; sampling stopped there (as llama2.c's run.c "
                        "does).")
                yield step
                if i + 1 == cfg.max_new_tokens or tok in stop_ids:
                    break  # no step reads the logits after the last token
                if len(tokens) - start > n_ctx:
                    start = len(tokens) - keep
                    logits, cache = read_window()
                elif cache is not None:
                    logits = model(torch.tensor([[tok]], device=device), kv_cache=cache)[0, -1]
                else:
                    logits, cache = read_window()
            self._tokens = tokens
        finally:  # also when the reader stops early (a rerun of the page mid-stream)
            model.train(was_training)

    def result(self) -> SampleResult:
        """The whole sample: draws what is left first."""
        if self._tokens is None:
            for _ in self:
                pass
        return SampleResult(prompt=self.prompt, text=self.tokenizer.decode(self._tokens[len(self.ids):]),
                            steps=list(self.steps), notices=list(self.notices))


def generate(model: Transformer, tokenizer, prompt: str, cfg: SampleConfig | None = None,
             use_cache: bool = True) -> SampleResult:
    """Continue prompt by cfg.max_new_tokens tokens (cfg None: SampleConfig's defaults)."""
    return Generation(model, tokenizer, prompt, cfg, use_cache).result()


# What a new token costs on a CPU once the model is large: every weight is read from memory once per token.
# A 124 M-parameter GPT-2-shaped model (500 MB of float32) took 54-62 ms a token at 1 torch thread (as the
# app's server runs) on this project's 2-core machine (docs/performance.md, "A model of GPT-2 small's size"):
# about 8.5 GB/s. Its pass over a 128-token prompt took another 0.4 s.
READ_BYTES_PER_S = 8e9
SAMPLE_SECONDS = 1.6  # the default sample's new tokens; the prompt's pass and the page take the rest of ~2 s
MOST_DEFAULT_TOKENS = 150  # small models: their default length, the page's since it was made


def seconds_per_token(n_params: int) -> float:
    """About what one new token costs a CPU core once the weights no longer fit its caches: reading them."""
    return 4 * n_params / READ_BYTES_PER_S


def default_new_tokens(n_params: int, seconds: float = SAMPLE_SECONDS, most: int = MOST_DEFAULT_TOKENS) -> int:
    """How many new tokens to sample by default so that they take about `seconds` on a CPU: a multiple of
    10 from 10 to `most` (150 for any model under ~20 M parameters; 20 for GPT-2 small's 124 M)."""
    return max(10, min(most, int(seconds / seconds_per_token(n_params)) // 10 * 10))
