"""What the reliability tests share: a config that trains in a fraction of a second, and weight checks."""

from pathlib import Path

import torch

from tinyviz.config import apply_overrides, preset
from tinyviz.training.runs import Run

ROOT = Path(__file__).resolve().parents[1]
TINY = ["n_layers=1", "n_heads=2", "d_model=16", "d_ff=32", "n_ctx=16", "batch_size=4", "eval_batches=1",
        "eval_interval=5", "snapshot_interval=5", "checkpoint_interval=5", "corpus_chars=3000",
        "steps=20", "warmup_steps=2"]


def tiny_cfg(*extra):
    return apply_overrides(preset("micro"), TINY + list(extra))


def weights(path) -> dict[str, torch.Tensor]:
    return dict(Run.open(path).load_model().state_dict())


def same_weights(a, b) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
