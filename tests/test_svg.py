"""The live panel's light SVG: the same figure as the Plotly chart, drawn truthfully."""

import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import plotly.graph_objects as go
import pytest

from tinyviz.analysis import plots, svg

NS = "{http://www.w3.org/2000/svg}"


def _metrics(n: int, val_every: int = 50) -> list[dict]:
    return [{"step": s, "loss": 4.0 * math.exp(-s / 80) + 1.0 + 0.05 * math.sin(s),
             "val_loss": 4.0 * math.exp(-s / 80) + 1.2 if s % val_every == 0 else None,
             "lr": 1e-3 * min(1, s / 20), "tokens_per_s": 1000.0 + s} for s in range(n)]


def _parse(text: str) -> ET.Element:
    return ET.fromstring(text)  # well-formed XML, or this raises


def _paths(root: ET.Element) -> list[ET.Element]:
    return [p for p in root.iter(f"{NS}path") if p.get("fill") == "none"]


def test_loss_chart_draws_each_line_in_its_figure_colour_dash_and_opacity():
    fig = plots.loss_curves({"run-a": _metrics(300)}, log_y=True, smoothing=0.6)
    root = _parse(svg.figure_svg(fig))
    lines = _paths(root)
    # raw (faint), smoothed train and val: one path each (no gaps), in the trace order and colours
    assert len(lines) == 3
    for path, trace in zip(lines, fig.data):
        assert path.get("stroke") == trace.line.color
        assert path.get("stroke-width") == f"{trace.line.width:g}"
    assert lines[0].get("opacity") == "0.25"  # the raw curve stays faint behind the smoothed one
    assert lines[1].get("opacity") is None
    # the val trace has one marker per evaluation, each with a tooltip naming the step and value
    markers = [p for p in root.iter(f"{NS}path") if p.find(f"{NS}title") is not None]
    assert len(markers) == len(fig.data[2].x) == 6
    assert markers[1].find(f"{NS}title").text == "run-a val step 50: " + f"{fig.data[2].y[1]:.3f}"
    assert root.get("data-points") == str(len(fig.data[0].x))


def test_two_runs_never_share_colour_and_dash_and_the_legend_names_them():
    fig = plots.loss_curves({"a": _metrics(100), "b": _metrics(100)}, smoothing=0.0)
    root = _parse(svg.figure_svg(fig))
    styles = [(p.get("stroke"), p.get("stroke-dasharray") is not None) for p in _paths(root)]
    # a run's train and val lines share its colour and dash (val has markers); the two runs share neither
    assert styles == [("#0072B2", False)] * 2 + [("#D55E00", True)] * 2
    assert [t.line.color for t in fig.data] == [s[0] for s in styles]
    texts = [t.text for t in root.iter(f"{NS}text")]
    assert {"a train", "a val", "b train", "b val"} <= set(texts)
    assert fig.layout.title.text in texts and "step" in texts and "cross-entropy (nats)" in texts


def _y_of_points(path: ET.Element) -> list[float]:
    return [float(v) for v in re.findall(r"[ML][\d.]+,([\d.]+)", path.get("d"))]


def test_higher_values_are_drawn_higher_on_log_and_linear_axes():
    for log_y in (True, False):
        fig = plots.loss_curves({"r": _metrics(200)}, log_y=log_y)
        train = _paths(_parse(svg.figure_svg(fig)))[0]
        ys = _y_of_points(train)
        losses = fig.data[0].y
        # SVG y grows downwards: the falling loss is drawn rising on the page, point for point
        order = np.argsort(losses)
        assert np.all(np.diff(np.asarray(ys)[order]) <= 1e-6)


def test_tick_labels_cover_the_data_and_are_sorted():
    assert svg.log_ticks(0.7, 4.3) == pytest.approx([0.7, 0.8, 0.9, 1.0, 2.0, 3.0, 4.0])
    assert svg.log_ticks(1e-4, 10) == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0])
    # a loss from 4.4 down to 0.55 on a short axis: fewer ticks, none closer than a factor 1.2
    assert svg.log_ticks(0.55, 4.4, min_ratio=1.2) == pytest.approx([0.6, 0.8, 1.0, 2.0, 3.0, 4.0])
    assert svg.linear_ticks(0, 3000) == [0, 500, 1000, 1500, 2000, 2500, 3000]
    assert svg.linear_ticks(0.00091, 0.00102, 5) == pytest.approx([0.00095, 0.001])


def test_missing_values_leave_a_gap_and_non_positive_ones_are_skipped_on_a_log_axis():
    fig = go.Figure(go.Scatter(x=[0, 1, 2, 3, 4], y=[1.0, 2.0, None, 3.0, 0.0], mode="lines", name="x"))
    fig.update_layout(yaxis_type="log")
    lines = _paths(_parse(svg.figure_svg(fig)))
    assert [len(_y_of_points(p)) for p in lines] == [2, 1]


def test_empty_and_single_point_figures_draw_without_error():
    _parse(svg.figure_svg(go.Figure()))
    fig = plots.metric_curve([{"step": 5, "lr": 1e-3}], "lr", "r", "learning rate")
    root = _parse(svg.figure_svg(fig))
    assert root.get("data-points") == "1"


def test_names_and_titles_are_escaped():
    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 2], name="<b>&run</b>"))
    fig.update_layout(title_text="a < b", showlegend=True)
    text = svg.figure_svg(fig)
    assert "<b>" not in text and "&lt;b&gt;&amp;run" in text
    _parse(text)


def test_other_trace_types_are_refused_with_a_sentence():
    with pytest.raises(ValueError, match="only line charts"):
        svg.figure_svg(go.Figure(go.Heatmap(z=[[1, 2]])))


def test_a_run_logged_from_step_1_gets_an_axis_from_0():
    fig = plots.loss_curves({"r": _metrics(300)[1:]})
    texts = [t.text for t in _parse(svg.figure_svg(fig)).iter(f"{NS}text")]
    assert "0" in texts and "250" in texts


def test_markdown_passes_the_svg_through_untouched():
    """The live panel puts the SVG in st.markdown: a CommonMark renderer must leave it as raw HTML, so a
    title with Markdown characters is drawn as written (no emphasis, no math)."""
    markdown_it = pytest.importorskip("markdown_it")
    fig = plots.loss_curves({"r": _metrics(50)}, title_text="*a* _b_ $x$ [c](d)")
    text = svg.figure_svg(fig)
    assert markdown_it.MarkdownIt("commonmark").render(text).rstrip("\n") == text
