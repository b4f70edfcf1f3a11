"""Training dynamics of a run: tinyviz.analysis.dynamics applied to the weights kept at every step.

The probe prompt is the run's own (``config.json`` probe_prompt, cut to n_ctx); the validation batch
is ``VAL_ROWS`` windows of the run's validation split drawn with a fixed seed, so every step is
measured on the same tokens. A corpus that can no longer be read (a moved file) leaves the
validation-batch views out with a note; the probe-prompt views still work.
"""

from __future__ import annotations

import torch

from tinyviz.analysis import dynamics
from tinyviz.training.runs import Run, RunError

VAL_ROWS = 32  # loss by position and the ICL score average over 32 windows; importance uses the first 4
VAL_SEED = 1234


def probe_ids(run: Run, tokenizer=None) -> list[int]:
    """The run's probe prompt as token ids, cut to n_ctx (characters the tokenizer lacks dropped)."""
    tok = tokenizer or run.tokenizer()
    prompt = run.meta.get("probe_prompt") or ""
    known = "".join(ch for ch in prompt if not tok.unknown_chars(ch))
    return list(tok.encode(known))[: run.config.model.n_ctx]


def val_batch(run: Run, tokenizer=None, rows: int = VAL_ROWS) -> tuple[torch.Tensor | None, str | None]:
    """(a fixed validation batch [rows, n_ctx], None) or (None, a sentence saying why there is none)."""
    from tinyviz.data.text import TokenData, load_corpus

    cfg = run.config
    try:
        text = load_corpus(cfg.data)
        data = TokenData.from_text(text, tokenizer or run.tokenizer(), cfg.data.val_fraction)
        x, _ = data.get_batch("val", rows, cfg.model.n_ctx, torch.Generator().manual_seed(VAL_SEED))
    except (ValueError, OSError) as e:
        return None, (f"the validation-batch views are left out: the corpus {cfg.data.corpus!r} cannot be read "
                      f"now ({str(e)[:100]}).")
    return x, None


def step_stats(run: Run, step: int, probe: list[int], batch: torch.Tensor | None) -> dict:
    """analysis.dynamics.step_stats at one kept step (RunError names a damaged history file)."""
    return dynamics.step_stats(run.model_at(step), probe, batch)


def compute(run: Run, steps: list[int] | None = None) -> dict:
    """Every kept step's stats stacked (analysis.dynamics.stack) plus {"notes": [sentences]}; a damaged
    history file is skipped and named in a note."""
    steps = run.history.steps() if steps is None else steps
    probe = probe_ids(run)
    batch, why = val_batch(run)
    notes = [why] if why else []
    kept, stats = [], []
    for step in steps:
        try:
            stats.append(step_stats(run, step, probe, batch))
            kept.append(step)
        except RunError as e:
            notes.append(str(e))
    return {**dynamics.stack(kept, stats), "notes": notes}
