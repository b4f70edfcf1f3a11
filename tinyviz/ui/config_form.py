"""Config fields as widgets: one widget per field, typed from the dataclass, validated by the config.

``model_widgets``/``train_widgets`` draw the fields of a preset and return the chosen values;
``SWITCHES`` are the ablation switches the Compare page can flip for an A/B sibling.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st

from tinyviz.config import CHOICES, ModelConfig, RunConfig, TrainConfig

MODEL_SIZES = ("n_layers", "n_heads", "d_model", "d_ff", "n_ctx", "n_kv_heads", "dropout")
MODEL_SWITCHES = ("pos_emb", "norm", "norm_position", "mlp", "init", "residual", "tie_embeddings",
                  "scaled_residual_init", "causal", "attn_scale", "bias")
TRAIN_FIELDS = ("steps", "batch_size", "lr", "warmup_steps", "seed", "eval_interval", "snapshot_interval",
                "sample_interval", "checkpoint_interval", "weight_decay", "grad_clip", "dtype")
SWITCHES = MODEL_SWITCHES  # what "A/B this run" flips
# The widgets' upper bounds: far above what trains on a laptop, far below what overflows or hangs
# the page; whether a config within them fits in memory is checked at Start (tinyviz.resources).
MAXIMA = {"n_layers": 64, "n_heads": 128, "n_kv_heads": 128, "d_model": 16_384, "d_ff": 65_536, "n_ctx": 16_384,
          "steps": 10_000_000, "batch_size": 1_000_000, "warmup_steps": 10_000_000, "seed": 2**31 - 1,
          "eval_interval": 10_000_000, "snapshot_interval": 10_000_000, "sample_interval": 10_000_000,
          "checkpoint_interval": 10_000_000, "lr": 10.0, "weight_decay": 10.0, "grad_clip": 1e6,
          "dropout": 0.99}
HELP = {
    "n_kv_heads": "grouped-query attention; empty = one K/V head per query head",
    "d_ff": "MLP width; empty = 4 x d_model",
    "pos_emb": "how the model knows token order",
    "norm_position": "pre-LN (GPT-2) or post-LN (original transformer)",
    "init": "gpt: N(0, 0.02); pytorch_default: PyTorch's own",
    "scaled_residual_init": "shrink output projections by 1/sqrt(2 x layers)",
    "causal": "off lets each position see the future (leakage)",
    "attn_scale": "divide attention scores by sqrt(d_head)",
    "snapshot_interval": "save the probe prompt's attention every N steps (for the Heads replay)",
    "sample_interval": "a short greedy sample every N steps; 0 = none",
    "dtype": "bfloat16 = autocast, faster on recent CPUs",
}


def _types(cls) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(cls)


def field_widget(obj, name: str, key: str, container=st) -> Any:
    """One widget for obj.name, its type read from the dataclass, starting at obj's value."""
    value = getattr(obj, name)
    hint = str(_types(type(obj))[name])
    label, tip = name, HELP.get(name)
    if name in CHOICES:
        options = list(CHOICES[name])
        return container.selectbox(label, options, index=options.index(value), key=key, help=tip,
                                   persist_state="session")
    if "bool" in hint:
        return container.checkbox(label, value=value, key=key, help=tip, persist_state="session")
    top = MAXIMA.get(name)
    if "Optional" in hint or "None" in hint:
        return container.number_input(label, value=value, min_value=1, max_value=top, step=1, key=key, help=tip,
                                      placeholder="default", persist_state="session")
    if "int" in hint:
        return container.number_input(label, value=int(value), min_value=0, max_value=top, step=1, key=key,
                                      help=tip, persist_state="session")
    top = None if top is None else float(top)
    return container.number_input(label, value=float(value), min_value=0.0, max_value=top, format="%g",
                                  step=float(value) / 10 if value else 0.01, key=key, help=tip,
                                  persist_state="session")


def _grid(obj, names: tuple[str, ...], prefix: str, columns: int) -> dict[str, Any]:
    cols = st.columns(columns)
    return {n: field_widget(obj, n, f"{prefix}_{n}", cols[i % columns]) for i, n in enumerate(names)}


def model_widgets(cfg: ModelConfig, prefix: str) -> dict[str, Any]:
    st.markdown("**Size**")
    values = _grid(cfg, MODEL_SIZES, prefix, 4)
    st.markdown("**Ablation switches**")
    values.update(_grid(cfg, MODEL_SWITCHES, prefix, 4))
    return values


def train_widgets(cfg: TrainConfig, prefix: str) -> dict[str, Any]:
    return _grid(cfg, TRAIN_FIELDS, prefix, 4)


def build(base: RunConfig, model: dict[str, Any], train: dict[str, Any], data: dict[str, Any]) -> RunConfig:
    """base with the widgets' values; the config's own ValueError says what is wrong."""
    def cast(obj, values):
        hints = _types(type(obj))
        out = {}
        for k, v in values.items():
            if v is not None and "int" in str(hints[k]) and "float" not in str(hints[k]):
                v = int(v)
            out[k] = v
        return dataclasses.replace(obj, **out)

    return dataclasses.replace(base, model=cast(base.model, model), train=cast(base.train, train),
                               data=cast(base.data, data))


def flip(cfg: RunConfig, name: str, value: Any) -> RunConfig:
    """The sibling of an A/B pair: cfg with one model switch changed."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **{name: value}))


def alternatives(cfg: ModelConfig, name: str) -> list[Any]:
    """The values a switch could take other than its current one."""
    current = getattr(cfg, name)
    if name in CHOICES:
        return [c for c in CHOICES[name] if c != current]
    return [not current]
