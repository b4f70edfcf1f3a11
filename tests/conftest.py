import pytest
import torch

from tinyviz.config import apply_overrides, preset

TINY = [
    "n_layers=2", "n_heads=2", "d_model=32", "d_ff=64", "n_ctx=32",
    "batch_size=8", "steps=40", "warmup_steps=5", "lr=3e-3",
    "eval_interval=20", "eval_batches=2", "snapshot_interval=20", "checkpoint_interval=20",
    "corpus_chars=20000",
]


@pytest.fixture
def tiny_cfg():
    """A config that trains 40 steps in about a second."""
    return apply_overrides(preset("micro"), TINY)


@pytest.fixture
def one_thread():
    """Bit-for-bit comparisons need one fixed thread count; restore torch's afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished micro run with the TINY settings (a module's tests copy it, never change it);
    a test module that needs another run defines its own ``trained``."""
    from tinyviz.training.session import TrainingSession

    out = tmp_path_factory.mktemp("trained") / "tiny"
    assert TrainingSession.start(apply_overrides(preset("micro"), TINY), out).train() == "done"
    return out
