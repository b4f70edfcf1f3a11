import math

import pytest
import torch
import torch.nn.functional as F

from tinyviz.config import ModelConfig
from tinyviz.model.hooks import knockout_mlp, zero_head
from tinyviz.model.transformer import KVCache, Rotary, Transformer

V = 40

ABLATIONS = [
    {},
    dict(pos_emb="rope"),
    dict(pos_emb="sinusoidal"),
    dict(pos_emb="none"),
    dict(norm="rmsnorm"),
    dict(norm="none"),
    dict(norm_position="post"),
    dict(residual=False),
    dict(mlp="relu"),
    dict(mlp="gelu_tanh"),
    dict(mlp="swiglu"),
    dict(tie_embeddings=False),
    dict(init="pytorch_default"),
    dict(n_kv_heads=2),
    dict(n_kv_heads=1, pos_emb="rope"),
    dict(attn_scale=False),
    dict(bias=False),
]


def make(**kw) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig(d_vocab=V, n_layers=2, n_heads=4, d_model=32, n_ctx=24, **kw)).eval()


def tokens(T=16, B=2, seed=1):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kw", ABLATIONS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_pattern_rows_sum_to_one_and_causal_mask(kw):
    model = make(**kw)
    _, cache = model.run_with_cache(tokens(), names=lambda n: n.endswith("hook_pattern"))
    for layer in range(2):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]
        assert pattern.shape == (2, 4, 16, 16)
        torch.testing.assert_close(pattern.sum(-1), torch.ones(2, 4, 16))
        upper = torch.triu(torch.ones(16, 16, dtype=torch.bool), diagonal=1)
        assert pattern[..., upper].abs().max() == 0


def test_non_causal_pattern_attends_to_the_future():
    _, cache = make(causal=False).run_with_cache(tokens(), names="blocks.0.attn.hook_pattern")
    upper = torch.triu(torch.ones(16, 16, dtype=torch.bool), diagonal=1)
    assert cache["blocks.0.attn.hook_pattern"][..., upper].min() > 0


@pytest.mark.parametrize("kw", ABLATIONS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_future_tokens_do_not_change_past_logits(kw):
    model = make(**kw)
    a = tokens()
    b = a.clone()
    b[:, 10:] = (b[:, 10:] + 1) % V
    torch.testing.assert_close(model(a)[:, :10], model(b)[:, :10])


def test_future_tokens_change_past_logits_without_mask():
    model = make(causal=False)
    a = tokens()
    b = a.clone()
    b[:, 10:] = (b[:, 10:] + 1) % V
    assert not torch.allclose(model(a)[:, :10], model(b)[:, :10])


@pytest.mark.parametrize("kw", ABLATIONS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
def test_capture_leaves_logits_unchanged_and_no_hook_behind(kw):
    model = make(**kw)
    x = tokens()
    plain = model(x)
    logits, cache = model.run_with_cache(x)
    # capturing the pattern switches to the explicit path: same maths, float rounding only
    torch.testing.assert_close(logits, plain, atol=1e-5, rtol=1e-5)
    assert set(cache) == set(model.hook_names())
    assert all(not hp._forward_hooks for hp in model.hook_dict.values())
    model.set_attn_impl("explicit")
    exact = model(x)
    logits, _ = model.run_with_cache(x)
    assert torch.equal(logits, exact)


def test_hooks_are_removed_even_when_the_forward_fails():
    model = make()
    with pytest.raises(ValueError, match="n_ctx"):
        model.run_with_cache(torch.zeros(1, 25, dtype=torch.long))
    assert all(not hp._forward_hooks for hp in model.hook_dict.values())


def test_unknown_hook_name_is_an_error():
    hooks = [("blocks.9.attn.hook_z", lambda x, n: None)]
    with pytest.raises(ValueError, match="no hook point named"), make().hooks(hooks):
        pass


@pytest.mark.parametrize("kw", [{}, dict(n_kv_heads=2), dict(attn_scale=False), dict(causal=False)])
def test_fused_attention_equals_explicit_path_logits_and_gradients(kw):
    x = tokens()
    results = []
    for impl in ("auto", "explicit"):
        model = make(**kw).train()
        model.set_attn_impl(impl)
        loss = F.cross_entropy(model(x).view(-1, V), x.view(-1))
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    torch.testing.assert_close(results[0][0], results[1][0], atol=1e-6, rtol=1e-5)
    for name, grad in results[0][1].items():
        torch.testing.assert_close(grad, results[1][1][name], atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("kw", [{}, dict(pos_emb="rope"), dict(pos_emb="sinusoidal"), dict(n_kv_heads=2)])
def test_kv_cache_equals_full_forward(kw):
    model = make(**kw)
    x = tokens(T=20, B=1)
    full = model(x)
    cache = KVCache(model.cfg, 1)
    parts = [model(x[:, :7], kv_cache=cache)] + [model(x[:, t : t + 1], kv_cache=cache) for t in range(7, 20)]
    torch.testing.assert_close(torch.cat(parts, 1), full, atol=1e-5, rtol=1e-5)


def test_gpt_init_starts_near_uniform_and_default_init_far_above():
    x, y = tokens(T=24, B=8), tokens(T=24, B=8, seed=2)
    target = math.log(V)
    gpt = F.cross_entropy(make()(x).view(-1, V), y.view(-1)).item()
    default = F.cross_entropy(make(init="pytorch_default")(x).view(-1, V), y.view(-1)).item()
    assert abs(gpt - target) < 0.3
    assert default > target + 3


def test_tied_weights_are_one_tensor_and_untied_are_two():
    tied, untied = make(), make(tie_embeddings=False)
    assert tied.W_U.weight is tied.W_E.weight
    assert untied.W_U.weight is not untied.W_E.weight
    assert untied.n_params(non_embedding=False) == tied.n_params(non_embedding=False) + V * 32


@pytest.mark.parametrize("pos", ["none", "rope", "sinusoidal"])
def test_no_learned_position_parameters_unless_learned(pos):
    model = make(pos_emb=pos)
    assert model.W_pos is None
    assert not any("pos" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("init", ["gpt", "pytorch_default"])
def test_sinusoidal_positions_start_at_the_size_of_the_token_embeddings(init):
    """At amplitude 1 beside std-0.02 tokens the table swamped token identity and training stalled at
    the unigram loss (the posemb ablation); it is scaled to the embeddings' init instead."""
    model = make(pos_emb="sinusoidal", init=init)
    _, cache = model.run_with_cache(tokens(), names=["hook_embed", "hook_pos_embed"])
    ratio = cache["hook_pos_embed"].pow(2).mean().sqrt() / cache["hook_embed"].pow(2).mean().sqrt()
    assert 0.7 < ratio < 1.4, ratio


def test_positions_shape_attention_only_when_there_is_a_position_signal():
    # On a constant sequence, a model without positions cannot tell keys apart: uniform rows.
    x = torch.full((1, 8), 3)
    uniform = torch.tril(torch.ones(8, 8)) / torch.arange(1, 9)[:, None]
    for pos, expect_uniform in (("none", True), ("learned", False), ("rope", False), ("sinusoidal", False)):
        _, cache = make(pos_emb=pos).run_with_cache(x, names="blocks.0.attn.hook_pattern")
        is_uniform = torch.allclose(cache["blocks.0.attn.hook_pattern"][0, 0], uniform, atol=1e-6)
        assert is_uniform == expect_uniform, pos


def test_residual_off_replaces_the_stream():
    model = make(residual=False)
    x = tokens()
    _, cache = model.run_with_cache(x)
    # pre-LN without residual: the stream after attention is the attention output itself
    torch.testing.assert_close(cache["blocks.0.hook_resid_mid"], cache["blocks.0.hook_attn_out"])
    on = make()
    _, cache = on.run_with_cache(x)
    torch.testing.assert_close(cache["blocks.0.hook_resid_mid"],
                               cache["blocks.0.hook_resid_pre"] + cache["blocks.0.hook_attn_out"])


def test_post_ln_normalises_each_sublayer_output():
    _, cache = make(norm_position="post").run_with_cache(tokens())
    mid = cache["blocks.0.hook_resid_mid"]
    torch.testing.assert_close(mid.mean(-1), torch.zeros_like(mid.mean(-1)), atol=1e-4, rtol=0)


def test_rmsnorm_and_no_norm_have_no_layernorm_modules():
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in make(norm="rmsnorm").modules())
    assert any(isinstance(m, torch.nn.RMSNorm) for m in make(norm="rmsnorm").modules())
    assert not any(isinstance(m, (torch.nn.LayerNorm, torch.nn.RMSNorm)) for m in make(norm="none").modules())


def test_swiglu_has_a_gate_and_relu_is_sparse():
    assert make(mlp="swiglu").blocks[0].mlp.W_gate is not None
    _, cache = make(mlp="relu").run_with_cache(tokens(), names="blocks.0.mlp.hook_post")
    assert (cache["blocks.0.mlp.hook_post"] == 0).float().mean() > 0.2


def test_scaled_residual_init_shrinks_residual_projections():
    scaled, plain = make(), make(scaled_residual_init=False)
    assert scaled.blocks[0].attn.W_O.weight.std() < 0.7 * plain.blocks[0].attn.W_O.weight.std()
    assert abs(plain.W_E.weight.std().item() - 0.02) < 0.003


def test_attn_scale_off_sharpens_attention():
    x = tokens()
    def entropy(model):
        _, c = model.run_with_cache(x, names="blocks.0.attn.hook_scores")
        s = c["blocks.0.attn.hook_scores"]
        return s[torch.isfinite(s)].std()
    assert entropy(make(attn_scale=False)) > 2 * entropy(make())


def test_gqa_shares_keys_across_heads():
    model = make(n_kv_heads=2)
    assert model.blocks[0].attn.W_QKV.out_features == (4 + 2 * 2) * 8
    _, cache = model.run_with_cache(tokens(), names="blocks.0.attn.hook_k")
    assert cache["blocks.0.attn.hook_k"].shape == (2, 16, 2, 8)


def test_zero_head_and_knockout_change_output_only_inside_the_block():
    model = make()
    x = tokens()
    clean = model(x)
    with model.hooks([zero_head(1, 2)]):
        ablated = model(x)
    assert not torch.allclose(clean, ablated)
    with model.hooks([knockout_mlp(0)]):
        knocked = model(x)
    assert not torch.allclose(clean, knocked)
    torch.testing.assert_close(model(x), clean)


@pytest.mark.parametrize("kw, field", [
    (dict(d_model=130, n_heads=4), "d_model=130"),
    (dict(n_heads=4, n_kv_heads=3), "n_kv_heads=3"),
    (dict(d_model=12, n_heads=4, pos_emb="rope"), "rope"),
    (dict(pos_emb="alibi"), "pos_emb='alibi'"),
    (dict(norm="batchnorm"), "norm='batchnorm'"),
    (dict(mlp="tanh"), "mlp='tanh'"),
    (dict(n_layers=0), "n_layers=0"),
    (dict(d_model=-8), "d_model=-8"),
    (dict(dropout=1.0), "dropout=1.0"),
    (dict(d_vocab=1), "d_vocab=1"),
])
def test_invalid_model_configs_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field.replace("(", r"\(").replace(")", r"\)")):
        ModelConfig(**kw)



def test_eval_mode_has_no_dropout_on_the_drawn_attention_patterns():
    """The Heads page draws patterns through the explicit path of a model in eval mode: with dropout
    configured, the patterns must still be the softmax rows and the logits the fused path's."""
    model = make(dropout=0.3).eval()
    x = tokens()
    fused = model(x)
    logits, cache = model.run_with_cache(x, names=lambda n: n.endswith("hook_pattern"))
    torch.testing.assert_close(logits, fused, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cache["blocks.0.attn.hook_pattern"].sum(-1), torch.ones(2, 4, 16))


def test_rope_matches_the_complex_rotation_of_llama():
    """Rotary embedding of GPT-NeoX's half-split layout, checked against an independent formula:
    pair (x_j, x_{j+d/2}) as the complex number x_j + i*x_{j+d/2}, times e^{i*pos*base^(-2j/d)}."""
    d, n, base = 8, 12, 10000.0
    x = torch.randn(2, 3, n, d, generator=torch.Generator().manual_seed(0))
    for offset in (0, 5):
        got = Rotary(d, n + offset, base)(x, offset)
        theta = base ** (-torch.arange(0, d, 2).double() / d)  # [d/2]
        angle = torch.arange(offset, offset + n).double()[:, None] * theta  # [n, d/2]
        pairs = torch.complex(x[..., : d // 2].double(), x[..., d // 2 :].double())
        z = pairs * torch.polar(torch.ones_like(angle), angle)
        torch.testing.assert_close(got, torch.cat([z.real, z.imag], -1).float(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("mlp", ["relu", "gelu", "gelu_tanh", "swiglu"])
def test_each_mlp_computes_its_formula(mlp):
    block = make(mlp=mlp).blocks[0].mlp
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))
    up = block.W_in(x)
    hidden = {"relu": lambda: F.relu(up), "gelu": lambda: F.gelu(up),
              "gelu_tanh": lambda: F.gelu(up, approximate="tanh"),
              "swiglu": lambda: F.silu(block.W_gate(x)) * up}[mlp]()  # SwiGLU: silu(x W_gate) * (x W_in)
    torch.testing.assert_close(block(x), block.W_out(hidden))


def test_post_ln_unembeds_the_last_blocks_output_and_pre_ln_normalises_it_first():
    x = tokens()
    _, post = make(norm_position="post").run_with_cache(x, names=["hook_final", "blocks.1.hook_resid_post"])
    assert torch.equal(post["hook_final"], post["blocks.1.hook_resid_post"])  # no second norm after the block's
    pre_model = make()
    _, pre = pre_model.run_with_cache(x, names=["hook_final", "blocks.1.hook_resid_post"])
    torch.testing.assert_close(pre["hook_final"], pre_model.ln_final(pre["blocks.1.hook_resid_post"]))


def test_gpt_init_zeroes_every_bias():
    biases = [(n, p) for n, p in make().named_parameters() if n.endswith(".bias")]
    assert biases and all(torch.equal(p, torch.zeros_like(p)) for _, p in biases)


def test_too_long_input_is_one_sentence():
    model = make()
    with pytest.raises(ValueError) as err:
        model(torch.zeros(1, 25, dtype=torch.long))
    assert str(err.value) == "25 positions do not fit the context of n_ctx=24; crop the input."
    cache = KVCache(model.cfg, 1)
    model(torch.zeros(1, 20, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ValueError, match="^25 positions do not fit"):  # 20 cached + 5 new
        model(torch.zeros(1, 5, dtype=torch.long), kv_cache=cache)
