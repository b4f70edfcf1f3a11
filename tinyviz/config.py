"""Configuration as data: frozen dataclasses, validated on construction.

Every invalid value raises ``ValueError`` with a sentence that names the field, the value
and what to do instead. ``dataclasses.replace`` makes variants; ``to_dict``/``from_dict``
round-trip through JSON.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from dataclasses import dataclass, field, fields
from typing import Any, get_args, get_type_hints

CHOICES = {
    "pos_emb": ("learned", "sinusoidal", "rope", "none"),
    "norm": ("layernorm", "rmsnorm", "none"),
    "norm_position": ("pre", "post"),
    "mlp": ("relu", "gelu", "gelu_tanh", "swiglu"),
    "init": ("gpt", "pytorch_default"),
    "tokenizer": ("char", "bpe"),
    "device": ("cpu", "auto", "cuda", "mps"),
    "dtype": ("float32", "bfloat16"),
    "attn_impl": ("auto", "explicit"),
    "history_dtype": ("float16", "float32"),
}
BPE_VOCAB_MIN, BPE_VOCAB_MAX = 300, 8192  # a BPE vocabulary: the 256 bytes and some merges, up to what a CPU trains


def check_bpe_vocab_size(n: int) -> int:
    """n, or ValueError with a sentence when a BPE vocabulary of n tokens is out of range."""
    if not BPE_VOCAB_MIN <= n <= BPE_VOCAB_MAX:
        raise ValueError(f"bpe_vocab_size={n} must be between {BPE_VOCAB_MIN} and {BPE_VOCAB_MAX}.")
    return n


def _check_choice(obj, name: str) -> None:
    value = getattr(obj, name)
    if value not in CHOICES[name]:
        allowed = ", ".join(CHOICES[name])
        raise ValueError(f"{name}={value!r} is not a valid choice; use one of: {allowed}.")


def _check_positive(obj, *names: str, allow_zero: bool = False) -> None:
    for name in names:
        value = getattr(obj, name)
        if value < 0 or (value == 0 and not allow_zero):
            bound = "0 or more" if allow_zero else "at least 1"
            raise ValueError(f"{name}={value} must be {bound}.")


@functools.cache
def _field_types(cls) -> dict[str, tuple[type, bool]]:
    """{field: (bool | int | float | str, whether None is allowed)} from the dataclass annotations."""
    out = {}
    for name, hint in get_type_hints(cls).items():
        args = get_args(hint)
        out[name] = (next(a for a in args if a is not type(None)) if args else hint, type(None) in args)
    return out


_TYPE_WORDS = {bool: "true or false", int: "a whole number", float: "a number", str: "a text"}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_types(obj) -> None:
    """ValueError naming the field unless each field holds its annotated type (ints pass as floats, and
    become floats). A config.json anyone can write reaches here unfiltered."""
    for name, (base, optional) in _field_types(type(obj)).items():
        value = getattr(obj, name)
        if value is None and optional:
            continue
        if base is bool:
            ok = isinstance(value, bool)
        elif base is int:
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            if ok:
                object.__setattr__(obj, name, int(value))
        elif base is float:
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
            if ok:
                try:
                    value = float(value)
                except OverflowError:
                    value = math.inf
                object.__setattr__(obj, name, value)
        else:
            ok = isinstance(value, base)
        if not ok:
            none = " (or null for the default)" if optional else ""
            raise ValueError(f"{name}={_short(value)} must be {_TYPE_WORDS.get(base, base.__name__)}{none}.")


def _check_finite(obj) -> None:
    """ValueError for a NaN or infinite number the field's own checks let through (NaN fails no comparison)."""
    for name, (base, _) in _field_types(type(obj)).items():
        value = getattr(obj, name)
        if base is float and value is not None and not math.isfinite(value):
            raise ValueError(f"{name}={value} must be a finite number.")


class _Serializable:
    SECTION = ""  # its key in a run's config.json

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        if not isinstance(d, dict):
            raise ValueError(f"the {cls.SECTION or cls.__name__} section must be a JSON object, "
                             f"got {_short(d)}.")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"{cls.__name__} has no field(s) {', '.join(unknown)}; valid fields: {', '.join(sorted(known))}."
            )
        return cls(**d)


@dataclass(frozen=True)
class ModelConfig(_Serializable):
    """A decoder-only transformer. Each ablation is one field with one meaning."""

    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int | None = None  # grouped-query attention; None means n_heads
    d_model: int = 64
    d_ff: int | None = None  # None means 4 * d_model
    n_ctx: int = 128
    d_vocab: int = 128
    dropout: float = 0.0
    bias: bool = True
    pos_emb: str = "learned"
    norm: str = "layernorm"
    norm_position: str = "pre"
    residual: bool = True
    mlp: str = "gelu"
    tie_embeddings: bool = True
    init: str = "gpt"
    scaled_residual_init: bool = True
    causal: bool = True
    attn_scale: bool = True
    rope_base: float = 10000.0
    norm_eps: float = 1e-5  # the epsilon of LayerNorm / RMSNorm (GPT-2 and llama2.c: 1e-5; Llama 3: 1e-5 or 1e-6)

    SECTION = "model"

    def __post_init__(self):
        _check_types(self)
        _check_positive(self, "n_layers", "n_heads", "d_model", "n_ctx")
        if self.d_vocab < 2:
            raise ValueError(f"d_vocab={self.d_vocab} must be at least 2 (a vocabulary needs two tokens).")
        for name in ("n_kv_heads", "d_ff"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name}={value} must be at least 1 (or unset for the default).")
        for name in ("pos_emb", "norm", "norm_position", "mlp", "init"):
            _check_choice(self, name)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}.")
        if self.n_heads % self.kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be divisible by n_kv_heads={self.kv_heads}.")
        if self.pos_emb == "rope" and self.d_head % 2:
            raise ValueError(f"pos_emb='rope' needs an even head size, but d_model/n_heads = {self.d_head}.")
        if self.pos_emb == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"pos_emb='sinusoidal' needs an even d_model, got d_model={self.d_model}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1).")
        if self.rope_base <= 1:
            raise ValueError(f"rope_base={self.rope_base} must be greater than 1.")
        if not (0 < self.norm_eps < 1 and math.isfinite(self.norm_eps)):
            raise ValueError(f"norm_eps={self.norm_eps} must be a small positive number, e.g. 1e-5.")
        _check_finite(self)

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def ff_size(self) -> int:
        return self.d_ff or 4 * self.d_model


@dataclass(frozen=True)
class TrainConfig(_Serializable):
    steps: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    eval_interval: int = 100  # 0 disables periodic validation
    eval_batches: int = 8
    snapshot_interval: int = 100  # attention + activation snapshots of the probe prompt; 0 disables
    checkpoint_interval: int = 500  # 0 saves only at the end
    sample_interval: int = 0  # a short greedy sample into the metrics; 0 disables
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"  # bfloat16 = autocast opt-in
    compile: bool = False  # torch.compile opt-in
    attn_impl: str = "auto"  # auto = fused attention whenever no pattern is captured
    threads: int = 0  # 0 leaves torch's default
    history_keep: int = 60  # weights kept through training (dense early, sparse late); 0 keeps none
    history_dtype: str = "float16"  # the kept copies' precision (the last checkpoint stays float32)

    SECTION = "train"

    def __post_init__(self):
        _check_types(self)
        _check_positive(self, "steps", "batch_size", "eval_batches")
        _check_positive(
            self, "warmup_steps", "eval_interval", "snapshot_interval", "checkpoint_interval",
            "sample_interval", "threads", allow_zero=True,
        )
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr={self.lr} must be a positive number, e.g. 1e-3.")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1].")
        if self.warmup_steps > self.steps:
            raise ValueError(
                f"warmup_steps={self.warmup_steps} is longer than steps={self.steps}; use fewer warmup steps."
            )
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay={self.weight_decay} must be 0 or more.")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be in [0, 1).")
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip={self.grad_clip} must be 0 (off) or positive.")
        for name in ("device", "dtype", "attn_impl", "history_dtype"):
            _check_choice(self, name)
        if self.history_keep in (1, 2) or self.history_keep < 0:
            raise ValueError(f"history_keep={self.history_keep} must be 0 (keep no weights history) or at least 3 "
                             "(the first step, the last and one between).")
        _check_finite(self)


@dataclass(frozen=True)
class DataConfig(_Serializable):
    corpus: str = "tinytales"  # a built-in corpus name or a path to a UTF-8 .txt file
    corpus_chars: int = 300_000  # size of a generated corpus
    corpus_seed: int = 0
    tokenizer: str = "char"
    bpe_vocab_size: int = 512
    val_fraction: float = 0.1

    SECTION = "data"

    def __post_init__(self):
        _check_types(self)
        if not isinstance(self.corpus, str) or not self.corpus.strip():
            raise ValueError("corpus is empty; give a built-in corpus name (e.g. 'tinytales') "
                             "or a path to a .txt file.")
        _check_positive(self, "corpus_chars")
        _check_choice(self, "tokenizer")
        check_bpe_vocab_size(self.bpe_vocab_size)
        if not 0.0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction={self.val_fraction} must be between 0 and 0.5 (e.g. 0.1).")
        _check_finite(self)


@dataclass(frozen=True)
class SampleConfig(_Serializable):
    max_new_tokens: int = 200
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    seed: int = 0
    n_candidates: int = 5  # top candidates recorded per step

    def __post_init__(self):
        _check_positive(self, "max_new_tokens", "n_candidates")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature={self.temperature} must be 0 (greedy) or positive.")
        if self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be 0 (off) or a positive number of tokens.")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1]; 1 turns it off.")
        _check_finite(self)


@dataclass(frozen=True)
class RunConfig(_Serializable):
    """Everything that defines a training run; stored as a run's config.json."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preset: str = "custom"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        if not isinstance(d, dict):
            raise ValueError("the run config must be a JSON object.")
        return cls(
            model=ModelConfig.from_dict(d.get("model", {})),
            train=TrainConfig.from_dict(d.get("train", {})),
            data=DataConfig.from_dict(d.get("data", {})),
            preset=str(d.get("preset", "custom")),
        )

    def diff(self, other: RunConfig) -> dict[str, tuple[Any, Any]]:
        """Fields that differ, as ``{"section.field": (self_value, other_value)}``."""
        out = {}
        for section in ("model", "train", "data"):
            a, b = getattr(self, section).to_dict(), getattr(other, section).to_dict()
            out.update({f"{section}.{k}": (a[k], b[k]) for k in a if a[k] != b[k]})
        return out


# The seeds' configurations. Each entry overrides the defaults of the three sections; the app's
# Train form starts every field (model, training and data) at the preset's value, so the app and
# `train --preset P` write the same config.json. sample_interval = eval_interval: a short greedy
# preview at each evaluation (its own generator: the training's random streams are untouched).
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "micro": {
        "model": dict(n_layers=2, n_heads=4, d_model=64, d_ff=256, n_ctx=64),
        "train": dict(steps=300, batch_size=16, lr=3e-3, warmup_steps=30, eval_interval=50,
                      snapshot_interval=50, checkpoint_interval=100, sample_interval=50),
        "data": dict(corpus_chars=100_000),
    },
    # The demo run. Two layers is the smallest model in which an induction head can form; with
    # two heads per layer one head takes the whole job (score 0.42 at 3 k steps), with four the
    # job was shared by all of layer 1 and no head cleared 0.25.
    "induction": {
        "model": dict(n_layers=2, n_heads=2, d_model=64, d_ff=256, n_ctx=128),
        "train": dict(steps=3000, batch_size=32, lr=2e-3, warmup_steps=100, eval_interval=100,
                      snapshot_interval=100, checkpoint_interval=500, sample_interval=100),
        "data": dict(corpus_chars=300_000),
    },
    "lab": {
        "model": dict(n_layers=4, n_heads=4, d_model=128, d_ff=512, n_ctx=128, dropout=0.1, mlp="gelu"),
        "train": dict(steps=2000, batch_size=32, lr=1e-3, warmup_steps=100, sample_interval=100),
        "data": {},
    },
    "mini-gpt": {
        "model": dict(n_layers=5, n_heads=8, d_model=128, d_ff=512, n_ctx=128),
        "train": dict(steps=2000, batch_size=32, lr=1e-3, warmup_steps=100, sample_interval=100),
        "data": {},
    },
    "stories-0.8m": {
        "model": dict(n_layers=4, n_heads=16, d_model=128, d_ff=512, n_ctx=128, dropout=0.15),
        "train": dict(steps=2000, batch_size=32, lr=1e-3, warmup_steps=200, sample_interval=100),
        "data": dict(tokenizer="bpe", bpe_vocab_size=361),
    },
}


def preset(name: str) -> RunConfig:
    """The RunConfig of a named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}.")
    p = PRESETS[name]
    return RunConfig(
        model=ModelConfig(**p["model"]), train=TrainConfig(**p["train"]), data=DataConfig(**p["data"]), preset=name
    )


def _parse_value(raw: str, annotation: Any, name: str) -> Any:
    """Turn the text of ``--set name=raw`` into the field's type (bool, int, float, str, Optional)."""
    text = raw.strip()
    args = get_args(annotation)
    base = next(a for a in args if a is not type(None)) if args else annotation
    if type(None) in args and text.lower() in ("none", "null", ""):
        return None
    if base is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{name}={raw!r} is not a valid on/off value; use on or off.")
    if base in (int, float):
        try:
            return base(text)
        except ValueError:
            raise ValueError(f"{name}={raw!r} is not a valid {base.__name__} value.") from None
    return text


def option_overrides(cfg: RunConfig, corpus: str | None = None, steps: int | None = None,
                     seed: int | None = None) -> list[str]:
    """The --corpus, --steps and --seed options of a command as assignments for apply_overrides. A run
    shorter than cfg's warmup gets warmup_steps = steps // 10, so warmup stays proportional."""
    out = [] if corpus is None else [f"corpus={corpus}"]
    if steps is not None:
        out.append(f"steps={steps}")
        if cfg.train.warmup_steps > steps:
            out.append(f"warmup_steps={max(0, steps // 10)}")
    return out + ([] if seed is None else [f"seed={seed}"])


def apply_overrides(cfg: RunConfig, assignments: list[str]) -> RunConfig:
    """Apply ``field=value`` strings (``--set``) to whichever section owns the field.

    A field may be written plainly (``lr=3e-4``) or with its section (``train.lr=3e-4``).
    """
    sections = {"model": cfg.model, "train": cfg.train, "data": cfg.data}
    owners: dict[str, str] = {}
    for sec, obj in sections.items():
        for f in fields(obj):
            owners.setdefault(f.name, sec)
    changes: dict[str, dict[str, Any]] = {sec: {} for sec in sections}
    for assignment in assignments:
        if "=" not in assignment:
            raise ValueError(f"--set {assignment!r} must look like field=value, e.g. --set lr=3e-4.")
        key, raw = assignment.split("=", 1)
        key = key.strip()
        sec, _, name = key.rpartition(".")
        if sec and sec not in sections:
            raise ValueError(f"unknown section {sec!r} in --set {key}; use model, train or data.")
        sec = sec or owners.get(name, "")
        if not sec or name not in {f.name for f in fields(sections[sec])}:
            valid = ", ".join(sorted(owners))
            raise ValueError(f"unknown field {key!r} in --set; valid fields: {valid}.")
        hints = get_type_hints(type(sections[sec]))
        changes[sec][name] = _parse_value(raw, hints[name], key)
    new = {sec: dataclasses.replace(obj, **changes[sec]) for sec, obj in sections.items()}
    return dataclasses.replace(cfg, **new)
