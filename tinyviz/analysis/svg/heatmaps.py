"""Heatmaps as one SVG, one or a grid of them in subplots (the gradient-norm chart, the head grid): each a PNG
image in its colour scale, subplot titles, ticks and colour bar when the figure shows them, and a click
target per subplot that carries the figure's invisible click overlay."""

from __future__ import annotations

import base64
import html
import json
import struct
import zlib

import numpy as np
import plotly.colors
import plotly.graph_objects as go

from tinyviz.analysis.svg.axes import FONT, INK, axis, linear_ticks, margins, tick_label


def png_uri(rgba: np.ndarray) -> str:
    """An [h, w, 4] uint8 image as a PNG data URI (zlib only; no imaging library)."""
    h, w = rgba.shape[:2]
    rows = np.concatenate([np.zeros((h, 1), np.uint8), np.ascontiguousarray(rgba, np.uint8).reshape(h, 4 * w)], 1)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))
    return "data:image/png;base64," + base64.b64encode(png).decode()


def lut(scale) -> np.ndarray:
    """A Plotly colour scale (name or [(position, colour), ...]) as 256 RGB rows."""
    scale = plotly.colors.get_colorscale(scale) if isinstance(scale, str) else [list(p) for p in scale]
    sampled = plotly.colors.sample_colorscale(scale, list(np.linspace(0, 1, 256)), colortype="tuple")
    return np.clip(np.round(np.array(sampled, dtype=float) * (255 if max(map(max, sampled)) <= 1 else 1)), 0,
                   255).astype(np.uint8)


def coloured(z: np.ndarray, lut: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """z mapped through the scale between lo and hi, missing values transparent: [h, w, 4] uint8."""
    finite = np.isfinite(z)
    idx = np.clip(np.round((np.where(finite, z, lo) - lo) / ((hi - lo) or 1.0) * 255), 0, 255).astype(int)
    out = np.zeros((*z.shape, 4), np.uint8)
    out[..., :3] = lut[idx]
    out[..., 3] = np.where(finite, 255, 0)
    return out



def heatmaps_svg(fig: go.Figure, width: int) -> str:
    """Each heatmap trace as an image in its subplot's domain (square cells where the figure anchors
    y to x), with subplot titles (annotations), ticks and colour bar when the figure shows them, and
    a click target per subplot that carries a click overlay."""
    lay = fig.layout
    height = int(lay.height or 450)
    left, right, top, bottom = margins(lay)
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    bar = next((t for t in heatmaps if t.showscale is not False and not t.coloraxis), None)
    if bar is not None:
        right = max(right, 90)
    pw, ph = width - left - right, height - top - bottom
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" '
           f'data-cells="{len(heatmaps)}" style="{FONT}; max-width: {width}px">',
           f'<text x="4" y="22" font-size="15" fill="{INK}">{html.escape(lay.title.text or "")}</text>']
    boxes = {}
    for t in heatmaps:
        xa, ya = axis(lay, t.xaxis or "x", "x"), axis(lay, t.yaxis or "y", "y")
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
                       f'text-anchor="middle" fill="{INK}">{html.escape(a.text)}</text>')
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
        img = coloured(z if reversed_y else z[::-1], lut(scale), lo, hi)
        out.append(f'<image href="{png_uri(img)}" x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" '
                   f'height="{y1 - y0:.1f}" preserveAspectRatio="none" style="image-rendering: pixelated"/>')
    if ya.showticklabels is not False and t.y is not None:  # a category per row
        rows = list(t.y)
        for i, label in enumerate(rows):
            row = i if reversed_y else len(rows) - 1 - i
            y = y0 + (row + 0.5) * (y1 - y0) / len(rows)
            out.append(f'<text x="{x0 - 6:.1f}" y="{y + 4:.1f}" font-size="11" text-anchor="end" fill="{INK}">'
                       f'{html.escape(str(label))}</text>')
    if xa.showticklabels is not False and t.x is not None and len(t.x):
        xs = np.asarray(t.x, dtype=float)
        half = (xs[-1] - xs[0]) / (2 * (len(xs) - 1)) if len(xs) > 1 else 0.5
        a, b = xs[0] - half, xs[-1] + half
        for v in linear_ticks(a, b):
            x = x0 + (v - a) / (b - a) * (x1 - x0)
            out.append(f'<text x="{x:.1f}" y="{y1 + 16:.1f}" font-size="11" text-anchor="middle" fill="{INK}">'
                       f'{tick_label(v)}</text>')
    for text, attrs in ((xa.title.text, f'x="{(x0 + x1) / 2:.1f}" y="{y1 + 34:.1f}"'),
                        (ya.title.text, f'transform="translate(14,{(y0 + y1) / 2:.1f}) rotate(-90)"')):
        if text:
            out.append(f'<text {attrs} font-size="12" text-anchor="middle" fill="{INK}">{html.escape(text)}</text>')
    return out


def _colour_bar(t, x: float, top: float, ph: float) -> list[str]:
    lo, hi, scale = _limits(t, go.Layout())
    ramp = coloured(np.linspace(hi, lo, 64)[:, None], lut(scale), lo, hi)
    out = [f'<image href="{png_uri(ramp)}" x="{x:.1f}" y="{top:.1f}" width="14" height="{ph:.1f}" '
           f'preserveAspectRatio="none"/>']
    for v in linear_ticks(lo, hi, 5):
        y = top + (hi - v) / ((hi - lo) or 1.0) * ph
        out.append(f'<text x="{x + 18:.1f}" y="{y + 4:.1f}" font-size="11" fill="{INK}">{tick_label(v)}</text>')
    title = t.colorbar.title.text if t.colorbar and t.colorbar.title else None
    if title:
        out.append(f'<text x="{x:.1f}" y="{top - 8:.1f}" font-size="11" fill="{INK}">{html.escape(title)}</text>')
    return out

