"""A figure drawn as one static SVG: what the live panel shows while a run trains.

Plotly draws a chart anew whenever its figure changes (axes, ticks, hover layers: 0.1-0.3 s of the browser's CPU
on a 2-core laptop), and a live chart changes at every refresh, taking that CPU from the training run. This
draws the same ``go.Figure`` (the one the export buttons save) as a single SVG, without hover:

- line charts: lines, the val markers, the faint raw curve and min-max bands, linear or log y, ticks, grid,
  axis titles and legend, each trace in its own colour and dash;
- bar charts, grouped, in one or more subplots: each trace's colour and fill pattern, category labels,
  ticks, subplot titles and notes, legend;
- heatmaps, one or a grid of them in subplots (the gradient-norm chart, the head grid): each one a PNG image
  in its colour scale, its subplot title, the axis ticks and colour bar when the figure shows them, and
  click targets where the figure has an invisible click overlay (its ``customdata`` becomes the target's
  ``data-click``).

Other trace types are a ``ValueError``.

No Streamlit and no I/O: pure figure -> string.
"""

from __future__ import annotations

import base64
import html
import json
import math
import struct
import zlib

import numpy as np
import plotly.colors
import plotly.graph_objects as go

# Plotly's dash names as SVG dash arrays, scaled by the line width as Plotly does
_DASH = {"solid": None, "dot": (1, 2), "dash": (3, 2), "longdash": (5, 2), "dashdot": (3, 2, 1, 2),
         "longdashdot": (5, 2, 1, 2)}
_FONT = "font-family: 'Open Sans', verdana, arial, sans-serif"
_INK, _GRID = "#2a3f5f", "#ebf0f8"


def _nice_step(span: float, n: int) -> float:
    """A 1, 2 or 5 x 10^k step giving about n ticks over span."""
    raw = span / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def linear_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """Ticks at multiples of a 1/2/5 step inside [lo, hi]."""
    if not hi > lo:
        return [lo]
    step = _nice_step(hi - lo, n)
    first = math.ceil(lo / step - 1e-9)
    return [round(k * step, 12) for k in range(first, int(math.floor(hi / step + 1e-9)) + 1)]


def log_ticks(lo: float, hi: float, n: int = 8, min_ratio: float = 1.0) -> list[float]:
    """Ticks at 1..9 x 10^k inside [lo, hi] (lo > 0), thinned step by step (down to 1, 2, 5 and then to powers
    of ten) while there would be more than n or two would be closer than a factor min_ratio (labels that
    would touch)."""
    if not hi > lo:
        return [lo]
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for mults in ((1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 4, 5, 6, 8), (1, 2, 3, 5), (1, 2, 5), (1,)):
        ticks = [m * 10.0 ** d for d in decades for m in mults if lo <= m * 10.0 ** d <= hi * (1 + 1e-12)]
        if len(ticks) <= n and all(b / a >= min_ratio for a, b in zip(ticks, ticks[1:])):
            break
    return ticks or [lo, hi]


def _label(v: float) -> str:
    """A tick label: 3 significant digits, tens of thousands as k (25000 -> 25k, as Plotly writes steps)."""
    if abs(v) >= 10000:
        return f"{v / 1000:.3g}k"
    if v == int(v):
        return str(int(v))
    return f"{v:.3g}"


def _marker(symbol: str, x: float, y: float, r: float) -> str:
    """A marker's path (circle, square, diamond, triangle-up; others as circles)."""
    if symbol == "square":
        return f"M{x - r:.1f},{y - r:.1f}h{2 * r:.1f}v{2 * r:.1f}h{-2 * r:.1f}Z"
    if symbol == "diamond":
        d = r * 1.3
        return f"M{x:.1f},{y - d:.1f}L{x + d:.1f},{y:.1f}L{x:.1f},{y + d:.1f}L{x - d:.1f},{y:.1f}Z"
    if symbol == "triangle-up":
        return f"M{x:.1f},{y - r * 1.2:.1f}L{x + r * 1.1:.1f},{y + r * 0.8:.1f}L{x - r * 1.1:.1f},{y + r * 0.8:.1f}Z"
    return f"M{x - r:.1f},{y:.1f}a{r:.1f},{r:.1f} 0 1,0 {2 * r:.1f},0a{r:.1f},{r:.1f} 0 1,0 {-2 * r:.1f},0"


def _runs(xs: np.ndarray, ys: np.ndarray) -> list[list[tuple[float, float]]]:
    """The points split where a value is missing (a gap in the line, as Plotly leaves one)."""
    out, cur = [], []
    for x, y in zip(xs, ys):
        if math.isfinite(x) and math.isfinite(y):
            cur.append((x, y))
        elif cur:
            out.append(cur)
            cur = []
    return out + ([cur] if cur else [])


def figure_svg(fig: go.Figure, width: int = 900) -> str:
    """The figure's scatter traces as one SVG ``width`` wide (it scales to its container) and as high as
    the figure's layout says. The root carries ``data-points``: how many points the first trace holds."""
    traces = list(fig.data)
    for t in traces:
        if t.type not in ("scatter", "heatmap", "bar"):
            raise ValueError(f"a {t.type} trace cannot be drawn as a light SVG; only line charts, heatmaps and "
                             "bar charts can.")
    if any(t.type == "heatmap" for t in traces):
        return _heatmaps_svg(fig, width)
    if any(t.type == "bar" for t in traces):
        return _bars_svg(fig, width)
    lay = fig.layout
    height = int(lay.height or 380)
    log_y = lay.yaxis.type == "log"
    shown = lay.showlegend if lay.showlegend is not None else len(traces) > 1  # Plotly's default
    legend = [t for t in traces if shown and t.showlegend is not False and t.name]
    top, left, right = 52, 64, 16
    bottom = 44 + (26 if legend else 0)
    pw, ph = width - left - right, height - top - bottom

    data = []
    for t in traces:
        x = np.asarray(t.x if t.x is not None else [], dtype=float)
        y = np.asarray(t.y if t.y is not None else [], dtype=float)
        if log_y:
            y = np.where(y > 0, y, np.nan)
        data.append((t, x, y))
    xs = np.concatenate([x for _, x, _ in data]) if data else np.array([])
    ys = np.concatenate([y for _, _, y in data]) if data else np.array([])
    xs, ys = xs[np.isfinite(xs)], ys[np.isfinite(ys)]
    x_lo, x_hi = (float(xs.min()), float(xs.max())) if len(xs) else (0.0, 1.0)
    y_lo, y_hi = (float(ys.min()), float(ys.max())) if len(ys) else (1.0, 10.0)
    if x_hi <= x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    elif 0 < x_lo <= 0.05 * (x_hi - x_lo):
        x_lo = 0.0  # steps from 1: the axis starts at 0, with its tick
    if log_y:
        a, b = math.log10(y_lo), math.log10(y_hi)
        pad = max(0.05 * (b - a), 0.02)
        y_lo, y_hi = 10 ** (a - pad), 10 ** (b + pad)
    else:
        pad = 0.05 * (y_hi - y_lo) or max(abs(y_hi) * 0.1, 1.0)
        y_lo, y_hi = y_lo - pad, y_hi + pad

    def px(v):
        return left + (v - x_lo) / (x_hi - x_lo) * pw

    def py(v):
        if log_y:
            return top + (math.log10(y_hi) - np.log10(v)) / (math.log10(y_hi) - math.log10(y_lo)) * ph
        return top + (y_hi - v) / (y_hi - y_lo) * ph

    first = len(data[0][1]) if data else 0
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" '
           f'role="img" data-points="{first}" style="{_FONT}; max-width: {width}px">',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff"/>']
    title = lay.title.text or ""
    out.append(f'<text x="4" y="22" font-size="15" fill="{_INK}">{html.escape(title)}</text>')
    # log labels at least 16 px apart: the factor between two ticks 16 px apart on this axis
    min_ratio = (y_hi / y_lo) ** (16 / ph) if log_y else 1.0
    for v in (log_ticks(y_lo, y_hi, min_ratio=min_ratio) if log_y else linear_ticks(y_lo, y_hi)):
        y = float(py(v))
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="{_GRID}"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="{_INK}">'
                   f'{_label(v)}</text>')
    for v in linear_ticks(x_lo, x_hi):
        x = px(v)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" stroke="{_GRID}"/>'
                   f'<text x="{x:.1f}" y="{top + ph + 16}" font-size="11" text-anchor="middle" fill="{_INK}">'
                   f'{_label(v)}</text>')
    if lay.xaxis.title.text:
        out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 34}" font-size="12" text-anchor="middle" '
                   f'fill="{_INK}">{html.escape(lay.xaxis.title.text)}</text>')
    if lay.yaxis.title.text:
        out.append(f'<text transform="translate(14,{top + ph / 2:.1f}) rotate(-90)" font-size="12" '
                   f'text-anchor="middle" fill="{_INK}">{html.escape(lay.yaxis.title.text)}</text>')

    out.append(f'<svg x="{left}" y="{top}" width="{pw}" height="{ph}" overflow="hidden">'
               f'<g transform="translate({-left},{-top})">')
    for t, x, y in data:
        out.extend(_trace(t, x, y, px, py))
    out.append("</g></svg>")
    lx = left
    for t in legend:
        colour, dash, width_ = _style(t)
        label = html.escape(t.name)
        ly = height - 14
        out.append(f'<line x1="{lx}" x2="{lx + 28}" y1="{ly - 4}" y2="{ly - 4}" stroke="{colour}" '
                   f'stroke-width="{width_}"{dash}/>')
        if "markers" in (t.mode or ""):
            out.append(f'<path d="{_marker(t.marker.symbol or "circle", lx + 14, ly - 4, 3.5)}" fill="{colour}"/>')
        out.append(f'<text x="{lx + 34}" y="{ly}" font-size="12" fill="{_INK}">{label}</text>')
        lx += 44 + 7 * len(t.name)
    out.append("</svg>")
    return "".join(out)


def _style(t) -> tuple[str, str, float]:
    colour = (t.line.color if t.line and t.line.color else None) or "#0072B2"
    width = float(t.line.width) if t.line and t.line.width else 2.0
    pattern = _DASH.get(t.line.dash if t.line and t.line.dash else "solid")
    dash = f' stroke-dasharray="{",".join(f"{p * width:g}" for p in pattern)}"' if pattern else ""
    return colour, dash, width


def _trace(t, x: np.ndarray, y: np.ndarray, px, py) -> list[str]:
    colour, dash, width = _style(t)
    opacity = f' opacity="{t.opacity:g}"' if t.opacity is not None and t.opacity < 1 else ""
    runs = _runs(x, y)
    if t.fill == "toself":
        pts = [p for r in runs for p in r]
        if not pts:
            return []
        d = "M" + "L".join(f"{px(a):.1f},{float(py(b)):.1f}" for a, b in pts) + "Z"
        return [f'<path d="{d}" fill="{t.fillcolor or colour}" stroke="none"/>']
    out = []
    mode = t.mode or "lines"
    if "lines" in mode:
        for r in runs:
            d = "M" + "L".join(f"{px(a):.1f},{float(py(b)):.1f}" for a, b in r)
            out.append(f'<path d="{d}" fill="none" stroke="{colour}" stroke-width="{width:g}" '
                       f'stroke-linejoin="round"{dash}{opacity}/>')
    if "markers" in mode:
        symbol = t.marker.symbol if t.marker and t.marker.symbol else "circle"
        size = float(t.marker.size) if t.marker and t.marker.size else 6.0
        name = html.escape(t.name or "")
        for a, b in (p for r in runs for p in r):
            out.append(f'<path d="{_marker(symbol, px(a), float(py(b)), size / 2)}" fill="{colour}"{opacity}>'
                       f'<title>{name} step {a:g}: {b:.3f}</title></path>')
    return out


# -- heatmaps ----------------------------------------------------------------------------------------------

def png_uri(rgba: np.ndarray) -> str:
    """An [h, w, 4] uint8 image as a PNG data URI (zlib only; no imaging library)."""
    h, w = rgba.shape[:2]
    rows = np.concatenate([np.zeros((h, 1), np.uint8), np.ascontiguousarray(rgba, np.uint8).reshape(h, 4 * w)], 1)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _lut(scale) -> np.ndarray:
    """A Plotly colour scale (name or [(position, colour), ...]) as 256 RGB rows."""
    scale = plotly.colors.get_colorscale(scale) if isinstance(scale, str) else [list(p) for p in scale]
    sampled = plotly.colors.sample_colorscale(scale, list(np.linspace(0, 1, 256)), colortype="tuple")
    return np.clip(np.round(np.array(sampled, dtype=float) * (255 if max(map(max, sampled)) <= 1 else 1)), 0,
                   255).astype(np.uint8)


def _coloured(z: np.ndarray, lut: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """z mapped through the scale between lo and hi, missing values transparent: [h, w, 4] uint8."""
    finite = np.isfinite(z)
    idx = np.clip(np.round((np.where(finite, z, lo) - lo) / ((hi - lo) or 1.0) * 255), 0, 255).astype(int)
    out = np.zeros((*z.shape, 4), np.uint8)
    out[..., :3] = lut[idx]
    out[..., 3] = np.where(finite, 255, 0)
    return out


def _margins(lay) -> tuple[int, int, int, int]:
    """The layout's left, right, top and bottom margins (Plotly's defaults where unset)."""
    m = lay.margin
    return tuple(int(v) if v is not None else d for v, d in ((m.l, 80), (m.r, 80), (m.t, 100), (m.b, 80)))


def _axis(lay, ref: str, key: str):
    """The layout's axis for a trace's axis reference ('x', 'y2' -> layout.xaxis, layout.yaxis2)."""
    return lay[f"{key}axis{ref[1:]}"]


def _heatmaps_svg(fig: go.Figure, width: int) -> str:
    """Each heatmap trace as an image in its subplot's domain (square cells where the figure anchors
    y to x), with subplot titles (annotations), ticks and colour bar when the figure shows them, and
    a click target per subplot that carries a click overlay."""
    lay = fig.layout
    height = int(lay.height or 450)
    left, right, top, bottom = _margins(lay)
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    bar = next((t for t in heatmaps if t.showscale is not False and not t.coloraxis), None)
    if bar is not None:
        right = max(right, 90)
    pw, ph = width - left - right, height - top - bottom
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" '
           f'data-cells="{len(heatmaps)}" style="{_FONT}; max-width: {width}px">',
           f'<text x="4" y="22" font-size="15" fill="{_INK}">{html.escape(lay.title.text or "")}</text>']
    boxes = {}
    for t in heatmaps:
        xa, ya = _axis(lay, t.xaxis or "x", "x"), _axis(lay, t.yaxis or "y", "y")
        dx, dy = xa.domain or (0, 1), ya.domain or (0, 1)
        x0, x1 = left + dx[0] * pw, left + dx[1] * pw
        y0, y1 = top + (1 - dy[1]) * ph, top + (1 - dy[0]) * ph
        if ya.scaleanchor:  # square cells: the longer side shrinks to the shorter, centred (Plotly's constrain)
            side = min(x1 - x0, y1 - y0)
            x0, x1 = (x0 + x1 - side) / 2, (x0 + x1 + side) / 2
            y0, y1 = (y0 + y1 - side) / 2, (y0 + y1 + side) / 2
        boxes[(t.xaxis or "x", t.yaxis or "y")] = (x0, y0, x1, y1)
        out.extend(_heatmap(t, lay, xa, ya, (x0, y0, x1, y1)))
    for a in lay.annotations or ():
        if a.xref == "paper" and a.yref == "paper" and a.text:
            size = a.font.size if a.font and a.font.size else 12
            out.append(f'<text x="{left + a.x * pw:.1f}" y="{top + (1 - a.y) * ph - 4:.1f}" font-size="{size}" '
                       f'text-anchor="middle" fill="{_INK}">{html.escape(a.text)}</text>')
    for t in fig.data:
        if t.type == "scatter" and t.customdata is not None and len(t.customdata):
            box = boxes.get((t.xaxis or "x", t.yaxis or "y"))
            if box is not None:
                x0, y0, x1, y1 = box
                tip = html.escape(str(t.text[0] if t.text is not None and len(t.text) else ""))
                out.append(f'<rect data-click="{html.escape(json.dumps(list(t.customdata[0])))}" x="{x0:.1f}" '
                           f'y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" fill="transparent" '
                           f'style="cursor: pointer"><title>{tip}</title></rect>')
    if bar is not None:
        out.extend(_colour_bar(bar, width - right + 20, top, ph))
    out.append("</svg>")
    return "".join(out)


def _limits(t, lay) -> tuple[float, float, object]:
    """The colour range and scale of a heatmap: its own, its colour axis's, or the data's."""
    ax = lay.coloraxis if t.coloraxis else None
    scale = (ax.colorscale if ax is not None and ax.colorscale else None) or t.colorscale or "Plasma"
    z = np.asarray(t.z if t.z is not None else [[np.nan]], dtype=float)
    lo = ax.cmin if ax is not None and ax.cmin is not None else t.zmin
    hi = ax.cmax if ax is not None and ax.cmax is not None else t.zmax
    finite = z[np.isfinite(z)]
    lo = float(lo) if lo is not None else (float(finite.min()) if finite.size else 0.0)
    hi = float(hi) if hi is not None else (float(finite.max()) if finite.size else 1.0)
    return lo, hi, scale


def _heatmap(t, lay, xa, ya, box) -> list[str]:
    x0, y0, x1, y1 = box
    z = np.atleast_2d(np.asarray(t.z if t.z is not None else [[np.nan]], dtype=float))
    lo, hi, scale = _limits(t, lay)
    reversed_y = ya.autorange == "reversed" or (ya.range is not None and ya.range[0] > ya.range[1])
    out = []
    if z.size:  # an empty heatmap (no records yet) is an empty frame, as Plotly draws it
        img = _coloured(z if reversed_y else z[::-1], _lut(scale), lo, hi)
        out.append(f'<image href="{png_uri(img)}" x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" '
                   f'height="{y1 - y0:.1f}" preserveAspectRatio="none" style="image-rendering: pixelated"/>')
    if ya.showticklabels is not False and t.y is not None:  # a category per row
        rows = list(t.y)
        for i, label in enumerate(rows):
            row = i if reversed_y else len(rows) - 1 - i
            y = y0 + (row + 0.5) * (y1 - y0) / len(rows)
            out.append(f'<text x="{x0 - 6:.1f}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="{_INK}">'
                       f'{html.escape(str(label))}</text>')
    if xa.showticklabels is not False and t.x is not None and len(t.x):
        xs = np.asarray(t.x, dtype=float)
        half = (xs[-1] - xs[0]) / (2 * (len(xs) - 1)) if len(xs) > 1 else 0.5
        a, b = xs[0] - half, xs[-1] + half
        for v in linear_ticks(a, b):
            x = x0 + (v - a) / (b - a) * (x1 - x0)
            out.append(f'<text x="{x:.1f}" y="{y1 + 16:.1f}" font-size="11" text-anchor="middle" fill="{_INK}">'
                       f'{_label(v)}</text>')
    for text, attrs in ((xa.title.text, f'x="{(x0 + x1) / 2:.1f}" y="{y1 + 34:.1f}"'),
                        (ya.title.text, f'transform="translate(14,{(y0 + y1) / 2:.1f}) rotate(-90)"')):
        if text:
            out.append(f'<text {attrs} font-size="12" text-anchor="middle" fill="{_INK}">{html.escape(text)}</text>')
    return out


def _colour_bar(t, x: float, top: float, ph: float) -> list[str]:
    lo, hi, scale = _limits(t, go.Layout())
    ramp = _coloured(np.linspace(hi, lo, 64)[:, None], _lut(scale), lo, hi)
    out = [f'<image href="{png_uri(ramp)}" x="{x:.1f}" y="{top:.1f}" width="14" height="{ph:.1f}" '
           f'preserveAspectRatio="none"/>']
    for v in linear_ticks(lo, hi, 5):
        y = top + (hi - v) / ((hi - lo) or 1.0) * ph
        out.append(f'<text x="{x + 18:.1f}" y="{y + 4:.1f}" font-size="11" fill="{_INK}">{_label(v)}</text>')
    title = t.colorbar.title.text if t.colorbar and t.colorbar.title else None
    if title:
        out.append(f'<text x="{x:.1f}" y="{top - 8:.1f}" font-size="11" fill="{_INK}">{html.escape(title)}</text>')
    return out


# -- bar charts --------------------------------------------------------------------------------------------

# Plotly's bar fill patterns as SVG strokes over the bar's colour (a 6-px tile)
_HATCH = {"/": "M0,6L6,0", "\\": "M0,0L6,6", "x": "M0,6L6,0M0,0L6,6", "+": "M3,0V6M0,3H6", "-": "M0,3H6",
          "|": "M3,0V6"}


def _fill(t, index: int, colorway, defs: dict) -> str:
    """A bar trace's fill: its colour (or the colorway's by trace order), through a hatch pattern if it has one."""
    colour = (t.marker.color if t.marker and isinstance(t.marker.color, str) else None) \
        or colorway[index % len(colorway)]
    shape = t.marker.pattern.shape if t.marker and t.marker.pattern else None
    if not shape:
        return colour
    # one id per colour and pattern: the live SVGs share the page's document, where a repeated id would
    # take the first chart's tile
    pid = f"tinyviz-hatch-{zlib.crc32(f'{colour}{shape}'.encode()):08x}"
    if shape == ".":
        mark = '<circle cx="3" cy="3" r="1.2" fill="#fff"/>'
    else:
        mark = f'<path d="{_HATCH.get(shape, _HATCH["/"])}" stroke="#fff" stroke-width="1.2"/>'
    defs[pid] = (f'<pattern id="{pid}" width="6" height="6" patternUnits="userSpaceOnUse">'
                 f'<rect width="6" height="6" fill="{colour}"/>{mark}</pattern>')
    return f"url(#{pid})"


def _bars_svg(fig: go.Figure, width: int) -> str:
    """Grouped bars per subplot (a domain of the figure's x axis each), with the figure's titles and legend."""
    lay = fig.layout
    height = int(lay.height or 450)
    colorway = list(lay.colorway or ("#0072B2",))
    bars = [t for t in fig.data if t.type == "bar"]
    legend = [t for t in bars if t.showlegend is not False and t.name] if len(bars) > 1 else []
    left, right, top, bottom = _margins(lay)
    bottom += 26 if legend else 0
    pw, ph = width - left - right, height - top - bottom
    defs: dict[str, str] = {}
    fills = {id(t): _fill(t, i, colorway, defs) for i, t in enumerate(bars)}
    body, domains = [], {}
    for ref in dict.fromkeys((t.xaxis or "x", t.yaxis or "y") for t in bars):
        group = [t for t in bars if (t.xaxis or "x", t.yaxis or "y") == ref]
        xa, ya = _axis(lay, ref[0], "x"), _axis(lay, ref[1], "y")
        dx, dy = xa.domain or (0, 1), ya.domain or (0, 1)
        x0, x1 = left + dx[0] * pw, left + dx[1] * pw
        y0, y1 = top + (1 - dy[1]) * ph, top + (1 - dy[0]) * ph
        domains[ref[0]], domains[ref[1]] = (x0, x1), (y0, y1)
        cats = list(dict.fromkeys(str(c) for t in group for c in (t.x if t.x is not None else ())))
        values = [float(v) for t in group for v in (t.y if t.y is not None else ()) if v is not None]
        if ya.range is not None:
            lo, hi = float(ya.range[0]), float(ya.range[1])
        else:
            lo, hi = min([0.0, *values]), max([0.0, *values])
            hi = hi + 0.05 * (hi - lo) if hi > lo else 1.0

        def py(v, lo=lo, hi=hi, y0=y0, y1=y1):
            return y1 - (v - lo) / ((hi - lo) or 1.0) * (y1 - y0)

        body.append(f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" fill="#fff"/>')
        for v in linear_ticks(lo, hi, 5):
            body.append(f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="{_GRID}"/>'
                        f'<text x="{x0 - 6:.1f}" y="{py(v) + 4:.1f}" font-size="11" text-anchor="end" '
                        f'fill="{_INK}">{_label(v)}</text>')
        slot = (x1 - x0) / max(1, len(cats))
        gap = lay.bargap if lay.bargap is not None else 0.2
        bar_w = slot * (1 - gap) / (len(group) if lay.barmode == "group" else 1)
        for c, cat in enumerate(cats):
            cx = x0 + (c + 0.5) * slot
            body.append(f'<text x="{cx:.1f}" y="{y1 + 16:.1f}" font-size="11" text-anchor="middle" fill="{_INK}">'
                        f'{html.escape(cat)}</text>')
        for k, t in enumerate(group):
            shift = (k - (len(group) - 1) / 2) * bar_w if lay.barmode == "group" else 0.0
            for cat, v in zip(t.x if t.x is not None else (), t.y if t.y is not None else ()):
                if v is None or not math.isfinite(float(v)):
                    continue
                bx = x0 + (cats.index(str(cat)) + 0.5) * slot + shift - bar_w / 2
                ya_, yb = sorted((py(float(v)), py(max(lo, 0.0))))
                body.append(f'<rect x="{bx:.1f}" y="{ya_:.1f}" width="{bar_w:.1f}" height="{yb - ya_:.1f}" '
                            f'fill="{fills[id(t)]}"><title>{html.escape(t.name or "")} {html.escape(str(cat))}: '
                            f'{float(v):.3g}</title></rect>')
        if ya.title.text:
            body.append(f'<text transform="translate({x0 - 44:.1f},{(y0 + y1) / 2:.1f}) rotate(-90)" font-size="12" '
                        f'text-anchor="middle" fill="{_INK}">{html.escape(ya.title.text)}</text>')
    for a in lay.annotations or ():
        if not a.text:
            continue
        if a.xref == "paper" and a.yref == "paper":
            x, y = left + a.x * pw, top + (1 - a.y) * ph - 6
        else:  # 'x2 domain': relative to that subplot
            (xl, xr), (yt, yb) = domains.get(a.xref.split()[0], (left, left + pw)), \
                domains.get(a.yref.split()[0], (top, top + ph))
            x, y = xl + a.x * (xr - xl), yb - a.y * (yb - yt)
        size = a.font.size if a.font and a.font.size else 12
        colour = a.font.color if a.font and a.font.color else _INK
        body.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="middle" fill="{colour}">'
                    f'{html.escape(a.text)}</text>')
    lx = left
    for t in legend:
        ly = height - 14
        body.append(f'<rect x="{lx}" y="{ly - 10}" width="20" height="12" fill="{fills[id(t)]}"/>'
                    f'<text x="{lx + 26}" y="{ly}" font-size="12" fill="{_INK}">{html.escape(t.name)}</text>')
        lx += 40 + 7 * len(t.name)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" '
            f'data-bars="{len(bars)}" style="{_FONT}; max-width: {width}px"><defs>{"".join(defs.values())}</defs>'
            f'<text x="4" y="22" font-size="15" fill="{_INK}">{html.escape(lay.title.text or "")}</text>'
            + "".join(body) + "</svg>")
