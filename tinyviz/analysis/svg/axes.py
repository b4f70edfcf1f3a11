"""What every light SVG shares: the font and ink, tick positions and labels, and reading a layout's margins and axes."""

from __future__ import annotations

import math

FONT = "font-family: 'Open Sans', verdana, arial, sans-serif"
INK, GRID = "#2a3f5f", "#ebf0f8"


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


def tick_label(v: float) -> str:
    """A tick label: 3 significant digits, tens of thousands as k (25000 -> 25k, as Plotly writes steps)."""
    if abs(v) >= 10000:
        return f"{v / 1000:.3g}k"
    if v == int(v):
        return str(int(v))
    return f"{v:.3g}"



def margins(lay) -> tuple[int, int, int, int]:
    """The layout's left, right, top and bottom margins (Plotly's defaults where unset)."""
    m = lay.margin
    return tuple(int(v) if v is not None else d for v, d in ((m.l, 80), (m.r, 80), (m.t, 100), (m.b, 80)))


def axis(lay, ref: str, key: str):
    """The layout's axis for a trace's axis reference ('x', 'y2' -> layout.xaxis, layout.yaxis2)."""
    return lay[f"{key}axis{ref[1:]}"]

