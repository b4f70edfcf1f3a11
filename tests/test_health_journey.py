"""Health checks a learner relies on while a run trains (issue 11): overfitting, and no false gradient alarms."""

import math

import numpy as np

from tinyviz.training import health

VOCAB = 64


def run(n=1000, overfit_from=None, val_every=100) -> list[dict]:
    """Train loss falling throughout; val loss falling, or rising again after step overfit_from."""
    rng = np.random.default_rng(0)
    out = []
    for s in range(1, n + 1):
        loss = 1.0 + (math.log(VOCAB) - 1.0) * math.exp(-s / 150) + rng.normal(0, 0.02)
        m = {"step": s, "loss": loss, "grad_norm": 1.0 + rng.normal(0, 0.1)}
        if s % val_every == 0:
            val = 1.2 + (math.log(VOCAB) - 1.2) * math.exp(-s / 150)
            if overfit_from is not None and s > overfit_from:
                val = 1.2 + (math.log(VOCAB) - 1.2) * math.exp(-overfit_from / 150) + 0.0004 * (s - overfit_from)
            m["val_loss"] = val
        out.append(m)
    return out


def test_overfitting_is_said_with_the_step_it_began():
    warnings = [w for w in health.health_checks(run(overfit_from=500), vocab_size=VOCAB)]
    assert [w.code for w in warnings] == ["overfitting"]
    assert warnings[0].step == 500 and "since step 500" in warnings[0].message


def test_no_overfitting_while_val_falls_or_after_a_single_high_evaluation():
    assert health.health_checks(run(), vocab_size=VOCAB) == []
    blip = run()
    blip[899]["val_loss"] += 0.2  # one noisy evaluation (step 900), then back on track
    assert health.health_checks(blip, vocab_size=VOCAB) == []
    short = run(overfit_from=800)  # rising for only two evaluations so far
    assert health.health_checks(short, vocab_size=VOCAB) == []


def test_no_overfitting_when_train_loss_rises_with_val():
    diverging = run(overfit_from=500)
    for m in diverging[500:]:
        m["loss"] += 0.001 * (m["step"] - 500)  # both rising: instability, not memorising
    assert "overfitting" not in [w.code for w in health.health_checks(diverging, vocab_size=VOCAB)]
