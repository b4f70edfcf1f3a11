"""Bar charts as one SVG: grouped bars per subplot in each trace's colour and hatch, category labels, ticks,
subplot titles and notes, legend."""

from __future__ import annotations

import html
import math
import zlib

import plotly.graph_objects as go

from tinyviz.analysis.svg.axes import FONT, GRID, INK, axis, linear_ticks, margins, tick_label

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


def bars_svg(fig: go.Figure, width: int) -> str:
    """Grouped bars per subplot (a domain of the figure's x axis each), with the figure's titles and legend."""
    lay = fig.layout
    height = int(lay.height or 450)
    colorway = list(lay.colorway or ("#0072B2",))
    bars = [t for t in fig.data if t.type == "bar"]
    legend = [t for t in bars if t.showlegend is not False and t.name] if len(bars) > 1 else []
    left, right, top, bottom = margins(lay)
    bottom += 26 if legend else 0
    pw, ph = width - left - right, height - top - bottom
    defs: dict[str, str] = {}
    fills = {id(t): _fill(t, i, colorway, defs) for i, t in enumerate(bars)}
    body, domains = [], {}
    for ref in dict.fromkeys((t.xaxis or "x", t.yaxis or "y") for t in bars):
        group = [t for t in bars if (t.xaxis or "x", t.yaxis or "y") == ref]
        xa, ya = axis(lay, ref[0], "x"), axis(lay, ref[1], "y")
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
            body.append(f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="{GRID}"/>'
                        f'<text x="{x0 - 6:.1f}" y="{py(v) + 4:.1f}" font-size="11" text-anchor="end" '
                        f'fill="{INK}">{tick_label(v)}</text>')
        slot = (x1 - x0) / max(1, len(cats))
        gap = lay.bargap if lay.bargap is not None else 0.2
        bar_w = slot * (1 - gap) / (len(group) if lay.barmode == "group" else 1)
        for c, cat in enumerate(cats):
            cx = x0 + (c + 0.5) * slot
            body.append(f'<text x="{cx:.1f}" y="{y1 + 16:.1f}" font-size="11" text-anchor="middle" fill="{INK}">'
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
                        f'text-anchor="middle" fill="{INK}">{html.escape(ya.title.text)}</text>')
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
        colour = a.font.color if a.font and a.font.color else INK
        body.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="middle" fill="{colour}">'
                    f'{html.escape(a.text)}</text>')
    lx = left
    for t in legend:
        ly = height - 14
        body.append(f'<rect x="{lx}" y="{ly - 10}" width="20" height="12" fill="{fills[id(t)]}"/>'
                    f'<text x="{lx + 26}" y="{ly}" font-size="12" fill="{INK}">{html.escape(t.name)}</text>')
        lx += 40 + 7 * len(t.name)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" '
            f'data-bars="{len(bars)}" style="{FONT}; max-width: {width}px"><defs>{"".join(defs.values())}</defs>'
            f'<text x="4" y="22" font-size="15" fill="{INK}">{html.escape(lay.title.text or "")}</text>'
            + "".join(body) + "</svg>")

