"""Health checks a learner relies on while a run trains (issue 11): overfitting, and no false gradient alarms."""

import math

import numpy as np
import pytest

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


def test_a_single_clipped_gradient_spike_the_loss_shrugs_off_is_not_an_explosion():
    """The posemb reference arm, seed 1: one gradient norm of 51 (54x its median) at step 28 of its warmup,
    clipped to 1.0, the loss still falling; the flag it raised called a healthy run unstable."""
    m = run()
    m[27]["grad_norm"] = 51.0
    assert health.health_checks(m, vocab_size=VOCAB) == []
    for r in m[28:48]:
        r["loss"] += 1.5  # the same spike with the loss jumping after it is flagged
    assert [w.code for w in health.health_checks(m, vocab_size=VOCAB)] == ["grad_explosion"]
    lasting = run()
    for i in (300, 302, 304):
        lasting[i]["grad_norm"] = 40.0
    (w,) = health.health_checks(lasting, vocab_size=VOCAB)
    assert w.code == "grad_explosion" and w.step == 301 and "lasting 3 steps" in w.message


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_the_posemb_and_tying_reference_arm_trains_without_health_flags(tmp_path, seed):
    """The healthy reference arm of posemb (the same run as tying's 'tied'), 300 steps as the preset trains it:
    the ablation table used to flag it grad_explosion on seed 1."""
    import torch

    from tinyviz.experiments import ablations
    from tinyviz.training.session import TrainingSession

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ab = ablations.get("posemb")
        cfg = ablations.arm_config(ablations.base_config(ab), ab.arms[0], seed)
        session = TrainingSession.start(cfg, tmp_path / "learned")
        assert session.train() == "done"
    finally:
        torch.set_num_threads(threads)
    assert health.health_checks(session.run.metrics(), vocab_size=cfg.model.d_vocab) == []
