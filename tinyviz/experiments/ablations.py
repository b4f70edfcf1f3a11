"""The ablation presets as data: arms that each change one switch, the claim, and the verdict rule.

A preset's base config is the ``micro`` preset plus a few fields; each arm overrides only the switch
under test; the verdict is computed from the measured numbers by the rule stated with it.
``tinyviz.experiments.ablate`` trains the arms and writes the report.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tinyviz.config import RunConfig, apply_overrides, option_overrides, preset

FINAL_WINDOW = 20  # "final loss" = mean train loss over the last FINAL_WINDOW steps (one step's batch is noisy)
MIN_GAP = 0.02  # nats: two arms "clearly differ" by more than max(MIN_GAP, the sum of their seed spreads)

# Shared by every preset: the `micro` preset at context 64, eval every 50 steps, no periodic
# snapshots or checkpoints (the final weights are still saved), so an arm costs only its steps.
BASE = {
    "d_ff": None, "n_ctx": 64, "batch_size": 16, "lr": 3e-3, "warmup_steps": 30, "eval_interval": 50,
    "eval_batches": 4, "snapshot_interval": 0, "checkpoint_interval": 0, "sample_interval": 0, "corpus_chars": 100_000,
}


@dataclass(frozen=True)
class Arm:
    name: str
    # field -> value, applied on the preset's base; a callable value is computed from the base config
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Stat:
    """One number over seeds: the mean and the half-width of the min-max range."""
    values: tuple[float, ...]

    @property
    def ok(self) -> bool:
        return bool(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values) if self.values else math.nan

    @property
    def spread(self) -> float:
        return (max(self.values) - min(self.values)) / 2 if self.values else math.nan

    def fmt(self) -> str:
        return f"{self.mean:.4f} ± {self.spread:.4f}" if self.values else "–"


@dataclass
class ArmStats:
    arm: str
    loss_1: Stat
    loss_100: Stat
    final: Stat
    val: Stat
    causal_val: Stat  # val loss with the causal mask on (equals val for causal models)
    n_params: int
    failed: list[str]  # "seed 1 at step 212" for runs that stopped on a NaN
    unigram: float = math.nan  # entropy of the training tokens' frequencies: the loss of a context-blind model


@dataclass(frozen=True)
class Ablation:
    name: str
    claim: str
    arms: tuple[Arm, ...]
    verdict: Callable[[dict[str, ArmStats]], tuple[str, str]]  # stats by arm -> (label, one line)
    rule: str  # the verdict rule in words
    base: dict[str, Any] = field(default_factory=dict)  # preset-specific base fields on top of BASE
    steps: int = 300
    seeds: int = 2
    note: str = ""  # how the arms differ, where more than one field


def _differ(a: ArmStats, b: ArmStats, attr: str = "final") -> float:
    """b - a when it exceeds the noise margin, else 0 (a and b indistinguishable)."""
    x, y = getattr(a, attr), getattr(b, attr)
    margin = max(MIN_GAP, x.spread + y.spread)
    d = y.mean - x.mean
    return d if abs(d) > margin else 0.0


def _label(parts: list[bool]) -> str:
    return "reproduced" if all(parts) else "not reproduced" if not any(parts) else "partly"


def _f(x: float) -> str:
    return f"{x:.3f}"


def _verdict_init(s):
    g, p = s["gpt"], s["pytorch_default"]
    near_80 = 40 <= p.loss_1.mean <= 160
    gap = _differ(g, p) > 0
    return _label([near_80, gap]), (
        f"pytorch_default starts at {_f(p.loss_1.mean)} (gpt {_f(g.loss_1.mean)}; "
        f"'near 80' {'holds' if near_80 else 'fails'}); "
        f"final {_f(p.final.mean)} vs gpt {_f(g.final.mean)} ({'a gap remains' if gap else 'no clear gap'}).")


def _verdict_posemb(s):
    best = min(a.final.mean for a in s.values())
    none = s["none"].final.mean
    ratio = none / best
    label = "reproduced" if ratio <= 1.10 else "partly" if ratio <= 1.25 else "not reproduced"
    order = ", ".join(f"{a.arm} {_f(a.final.mean)}" for a in sorted(s.values(), key=lambda a: a.final.mean))
    return label, f"no positional embedding ends at {_f(none)}, {ratio:.2f}x the best arm (final: {order})."


def _verdict_tying(s):
    t, u = s["tied"], s["untied"]
    rel = abs(t.final.mean - u.final.mean) / min(t.final.mean, u.final.mean)
    label = "reproduced" if rel <= 0.02 else "partly" if rel <= 0.05 else "not reproduced"
    return label, f"final loss tied {_f(t.final.mean)} vs untied {_f(u.final.mean)}: {100 * rel:.1f} % apart."


USES_CONTEXT = 0.3  # nats below the unigram entropy: an arm that gets there uses context, so it "trains"


def _trains(a: ArmStats) -> bool:
    return a.final.mean < a.unigram - USES_CONTEXT


def _verdict_residual(s):
    ref, n1, n2, n3 = s["res-3L"], s["nores-1L"], s["nores-2L"], s["nores-3L"]
    uni = n1.unigram
    slower = _trains(n2) and (_differ(n1, n2, "loss_100") > 0 or _differ(n1, n2) > 0)
    near_init = n3.final.mean >= 0.9 * n3.loss_1.mean
    return _label([_trains(n1), slower, not _trains(n3)]), (
        f"final loss (unigram entropy {_f(uni)}, initial ≈ {_f(n3.loss_1.mean)}, residual 3L {_f(ref.final.mean)}): "
        f"1L {_f(n1.final.mean)} ({'trains' if _trains(n1) else 'does not train'}), "
        f"2L {_f(n2.final.mean)} ({'trains' if _trains(n2) else 'does not train'}), "
        f"3L {_f(n3.final.mean)} ({'trains' if _trains(n3) else 'fails'}"
        f"{', near its initial loss' if near_init and not _trains(n3) else ''}"
        f"{', at the unigram entropy, not its initial loss' if not near_init and not _trains(n3) else ''}); "
        f"at step 100: 1L {_f(n1.loss_100.mean)}, 2L {_f(n2.loss_100.mean)}, 3L {_f(n3.loss_100.mean)}.")


def _verdict_norm(s):
    pre, pre0, post, post0 = s["pre-LN"], s["pre-LN-nowarmup"], s["post-LN"], s["post-LN-nowarmup"]
    rms, none = s["pre-RMSNorm"], s["pre-nonorm"]
    post_needs = _differ(post, post0) > 0 or bool(post0.failed)
    pre_fine = _differ(pre, pre0) <= 0 and not pre0.failed
    rms_same = _differ(pre, rms) == 0
    none_worse = _differ(pre, none) > 0 or bool(none.failed)
    return _label([post_needs, pre_fine, rms_same, none_worse]), (
        f"post-LN without warmup {_f(post0.final.mean)} vs with {_f(post.final.mean)} "
        f"({'worse' if post_needs else 'not worse'}); pre-LN {_f(pre0.final.mean)} vs {_f(pre.final.mean)} "
        f"({'not worse' if pre_fine else 'worse'}); RMSNorm {_f(rms.final.mean)} "
        f"({'same as' if rms_same else 'differs from'} LayerNorm); no norm {_f(none.final.mean)} "
        f"({'worse' if none_worse else 'not worse'}).")


def _verdict_mlp(s):
    r, g, w = s["relu"], s["gelu"], s["swiglu"]
    swiglu_best = _differ(w, g) > 0 and _differ(w, r) > 0
    gelu_over_relu = _differ(g, r) > 0
    return _label([swiglu_best, gelu_over_relu]), (
        f"final loss relu {_f(r.final.mean)}, gelu {_f(g.final.mean)}, swiglu {_f(w.final.mean)} "
        f"(params {r.n_params:,} / {g.n_params:,} / {w.n_params:,}).")


def _verdict_causal(s):
    c, n = s["causal"], s["noncausal"]
    collapse = n.final.mean < 0.5 * c.final.mean
    ruined = n.causal_val.mean > c.val.mean + 0.5
    return _label([collapse, ruined]), (
        f"train loss without the mask {_f(n.final.mean)} vs {_f(c.final.mean)} with it; evaluated causally, "
        f"val loss {_f(n.causal_val.mean)} vs {_f(c.val.mean)}.")


def _verdict_scale(s):
    base = s["L2-d64-h4"]
    depth = _differ(base, s["L4"]) < 0 and _differ(s["L4"], s["L6"]) < 0
    width = _differ(base, s["d128"]) < 0 and _differ(s["d128"], s["d256"]) < 0
    heads = [s[k].final.mean for k in ("h1", "h2", "L2-d64-h4", "h8")]
    heads_flat = max(heads) - min(heads) <= 0.05
    return _label([depth, width, heads_flat]), (
        f"final loss by depth 2/4/6: {', '.join(_f(s[k].final.mean) for k in ('L2-d64-h4', 'L4', 'L6'))}; "
        f"by width 64/128/256: {', '.join(_f(s[k].final.mean) for k in ('L2-d64-h4', 'd128', 'd256'))}; "
        f"by heads 1/2/4/8: {', '.join(_f(h) for h in heads)}.")


def swiglu_d_ff(d_model: int, d_ff: int) -> int:
    """SwiGLU hidden size whose MLP has about the parameters of a ReLU/GELU MLP with d_ff (biases included)."""
    return round(d_ff * (2 * d_model + 1) / (3 * d_model + 2))


ABLATIONS: dict[str, Ablation] = {a.name: a for a in [
    Ablation(
        "init", "Default PyTorch init (Embedding std 1.0) starts near loss 80 and keeps a gap to GPT init "
                "(std 0.02) after 1000 steps.",
        (Arm("gpt"), Arm("pytorch_default", {"init": "pytorch_default"})), _verdict_init,
        "reproduced if pytorch_default's step-1 loss is within 40-160 AND its final loss is clearly above gpt's; "
        "partly if one holds.",
        base={"d_model": 128}, steps=1000,
        note="d_model 128 (the seeds' width): the initial loss of Embedding std 1.0 grows with the width."),
    Ablation(
        "posemb", "No positional embeddings still reaches low training loss on a small corpus.",
        (Arm("learned"), Arm("sinusoidal", {"pos_emb": "sinusoidal"}), Arm("rope", {"pos_emb": "rope"}),
         Arm("none", {"pos_emb": "none"})), _verdict_posemb,
        "reproduced if none's final loss is within 10 % of the best arm's, partly within 25 %, else not reproduced."),
    Ablation(
        "tying", "Tied vs untied input/output embeddings make a negligible difference at this scale.",
        (Arm("tied"), Arm("untied", {"tie_embeddings": False})), _verdict_tying,
        "reproduced if the final losses are within 2 % of each other, partly within 5 %, else not reproduced."),
    Ablation(
        "residual", "Without residual connections 1 layer trains, 2 layers train slower, 3 layers fail near "
                    "their initial loss.",
        (Arm("res-3L"), Arm("nores-1L", {"residual": False, "n_layers": 1}),
         Arm("nores-2L", {"residual": False, "n_layers": 2}), Arm("nores-3L", {"residual": False})),
        _verdict_residual,
        "an arm trains if its final loss ends more than 0.3 nats below the unigram entropy of the training text "
        "(the loss of a model that ignores context). Parts: 1L trains; 2L trains, with its loss at step 100 or "
        "its final loss clearly above 1L's; 3L does not train. All three: reproduced; some: partly; none: not.",
        base={"n_layers": 3}, steps=600, seeds=3,
        note="res-3L is the reference; each no-residual arm differs from it in `residual` and, for 1L/2L, "
             "`n_layers`; the no-residual arms differ from each other only in `n_layers`."),
    Ablation(
        "norm", "(No claim in the seeds; the usual one.) Post-LN needs warmup, pre-LN does not; RMSNorm matches "
                "LayerNorm; no normalisation trains worse.",
        (Arm("pre-LN"), Arm("pre-LN-nowarmup", {"warmup_steps": 0}), Arm("post-LN", {"norm_position": "post"}),
         Arm("post-LN-nowarmup", {"norm_position": "post", "warmup_steps": 0}),
         Arm("pre-RMSNorm", {"norm": "rmsnorm"}), Arm("pre-nonorm", {"norm": "none"})), _verdict_norm,
        "four parts: post-LN without warmup clearly worse than with (or NaN); pre-LN without warmup not clearly "
        "worse; RMSNorm not clearly different from LayerNorm; no norm clearly worse (or NaN). All: reproduced; "
        "some: partly.",
        base={"n_layers": 4, "warmup_steps": 50},
        note="4 layers and 50 warmup steps so that the warmup question has teeth; post-LN-nowarmup differs from "
             "pre-LN in `norm_position` and `warmup_steps`, and from post-LN in `warmup_steps` alone."),
    Ablation(
        "mlp", "(No claim in the seeds; the usual one.) At matched parameter count SwiGLU beats GELU, which beats "
               "ReLU.",
        (Arm("gelu"), Arm("relu", {"mlp": "relu"}),
         Arm("swiglu", {"mlp": "swiglu", "d_ff": lambda b: swiglu_d_ff(b.model.d_model, b.model.ff_size)})),
        _verdict_mlp,
        "two parts: swiglu clearly below both; gelu clearly below relu. Both: reproduced; one: partly.",
        note=f"swiglu has three matrices, so it uses d_ff = round(d_ff (2 d_model + 1) / (3 d_model + 2)) "
             f"({swiglu_d_ff(64, 256)} instead of 256 at width 64) to match the parameter count: it differs from "
             "the base in `mlp` and `d_ff`."),
    Ablation(
        "causal", "Without the causal mask the train loss collapses and generation is ruined.",
        (Arm("causal"), Arm("noncausal", {"causal": False})), _verdict_causal,
        "two parts: the non-causal train loss is below half the causal one; its val loss evaluated with the mask "
        "on is more than 0.5 nats above the causal arm's. Both: reproduced; one: partly. The health check must "
        "flag leakage for the non-causal arm (see the table).",
        steps=1000),
    Ablation(
        "scale", "(No claim in the seeds; the usual one.) At a fixed step budget deeper and wider models reach a "
                 "lower loss, and the number of heads matters little.",
        (Arm("L2-d64-h4"), Arm("L4", {"n_layers": 4}), Arm("L6", {"n_layers": 6}), Arm("d128", {"d_model": 128}),
         Arm("d256", {"d_model": 256}), Arm("h1", {"n_heads": 1}), Arm("h2", {"n_heads": 2}),
         Arm("h8", {"n_heads": 8})), _verdict_scale,
        "three parts: final loss clearly falls 2->4->6 layers; clearly falls 64->128->256 wide; heads 1/2/4/8 "
        "within 0.05 of each other. All: reproduced; some: partly.",
        steps=300,
        note="one factor at a time around 2 layers, width 64, 4 heads; d_ff follows the width (4 x d_model)."),
]}


def get(name: str) -> Ablation:
    if name not in ABLATIONS:
        raise ValueError(f"unknown ablation preset {name!r}; choose one of: {', '.join(ABLATIONS)}.")
    return ABLATIONS[name]


def _assign(fields: dict[str, Any]) -> list[str]:
    return [f"{k}={v}" for k, v in fields.items()]


def base_config(ab: Ablation, steps: int | None = None, corpus: str | None = None,
                sets: tuple[str, ...] | list[str] = ()) -> RunConfig:
    """The preset's base RunConfig: micro + BASE + the preset's base + --corpus/--steps + --set."""
    cfg = apply_overrides(preset("micro"), _assign({**BASE, "steps": ab.steps, **ab.base}))
    cfg = apply_overrides(cfg, option_overrides(cfg, corpus, steps) + list(sets))
    return dataclasses.replace(cfg, preset=f"ablate-{ab.name}")


def arm_config(base: RunConfig, arm: Arm, seed: int) -> RunConfig:
    """The base with the arm's switch applied; the seed sets model init and data order alike for every arm."""
    values = {k: v(base) if callable(v) else v for k, v in arm.overrides.items()}
    return apply_overrides(base, _assign({**values, "seed": seed}))
