"""The fast paths compute what the plain paths compute, and every opt-in mode trains. No timings here:
those live in python -m benchmarks.bench and docs/performance.md."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import TINY

from tinyviz.config import ModelConfig, SampleConfig, apply_overrides, preset
from tinyviz.data.text import build_tokenizer, prepare
from tinyviz.model.sampling import generate
from tinyviz.model.transformer import KVCache, Transformer
from tinyviz.training.trainer import Trainer

V = 50
# the presets' attention shapes (heads of 32, 16 and 8 wide), shrunk; GQA and rope take other branches
SHAPES = [dict(n_heads=4), dict(n_heads=8), dict(n_heads=16), dict(n_heads=4, n_kv_heads=2, pos_emb="rope")]


def make(**kw) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(d_vocab=V, n_layers=2, d_model=64, d_ff=128, n_ctx=32, **kw))


def tokens(B=3, T=32, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kw", SHAPES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_fused_causal_attention_equals_explicit_logits_and_gradients(kw):
    # training shape, T == n_ctx: the fused path runs scaled_dot_product_attention(is_causal=True)
    x = tokens()
    out = {}
    for impl in ("auto", "explicit"):
        model = make(**kw).train()
        model.set_attn_impl(impl)
        logits = model(x)
        F.cross_entropy(logits.view(-1, V), x.roll(-1, 1).view(-1)).backward()
        out[impl] = logits.detach(), {n: p.grad for n, p in model.named_parameters()}
    torch.testing.assert_close(out["auto"][0], out["explicit"][0], atol=1e-5, rtol=1e-5)
    for name, grad in out["auto"][1].items():
        torch.testing.assert_close(grad, out["explicit"][1][name], atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("kw", SHAPES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_cached_chunks_and_single_tokens_equal_the_explicit_full_forward(kw):
    # every branch of the mask: a square prefill (is_causal), a chunk after an offset (bottom-right
    # mask) and one token at a time (no mask at all), against the explicit path over the whole text
    model = make(**kw).eval()
    x = tokens(B=1)
    model.set_attn_impl("explicit")
    with torch.no_grad():
        full = model(x)
        model.set_attn_impl("auto")
        cache = KVCache(model.cfg, 1)
        parts = [model(x[:, :10], kv_cache=cache), model(x[:, 10:20], kv_cache=cache)]
        parts += [model(x[:, t : t + 1], kv_cache=cache) for t in range(20, 32)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_generation_past_the_context_is_the_same_with_and_without_the_cache():
    # 120 new tokens through n_ctx=32: the window shifts several times; both paths read the same windows
    tok = build_tokenizer("abcdefghij klmnop", preset("micro").data)
    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_vocab=tok.vocab_size, n_layers=2, d_model=64, n_ctx=32)).eval()
    for cfg in (SampleConfig(max_new_tokens=120, temperature=0), SampleConfig(max_new_tokens=120, seed=4)):
        cached = generate(model, tok, "abc", cfg, use_cache=True)
        plain = generate(model, tok, "abc", cfg, use_cache=False)
        assert cached.text == plain.text and len(cached.steps) == 120
        assert [s.prob for s in cached.steps] == pytest.approx([s.prob for s in plain.steps], abs=1e-5)


def _losses(overrides: list[str], steps: int = 40) -> list[float]:
    cfg = apply_overrides(preset("micro"), TINY + ["dropout=0.1", "lr=1e-2", "warmup_steps=5"] + overrides)
    prep = prepare(cfg)
    trainer = Trainer(prep.config.model, cfg.train, prep.data)
    return [trainer.step().loss for _ in range(steps)]


def _falls(losses: list[float]) -> bool:
    return sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5


@pytest.mark.parametrize("overrides", [[], ["attn_impl=explicit"], ["threads=1"], ["dtype=bfloat16"]],
                         ids=["default", "explicit", "threads=1", "bfloat16"])
def test_each_opt_in_mode_trains(overrides):
    assert _falls(_losses(overrides))


@pytest.mark.slow
def test_compiled_mode_trains():
    pytest.importorskip("torch._inductor")
    assert _falls(_losses(["compile=true"], steps=30))


@pytest.mark.slow
def test_benchmark_quick_run_writes_every_section(tmp_path):
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "-m", "benchmarks.bench", "--quick", "--presets", "lab", "--modes", "",
                    "--json", str(out)], check=True, capture_output=True, timeout=300)
    res = json.loads(out.read_text())
    assert {"machine", "peak", "training", "inspection", "interaction", "memory"} <= set(res)
    lab = res["training"]["lab"]["modes"]
    assert lab["tinyviz"]["tokens_per_s"]["median"] > 0 and lab["reference"]["tokens_per_s"]["median"] > 0
    assert res["inspection"]["generation"]["same_text"]
    assert all("peak_rss_mb" in v for v in res["memory"].values()), res["memory"]
    assert res["gpt2_small"]["pages"]["1 thread"] and all(v > 0 for v in res["gpt2_small"]["cpu_s"].values())
