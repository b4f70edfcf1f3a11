import json
from pathlib import Path

import pytest

from tinyviz.config import (
    PRESETS,
    DataConfig,
    ModelConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    apply_overrides,
    option_overrides,
    preset,
)

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_preset_rows() -> dict[str, list[str]]:
    """The README's preset table: preset name -> its cells."""
    text = README.read_text(encoding="utf-8").split("### Presets", 1)[1].split("\n#", 1)[0]
    rows = [line.strip("|").split("|") for line in text.splitlines() if line.startswith("| `")]
    return {cells[0].strip().strip("`"): [c.strip() for c in cells[1:]] for cells in rows}


def test_every_preset_builds_and_the_readme_table_states_its_shape():
    # the table is what a person reads to pick a preset: it must say what preset() builds
    rows = readme_preset_rows()
    assert set(rows) == set(PRESETS)
    for name, (shape, widths, n_ctx, notes) in rows.items():
        cfg = preset(name)
        assert cfg.preset == name
        m = cfg.model
        assert shape == f"{m.n_layers} × {m.n_heads}", name
        assert widths == f"{m.d_model} / {m.ff_size}", name
        assert n_ctx == str(m.n_ctx), name
        if "dropout" in notes:
            assert f"dropout {m.dropout:g}" in notes, name
        if "BPE vocab" in notes:
            assert cfg.data.tokenizer == "bpe" and f"BPE vocab {cfg.data.bpe_vocab_size}" in notes, name


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


def test_a_run_shorter_than_its_warmup_keeps_warmup_proportional():
    cfg = preset("lab")  # 100 warmup steps
    assert option_overrides(cfg, steps=50) == ["steps=50", "warmup_steps=5"]
    assert option_overrides(cfg, steps=500) == ["steps=500"]
    assert option_overrides(cfg, "copy", 5, 3) == ["corpus=copy", "steps=5", "warmup_steps=0", "seed=3"]
    assert apply_overrides(cfg, option_overrides(cfg, steps=50)).train.warmup_steps == 5  # a valid config
