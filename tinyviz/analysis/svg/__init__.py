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

No Streamlit and no I/O: pure figure -> string. One module per kind (lines, heatmaps, bars) and what they
share (axes).
"""

from __future__ import annotations

import plotly.graph_objects as go

from tinyviz.analysis.svg.axes import linear_ticks, log_ticks
from tinyviz.analysis.svg.bars import bars_svg
from tinyviz.analysis.svg.heatmaps import heatmaps_svg, png_uri
from tinyviz.analysis.svg.lines import lines_svg

__all__ = ["figure_svg", "linear_ticks", "log_ticks", "png_uri"]


def figure_svg(fig: go.Figure, width: int = 900) -> str:
    """The figure as one SVG ``width`` wide (it scales to its container) and as high as its layout says."""
    for t in fig.data:
        if t.type not in ("scatter", "heatmap", "bar"):
            raise ValueError(f"a {t.type} trace cannot be drawn as a light SVG; only line charts, heatmaps and "
                             "bar charts can.")
    if any(t.type == "heatmap" for t in fig.data):
        return heatmaps_svg(fig, width)
    if any(t.type == "bar" for t in fig.data):
        return bars_svg(fig, width)
    return lines_svg(fig, width)
