"""Health checks: pure functions over the metrics stream that say, in words, when training is unwell.

Each check has its thresholds as module constants; ``health_checks`` returns a list of
``HealthWarning`` with a sentence for a person: what is happening, what it likely means,
what to try.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

INIT_LOSS_TOL = 1.0  # nats between the first loss and ln(vocab)
STUCK_MIN_STEPS = 200  # the stuck checks wait for this many steps
STUCK_WINDOW = 50  # ... then average the loss over the last this many steps
STUCK_UNIFORM_TOL = 0.1  # nats from ln(vocab): predicting uniformly
STUCK_UNIGRAM_TOL = 0.05  # nats from the unigram entropy: predicting letter frequencies
MIN_HISTORY = 20  # records needed before a running median is trusted
GRAD_WINDOW = 100  # records in the running median of the gradient norm
GRAD_RATIO = 10.0  # a gradient norm above this many running medians is an explosion
EPISODE_GAP = 10  # steps below the threshold that end an explosion episode
GRAD_SUSTAIN = 3  # records over the ratio in one episode that make it an explosion by themselves
GRAD_AFTER = 20  # records after a shorter episode whose mean loss is compared ...
GRAD_LOSS_RISE = 1.1  # ... with this many times the median loss of the SPIKE_WINDOW records before it
ENTROPY_DROP = 0.5  # mean attention entropy falling by more than this fraction between snapshots
SPIKE_WINDOW = 50  # records in the running median of the loss
SPIKE_RATIO = 1.5  # a loss above this many running medians is a spike
SPIKE_NEAR = 100  # steps around an entropy drop searched for a loss spike
LEAK_COPY_LOSS = 0.3  # a non-causal model below this loss is copying from the future
OVERFIT_RISE = 0.03  # nats the latest val loss sits above its best before overfitting is said
OVERFIT_EVALS = 3  # ... for this many evaluations in a row (one high evaluation is noise)
OVERFIT_WINDOW = 50  # records averaged for "train loss then" and "train loss now"


@dataclass(frozen=True)
class HealthWarning:
    code: str
    severity: str  # "warning" or "error"
    message: str  # for a person: what is happening, what it likely means, what to try
    step: int


def _running_median(x: np.ndarray, window: int) -> np.ndarray:
    """Median of the previous ``window`` finite values before each index; NaN with fewer than MIN_HISTORY."""
    if len(x) == 0:
        return np.zeros(0)
    padded = np.concatenate([np.full(window, np.nan), np.where(np.isfinite(x), x, np.nan)])
    windows = sliding_window_view(padded[:-1], window)  # windows[i] = x[i-window:i]
    ok = (~np.isnan(windows)).sum(1) >= MIN_HISTORY
    med = np.full(len(x), np.nan)
    med[ok] = np.nanmedian(windows[ok], axis=1)
    return med


def health_checks(
    metrics: list[dict], *, vocab_size: int, unigram_entropy: float | None = None, causal: bool = True
) -> list[HealthWarning]:
    """Warnings about a run from its metrics records, in the order listed below. Each record
    has "step", "loss", "grad_norm" and optionally "entropy_mean" (as StepMetrics.to_dict and
    Run.metrics give them); records without a loss count only as snapshots.

    - nonfinite (error): a NaN/inf loss or gradient norm; reported once, at the first.
    - init_loss: the first record (step 0 or 1) more than INIT_LOSS_TOL = 1 nat from ln(vocab).
    - stuck_uniform (error): after STUCK_MIN_STEPS = 200 steps, the mean loss of the last
      STUCK_WINDOW = 50 steps within STUCK_UNIFORM_TOL = 0.1 of ln(vocab).
    - stuck_unigram: the same within STUCK_UNIGRAM_TOL = 0.05 of ``unigram_entropy``.
    - grad_explosion: a gradient norm above GRAD_RATIO = 10x the median of the previous
      GRAD_WINDOW = 100 records (with at least MIN_HISTORY = 20 of them); one warning per
      episode, which ends after more than EPISODE_GAP = 10 steps without one, and only for an
      episode with at least GRAD_SUSTAIN = 3 such records or one after which the mean loss of the
      next GRAD_AFTER = 20 records exceeds GRAD_LOSS_RISE = 1.1x the median of the SPIKE_WINDOW = 50
      before it. Why: healthy runs show single spikes that clipping absorbs (the posemb/tying
      reference arm, seed 1: 51, 54x its median, at step 28 of its warmup, the loss still falling
      3.64 -> 3.33 five steps later); instability is a spike that lasts or that the loss feels.
    - entropy_collapse: "entropy_mean" falling by more than ENTROPY_DROP = 50 % between two
      consecutive snapshots, with a loss above SPIKE_RATIO = 1.5x the median of the previous
      SPIKE_WINDOW = 50 records within SPIKE_NEAR = 100 steps of that interval.
    - overfitting: the val loss has stayed more than OVERFIT_RISE = 0.03 nats above its best for the
      last OVERFIT_EVALS = 3 evaluations while the mean train loss of the last OVERFIT_WINDOW = 50
      records is below its mean over the 50 records up to the best evaluation; the warning's step is
      that of the best evaluation, where overfitting began.
    - leakage: ``causal`` is False; said more strongly below LEAK_COPY_LOSS = 0.3 nats.
    """
    recs = [m for m in metrics if m.get("loss") is not None]
    steps = np.array([int(m["step"]) for m in recs], dtype=np.int64)
    loss = np.array([float(m["loss"]) for m in recs])
    grad = np.array([np.nan if m.get("grad_norm") is None else float(m["grad_norm"]) for m in recs])
    has_grad = np.array([m.get("grad_norm") is not None for m in recs], dtype=bool)
    snaps = [(int(m["step"]), float(m["entropy_mean"])) for m in metrics if m.get("entropy_mean") is not None]
    ln_v = math.log(vocab_size)
    out = _check_nonfinite(steps, loss, grad, has_grad)
    if len(recs):
        out += _check_init(steps, loss, ln_v) + _check_stuck(steps, loss, ln_v, unigram_entropy)
    out += _check_grad(steps, grad, loss) + _check_entropy(steps, loss, snaps)
    out += _check_overfit(steps, loss, [(int(m["step"]), float(m["val_loss"])) for m in metrics
                                        if m.get("val_loss") is not None and math.isfinite(float(m["val_loss"]))])
    if not causal:
        msg = ("The causal mask is off, so every position sees the tokens after it: the training loss does not "
               "measure next-token prediction, and generation, where the future is unknown, will be poor.")
        if len(recs) and loss[-1] < LEAK_COPY_LOSS:
            msg += f" A loss of {loss[-1]:.2f} says the model is copying the answer from the future."
        out.append(HealthWarning("leakage", "warning", msg, int(steps[-1]) if len(recs) else 0))
    return out


def _check_nonfinite(steps, loss, grad, has_grad) -> list[HealthWarning]:
    bad = ~np.isfinite(loss) | (has_grad & ~np.isfinite(grad))
    if not bad.any():
        return []
    i = int(np.argmax(bad))
    return [HealthWarning("nonfinite", "error", (
        f"The loss or gradient norm became non-finite at step {steps[i]} (loss {loss[i]}, grad norm {grad[i]}; "
        f"{int(bad.sum())} records affected): the weights are corrupted from there on. Lower the learning rate, "
        "keep gradient clipping on (grad_clip=1.0) and train in float32."), int(steps[i]))]


def _check_init(steps, loss, ln_v) -> list[HealthWarning]:
    if steps[0] > 1 or not np.isfinite(loss[0]) or abs(loss[0] - ln_v) <= INIT_LOSS_TOL:
        return []
    said = f"The loss at step {steps[0]} is {loss[0]:.1f}, but ln(vocab) = {ln_v:.1f}"
    if loss[0] > ln_v:
        msg = (f"{said}: the initial logits are too large, so the untrained model is confidently wrong. "
               "Check the initialisation (init='gpt' starts near ln(vocab)).")
    else:
        msg = (f"{said}: an untrained model should be near chance. Was it resumed from a checkpoint, "
               "or can it see the tokens it predicts (causal off)?")
    return [HealthWarning("init_loss", "warning", msg, int(steps[0]))]


def _check_stuck(steps, loss, ln_v, unigram) -> list[HealthWarning]:
    if steps[-1] < STUCK_MIN_STEPS:
        return []
    recent = loss[(steps > steps[-1] - STUCK_WINDOW) & np.isfinite(loss)]
    mean = float(recent.mean()) if len(recent) else math.nan
    if abs(mean - ln_v) <= STUCK_UNIFORM_TOL:
        return [HealthWarning("stuck_uniform", "error", (
            f"Not learning: after {steps[-1]} steps the loss is {mean:.2f}, the ln(vocab) = {ln_v:.2f} of a uniform "
            "guess. Check that gradients flow (grad norm above 0), raise the learning rate, and check the data "
            "is not random."), int(steps[-1]))]
    if unigram is not None and abs(mean - unigram) <= STUCK_UNIGRAM_TOL:
        return [HealthWarning("stuck_unigram", "warning", (
            f"After {steps[-1]} steps the loss is {mean:.2f}, the unigram entropy of the corpus ({unigram:.2f}): "
            "the model has learned only token frequencies, not context. Train longer or raise the learning rate; "
            "with attention or residuals ablated it may not be able to use context."), int(steps[-1]))]
    return []


def _check_grad(steps, grad, loss) -> list[HealthWarning]:
    med = _running_median(grad, GRAD_WINDOW)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where((med > 0) & np.isfinite(grad), grad / med, np.nan)  # non-finite ones have their own check
    episodes: list[list[int]] = []  # [first, peak, latest, count] record indices and records over the ratio
    for i in np.flatnonzero(ratio > GRAD_RATIO):
        if not episodes or steps[i] - steps[episodes[-1][2]] > EPISODE_GAP:
            episodes.append([i, i, i, 0])
        episode = episodes[-1]
        episode[1] = i if ratio[i] > ratio[episode[1]] else episode[1]
        episode[2] = i
        episode[3] += 1
    out = []
    for first, peak, last, count in episodes:
        before = loss[max(0, first - SPIKE_WINDOW):first]
        after = loss[last + 1:last + 1 + GRAD_AFTER]
        before, after = before[np.isfinite(before)], after[np.isfinite(after)]
        hurt = len(before) and len(after) == GRAD_AFTER and after.mean() > GRAD_LOSS_RISE * np.median(before)
        if count < GRAD_SUSTAIN and not hurt:
            continue  # one clipped spike the loss shrugged off (or one too recent to judge yet)
        out.append(HealthWarning("grad_explosion", "warning", (
            f"The gradient norm jumped to {grad[peak]:.3g} at step {steps[peak]}, {ratio[peak]:.0f}x the median of "
            f"the previous steps ({med[peak]:.3g}), in an episode starting at step {steps[first]}"
            + (f" and lasting {count} steps" if count >= GRAD_SUSTAIN else
               f", and the loss rose to {after.mean():.3g} after it") +
            ": training is unstable. Lower the learning rate, lengthen warmup, or keep grad_clip on."),
            int(steps[first])))
    return out


def _check_entropy(steps, loss, snaps) -> list[HealthWarning]:
    med = _running_median(loss, SPIKE_WINDOW)
    with np.errstate(invalid="ignore"):
        spikes = np.flatnonzero(loss > SPIKE_RATIO * med)
    out = []
    for (s0, e0), (s1, e1) in zip(snaps, snaps[1:]):
        near = [i for i in spikes if s0 - SPIKE_NEAR <= steps[i] <= s1 + SPIKE_NEAR]
        if e0 > 0 and e1 < (1 - ENTROPY_DROP) * e0 and near:
            i = near[0]
            out.append(HealthWarning("entropy_collapse", "warning", (
                f"Mean attention entropy fell from {e0:.2f} to {e1:.2f} nats between steps {s0} and {s1}, while the "
                f"loss spiked to {loss[i]:.2f} ({loss[i] / med[i]:.1f}x its recent median) at step {steps[i]}: "
                "attention has likely collapsed onto a few keys as its logits grew. Lower the learning rate, lengthen "
                "warmup, and keep attn_scale and normalisation on."), s1))
    return out


def _check_overfit(steps, loss, vals: list[tuple[int, float]]) -> list[HealthWarning]:
    if len(vals) <= OVERFIT_EVALS or not len(steps):
        return []
    best = min(range(len(vals)), key=lambda i: vals[i][1])
    recent = vals[-OVERFIT_EVALS:]
    if best > len(vals) - 1 - OVERFIT_EVALS or any(v - vals[best][1] <= OVERFIT_RISE for _, v in recent):
        return []
    ok = np.isfinite(loss)
    then = loss[ok & (steps <= vals[best][0])][-OVERFIT_WINDOW:]
    now = loss[ok][-OVERFIT_WINDOW:]
    if not len(then) or not len(now) or now.mean() >= then.mean():
        return []
    (s0, v0), (s1, v1) = vals[best], vals[-1]
    return [HealthWarning("overfitting", "warning", (
        f"Overfitting since step {s0}: the validation loss rose from {v0:.3f} (its best, at step {s0}) to {v1:.3f} "
        f"at step {s1}, while the training loss kept falling ({then.mean():.3f} -> {now.mean():.3f}): the model is "
        "memorising its training text. Train on more text (corpus_chars), add dropout or weight decay, or use fewer "
        "steps."), s0)]


def unigram_entropy(ids, vocab_size: int) -> float:
    """Entropy (nats) of the token frequencies of ``ids``: the loss of a model that ignores context."""
    ids = np.asarray(ids).reshape(-1)
    if ids.size == 0:
        raise ValueError("unigram_entropy needs at least one token id.")
    if ids.min() < 0 or ids.max() >= vocab_size:
        raise ValueError(f"token ids must be in 0..{vocab_size - 1}; got {int(ids.min())}..{int(ids.max())}.")
    p = np.bincount(ids, minlength=vocab_size) / ids.size
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())
