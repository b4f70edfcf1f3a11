"""Training dynamics: what one set of weights says about its heads, and how that changes over steps.

Pure functions over a model, token ids and arrays; no files (``tinyviz.training.dynamics`` walks a
run's kept steps with them). A probe prompt is ``[T]`` token ids; a validation batch is ``[B, T]``.

- ``step_stats``: everything the Dynamics views need from one step's weights, in one call.
- Head importance: the mean next-token loss with one head zero-ablated minus the clean loss, for
  every head ``[L, H]``, on the probe prompt (exactly ``probes.ablation_loss(...)["delta"]``) and on a
  validation batch.
- In-context-learning score (Olsson et al. 2022): mean loss at late positions minus mean loss at early
  positions of the validation batch (all its rows; importance uses the first ``IMPORTANCE_ROWS``); it
  goes negative when later tokens profit from the context.
  Early = positions ``[T/10, T/10 + W)``, late = the last ``W`` positions, ``W = max(1, T // 10)``.
- Logit lens agreement: for each lens row (embeddings, then after each block) the fraction of probe
  positions whose top-1 token already equals the model's final top-1; "first layer" of a position is
  the first row that agrees and stays in agreement to the end.
- ``head_timeline``: per head a label (its label at the last step, or where it is "mixed", the score
  closest to its threshold at the last step), that score over steps ``[S]`` and the first step where
  it reached the threshold.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from tinyviz.analysis import probes
from tinyviz.model.hooks import zero_head

IMPORTANCE_ROWS = 4  # validation rows for head importance (each layer's H ablations run on H copies of them)


def head_importance(model, tokens) -> np.ndarray:
    """[L, H]: the mean loss on tokens ([T] or [B, T]) with each head alone zero-ablated, minus the clean
    loss. On one prompt it is ``probes.ablation_loss(model, tokens, [(l, h)])["delta"]`` itself; on a batch
    the ablations of one layer run together, on H copies of the batch from that layer on."""
    toks = probes._batch(model, tokens, single=False, min_len=2)
    cfg = model.cfg
    L, H, B = cfg.n_layers, cfg.n_heads, toks.shape[0]
    if B == 1:  # one prompt: the very arithmetic of probes.ablation_loss, with the clean loss taken once
        def loss() -> float:
            return float(F.cross_entropy(model(toks)[0].float()[:-1], toks[0, 1:]))

        out = np.zeros((L, H), np.float64)
        with probes._inference(model):
            clean = loss()
            for l in range(L):
                for h in range(H):
                    with model.hooks([zero_head(l, h)]):
                        out[l, h] = loss() - clean
        return out

    # A head of layer l changes nothing before block l: run the clean pass once, keep each block's input,
    # and for layer l run only blocks l.. on H copies of it (copy h loses head h). That is
    # sum_l H * (L - l) / L batch passes instead of L * H: 0.65x the work at 4 layers.
    resid: dict[int, torch.Tensor] = {}

    def keep(layer: int):
        def fn(x, name):
            resid[layer] = x
            return x
        return f"blocks.{layer}.hook_resid_pre", fn

    def zero_copies(z, name):  # z: [H*B, T, H, d_head]; copy h loses head h
        z = z.clone().view(H, B, *z.shape[1:])
        for h in range(H):
            z[h, :, :, h] = 0.0
        return z.view(-1, *z.shape[2:])

    def mean_loss(logits, targets) -> torch.Tensor:  # [K*B, T, V] -> [K]: each copy's mean loss
        loss = F.cross_entropy(logits.float()[:, :-1].transpose(1, 2), targets[:, 1:], reduction="none")
        return loss.view(-1, B * (targets.shape[1] - 1)).mean(1)

    out = np.zeros((L, H), np.float64)
    with probes._inference(model):
        with model.hooks([keep(l) for l in range(L)]):
            clean = float(mean_loss(model(toks), toks)[0])
        rep = toks.repeat(H, 1)
        for layer in range(L):
            x = resid[layer].repeat(H, 1, 1)
            with model.hooks([(f"blocks.{layer}.attn.hook_z", zero_copies)]):
                for block in model.blocks[layer:]:
                    x = block(x)
            logits = model.W_U(model.hook_final(model.ln_final(x)))
            out[layer] = mean_loss(logits, rep).double().cpu().numpy() - clean
    return out


def loss_by_position(model, batch) -> np.ndarray:
    """[T-1]: the next-token loss at each position, averaged over the batch rows [B, T]."""
    toks = probes._batch(model, batch, single=False, min_len=2)
    with probes._inference(model):
        logits = model(toks).float()
        loss = F.cross_entropy(logits[:, :-1].transpose(1, 2), toks[:, 1:], reduction="none")  # [B, T-1]
    return loss.mean(0).cpu().numpy().astype(np.float64)


def icl_windows(n: int) -> tuple[slice, slice]:
    """(early, late) position windows of a loss-by-position curve of length n."""
    w = max(1, n // 10)
    start = min(n // 10, max(0, n - 2 * w))
    return slice(start, start + w), slice(n - w, n)


def icl_score(loss_by_pos: np.ndarray) -> float:
    """Mean loss at late positions minus mean loss at early ones (negative: the context helps)."""
    x = np.asarray(loss_by_pos, dtype=np.float64)
    early, late = icl_windows(len(x))
    return float(x[late].mean() - x[early].mean())


def lens_agreement(model, ids) -> tuple[np.ndarray, np.ndarray]:
    """(agree [L+1]: fraction of positions whose lens top-1 equals the final top-1 at each row,
    first [T]: per position the first row from which every later row agrees)."""
    lens = probes.logit_lens(model, ids)
    top = lens["top_token"]  # [L+1, T]
    same = top == top[-1:]
    # a row counts for "first" only if it and every row after it agree
    stays = np.flip(np.cumprod(np.flip(same, 0), 0), 0).astype(bool)
    first = stays.argmax(0)
    return same.mean(1).astype(np.float64), first.astype(np.int64)


def step_stats(model, probe_ids, val_batch=None) -> dict:
    """One step's weights: {"scores": {name: [L, H]}, "imp_probe": [L, H], "imp_val": [L, H] or None,
    "loss_pos": [T-1] or None, "icl": float or None (importance on val_batch[:IMPORTANCE_ROWS], the rest
    on all its rows), "lens_agree": [L+1], "lens_first": float (mean over
    positions of the first agreeing row)}."""
    patterns = probes.attention_patterns(model, probe_ids)
    scores = probes.head_scores(patterns, np.asarray(probe_ids), causal=model.cfg.causal)
    agree, first = lens_agreement(model, probe_ids)
    out = {"scores": {k: v.astype(np.float64) for k, v in scores.items()},
           "imp_probe": head_importance(model, probe_ids), "imp_val": None, "loss_pos": None, "icl": None,
           "lens_agree": agree, "lens_first": float(first.mean())}
    if val_batch is not None:
        out["imp_val"] = head_importance(model, val_batch[:IMPORTANCE_ROWS])
        out["loss_pos"] = loss_by_position(model, val_batch)
        out["icl"] = icl_score(out["loss_pos"])
    return out


def stack(steps: list[int], stats: list[dict]) -> dict:
    """Per-step stats -> arrays over steps: {"steps": [S], "scores": {name: [S, L, H]}, "imp_probe": [S, L, H],
    "imp_val": [S, L, H] or None, "loss_pos": [S, T-1] or None, "icl": [S] or None, "lens_agree": [S, L+1],
    "lens_first": [S]}."""
    has_val = bool(stats) and all(s["imp_val"] is not None for s in stats)
    names = list(stats[0]["scores"]) if stats else []
    return {
        "steps": list(steps),
        "scores": {n: np.stack([s["scores"][n] for s in stats]) for n in names},
        "imp_probe": np.stack([s["imp_probe"] for s in stats]) if stats else None,
        "imp_val": np.stack([s["imp_val"] for s in stats]) if has_val else None,
        "loss_pos": np.stack([s["loss_pos"] for s in stats]) if has_val else None,
        "icl": np.array([s["icl"] for s in stats]) if has_val else None,
        "lens_agree": np.stack([s["lens_agree"] for s in stats]) if stats else None,
        "lens_first": np.array([s["lens_first"] for s in stats]),
    }


def first_crossing(steps: list[int], series: np.ndarray, threshold: float) -> int | None:
    """The first step whose value reaches threshold (series [S] over steps), or None."""
    hits = np.flatnonzero(np.asarray(series) >= threshold)
    return int(steps[hits[0]]) if hits.size else None


def head_timeline(steps: list[int], scores: dict[str, np.ndarray],
                  thresholds: dict[str, float] = probes.HEAD_THRESHOLDS) -> list[dict]:
    """One row per head, layer-major: {"layer", "head", "label", "score": [S] of that label's score,
    "threshold", "named": whether the last step gives it that label, "crossed": the first step at or over
    the threshold (None for a head that ends unnamed)}. scores: {name: [S, L, H]}."""
    names = [n for n in thresholds if n in scores]
    S, L, H = scores[names[0]].shape
    final = probes.label_heads({n: scores[n][-1] for n in names}, thresholds)
    rows = []
    for l in range(L):
        for h in range(H):
            label = final[l][h]
            if label == "mixed":  # the score closest to naming it at the last step
                label = max(names, key=lambda n: scores[n][-1, l, h] / thresholds[n])
            series, named = scores[label][:, l, h], final[l][h] != "mixed"
            rows.append({"layer": l, "head": h, "label": label, "named": named,
                         "score": series, "threshold": thresholds[label],
                         "crossed": first_crossing(steps, series, thresholds[label]) if named else None})
    return rows


def phase_change(steps: list[int], icl: np.ndarray) -> int | None:
    """The kept step that ends the largest fall of the ICL score between two kept steps, or None.
    (Per kept step, not per training step: the dense early steps would turn noise into steep slopes.)"""
    icl = np.asarray(icl, dtype=np.float64)
    if len(steps) < 3:
        return None
    slope = np.diff(icl)
    i = int(slope.argmin())
    return int(steps[i + 1]) if slope[i] < 0 else None


def loss_bump(metrics: list[dict], window: int = 25) -> int | None:
    """The step where the smoothed training loss stands highest above its best value so far (the bump
    of a phase change), or None when it never rises by more than 1% of the loss."""
    loss = np.array([m["loss"] for m in metrics if m.get("loss") is not None], dtype=np.float64)
    steps = [m["step"] for m in metrics if m.get("loss") is not None]
    if len(loss) < 2 * window:
        return None
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    rise = smooth - np.minimum.accumulate(smooth)
    i = int(rise.argmax())
    return int(steps[i + window - 1]) if rise[i] > 0.01 * smooth[i] else None


def loss_change(model_a, model_b, ids) -> np.ndarray:
    """[T-1]: per-token loss under model_b minus under model_a (negative: b predicts that token better)."""
    return probes.loss_per_position(model_b, ids) - probes.loss_per_position(model_a, ids)
