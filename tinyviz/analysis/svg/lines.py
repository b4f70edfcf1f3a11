"""Line charts (loss, lr, tokens/s) as one SVG: lines in each trace's colour, dash and opacity, the val
markers with a tooltip each, the faint raw curve, min-max bands, linear or log y, grid, legend."""

from __future__ import annotations

import html
import math

import numpy as np
import plotly.graph_objects as go

from tinyviz.analysis.svg.axes import FONT, GRID, INK, linear_ticks, log_ticks, tick_label

# Plotly's dash names as SVG dash arrays, scaled by the line width as Plotly does
_DASH = {"solid": None, "dot": (1, 2), "dash": (3, 2), "longdash": (5, 2), "dashdot": (3, 2, 1, 2),
         "longdashdot": (5, 2, 1, 2)}


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



def lines_svg(fig: go.Figure, width: int) -> str:
    """The figure's scatter traces; the root carries ``data-points``: how many points the first trace holds."""
    traces = list(fig.data)
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
           f'role="img" data-points="{first}" style="{FONT}; max-width: {width}px">',
           f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff"/>']
    title = lay.title.text or ""
    out.append(f'<text x="4" y="22" font-size="15" fill="{INK}">{html.escape(title)}</text>')
    # log labels at least 16 px apart: the factor between two ticks 16 px apart on this axis
    min_ratio = (y_hi / y_lo) ** (16 / ph) if log_y else 1.0
    for v in (log_ticks(y_lo, y_hi, min_ratio=min_ratio) if log_y else linear_ticks(y_lo, y_hi)):
        y = float(py(v))
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>'
                   f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="{INK}">'
                   f'{tick_label(v)}</text>')
    for v in linear_ticks(x_lo, x_hi):
        x = px(v)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" stroke="{GRID}"/>'
                   f'<text x="{x:.1f}" y="{top + ph + 16}" font-size="11" text-anchor="middle" fill="{INK}">'
                   f'{tick_label(v)}</text>')
    if lay.xaxis.title.text:
        out.append(f'<text x="{left + pw / 2:.1f}" y="{top + ph + 34}" font-size="12" text-anchor="middle" '
                   f'fill="{INK}">{html.escape(lay.xaxis.title.text)}</text>')
    if lay.yaxis.title.text:
        out.append(f'<text transform="translate(14,{top + ph / 2:.1f}) rotate(-90)" font-size="12" '
                   f'text-anchor="middle" fill="{INK}">{html.escape(lay.yaxis.title.text)}</text>')

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
        out.append(f'<text x="{lx + 34}" y="{ly}" font-size="12" fill="{INK}">{label}</text>')
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

