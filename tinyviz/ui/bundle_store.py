"""The write-up bundle on disk, so it survives a reload: one JSON file per figure in <runs>/_bundle/.

A figure is stored as Plotly's JSON and its table as CSV text (never pickled); a file that does not
parse is skipped. The runs folder is this app's own, so every tab of it shares one bundle.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tinyviz.analysis import export
from tinyviz.training.runs import RunError, atomic_write
from tinyviz.ui import loaders

FOLDER = "_bundle"


def folder() -> Path:
    return loaders.runs_root() / FOLDER


def _path(name: str) -> Path:
    return folder() / f"{export.slug(name)[:60]}-{zlib.crc32(name.encode()):08x}.json"


def _arrays(obj):
    """Plotly's JSON with its base64 arrays ({"dtype", "bdata", "shape"}) turned back into numpy arrays
    (numbers only: any other dtype raises ValueError and the file is skipped)."""
    if isinstance(obj, dict):
        if "bdata" in obj and "dtype" in obj:
            dtype = np.dtype(str(obj["dtype"]))
            if dtype.kind not in "biuf":
                raise ValueError(f"unexpected array type {dtype}")
            a = np.frombuffer(base64.b64decode(obj["bdata"]), dtype=dtype)
            return a.reshape([int(n) for n in str(obj["shape"]).split(",")]) if obj.get("shape") else a
        return {k: _arrays(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_arrays(v) for v in obj]
    return obj


def load() -> dict[str, tuple[go.Figure, pd.DataFrame | None]]:
    """{figure name: (figure, table)} in the order they were added."""
    out = {}
    files = sorted(folder().glob("*.json"), key=lambda f: f.stat().st_mtime_ns) if folder().is_dir() else []
    for f in files:
        try:
            d = json.loads(f.read_text(encoding="utf-8"))
            fig = go.Figure(_arrays(json.loads(d["figure"])))
            df = pd.read_csv(io.StringIO(d["csv"])) if d.get("csv") else None
        except (OSError, ValueError, KeyError, TypeError):
            continue
        out[str(d["name"])] = (fig, df)
    return out


def add(name: str, fig: go.Figure, df: pd.DataFrame | None) -> None:
    """Keep a figure in the bundle; a write that fails (read-only runs folder) leaves it in this session only."""
    with contextlib.suppress(OSError, RunError):
        folder().mkdir(parents=True, exist_ok=True)
        payload = {"name": name, "figure": fig.to_json(), "csv": None if df is None else df.to_csv(index=False)}
        atomic_write(_path(name), json.dumps(payload).encode("utf-8"))


def clear() -> None:
    for f in folder().glob("*.json") if folder().is_dir() else []:
        with contextlib.suppress(OSError):
            f.unlink()
