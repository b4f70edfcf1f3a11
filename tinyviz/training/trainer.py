"""The training step: AdamW with decay on matrices only, warmup + cosine, clipping, NaN guard.

``Trainer.step()`` returns a ``StepMetrics`` record and never prints: the CLI, the app and
the tests consume the same records. Same seed and config give a bit-identical run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from tinyviz.config import ModelConfig, TrainConfig
from tinyviz.data.text import TokenData
from tinyviz.model.transformer import Transformer
from tinyviz.resources import check_fits

log = logging.getLogger(__name__)


@dataclass
class StepMetrics:
    step: int  # optimizer steps done, counting this one
    loss: float
    lr: float
    grad_norm: float  # total, before clipping
    grad_norm_layers: list[float]  # one per block
    grad_norm_groups: dict[str, float]  # embed, attn, mlp, norm, unembed
    tokens_per_s: float
    elapsed: float  # seconds of training so far in this run, across resumes
    val_loss: float | None = None
    entropy_mean: float | None = None  # mean attention entropy on the probe prompt, on snapshot steps
    extra: dict = field(default_factory=dict)  # "sample": a greedy preview on sample steps

    def to_dict(self) -> dict:
        return asdict(self)


class NonFiniteLoss(RuntimeError):
    """Training produced NaN/inf; the weights were not updated by the bad step."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but no CUDA GPU is available; use device=cpu or auto.")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device='mps' was asked for but Apple MPS is not available; use device=cpu or auto.")
    return torch.device(name)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr over warmup_steps, then cosine decay to lr * min_lr_ratio at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    min_lr = cfg.lr * cfg.min_lr_ratio
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.lr - min_lr)


def param_group_of(name: str) -> str:
    """Which group a parameter belongs to, for per-group gradient norms."""
    if name.startswith(("W_E", "W_pos")):
        return "embed"
    if name.startswith("W_U"):
        return "unembed"
    if ".attn." in name:
        return "attn"
    if ".mlp." in name:
        return "mlp"
    return "norm"


def layer_of(name: str) -> int:
    """Block index of a parameter, or -1 outside the blocks."""
    return int(name.split(".")[1]) if name.startswith("blocks.") else -1


class Trainer:
    """Owns the model, optimizer, data order and step counter of one run."""

    def __init__(self, model_cfg: ModelConfig, train_cfg: TrainConfig, data: TokenData):
        self.cfg, self.model_cfg, self.data = train_cfg, model_cfg, data
        data.check_fits(model_cfg.n_ctx, train_cfg.batch_size)
        check_fits(model_cfg, "train", batch_size=train_cfg.batch_size)  # before anything is allocated
        if train_cfg.threads:
            torch.set_num_threads(train_cfg.threads)
        self.device = pick_device(train_cfg.device)
        torch.manual_seed(train_cfg.seed)  # model init and dropout
        self.model = Transformer(model_cfg).to(self.device)
        self.model.set_attn_impl(train_cfg.attn_impl)
        self.forward = torch.compile(self.model) if train_cfg.compile else self.model
        self.gen = torch.Generator().manual_seed(train_cfg.seed + 1)  # data order, independent of init
        self.eval_gen_seed = train_cfg.seed + 2
        self.step_count = 0
        self.elapsed = 0.0
        self.optimizer = self._make_optimizer()
        names = [n for n, p in self.model.named_parameters()]
        self._params = [p for p in self.model.parameters()]
        self._layer_index = torch.tensor([layer_of(n) for n in names])
        groups = ("embed", "attn", "mlp", "norm", "unembed")
        self._groups = groups
        self._group_index = torch.tensor([groups.index(param_group_of(n)) for n in names])

    def _make_optimizer(self) -> torch.optim.AdamW:
        """Weight decay on matrices (dim >= 2: linear weights, embeddings); none on biases and norm gains."""
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.n_decay = sum(p.numel() for p in decay)
        self.n_no_decay = sum(p.numel() for p in no_decay)
        log.info("decayed parameter tensors: %d (%d params); non-decayed: %d (%d params)",
                 len(decay), self.n_decay, len(no_decay), self.n_no_decay)
        groups = [
            {"params": decay, "weight_decay": self.cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        fused = self.device.type == "cpu" or self.device.type == "cuda"
        return torch.optim.AdamW(groups, lr=self.cfg.lr, betas=(self.cfg.beta1, self.cfg.beta2), fused=fused)

    def _autocast(self):
        if self.cfg.dtype == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def loss_on(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            logits = self.forward(x)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))

    def step(self) -> StepMetrics:
        """One optimizer step. Raises NonFiniteLoss (weights untouched) if loss or gradients are NaN/inf."""
        t0 = time.perf_counter()
        self.model.train()
        x, y = self.data.get_batch("train", self.cfg.batch_size, self.model_cfg.n_ctx, self.gen)
        x, y = x.to(self.device), y.to(self.device)
        lr = lr_at(self.step_count, self.cfg)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss = self.loss_on(x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._params]
        norms = torch.stack(torch._foreach_norm(grads)).float().cpu()  # [n_params]
        total = norms.square().sum().sqrt()
        # one host sync for everything the metrics need
        loss_v, total_v = torch.stack([loss.detach().float().cpu(), total]).tolist()
        if not (math.isfinite(loss_v) and math.isfinite(total_v)):
            raise NonFiniteLoss(
                f"the loss became {'inf' if math.isinf(loss_v) else 'nan'} at step {self.step_count + 1} "
                f"(lr={lr:.3g}, gradient norm={total_v:.3g}); the weights from step {self.step_count} are kept. "
                "Lower the learning rate (e.g. 1e-3), keep grad_clip on, or use init=gpt."
            )
        if self.cfg.grad_clip > 0 and total_v > self.cfg.grad_clip:
            torch._foreach_mul_(grads, self.cfg.grad_clip / (total_v + 1e-6))
        self.optimizer.step()
        self.step_count += 1
        sq = norms.square()
        layers = torch.zeros(self.model_cfg.n_layers).index_add_(0, self._layer_index.clamp(min=0),
                                                                 torch.where(self._layer_index >= 0, sq, 0.0))
        groups = torch.zeros(len(self._groups)).index_add_(0, self._group_index, sq)
        dt = time.perf_counter() - t0
        self.elapsed += dt
        return StepMetrics(
            step=self.step_count, loss=loss_v, lr=lr, grad_norm=total_v,
            grad_norm_layers=layers.sqrt().tolist(),
            grad_norm_groups=dict(zip(self._groups, groups.sqrt().tolist())),
            tokens_per_s=x.numel() / dt, elapsed=self.elapsed,
        )

    @torch.no_grad()
    def evaluate(self, split: str = "val") -> float:
        """Mean loss over cfg.eval_batches batches drawn with a fixed seed, so evaluations compare."""
        self.model.eval()
        gen = torch.Generator().manual_seed(self.eval_gen_seed)
        losses = []
        for _ in range(self.cfg.eval_batches):
            x, y = self.data.get_batch(split, self.cfg.batch_size, self.model_cfg.n_ctx, gen)
            losses.append(self.loss_on(x.to(self.device), y.to(self.device)).item())
        self.model.train()
        return sum(losses) / len(losses)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Optimizer moments and RNG states as plain tensors (stored with safetensors, never pickled)."""
        out = {"rng.torch": torch.get_rng_state(), "rng.data": self.gen.get_state()}
        names = {id(p): n for n, p in self.model.named_parameters()}
        for p, st in self.optimizer.state.items():
            for key, value in st.items():
                value = value.detach().cpu()
                out[f"opt.{names[id(p)]}.{key}"] = value.reshape(-1) if key == "step" else value
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], step: int, elapsed: float) -> None:
        """Inverse of state_tensors: continue exactly where a saved run stopped."""
        torch.set_rng_state(tensors["rng.torch"])
        self.gen.set_state(tensors["rng.data"])
        params = dict(self.model.named_parameters())
        for name, p in params.items():
            # the dot count keeps out the state of a parameter whose name only starts with this one's
            prefix, depth = f"opt.{name}.", name.count(".") + 2
            keys = {k.rsplit(".", 1)[1]: v for k, v in tensors.items()
                    if k.startswith(prefix) and k.count(".") == depth}
            if keys:
                self.optimizer.state[p] = {
                    k: (v.reshape(()) if k == "step" else v).to(self.device) for k, v in keys.items()
                }
        self.step_count, self.elapsed = step, elapsed
