import pytest
import torch
from conftest import TINY

from tinyviz.config import SampleConfig, apply_overrides, preset
from tinyviz.data.text import UnknownCharactersError
from tinyviz.model.sampling import generate, next_token_probs
from tinyviz.training.session import TrainingSession

# Greedy text of the seeded run below, on one thread of this kind of machine (x86-64, torch 2.13 CPU).
# If it changes, something changed the model, the data order, the optimizer or sampling.
GOLDEN = " te  te te t t t t t t t t t t t t t t t te t t t tet t t t "


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    # float sums depend on how many threads split them: pin one, whatever ran before this test
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = apply_overrides(preset("micro"), TINY + [
        "steps=150", "lr=1e-2", "eval_interval=0", "snapshot_interval=0", "checkpoint_interval=0"])
    session = TrainingSession.start(cfg, tmp_path_factory.mktemp("runs") / "golden")
    session.train()
    yield session.trainer.model.eval(), session.tokenizer
    torch.set_num_threads(threads)


def test_greedy_sampling_matches_the_golden_string(trained):
    model, tok = trained
    torch.set_num_threads(1)
    result = generate(model, tok, "Once upon a time", SampleConfig(max_new_tokens=60, temperature=0))
    assert result.text == GOLDEN


@pytest.mark.parametrize("cfg", [
    SampleConfig(max_new_tokens=150, temperature=0),
    SampleConfig(max_new_tokens=150, temperature=1.0, seed=3),
    SampleConfig(max_new_tokens=40, temperature=0.8, top_k=5, top_p=0.9, seed=1),
], ids=["greedy", "sampled", "top-k-top-p"])
def test_kv_cache_gives_the_same_text_as_no_cache(trained, cfg):
    # 150 new tokens run past n_ctx=32, so the sliding-window path is covered too
    model, tok = trained
    cached = generate(model, tok, "Once upon", cfg, use_cache=True)
    plain = generate(model, tok, "Once upon", cfg, use_cache=False)
    assert cached.text == plain.text
    for a, b in zip(cached.steps, plain.steps):
        assert a.prob == pytest.approx(b.prob, abs=1e-5)


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
    cold, hot = next_token_probs(logits, SampleConfig(temperature=0.5)), next_token_probs(logits, SampleConfig(temperature=2))
    assert cold[0] > hot[0]


def test_long_prompt_is_cropped_with_a_notice(trained):
    model, tok = trained
    result = generate(model, tok, "the cat sat " * 10, SampleConfig(max_new_tokens=5))
    assert len(result.prompt) == 31 and result.notices and "only its last 31 tokens" in result.notices[0]


def test_bad_prompts_give_sentences(trained):
    model, tok = trained
    with pytest.raises(UnknownCharactersError, match="'€'"):
        generate(model, tok, "price: 5€", SampleConfig(max_new_tokens=5))
    with pytest.raises(ValueError, match="prompt is empty"):
        generate(model, tok, "", SampleConfig(max_new_tokens=5))
    with pytest.raises(ValueError, match="larger than the vocabulary"):
        generate(model, tok, "a", SampleConfig(max_new_tokens=5, top_k=10_000))
