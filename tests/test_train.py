import math

import pytest
import torch

from tinyviz.config import TrainConfig, apply_overrides
from tinyviz.data.text import prepare
from tinyviz.training.trainer import NonFiniteLoss, Trainer, lr_at


def make_trainer(cfg):
    prep = prepare(cfg)
    return Trainer(prep.config.model, cfg.train, prep.data)


def losses(trainer, n):
    return [trainer.step().loss for _ in range(n)]


def test_same_seed_and_config_give_a_bit_identical_curve(tiny_cfg):
    cfg = apply_overrides(tiny_cfg, ["dropout=0.1"])  # dropout draws random numbers too
    a, b = losses(make_trainer(cfg), 15), losses(make_trainer(cfg), 15)
    assert a == b
    c = losses(make_trainer(apply_overrides(cfg, ["seed=1"])), 15)
    assert a != c


def test_a_single_batch_overfits(tiny_cfg):
    trainer = make_trainer(apply_overrides(tiny_cfg, ["steps=150", "warmup_steps=0", "lr=1e-2", "weight_decay=0"]))
    batch = trainer.data.get_batch("train", 8, trainer.model_cfg.n_ctx, torch.Generator().manual_seed(0))
    trainer.data.get_batch = lambda *args, **kw: batch
    first = trainer.step().loss
    for _ in range(148):
        last = trainer.step().loss
    assert first > 3.0 and last < 0.3 * first


def test_metrics_record_has_everything_the_views_need(tiny_cfg):
    trainer = make_trainer(tiny_cfg)
    m = trainer.step()
    assert m.step == 1 and m.loss > 0 and m.tokens_per_s > 0 and m.elapsed > 0
    assert len(m.grad_norm_layers) == tiny_cfg.model.n_layers
    assert set(m.grad_norm_groups) == {"embed", "attn", "mlp", "norm", "unembed"}
    # the parts add up to the whole: sum of squared group norms = total squared norm
    assert math.isclose(sum(v * v for v in m.grad_norm_groups.values()), m.grad_norm**2, rel_tol=1e-4)
    assert abs(m.loss - math.log(trainer.model_cfg.d_vocab)) < 0.3  # gpt init starts near uniform


def test_weight_decay_only_on_matrices(tiny_cfg):
    trainer = make_trainer(tiny_cfg)
    decay, no_decay = trainer.optimizer.param_groups
    assert all(p.dim() >= 2 for p in decay["params"]) and all(p.dim() < 2 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == tiny_cfg.train.weight_decay
    assert trainer.n_decay + trainer.n_no_decay == trainer.model.n_params(non_embedding=False)


def test_warmup_then_cosine_to_the_floor():
    cfg = TrainConfig(steps=100, warmup_steps=10, lr=1.0, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.55)
    assert lr_at(100, cfg) == pytest.approx(0.1)
    lrs = [lr_at(s, cfg) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def grad_norm_now(trainer) -> float:
    """The norm of the gradient the optimizer consumed in the last step (p.grad stays until the next one)."""
    return float(torch.stack([p.grad.norm() for p in trainer.model.parameters()]).norm())


def first_moment_norm(trainer) -> float:
    """AdamW's exp_avg after one step is (1 - beta1) * the gradient it was given."""
    return float(torch.stack([s["exp_avg"].norm() for s in trainer.optimizer.state.values()]).norm())


@pytest.mark.parametrize("clip", [1e-3, 0.05])
def test_gradient_clipping_scales_the_gradient_the_optimizer_sees_to_the_limit(tiny_cfg, clip):
    # AdamW moves each weight by about lr whatever the gradient's size, so comparing weights cannot tell
    # whether clipping happened: look at the gradient the optimizer consumed and at its first moment.
    trainer = make_trainer(apply_overrides(tiny_cfg, [f"grad_clip={clip}"]))
    m = trainer.step()
    assert m.grad_norm > 10 * clip  # the norm reported is the one before clipping
    assert grad_norm_now(trainer) == pytest.approx(clip, rel=1e-3)
    assert first_moment_norm(trainer) == pytest.approx((1 - tiny_cfg.train.beta1) * clip, rel=1e-3)


@pytest.mark.parametrize("clip", ["0", "1e6"], ids=["off", "above-the-norm"])
def test_gradient_below_the_limit_or_with_clipping_off_is_untouched(tiny_cfg, clip):
    trainer = make_trainer(apply_overrides(tiny_cfg, [f"grad_clip={clip}"]))
    m = trainer.step()
    assert grad_norm_now(trainer) == pytest.approx(m.grad_norm, rel=1e-5)
    assert first_moment_norm(trainer) == pytest.approx((1 - tiny_cfg.train.beta1) * m.grad_norm, rel=1e-4)


def test_nan_loss_stops_with_a_diagnosis_and_leaves_the_weights(tiny_cfg):
    trainer = make_trainer(tiny_cfg)
    trainer.step()
    good = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    real = trainer.loss_on
    trainer.loss_on = lambda x, y: real(x, y) * float("nan")
    with pytest.raises(NonFiniteLoss, match=r"loss became nan at step 2.*weights from step 1 are kept.*learning rate"):
        trainer.step()
    assert trainer.step_count == 1
    for n, p in trainer.model.named_parameters():
        assert torch.equal(p, good[n])


def test_evaluate_is_repeatable_and_does_not_disturb_training(tiny_cfg):
    a, b = make_trainer(tiny_cfg), make_trainer(tiny_cfg)
    a.step()
    b.step()
    assert a.evaluate() == a.evaluate()
    assert a.step().loss == b.step().loss  # the evaluation drew nothing from the training RNGs


def test_state_tensors_let_a_fresh_trainer_continue_bit_for_bit(tiny_cfg):
    """What resume relies on: weights + state_tensors() of a run at step 3, loaded into a new trainer,
    give the same next steps (optimizer moments and step counts, data order, dropout's RNG)."""
    cfg = apply_overrides(tiny_cfg, ["dropout=0.1"])
    a = make_trainer(cfg)
    losses(a, 3)
    state = {k: v.clone() for k, v in a.state_tensors().items()}  # as if read back from disk
    assert {k.rsplit(".", 1)[1] for k in state if k.startswith("opt.")} == {"step", "exp_avg", "exp_avg_sq"}
    weights = [p.detach().clone() for p in a.model.parameters()]
    ma = [a.step() for _ in range(3)]  # before b exists: the two share torch's global RNG (dropout)
    b = make_trainer(cfg)
    with torch.no_grad():
        for p, w in zip(b.model.parameters(), weights):
            p.copy_(w)
    b.load_state_tensors(state, step=3, elapsed=0.0)
    mb = [b.step() for _ in range(3)]
    assert [m.loss for m in ma] == [m.loss for m in mb]
    assert [m.lr for m in ma] == [m.lr for m in mb] and [m.step for m in mb] == [4, 5, 6]
    for (name, p), q in zip(a.model.named_parameters(), b.model.parameters()):
        assert torch.equal(p, q), name


class FakeClock:
    """time.perf_counter for the trainer: each call advances 0.25 s, so the timing figures are exact."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        self.now += 0.25
        return self.now


def test_tokens_per_second_and_elapsed_come_from_the_step_time(tiny_cfg, monkeypatch):
    from tinyviz.training import trainer as trainer_module

    trainer = make_trainer(tiny_cfg)
    monkeypatch.setattr(trainer_module.time, "perf_counter", FakeClock())
    a, b = trainer.step(), trainer.step()  # each step reads the clock twice: 0.25 s per step
    tokens = tiny_cfg.train.batch_size * tiny_cfg.model.n_ctx
    assert a.tokens_per_s == pytest.approx(tokens / 0.25) and b.tokens_per_s == pytest.approx(tokens / 0.25)
    assert a.elapsed == pytest.approx(0.25) and b.elapsed == pytest.approx(0.5)  # accumulated across steps


def test_bfloat16_mode_runs_the_forward_pass_in_bfloat16(tiny_cfg):
    trainer = make_trainer(apply_overrides(tiny_cfg, ["dtype=bfloat16"]))
    seen = []
    with trainer.model.hooks([("blocks.0.hook_attn_out", lambda x, name: seen.append(x.dtype))]):
        m = trainer.step()
    assert seen == [torch.bfloat16] and math.isfinite(m.loss)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # the weights stay float32


def test_device_auto_picks_cuda_then_mps_then_cpu(monkeypatch):
    from tinyviz.training.trainer import pick_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError) as err:
        pick_device("cuda")
    assert str(err.value) == "device='cuda' was asked for but no CUDA GPU is available; use device=cpu or auto."
    with pytest.raises(ValueError) as err:
        pick_device("mps")
    assert str(err.value) == "device='mps' was asked for but Apple MPS is not available; use device=cpu or auto."
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == torch.device("cuda")


def test_compile_mode_trains_through_the_compiled_model(tiny_cfg):
    # construction only: torch.compile compiles on the first call (tests/test_perf_modes.py trains it)
    trainer = make_trainer(apply_overrides(tiny_cfg, ["compile=true"]))
    assert trainer.forward is not trainer.model and trainer.forward._orig_mod is trainer.model
