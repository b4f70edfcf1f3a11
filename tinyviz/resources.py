"""How much memory a config needs, how much there is, and a refusal that says both.

``estimate_bytes(cfg, what)`` adds up what building, training or inspecting a model
allocates (float32 everywhere):

- parameters: every weight, embeddings included (a tied unembedding counted once);
- training adds gradients (one copy of the parameters) and AdamW's two moments (two copies),
  and the activations kept for the backward pass of one batch [batch_size, n_ctx];
- inspecting ("inference") adds a second copy of the weights while a checkpoint loads, the
  activations of one prompt of n_ctx tokens, the KV cache of sampling, and the attention maps
  [n_layers, n_heads, n_ctx, n_ctx] the Heads page captures.

The activation terms are an upper estimate of what autograd keeps per token and layer; a
test checks the estimate against the peak memory a real training step takes.

``available_bytes()`` is the smallest of: the memory the OS reports free for new work
(``MemAvailable`` in /proc/meminfo), the cgroup limit of a container, and the cap a person
sets with ``TINYVIZ_MAX_MEMORY`` (e.g. ``4G``, ``512M``, or bytes). ``check_fits`` raises
``ResourceError`` (a ``ValueError``) with a sentence giving the estimate, that memory and what
to change; the CLI prints it and exits 2, the app shows it in an ``st.error`` box.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tinyviz.config import ModelConfig, RunConfig, TrainConfig

ENV_CAP = "TINYVIZ_MAX_MEMORY"
FLOAT = 4  # bytes per float32
RUNTIME_BYTES = 100_000_000  # measured: torch's allocator, thread pools and kernels take ~0.1 GB at the first step
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
          "KI": 2**10, "MI": 2**20, "GI": 2**30, "TI": 2**40}


class ResourceError(ValueError):
    """A config that does not fit in the memory there is; the message says by how much and what to change."""


def n_params(cfg: ModelConfig) -> int:
    """Parameters of Transformer(cfg), counted from the config alone (equals ``model.n_params(False)``)."""
    d, ff, L, V = cfg.d_model, cfg.ff_size, cfg.n_layers, cfg.d_vocab
    b = 1 if cfg.bias else 0
    qkv = d * (cfg.n_heads + 2 * cfg.kv_heads) * cfg.d_head + b * (cfg.n_heads + 2 * cfg.kv_heads) * cfg.d_head
    out = cfg.n_heads * cfg.d_head * d + b * d
    mlp = (2 if cfg.mlp == "swiglu" else 1) * (d * ff + b * ff) + ff * d + b * d
    norm = {"layernorm": d * (1 + b), "rmsnorm": d, "none": 0}[cfg.norm]
    final_norm = norm if cfg.norm_position == "pre" else 0
    embed = V * d + (cfg.n_ctx * d if cfg.pos_emb == "learned" else 0)
    unembed = 0 if cfg.tie_embeddings else V * d
    return embed + unembed + final_norm + L * (qkv + out + mlp + 2 * norm)


def _activation_floats(cfg: ModelConfig, tokens: int, training: bool) -> int:
    """Floats alive at the peak of a forward and backward pass over `tokens` positions in sequences of
    n_ctx: per layer the stream, q/k/v, attention maps, the MLP's hidden units, dropout masks; plus the
    logits and their softmax. Without training, about two layers' worth are alive at once and the
    attention maps are counted apart (see estimate_bytes)."""
    d, ff, H, T = cfg.d_model, cfg.ff_size, cfg.n_heads, cfg.n_ctx
    per_token_layer = 12 * d + (3 if cfg.mlp == "swiglu" else 2) * ff
    logits = 3 * cfg.d_vocab  # logits, softmax, and the gradient of the loss
    if not training:
        return tokens * (2 * per_token_layer + logits)
    # the fused kernel keeps about one map per head; with dropout attention runs explicitly and
    # keeps the scores, the pattern, the dropout mask and the dropped pattern
    per_token_layer += (4 if cfg.dropout > 0 else 1) * H * T
    return tokens * (cfg.n_layers * per_token_layer + 2 * d + logits)


def estimate_bytes(cfg: RunConfig | ModelConfig, what: str = "train", batch_size: int | None = None) -> dict:
    """Bytes a config needs: {"params" (a count), "weights", "gradients", "adam", "activations",
    "attention_maps", "kv_cache", "runtime", "total"}. what is "train" (a Trainer taking steps) or
    "inference" (loading a run, sampling, capturing every attention map of an n_ctx prompt).
    batch_size defaults to the train config's (1 for inference)."""
    if what not in ("train", "inference"):
        raise ValueError(f"what={what!r} must be 'train' or 'inference'.")
    model = cfg.model if isinstance(cfg, RunConfig) else cfg
    train = cfg.train if isinstance(cfg, RunConfig) else TrainConfig()
    p = n_params(model)
    out = dict.fromkeys(("weights", "gradients", "adam", "activations", "attention_maps", "kv_cache"), 0)
    out["params"] = p
    out["weights"] = p * FLOAT
    if what == "train":
        batch = batch_size or train.batch_size
        out["gradients"] = p * FLOAT
        out["adam"] = 2 * p * FLOAT
        out["activations"] = _activation_floats(model, batch * model.n_ctx, training=True) * FLOAT
    else:
        batch = batch_size or 1
        out["weights"] *= 2  # safetensors reads the file, then the values are copied into the model
        out["activations"] = _activation_floats(model, batch * model.n_ctx, training=False) * FLOAT
        # every layer's captured pattern, and one layer's scores being computed
        out["attention_maps"] = batch * (model.n_layers + 1) * model.n_heads * model.n_ctx**2 * FLOAT
        out["kv_cache"] = 2 * batch * model.n_layers * model.kv_heads * model.n_ctx * model.d_head * FLOAT
    out["runtime"] = RUNTIME_BYTES
    out["total"] = sum(v for k, v in out.items() if k != "params")
    return out


def parse_size(text: str, source: str = ENV_CAP) -> int:
    """'4G', '512M', '1.5GB', '2GiB' or a plain number of bytes -> bytes; ValueError with a sentence."""
    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]I?)?B?\s*", str(text).upper())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{source}={text!r} is not a memory size; use e.g. 4G, 512M or a number of bytes.")
    return int(float(m.group(1)) * _UNITS[m.group(2) or ""])


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:  # other Unixes: free physical pages (macOS has no SC_AVPHYS_PAGES: total pages then)
        name = "SC_AVPHYS_PAGES" if "SC_AVPHYS_PAGES" in os.sysconf_names else "SC_PHYS_PAGES"
        return os.sysconf(name) * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_room() -> int | None:
    """A container's memory limit less what it uses (cgroup v2), or None without a limit."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit == "max":
            return None
        used = int(Path("/sys/fs/cgroup/memory.current").read_text().strip())
        return max(0, int(limit) - used)
    except (OSError, ValueError):
        return None


def available_bytes() -> tuple[int | None, str]:
    """(bytes this process may still allocate, where that figure comes from); (None, ...) if unknown."""
    options = []
    free = _meminfo_available()
    if free is not None:
        options.append((free, "free memory"))
    room = _cgroup_room()
    if room is not None:
        options.append((room, "the container's memory limit"))
    cap = os.environ.get(ENV_CAP, "").strip()
    if cap:
        options.append((parse_size(cap), f"the cap {ENV_CAP}={cap}"))
    if not options:
        return None, "unknown"
    return min(options, key=lambda o: o[0])


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (powers of 1000, as the sentences round anyway)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} PB"


def _advice(est: dict, what: str) -> str:
    big_params = est["weights"] + est["gradients"] + est["adam"]
    rest = est["total"] - big_params
    if big_params >= rest:
        return "make the model smaller (d_model, n_layers, d_ff, or a smaller vocabulary)"
    if what == "train":
        return "use a smaller batch_size or n_ctx (the activations grow with batch_size x n_ctx)"
    return "use a smaller n_ctx (attention maps grow with n_ctx squared)"


def check_fits(cfg: RunConfig | ModelConfig, what: str = "train", batch_size: int | None = None,
               label: str = "", advice: str = "") -> dict:
    """The estimate if it fits in available_bytes(); otherwise ResourceError with a sentence.

    label names the thing for the sentence (e.g. "the run 'demo'"; by default "this model"); advice
    replaces the default of what to change (which names the config fields that matter most)."""
    est = estimate_bytes(cfg, what, batch_size)
    room, source = available_bytes()
    if room is None or est["total"] <= room:
        return est
    parts = [f"weights {human_bytes(est['weights'])}"]
    if what == "train":
        parts += [f"gradients and AdamW moments {human_bytes(est['gradients'] + est['adam'])}",
                  f"activations {human_bytes(est['activations'])}"]
    else:
        parts += [f"activations and KV cache {human_bytes(est['activations'] + est['kv_cache'])}",
                  f"attention maps of an n_ctx prompt {human_bytes(est['attention_maps'])}"]
    doing = "training" if what == "train" else "loading and inspecting"
    who = label or "this model"
    advice = (advice or _advice(est, what)) + (f", or raise {ENV_CAP}" if source.startswith("the cap") else "")
    raise ResourceError(
        f"{doing} {who} needs about {human_bytes(est['total'])} of memory ({est['params']:,} parameters; "
        f"{', '.join(parts)}), more than the {human_bytes(room)} available ({source}); {advice}."
    )
