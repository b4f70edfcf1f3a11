import json

import pytest

from tinyviz.config import (
    PRESETS,
    DataConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    apply_overrides,
    preset,
)


def test_presets_build_and_match_the_seed_configs():
    lab = preset("lab").model
    assert (lab.n_layers, lab.n_heads, lab.d_model, lab.ff_size, lab.n_ctx, lab.dropout) == (4, 4, 128, 512, 128, 0.1)
    assert lab.norm_position == "pre" and lab.tie_embeddings
    mini = preset("mini-gpt").model
    assert (mini.n_layers, mini.n_heads, mini.d_model, mini.ff_size) == (5, 8, 128, 512)
    stories = preset("stories-0.8m")
    assert (stories.model.n_layers, stories.model.n_heads, stories.model.dropout) == (4, 16, 0.15)
    assert stories.data.tokenizer == "bpe" and stories.data.bpe_vocab_size == 361 and stories.train.warmup_steps > 0
    for name in PRESETS:
        assert preset(name).preset == name


def test_round_trip_through_json():
    cfg = apply_overrides(preset("lab"), ["pos_emb=rope", "n_kv_heads=2", "lr=3e-4", "tokenizer=bpe"])
    assert RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_overrides_parse_types_and_sections():
    cfg = apply_overrides(preset("micro"), ["residual=off", "dropout=0.2", "train.seed=7", "d_ff=none", "corpus=pydoc"])
    assert cfg.model.residual is False and cfg.model.dropout == 0.2 and cfg.train.seed == 7
    assert cfg.model.d_ff is None and cfg.model.ff_size == 4 * cfg.model.d_model
    assert cfg.data.corpus == "pydoc"


def test_unknown_override_lists_valid_fields():
    with pytest.raises(ValueError, match="unknown field 'n_layer'.*valid fields:.*n_layers"):
        apply_overrides(preset("micro"), ["n_layer=3"])


@pytest.mark.parametrize("assignment, words", [
    ("n_heads=x", "n_heads='x' is not a valid int"),
    ("causal=maybe", "not a valid on/off"),
    ("lr", "must look like field=value"),
    ("lr=-1", "lr=-1.0 must be a positive number"),
    ("steps=0", "steps=0 must be at least 1"),
    ("warmup_steps=500", "warmup_steps=500 is longer than steps=300"),
    ("pos_emb=alibi", "pos_emb='alibi' is not a valid choice; use one of: learned"),
])
def test_bad_overrides_give_a_sentence(assignment, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        apply_overrides(preset("micro"), [assignment])


def test_other_sections_validate():
    with pytest.raises(ValueError, match="top_p=0"):
        SampleConfig(top_p=0)
    with pytest.raises(ValueError, match="temperature=-1"):
        SampleConfig(temperature=-1)
    with pytest.raises(ValueError, match="tokenizer='words'"):
        DataConfig(tokenizer="words")
    with pytest.raises(ValueError, match="batch_size=0"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="has no field"):
        ModelConfig.from_dict({"n_layers": 2, "wat": 1})


def test_diff_names_exactly_the_changed_fields():
    a = preset("lab")
    b = apply_overrides(a, ["pos_emb=none"])
    assert a.diff(b) == {"model.pos_emb": ("learned", "none")}
