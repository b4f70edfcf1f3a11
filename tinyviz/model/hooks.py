"""Named identity hook points, TransformerLens style.

A ``HookPoint`` is an identity module placed where an activation is worth seeing
(``blocks.0.attn.hook_pattern``). Hooks attach by name through a context manager that
always removes them, so capture never changes the model and never leaks.

Hooks live in a ``contextvars.ContextVar``, not on the modules: the app caches one model for
every browser session, and each session's script runs in its own thread (its own context), so
one session's capture never sees another's hooks, and a plain forward in one thread stays plain
while another thread captures. The model itself is never modified. (Measured against the
alternatives, a lock per model and a copy per session, in benchmarks/isolation.py.) A thread
started inside a ``hooks`` block does not inherit its hooks.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterable

import torch
from torch import nn

# fn(activation, hook_name) -> replacement activation, or None to leave it unchanged
HookFn = Callable[[torch.Tensor, str], torch.Tensor | None]
NameFilter = None | str | Iterable[str] | Callable[[str], bool]

# {hook point: hook functions, in the order they run}, for the calls of this thread / context only
_ACTIVE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("tinyviz_hooks", default=None)


class HookPoint(nn.Module):
    """An identity whose name is filled in by the root module; it runs the hooks its caller's context
    attached to it (``HookedRootModule.hooks``), each getting the previous one's output."""

    def __init__(self):
        super().__init__()
        self.name = ""

    def has_hooks(self) -> bool:
        if torch.compiler.is_compiling():
            return False
        active = _ACTIVE.get()
        return bool(self._forward_hooks) or (active is not None and self in active)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch.compile (the trainer's opt-in) cannot trace a ContextVar; a compiled model is never hooked
        if torch.compiler.is_compiling():
            return x
        active = _ACTIVE.get()
        if active is None:
            return x
        for fn in active.get(self, ()):
            out = fn(x, self.name)
            if out is not None:
                x = out
        return x


def _matcher(names: NameFilter) -> Callable[[str], bool]:
    if names is None:
        return lambda _: True
    if callable(names):
        return names
    if isinstance(names, str):
        return lambda n: n == names
    wanted = set(names)
    return lambda n: n in wanted


class HookedRootModule(nn.Module):
    """Mixin for the root model: call ``setup_hooks()`` at the end of ``__init__``."""

    def setup_hooks(self) -> None:
        self.hook_dict: dict[str, HookPoint] = {}
        for name, module in self.named_modules():
            if isinstance(module, HookPoint):
                module.name = name
                self.hook_dict[name] = module

    def hook_names(self) -> list[str]:
        return list(self.hook_dict)

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: list[tuple[NameFilter, HookFn]]):
        """Run ``(name_or_filter, fn)`` hooks in this thread's forward passes for the duration of the block
        (after any hooks of an enclosing block). Other threads never see them."""
        active = dict(_ACTIVE.get() or {})  # a new dict: contexts that share the outer one are untouched
        for names, fn in fwd_hooks:
            match = _matcher(names)
            hit = [hp for name, hp in self.hook_dict.items() if match(name)]
            if isinstance(names, str) and not hit:
                raise ValueError(f"no hook point named {names!r}; see model.hook_names().")
            for hp in hit:
                active[hp] = (*active.get(hp, ()), fn)
        token = _ACTIVE.set(active)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    @torch.no_grad()
    def run_with_cache(
        self, tokens: torch.Tensor, names: NameFilter = None, fwd_hooks: list | None = None, **kwargs
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and ``{hook_name: activation}`` (detached) for the hook points ``names`` selects."""
        cache: dict[str, torch.Tensor] = {}

        def save(x, name):
            cache[name] = x.detach()

        with self.hooks([(names, save)] + list(fwd_hooks or [])):
            logits = self(tokens, **kwargs)
        return logits, cache


def zero_head(layer: int, head: int) -> tuple[str, HookFn]:
    """Zero one head's output (its z, before W_O): a hook for ``model.hooks``."""

    def fn(z, name):  # z: [batch, pos, head, d_head]
        z = z.clone()
        z[:, :, head] = 0.0
        return z

    return f"blocks.{layer}.attn.hook_z", fn


def knockout_mlp(layer: int) -> tuple[str, HookFn]:
    """Remove a layer's MLP contribution."""
    return f"blocks.{layer}.hook_mlp_out", lambda x, name: torch.zeros_like(x)
