import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinyviz.analysis import probes
from tinyviz.config import ModelConfig
from tinyviz.model.transformer import Transformer
from tinyviz.training import health

T = 12


def tiny(**kw) -> Transformer:
    torch.manual_seed(0)
    cfg = dict(n_layers=2, n_heads=2, d_model=16, d_ff=32, n_ctx=48, d_vocab=11)
    return Transformer(ModelConfig(**{**cfg, **kw}))


def prompt(n=T, seed=1) -> torch.Tensor:
    return torch.randint(0, 11, (n,), generator=torch.Generator().manual_seed(seed))


class StubTokenizer:
    vocab_size = 11

    def encode(self, s):
        return [ord(c) % 11 for c in s]

    def decode(self, ids):
        return "".join(self.token_str(i) for i in ids)

    def token_str(self, i):
        return "abcdefghijk"[i]


def one_hot_rows(keys) -> np.ndarray:
    p = np.zeros((len(keys), len(keys)), np.float32)
    p[np.arange(len(keys)), keys] = 1.0
    return p


def known_heads():
    """[1, 6, T, T] patterns with a known answer, and a prompt made of one sequence repeated (period 6)."""
    period = 6
    q = np.arange(T)
    causal_uniform = np.tril(np.ones((T, T), np.float32)) / (q[:, None] + 1)
    heads = {
        "prev_token": one_hot_rows(np.maximum(q - 1, 0)),
        "induction": one_hot_rows(np.where(q >= period, q - period + 1, q)),
        "sink": one_hot_rows(np.zeros(T, int)),
        "self": one_hot_rows(q),
        "uniform": causal_uniform,
    }
    return heads, np.tile(np.arange(period), 2)


def test_constructed_patterns_score_their_kind():
    heads, tokens = known_heads()
    patterns = np.stack(list(heads.values()))[None]
    scores = probes.head_scores(patterns, tokens)
    col = {name: i for i, name in enumerate(heads)}
    assert scores["prev_token"][0, col["prev_token"]] == pytest.approx(1.0)
    assert scores["local"][0, col["prev_token"]] == pytest.approx(1.0)
    assert scores["induction"][0, col["induction"]] == pytest.approx(1.0)
    assert scores["sink"][0, col["sink"]] == pytest.approx(1.0)
    assert scores["self"][0, col["self"]] == pytest.approx(1.0)
    assert scores["local"][0, col["self"]] == pytest.approx(0.0)
    assert scores["uniform"][0, col["uniform"]] == pytest.approx(1.0)
    assert scores["uniform"][0, col["sink"]] < 0.5
    assert probes.label_heads(scores) == [list(heads)]


def test_previous_token_head_on_text_without_repeats_has_no_induction():
    p = one_hot_rows(np.maximum(np.arange(T) - 1, 0))[None, None]
    scores = probes.head_scores(p, np.arange(T))
    assert scores["prev_token"][0, 0] == pytest.approx(1.0)
    assert scores["induction"][0, 0] == 0.0


def test_uniform_causal_rows_have_maximal_entropy():
    heads, _ = known_heads()
    uniform = heads["uniform"][None, None]
    assert np.allclose(probes.row_entropy(uniform)[0, 0], np.log(np.arange(T) + 1), atol=1e-5)
    assert probes.head_entropy(uniform, normalized=True)[0, 0] == pytest.approx(1.0)
    assert probes.head_entropy(heads["self"][None, None])[0, 0] == pytest.approx(0.0)
    rows = np.log(np.arange(2, T + 1)).mean()  # row 0 has no choice and is left out
    assert probes.head_entropy(uniform)[0, 0] == pytest.approx(rows, rel=1e-5)


def test_non_causal_uniform_pattern_is_uniform():
    p = np.full((1, 1, T, T), 1.0 / T, np.float32)
    assert probes.head_scores(p, np.arange(T))["uniform"][0, 0] == pytest.approx(1.0)
    assert probes.head_entropy(p, normalized=True)[0, 0] == pytest.approx(1.0)


def test_scores_bad_shapes_are_explained():
    with pytest.raises(ValueError, match="do not match"):
        probes.head_scores(np.ones((1, 1, T, T)) / T, np.arange(T - 1))
    with pytest.raises(ValueError, match=r"\[\.\.\., T, T\]"):
        probes.head_entropy(np.ones((1, 1, T, T - 1)))


@pytest.mark.parametrize("kw", [{}, {"causal": False}, {"pos_emb": "rope", "init": "pytorch_default"}])
def test_random_model_scores_are_in_unit_interval(kw):
    model = tiny(**kw)
    tokens = torch.cat([prompt(8), prompt(8)])
    patterns = probes.attention_patterns(model, tokens)
    for name, s in probes.head_scores(patterns, tokens.numpy()).items():
        assert s.shape == (2, 2), name
        assert np.all((s >= 0) & (s <= 1)), name
    assert np.all(probes.head_entropy(patterns, normalized=True) <= 1 + 1e-5)


def test_attention_patterns_are_causal_distributions_and_mode_is_restored():
    model = tiny(dropout=0.1)
    model.train()
    p = probes.attention_patterns(model, prompt()[None])
    assert p.shape == (2, 2, T, T) and p.dtype == np.float32
    assert np.allclose(p.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(p, 1) == 0)
    assert model.training
    assert not any(hp.has_hooks() for hp in model.hook_dict.values())


def test_bad_tokens_are_explained():
    model = tiny()
    with pytest.raises(ValueError, match="vocabulary"):
        probes.attention_patterns(model, torch.tensor([1, 2, 11]))
    with pytest.raises(ValueError, match=r"\[T\] or \[1, T\]"):
        probes.attention_patterns(model, torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.parametrize("norm_position", ["pre", "post"])
def test_logit_lens_last_row_is_the_models_prediction(norm_position):
    model = tiny(norm_position=norm_position, init="pytorch_default")
    tokens = prompt()
    lens = probes.logit_lens(model, tokens, tokenizer=StubTokenizer(), k=3)
    with torch.no_grad():
        probs = model(tokens[None])[0].softmax(-1)
    assert lens["top_token"].shape == lens["top_prob"].shape == (3, T)
    assert lens["topk_tokens"].shape == (3, T, 3)
    assert lens["rows"] == ["embed", "block 0", "block 1"]
    assert np.array_equal(lens["top_token"][-1], probs.argmax(-1).numpy())
    assert np.allclose(lens["top_prob"][-1], probs.max(-1).values.numpy(), atol=1e-5)
    truth = probs[torch.arange(T - 1), tokens[1:]].numpy()
    assert np.allclose(lens["next_token_prob"][-1], truth, atol=1e-5)
    assert lens["labels"][-1] == [StubTokenizer().token_str(int(i)) for i in lens["top_token"][-1]]


def test_loss_per_position_and_top_predictions_match_torch():
    model = tiny(init="pytorch_default")
    tokens = prompt()
    with torch.no_grad():
        logits = model(tokens[None])[0]
    expected = F.cross_entropy(logits[:-1], tokens[1:], reduction="none").numpy()
    assert np.allclose(probes.loss_per_position(model, tokens), expected, atol=1e-5)
    ids, p = probes.top_predictions(model, tokens, k=4)
    assert ids.shape == p.shape == (T, 4)
    top = logits.softmax(-1).topk(4, dim=-1)
    assert np.array_equal(ids, top.indices.numpy())
    assert np.allclose(p, top.values.numpy(), atol=1e-6)


def test_ablation_loss():
    model = tiny(init="pytorch_default")
    tokens = prompt(24)
    none = probes.ablation_loss(model, tokens, [])
    assert none["delta"] == 0.0 and none["clean"] == none["ablated"]
    some = probes.ablation_loss(model, tokens, [(0, 0), (1, 1)])
    assert some["clean"] == none["clean"] and some["delta"] != 0.0
    assert some["delta"] == pytest.approx(some["ablated"] - some["clean"])
    with pytest.raises(ValueError, match="does not exist"):
        probes.ablation_loss(model, tokens, [(2, 0)])


@pytest.mark.parametrize("mlp", ["relu", "gelu", "swiglu"])
def test_dead_units_are_counted_per_mlp_kind(mlp):
    model = tiny(mlp=mlp)
    tokens = torch.stack([prompt(seed=1), prompt(seed=2)])  # a batch [2, T]
    stats = probes.activation_stats(model, tokens)
    assert [s["layer"] for s in stats] == [0, 1]
    assert all(s["mlp_dead_frac"] < 0.5 for s in stats)
    json.dumps(stats)
    gate = model.blocks[0].mlp.W_gate if mlp == "swiglu" else model.blocks[0].mlp.W_in
    with torch.no_grad():
        gate.bias.fill_(-100.0)  # the unit's input is negative everywhere: it never fires
    assert probes.activation_stats(model, tokens)[0]["mlp_dead_frac"] == 1.0


@pytest.mark.parametrize("kw", [{}, {"mlp": "swiglu", "causal": False}])
def test_probe_snapshot_agrees_with_the_separate_probes(kw):
    model = tiny(**kw)
    tokens = prompt(20)
    snap = probes.probe_snapshot(model, tokens)
    patterns = probes.attention_patterns(model, tokens)
    assert snap["patterns"].dtype == np.float16
    assert np.allclose(snap["patterns"], patterns, atol=1e-3)
    for a, b in zip(snap["act_stats"], probes.activation_stats(model, tokens), strict=True):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-6)  # fused and explicit attention round differently
    causal = model.cfg.causal
    assert np.allclose(snap["entropy"], probes.head_entropy(patterns, causal=causal), atol=1e-6)
    assert snap["entropy_mean"] == pytest.approx(float(np.mean(snap["entropy"])))
    for name, s in probes.head_scores(patterns, tokens.numpy(), causal=causal).items():
        assert np.allclose(snap["scores"][name], s, atol=1e-6)
    json.dumps({k: v for k, v in snap.items() if k not in ("patterns", "scores", "entropy")})  # the metadata


def test_induction_scores():
    model = tiny()
    out = probes.induction_scores(model, StubTokenizer(), in_distribution_text="abcabcabc hello abc")
    assert out["period"] not in range(3, 18)  # the corpora's copy periods
    assert out["random"].shape == out["in_distribution"].shape == (2, 2)
    assert np.all((out["random"] >= 0) & (out["random"] <= 1))
    just_random = probes.induction_scores(model, 5)
    assert just_random["in_distribution"] is None
    with pytest.raises(ValueError, match="period"):
        probes.induction_scores(model, 11, period=48)


def test_induction_scores_random_targets_the_token_after_the_previous_occurrence():
    model = tiny(n_layers=1, n_heads=1)
    period = 23

    def wire(pattern, name):  # a perfect induction head for the period
        q = torch.arange(pattern.shape[-1])
        ideal = torch.zeros_like(pattern)
        ideal[..., q, torch.where(q >= period, q - period + 1, q)] = 1.0
        return ideal

    with model.hooks([("blocks.0.attn.hook_pattern", wire)]):
        out = probes.induction_scores(model, 11, period=period)
    assert out["random"][0, 0] == pytest.approx(1.0)


def test_unigram_entropy():
    assert health.unigram_entropy(np.arange(8), 8) == pytest.approx(math.log(8))
    assert health.unigram_entropy(np.zeros(5, int), 3) == 0.0
    with pytest.raises(ValueError):
        health.unigram_entropy(np.array([3]), 3)


VOCAB = 64


def healthy(n=600) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for s in range(1, n + 1):
        loss = 1.5 + (math.log(VOCAB) - 1.5) * math.exp(-s / 80) + rng.normal(0, 0.02)
        m = {"step": s, "loss": loss, "grad_norm": 1.0 + rng.normal(0, 0.1)}
        if s % 100 == 0:
            m["entropy_mean"] = 2.0 - s / 1000
        out.append(m)
    return out


def codes(metrics, **kw) -> list[str]:
    return [w.code for w in health.health_checks(metrics, vocab_size=VOCAB, **kw)]


def test_healthy_run_has_no_warnings():
    assert codes(healthy(), unigram_entropy=3.3) == []
    assert codes([]) == []


def test_init_loss():
    m = healthy()
    m[0]["loss"] = 8.3
    (w,) = health.health_checks(m, vocab_size=VOCAB)
    assert w.code == "init_loss" and w.severity == "warning" and w.step == 1 and "8.3" in w.message


def test_stuck_uniform_and_unigram():
    flat = [{"step": s, "loss": math.log(VOCAB) + 0.01, "grad_norm": 1.0} for s in range(1, 301)]
    assert codes(flat) == ["stuck_uniform"]
    assert health.health_checks(flat, vocab_size=VOCAB)[0].severity == "error"
    assert codes(flat[:150]) == []
    unigram = [dict(m, loss=3.31) for m in flat]
    unigram[0]["loss"] = math.log(VOCAB)
    assert codes(unigram, unigram_entropy=3.3) == ["stuck_unigram"]


def test_nonfinite():
    m = healthy()
    m[300]["loss"], m[310]["grad_norm"] = float("nan"), float("inf")
    warnings = health.health_checks(m, vocab_size=VOCAB)
    assert [w.code for w in warnings] == ["nonfinite"]
    assert warnings[0].severity == "error" and warnings[0].step == 301


def test_grad_explosion_reports_each_episode_once():
    m = healthy()
    for i in (200, 201, 202, 203, 400):
        m[i]["grad_norm"] = 50.0
    m[5]["grad_norm"] = 50.0  # too little history to judge
    for r in m[401:421]:  # the single spike at 401 hurts: the loss jumps after it
        r["loss"] += 1.0
    warnings = health.health_checks(m, vocab_size=VOCAB)
    assert [(w.code, w.step) for w in warnings] == [("grad_explosion", 201), ("grad_explosion", 401)]
    assert "50" in warnings[0].message


def test_entropy_collapse_needs_a_drop_and_a_loss_spike():
    m = healthy()
    m[399]["entropy_mean"] = 0.5  # from 1.7 at step 300
    assert codes(m) == []
    m[380]["loss"] = 6.0
    assert codes(m) == ["entropy_collapse"]


def test_leakage():
    assert codes(healthy(), causal=False) == ["leakage"]
    copying = [dict(x, loss=0.05) for x in healthy()]
    copying[0]["loss"] = math.log(VOCAB)
    (w,) = health.health_checks(copying, vocab_size=VOCAB, causal=False)
    assert "copying the answer from the future" in w.message


def test_a_head_below_every_threshold_is_mixed_and_one_at_its_threshold_is_labelled():
    scores = {name: np.zeros((1, 3)) for name in probes.HEAD_THRESHOLDS}  # float64: 0.4 / 0.4 is exactly 1
    scores["prev_token"][0, 1] = probes.HEAD_THRESHOLDS["prev_token"]  # exactly at it: "clears"
    scores["sink"][0, 2] = 0.99 * probes.HEAD_THRESHOLDS["sink"]  # just below
    assert probes.label_heads(scores) == [["mixed", "prev_token", "mixed"]]


@pytest.mark.parametrize("call, message", [
    (lambda m: probes.ablation_loss(m, prompt(), [(2, 0)]),
     "head (2, 0) does not exist: layers are 0..1, heads 0..1."),
    (lambda m: probes.logit_lens(m, prompt(), k=0), "k=0 must be between 1 and the vocabulary size 11."),
    (lambda m: probes.top_predictions(m, prompt(), k=12), "k=12 must be between 1 and the vocabulary size 11."),
    (lambda m: probes.loss_per_position(m, [3]), "this probe needs a prompt of at least 2 tokens; got 1."),
    (lambda m: probes.induction_scores(m, 11, in_distribution_text="abcabc"),
     "in_distribution_text needs a tokenizer to encode it; pass tokenizer=..."),
    (lambda m: probes.induction_scores(m, 1),
     "the vocabulary size 1 is too small for random tokens; it must be at least 2."),
    (lambda m: probes.induction_scores(m, 11, period=48),
     "period=48, reps=2: the period must be in 2..47 (n_ctx=48) "
     "and the sequence must repeat at least twice (reps >= 2)."),
], ids=["ablation", "lens-k", "top-k", "loss-len", "no-tokenizer", "vocab", "period"])
def test_probe_argument_errors_are_sentences(call, message):
    with pytest.raises(ValueError) as err:
        call(tiny())
    assert str(err.value) == message


def test_top_one_prediction_is_the_argmax():
    model = tiny(init="pytorch_default")
    ids, p = probes.top_predictions(model, prompt(), k=1)
    with torch.no_grad():
        probs = model(prompt()[None])[0].softmax(-1)
    assert ids.shape == (T, 1) and np.array_equal(ids[:, 0], probs.argmax(-1).numpy())


@pytest.mark.parametrize("vocab, expect_below", [(5, 5), (None, 11), ("tokenizer", 11)])
def test_induction_random_ids_stay_inside_the_vocabulary_given(monkeypatch, vocab, expect_below):
    """Random ids are drawn below the tokenizer's vocabulary (an id it never makes is not used);
    with no vocabulary given, below the model's d_vocab."""
    seen = []
    real = probes.attention_patterns
    monkeypatch.setattr(probes, "attention_patterns", lambda m, t: seen.append(np.asarray(t)) or real(m, t))
    src = StubTokenizer() if vocab == "tokenizer" else vocab
    probes.induction_scores(tiny(), src)
    (seq,) = seen
    assert seq.max() < expect_below and len(set(seq.tolist())) > 3


def test_induction_random_score_is_the_same_on_every_call():
    model = tiny()
    a, b = probes.induction_scores(model, 11), probes.induction_scores(model, 11)
    assert np.array_equal(a["random"], b["random"])


def test_a_non_causal_models_entropy_counts_every_key_even_when_its_heads_look_back_only():
    """causal= comes from the model's config, not from what its patterns look like."""
    model = tiny(causal=False)
    heads, _ = known_heads()
    looks_causal = torch.from_numpy(heads["uniform"]).float()  # spread evenly over keys 0..q

    def wire(pattern, name):
        return looks_causal.expand_as(pattern).clone()

    with model.hooks([(f"blocks.{l}.attn.hook_pattern", wire) for l in range(2)]):
        snap = probes.probe_snapshot(model, prompt())
    p = np.broadcast_to(heads["uniform"], (2, 2, T, T))
    as_non_causal = probes.head_entropy(p, causal=False)
    assert not np.allclose(as_non_causal, probes.head_entropy(p))  # auto-detected: causal
    assert np.allclose(snap["entropy"], as_non_causal)
    assert probes.head_entropy(p, normalized=True, causal=False)[0, 0] < 0.9  # row q spreads over q+1 of T keys


def test_activation_stats_are_the_population_statistics_of_the_cached_activations():
    model = tiny(init="pytorch_default")
    tokens = torch.stack([prompt(seed=1), prompt(seed=2)])
    stats = probes.activation_stats(model, tokens)
    _, cache = model.run_with_cache(tokens)
    for l, s in enumerate(stats):
        resid = cache[f"blocks.{l}.hook_resid_post"].numpy().astype(np.float64)
        attn = cache[f"blocks.{l}.hook_attn_out"].numpy().astype(np.float64)
        mlp = cache[f"blocks.{l}.hook_mlp_out"].numpy().astype(np.float64)
        expected = {"layer": l, "resid_mean": resid.mean(), "resid_std": resid.std(), "resid_max_abs": abs(resid).max(),
                    "attn_out_std": attn.std(), "mlp_out_std": mlp.std()}
        assert set(s) == set(expected) | {"mlp_dead_frac"}
        for key, value in expected.items():
            assert s[key] == pytest.approx(value, rel=1e-5), key


def test_a_swiglu_unit_whose_gate_is_open_is_active_even_when_its_output_is_negative():
    # active = silu(gate) > 0: the sign of the up-projection does not matter
    model = tiny(mlp="swiglu")
    with torch.no_grad():
        model.blocks[0].mlp.W_gate.bias.fill_(100.0)
        model.blocks[0].mlp.W_in.bias.fill_(-100.0)  # output = silu(gate) * pre < 0 everywhere
    assert probes.activation_stats(model, prompt())[0]["mlp_dead_frac"] == 0.0


@pytest.mark.parametrize("call, message", [
    (lambda m: probes.activation_stats(m, torch.zeros(1, 2, 3, dtype=torch.long)),
     "tokens have shape [1, 2, 3]; pass a prompt of token ids as [T] or [B, T]."),
    (lambda m: probes.attention_patterns(m, [1, 2, 11]),
     "token ids must be in 0..10 (the model's vocabulary); got 1..11."),
], ids=["batch-shape", "vocabulary"])
def test_token_errors_are_sentences(call, message):
    with pytest.raises(ValueError) as err:
        call(tiny())
    assert str(err.value) == message


def test_a_head_attending_to_itself_on_a_repeated_token_is_not_an_induction_head():
    # k = q is left out: the current token repeating the one before it is not an earlier occurrence
    heads, _ = known_heads()
    scores = probes.head_scores(heads["self"][None, None], np.zeros(T, int))
    assert scores["self"][0, 0] == pytest.approx(1.0) and scores["induction"][0, 0] == 0.0


def test_prev_token_and_local_scores_include_row_one():
    p = one_hot_rows(np.maximum(np.arange(T) - 1, 0))
    p[1] = one_hot_rows(np.arange(T))[1]  # row 1 attends to itself instead of to token 0
    scores = probes.head_scores(p[None, None], np.arange(T))
    assert scores["prev_token"][0, 0] == pytest.approx((T - 2) / (T - 1))
    assert scores["local"][0, 0] == pytest.approx((T - 2) / (T - 1))
