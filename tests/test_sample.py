from pathlib import Path

import pytest
import torch
from conftest import TINY

from tinyviz.config import ModelConfig, SampleConfig, apply_overrides, preset
from tinyviz.data.text import CharTokenizer, UnknownCharactersError
from tinyviz.model.sampling import Generation, default_new_tokens, generate, next_token_probs
from tinyviz.model.transformer import Transformer
from tinyviz.resources import n_params
from tinyviz.training.runs import Run
from tinyviz.training.session import TrainingSession

# No stored sample here: a greedy string depends on the CPU's SIMD width (one near-tie flips). The model's
# numbers are checked against an independent implementation in tests/test_golden.py; determinism is
# checked below by training twice and comparing bit for bit.
DEMO = Path(__file__).resolve().parents[1] / "checkpoints" / "demo"
CFG = TINY + ["steps=150", "lr=1e-2", "eval_interval=0", "snapshot_interval=0", "checkpoint_interval=0"]


@pytest.fixture(scope="module")
def trained():
    """The committed demo run (n_ctx=128, a char tokenizer): a trained model without training one here."""
    run = Run.open(DEMO)
    return run.load_model(), run.tokenizer()


def train(path):
    session = TrainingSession.start(apply_overrides(preset("micro"), CFG), path)
    session.train()
    return session.trainer.model.eval(), session.tokenizer


def test_same_seed_trains_bit_identical_weights_and_the_same_greedy_text(tmp_path):
    # float sums depend on how many threads split them: pin one, whatever ran before this test
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        (model, tok), (again, _) = train(tmp_path / "a"), train(tmp_path / "b")
    finally:
        torch.set_num_threads(threads)
    for (name, p), (_, q) in zip(model.named_parameters(), again.named_parameters(), strict=True):
        assert torch.equal(p, q), name
    greedy = SampleConfig(max_new_tokens=60, temperature=0)
    text = generate(model, tok, "Once upon a time", greedy).text
    assert text == generate(again, tok, "Once upon a time", greedy).text
    assert len(text) == 60  # char tokenizer: one character per token


@pytest.mark.parametrize("cfg", [
    SampleConfig(max_new_tokens=150, temperature=0),
    SampleConfig(max_new_tokens=150, temperature=1.0, seed=3),
    SampleConfig(max_new_tokens=40, temperature=0.8, top_k=5, top_p=0.9, seed=1),
], ids=["greedy", "sampled", "top-k-top-p"])
def test_kv_cache_gives_the_same_text_as_no_cache(trained, cfg):
    # 150 new tokens run past n_ctx=128, so the sliding-window path is covered too
    model, tok = trained
    cached = generate(model, tok, "Once upon", cfg, use_cache=True)
    plain = generate(model, tok, "Once upon", cfg, use_cache=False)
    assert cached.text == plain.text
    # float32 attention summed in another order (one cached query vs the whole window): measured up to
    # 3.6e-5 relative on the demo model, so 1e-4 relative
    for a, b in zip(cached.steps, plain.steps):
        assert a.prob == pytest.approx(b.prob, rel=1e-4, abs=1e-6)


def test_same_seed_same_text_other_seed_other_text(trained):
    model, tok = trained
    a = generate(model, tok, "The", SampleConfig(max_new_tokens=80, seed=1)).text
    assert a == generate(model, tok, "The", SampleConfig(max_new_tokens=80, seed=1)).text
    assert a != generate(model, tok, "The", SampleConfig(max_new_tokens=80, seed=2)).text


def test_each_step_records_its_candidates(trained):
    model, tok = trained
    result = generate(model, tok, "The", SampleConfig(max_new_tokens=10, top_k=3, n_candidates=5))
    for step in result.steps:
        probs = [p for _, p in step.candidates]
        assert probs == sorted(probs, reverse=True)
        assert sum(p > 0 for p in probs) <= 3  # top-k removed the rest
        assert step.text in [c for c, _ in step.candidates] or step.text in ("\n", " ")


def test_top_k_and_top_p_restrict_the_distribution():
    logits = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])
    assert (next_token_probs(logits, SampleConfig(top_k=2)) > 0).sum() == 2
    p = next_token_probs(logits, SampleConfig(top_p=0.5))
    assert (p > 0).sum() == 1  # the top token alone holds ~64 %
    p = next_token_probs(logits, SampleConfig(top_p=0.9))
    assert (p > 0).sum() == 3 and p.sum().item() == pytest.approx(1.0)
    cold = next_token_probs(logits, SampleConfig(temperature=0.5))
    hot = next_token_probs(logits, SampleConfig(temperature=2))
    assert cold[0] > hot[0]


def kept(logits, keep, temperature=1.0):
    """softmax over the kept token ids only, as the sampler should draw from."""
    out = torch.zeros_like(logits)
    out[keep] = torch.softmax(logits[keep] / temperature, -1)
    return out


L5 = torch.tensor([3.0, 2.0, 1.0, 0.0, -1.0])  # softmax: 0.64, 0.24, 0.09, 0.03, 0.01


@pytest.mark.parametrize("cfg, keep", [
    (SampleConfig(temperature=0.7), [0, 1, 2, 3, 4]),
    (SampleConfig(top_k=1), [0]),  # top-k 1 is greedy
    (SampleConfig(top_k=3), [0, 1, 2]),
    (SampleConfig(top_k=5), [0, 1, 2, 3, 4]),  # the whole vocabulary: nothing removed
    (SampleConfig(top_p=0.5), [0]),
    (SampleConfig(top_p=0.9), [0, 1, 2]),  # 0.64 + 0.24 < 0.9: the third token is needed
    (SampleConfig(top_p=0.97), [0, 1, 2, 3]),
    (SampleConfig(top_k=2, top_p=0.5), [0]),
    (SampleConfig(temperature=2.0, top_k=4), [0, 1, 2, 3]),
], ids=lambda v: str(v) if isinstance(v, list) else "")
def test_next_token_probs_is_the_renormalised_softmax_of_the_kept_tokens(cfg, keep):
    torch.testing.assert_close(next_token_probs(L5, cfg), kept(L5, keep, cfg.temperature))


def test_top_p_drops_a_token_once_the_ones_before_it_reach_top_p_exactly():
    p = next_token_probs(torch.tensor([0.0, 0.0]), SampleConfig(top_p=0.5))  # 0.5 each: the first is enough
    assert (p > 0).sum() == 1 and p.max() == 1.0


def test_top_p_one_and_top_k_zero_keep_even_a_vanishing_token():
    # 30 nats apart: the cumulative sum reaches 1.0 in float32 before the last tokens
    logits = torch.tensor([30.0, 0.0, 0.0])
    p = next_token_probs(logits, SampleConfig(top_p=1.0, top_k=0))
    assert (p > 0).all()


def test_long_prompt_is_cropped_with_a_notice(trained):
    model, tok = trained
    result = generate(model, tok, "the cat sat " * 20, SampleConfig(max_new_tokens=5))
    assert len(result.prompt) == 127 and result.notices and "only its last 127 tokens" in result.notices[0]
    assert result.prompt == ("the cat sat " * 20)[-127:] and len(result.steps) == 5


def test_a_prompt_that_just_fits_is_kept_whole_without_a_notice(trained):
    model, tok = trained
    text = ("the cat sat " * 20)[:127]  # n_ctx - 1: room for the first new token
    result = generate(model, tok, text, SampleConfig(max_new_tokens=3))
    assert result.prompt == text and result.notices == []


def test_bad_prompts_give_sentences(trained):
    model, tok = trained
    with pytest.raises(UnknownCharactersError, match="'€'"):
        generate(model, tok, "price: 5€", SampleConfig(max_new_tokens=5))
    with pytest.raises(ValueError) as err:
        generate(model, tok, "", SampleConfig(max_new_tokens=5))
    assert str(err.value) == "the prompt is empty; type at least one character to start from."
    with pytest.raises(ValueError, match="larger than the vocabulary"):
        generate(model, tok, "a", SampleConfig(max_new_tokens=5, top_k=10_000))


def test_each_step_reports_the_drawn_tokens_probability_and_the_top_candidates(trained):
    model, tok = trained
    cfg = SampleConfig(max_new_tokens=12, temperature=0.9, top_k=6, n_candidates=4, seed=2)
    result = generate(model, tok, "Once upon a time", cfg)
    assert len(result.steps) == 12 and result.text == tok.decode([s.token for s in result.steps])
    ids = tok.encode("Once upon a time")
    with torch.no_grad():
        for i, step in enumerate(result.steps):
            logits = model(torch.tensor([ids + [s.token for s in result.steps[:i]]]))[0, -1]
            probs = next_token_probs(logits, cfg)
            assert step.prob == pytest.approx(float(probs[step.token]), rel=1e-4, abs=1e-6)
            top = probs.topk(4)
            assert [c for c, _ in step.candidates] == [tok.token_str(int(j)) for j in top.indices]
            assert [p for _, p in step.candidates] == pytest.approx(top.values.tolist(), rel=1e-4, abs=1e-6)
    greedy = generate(model, tok, "Once upon a time", SampleConfig(max_new_tokens=5, temperature=0))
    assert all(s.candidates[0][0] == tok.token_str(s.token) for s in greedy.steps)  # greedy takes the top one


def test_generation_restores_the_models_mode_and_allows_top_k_equal_to_the_vocabulary(trained):
    model, tok = trained
    vocab = model.cfg.d_vocab
    model.train()
    try:
        assert len(generate(model, tok, "Once", SampleConfig(max_new_tokens=3, top_k=vocab)).steps) == 3
        assert model.training
    finally:
        model.eval()
    generate(model, tok, "Once", SampleConfig(max_new_tokens=3))
    assert not model.training
    with pytest.raises(ValueError) as err:
        generate(model, tok, "Once", SampleConfig(max_new_tokens=3, top_k=vocab + 1))
    assert str(err.value) == (f"top_k={vocab + 1} is larger than the vocabulary ({vocab} tokens); "
                              f"use 0 (off) to {vocab}.")


def test_cached_decoding_feeds_one_token_and_a_full_context_keeps_its_last_three_quarters(trained):
    model, tok = trained
    lengths = []
    hook = model.register_forward_pre_hook(lambda m, args, kwargs: lengths.append(args[0].shape[1]), with_kwargs=True)
    try:
        generate(model, tok, "Once upon", SampleConfig(max_new_tokens=130, temperature=0))
    finally:
        hook.remove()
    prompt = len(tok.encode("Once upon"))  # 9 tokens, then one forward per new token
    shift = 128 - prompt + 1  # the token that overflows n_ctx=128 makes the window jump
    assert lengths[0] == prompt and set(lengths[1:shift]) == {1}
    assert lengths[shift] == 96 and set(lengths[shift + 1:]) == {1}  # 3/4 of n_ctx re-read once, then cached


def test_a_non_causal_model_samples_the_same_with_or_without_the_cache_flag():
    # its earlier positions see later ones, so the sampler must not reuse cached keys
    tok = CharTokenizer(list("abcdefgh "))
    torch.manual_seed(0)
    model = Transformer(ModelConfig(d_vocab=tok.vocab_size, n_layers=2, n_heads=2, d_model=32, n_ctx=32,
                                    causal=False, init="pytorch_default")).eval()
    cfg = SampleConfig(max_new_tokens=20, seed=5)
    a = generate(model, tok, "abc", cfg, use_cache=True)
    b = generate(model, tok, "abc", cfg, use_cache=False)
    assert [s.prob for s in a.steps] == pytest.approx([s.prob for s in b.steps], abs=1e-6)


@pytest.mark.parametrize("cfg", [
    SampleConfig(max_new_tokens=150, temperature=0),
    SampleConfig(max_new_tokens=150, temperature=1.0, top_p=0.9, seed=3),
], ids=["greedy", "sampled"])
def test_a_streamed_sample_hands_over_each_token_as_drawn_and_equals_the_whole_sample(trained, cfg):
    # the Sample page shows the text as it grows (analysis.sample); what it ends with must be generate()'s
    model, tok = trained
    forwards = []
    hook = model.register_forward_pre_hook(lambda m, args: forwards.append(args[0].shape[1]))
    try:
        gen = Generation(model, tok, "Once upon", cfg)
        seen = []
        for step in gen:
            seen.append(step)
            assert gen.steps == seen
            if len(seen) == 1:
                assert forwards == [len(tok.encode("Once upon"))]  # the first token came after the prompt's pass
    finally:
        hook.remove()
    whole = generate(model, tok, "Once upon", cfg)  # 150 tokens run past n_ctx=128: the window jump is streamed too
    assert gen.result() == whole and seen == whole.steps
    assert whole.text == "".join(s.text for s in seen)  # char tokenizer: the streamed pieces are the text


def test_a_stream_stopped_early_restores_the_models_mode_and_cannot_be_resumed(trained):
    model, tok = trained
    model.train()
    try:
        gen = Generation(model, tok, "Once", SampleConfig(max_new_tokens=20))
        it = iter(gen)
        next(it)
        it.close()  # what a rerun of the page mid-stream does
        assert model.training and len(gen.steps) == 1
        with pytest.raises(RuntimeError, match="iterated once"):
            gen.result()
    finally:
        model.eval()


def test_the_default_length_is_150_for_small_models_and_under_2_s_of_weight_reads_for_large_ones():
    demo = Run.open(DEMO).config.model
    assert default_new_tokens(n_params(demo)) == 150  # the Sample page's default since it was made
    gpt2_small = ModelConfig(n_layers=12, n_heads=12, d_model=768, n_ctx=1024, d_vocab=50257, mlp="gelu_tanh")
    assert n_params(gpt2_small) == 124_439_808
    assert default_new_tokens(n_params(gpt2_small)) == 20  # 20 x 62 ms of reading 498 MB at 8 GB/s: 1.2 s
    sizes = [10**5, 10**7, 3 * 10**7, 6 * 10**7, 10**8, 3 * 10**8, 10**9, 10**10]
    lengths = [default_new_tokens(n) for n in sizes]
    assert lengths == sorted(lengths, reverse=True) and lengths[-1] == 10
    assert all(n % 10 == 0 and 10 <= n <= 150 for n in lengths)
