"""Figures out of the app: PNG/SVG (kaleido driving an installed Chrome/Chromium), self-contained
offline HTML, the figure's data as CSV, and a write-up bundle (zip).

PNG and SVG need a browser on this machine; when none is found ``to_image`` raises
``ExportError`` saying so, and HTML and CSV still work. Nothing is downloaded.
"""

from __future__ import annotations

import atexit
import io
import json
import os
import re
import shutil
import threading
import warnings
import zipfile
from collections.abc import Iterable

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tinyviz.analysis.plots import OVERLAY

IMAGE_FORMATS = ("png", "svg")
PLOTLY_JS = "plotly.min.js"  # the one copy a bundle's HTML pages load (include_plotlyjs="directory")
_BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "msedge")
_MAC_CHROME = "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"
_lock = threading.Lock()
_server_started = False


class ExportError(RuntimeError):
    """An export that cannot be made here; the message says why and what still works."""


NO_BROWSER = ("PNG and SVG export needs Chrome or Chromium, and none was found on this machine "
              "(install it, e.g. `apt-get install chromium`, or point TINYVIZ_CHROMIUM at it). "
              "HTML and CSV export still work, and the chart's camera button saves a PNG from your browser.")


def find_browser() -> str | None:
    """The Chrome/Chromium kaleido will use: $TINYVIZ_CHROMIUM, $BROWSER_PATH, then the usual names."""
    for var in ("TINYVIZ_CHROMIUM", "BROWSER_PATH"):
        path = os.environ.get(var)
        if path:
            return path if os.access(path, os.X_OK) else None
    for name in _BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return _MAC_CHROME if os.access(_MAC_CHROME, os.X_OK) else None


def image_export_available() -> bool:
    return find_browser() is not None


def _start_server(browser: str) -> None:
    global _server_started
    if _server_started:
        return
    import kaleido

    os.environ.setdefault("BROWSER_PATH", browser)
    kaleido.start_sync_server(silence_warnings=True)
    atexit.register(kaleido.stop_sync_server, silence_warnings=True)
    _server_started = True


def to_image(fig: go.Figure, fmt: str = "png", scale: float = 2.0) -> bytes:
    """The figure as PNG or SVG bytes, at its own size (width 1000 px when unset)."""
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image format {fmt!r} is not supported; use one of: {', '.join(IMAGE_FORMATS)}.")
    browser = find_browser()
    if browser is None:
        raise ExportError(NO_BROWSER)
    width = fig.layout.width or 1000
    height = fig.layout.height or 500
    with _lock:
        try:
            _start_server(browser)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "kopts is ignored if using a server"
                return fig.to_image(format=fmt, width=width, height=height, scale=scale)
        except Exception as e:  # kaleido and choreographer raise many kinds; the person needs one sentence
            raise ExportError(f"the {fmt.upper()} export failed ({str(e).splitlines()[0][:160]}); "
                              "HTML and CSV export still work.") from e


def to_html(fig: go.Figure, plotlyjs: str | bool = True) -> bytes:
    """A page that works offline: self-contained (plotly.js embedded, about 5 MB) by default, or, with
    plotlyjs="directory", loading plotly.js from a plotly.min.js beside it (a bundle ships one copy)."""
    return fig.to_html(include_plotlyjs=plotlyjs, full_html=True, config={"displaylogo": False}).encode("utf-8")


def _axis_labels(fig: go.Figure, trace, axis: str) -> dict | None:
    """{tick value: tick text} of the trace's x or y axis when it uses tokens as ticks."""
    ref = getattr(trace, f"{axis}axis", None) or axis
    layout_axis = fig.layout[f"{axis}axis{ref[1:]}"]
    if layout_axis.tickvals is None or layout_axis.ticktext is None:
        return None
    return dict(zip(list(layout_axis.tickvals), list(layout_axis.ticktext)))


def _values(v) -> list:
    return [] if v is None else np.asarray(v, dtype=object).tolist()


def figure_frame(fig: go.Figure) -> pd.DataFrame:
    """The data drawn by a figure, one row per point (or heatmap cell): trace, x, y, z, text."""
    rows = []
    for i, trace in enumerate(fig.data):
        if trace.meta == OVERLAY:
            continue
        name = trace.name or f"{trace.type} {i}"
        xl, yl = _axis_labels(fig, trace, "x"), _axis_labels(fig, trace, "y")
        if trace.type == "heatmap":
            z = np.asarray(trace.z, dtype=float)
            xs = _values(trace.x) or list(range(z.shape[1]))
            ys = _values(trace.y) or list(range(z.shape[0]))
            text = np.asarray(trace.text, dtype=object) if trace.text is not None else None
            for r, y in enumerate(ys):
                for c, x in enumerate(xs):
                    row = {"trace": name, "x": x, "y": y, "z": float(z[r, c])}
                    if xl is not None:
                        row["x_label"] = xl.get(x, "")
                    if yl is not None:
                        row["y_label"] = yl.get(y, "")
                    if text is not None and text.ndim == 2:
                        row["text"] = str(text[r, c])
                    rows.append(row)
        else:
            xs, ys = _values(trace.x), _values(trace.y)
            texts = _values(trace.text) if not isinstance(trace.text, str) else []
            for j, (x, y) in enumerate(zip(xs, ys)):
                row = {"trace": name, "x": x, "y": y}
                if j < len(texts):
                    row["text"] = texts[j]
                rows.append(row)
    return pd.DataFrame.from_records(rows)


def to_csv(df: pd.DataFrame) -> bytes:
    return df.to_csv(index=False).encode("utf-8")


def slug(name: str) -> str:
    """A safe file name stem: 'demo · layer 1' -> 'demo-layer-1'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._")[:100] or "figure"


def bundle(figures: Iterable[tuple[str, go.Figure, pd.DataFrame | None]], config: dict | None = None,
           images: tuple[str, ...] = IMAGE_FORMATS, html: bool = True) -> tuple[bytes, list[str]]:
    """A zip of each figure (images, HTML) and its CSV, plus the run's config.json. The HTML pages share one
    plotly.min.js in the zip (each embedding its own made a 4-figure bundle 19.5 MB).

    Returns (zip bytes, notes): a note says what was left out and why (no browser for images).
    """
    buf, notes = io.BytesIO(), []
    can_image = bool(images) and image_export_available()
    if images and not can_image:
        notes.append(NO_BROWSER)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        if config is not None:
            zf.writestr("config.json", json.dumps(config, indent=2) + "\n")
        for name, fig, df in figures:
            stem = slug(name)
            zf.writestr(f"{stem}.csv", to_csv(df if df is not None else figure_frame(fig)))
            if html:
                if PLOTLY_JS not in zf.namelist():
                    from plotly.offline import get_plotlyjs

                    zf.writestr(PLOTLY_JS, get_plotlyjs())
                zf.writestr(f"{stem}.html", to_html(fig, plotlyjs="directory"))
            for fmt in images if can_image else ():
                try:
                    zf.writestr(f"{stem}.{fmt}", to_image(fig, fmt))
                except ExportError as e:
                    notes.append(f"{stem}.{fmt}: {e}")
    return buf.getvalue(), notes
