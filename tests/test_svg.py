"""The live panel's light SVG: the same figure as the Plotly chart, drawn truthfully."""

import base64
import io
import json
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
    with pytest.raises(ValueError, match="only line charts, heatmaps and bar charts"):
        svg.figure_svg(go.Figure(go.Pie(values=[1, 2])))


def test_a_run_logged_from_step_1_gets_an_axis_from_0():
    fig = plots.loss_curves({"r": _metrics(300)[1:]})
    texts = [t.text for t in _parse(svg.figure_svg(fig)).iter(f"{NS}text")]
    assert "0" in texts and "250" in texts


def _image(el: ET.Element) -> np.ndarray:
    """The pixels of an <image> whose href is a PNG data URI, decoded by Pillow (the oracle of our encoder)."""
    from PIL import Image

    head, data = el.get("href").split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGBA"))


def _box(el: ET.Element) -> tuple[float, ...]:
    return tuple(float(el.get(k)) for k in ("x", "y", "width", "height"))


def test_png_encoder_round_trips_through_pillow():
    rgba = np.random.default_rng(0).integers(0, 256, size=(5, 7, 4), dtype=np.uint8)
    el = ET.Element("image", href=svg.png_uri(rgba))
    assert np.array_equal(_image(el), rgba)


def test_gradient_heatmap_draws_each_block_as_a_row_in_its_colour_scale():
    steps = range(1, 201)
    metrics = [{"step": s, "grad_norm_layers": [1.0 + s / 200, 0.5, 3.0 if s == 100 else 1.0]} for s in steps]
    fig = plots.grad_norm_heatmap(metrics, "r")
    root = _parse(svg.figure_svg(fig, 800))
    images = list(root.iter(f"{NS}image"))
    assert len(images) == 2  # the heatmap and the colour bar
    cells = _image(images[0])
    assert cells.shape == (3, 200, 4) and (cells[..., 3] == 255).all()
    lut = svg.heatmaps.lut("Viridis")
    # block 0 (top row, the axis is reversed as in Plotly) rises from dark to light; the spike at step 100
    # in block 2 is the brightest cell, the scale's top colour; the smallest value its bottom colour
    assert np.array_equal(cells[2, 99, :3], lut[-1]) and np.array_equal(cells[1, 0, :3], lut[0])
    top_row = cells[0, :, :3].astype(int).sum(axis=1)
    assert top_row[-1] > top_row[0]
    texts = {t.text: t for t in root.iter(f"{NS}text")}
    assert float(texts["block 0"].get("y")) < float(texts["block 1"].get("y")) < float(texts["block 2"].get("y"))
    assert {"grad norm", "step", "layer", fig.layout.title.text} <= set(texts)
    assert list(root.iter(f"{NS}rect")) == []  # no click targets: the figure has no click overlay


def test_head_grid_draws_every_head_square_with_its_title_and_a_click_target():
    patterns = np.zeros((2, 3, 6, 6), dtype=np.float32)
    patterns[1, 2] = np.eye(6)  # L1H2 attends to itself
    labels = [["prev", "mixed", "sink"], ["mixed", "induction", "self"]]
    fig = plots.head_grid(patterns, "r", 40, labels)
    root = _parse(svg.figure_svg(fig, 900))
    assert root.get("data-cells") == "6"
    images = list(root.iter(f"{NS}image"))
    targets = [r for r in root.iter(f"{NS}rect") if r.get("data-click")]
    assert len(images) == len(targets) == 6
    for image, target in zip(images, targets):
        x, y, w, h = _box(image)
        assert w == h > 50 and _box(target) == (x, y, w, h)  # square cells; the target covers its head
    assert [json.loads(t.get("data-click")) for t in targets] == [[l, h] for l in range(2) for h in range(3)]
    # L1H2's diagonal is the scale's darkest blue (1 = cmax), the rest its lightest (0 = cmin)
    cell = _image(images[5])
    blues = svg.heatmaps.lut("Blues")
    assert np.array_equal(cell[3, 3, :3], blues[-1]) and np.array_equal(cell[3, 2, :3], blues[0])
    # rows left to right, then down; each title sits above its own cell
    titles = [t for t in root.iter(f"{NS}text") if t.text and t.text.startswith("L")]
    assert [t.text.split()[0] for t in titles] == [f"L{l}H{h}" for l in range(2) for h in range(3)]
    for t, image in zip(titles, images):
        x, y, w, _ = _box(image)
        assert x < float(t.get("x")) < x + w and float(t.get("y")) < y


def test_a_gradient_heatmap_with_no_records_yet_is_an_empty_frame():
    root = _parse(svg.figure_svg(plots.grad_norm_heatmap([{"step": 1, "loss": 3.0}], "r")))
    # only the colour bar: no 0 x 0 cell image (a broken-image icon in the browser)
    assert [image.get("width") for image in root.iter(f"{NS}image")] == ["14"]


def test_missing_values_are_transparent():
    fig = go.Figure(go.Heatmap(z=[[1.0, float("nan")], [2.0, 3.0]]))
    cells = _image(next(_parse(svg.figure_svg(fig)).iter(f"{NS}image")))
    assert cells[1, 1, 3] == 0 and (cells[..., 3].sum() == 3 * 255)  # the y axis runs up: row 0 at the bottom


def test_activation_bars_keep_each_series_colour_pattern_and_height():
    stats = [{"layer": i, "resid_std": 1.0 + i, "attn_out_std": 0.5, "mlp_out_std": 0.7, "mlp_dead_frac": 0.1 * i}
             for i in range(3)]
    fig = plots.activation_stats_bars(stats, "r", 100)
    root = _parse(svg.figure_svg(fig, 1000))
    bars = [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    assert len(bars) == 4 * 3  # four series over three blocks
    by_name = {}
    for r in bars:
        by_name.setdefault(r.find(f"{NS}title").text.split(" block")[0], []).append(r)
    assert [float(r.get("height")) for r in by_name["dead fraction"]][0] == 0.0
    resid = by_name["residual"]
    heights = [float(r.get("height")) for r in resid]
    assert heights[0] < heights[1] < heights[2] and math.isclose(heights[2] / heights[0], 3.0, rel_tol=0.02)
    assert resid[0].get("fill") == plots.PALETTE[0]
    # the patterned series fill through a hatch tile of their own colour: colour and pattern, not colour alone
    patterns = {p.get("id"): p for p in root.iter(f"{NS}pattern")}
    for name, colour in (("attention out", plots.PALETTE[1]), ("MLP out", plots.PALETTE[2])):
        ref = by_name[name][0].get("fill")
        assert ref.startswith("url(#")
        assert patterns[ref[5:-1]].find(f"{NS}rect").get("fill") == colour
    # grouped: the three bars of block 0 sit side by side, left to right in trace order
    xs = [float(by_name[n][0].get("x")) for n in ("residual", "attention out", "MLP out")]
    assert xs == sorted(xs)
    texts = {t.text for t in root.iter(f"{NS}text")}
    assert {"output std", "MLP units never active", "block 0", "residual", "dead fraction", "std"} <= texts


def test_activation_bars_say_none_when_no_mlp_unit_is_dead():
    stats = [{"layer": i, "resid_std": 1.0, "attn_out_std": 0.5, "mlp_out_std": 0.7, "mlp_dead_frac": 0.0}
             for i in range(2)]
    texts = {t.text for t in _parse(svg.figure_svg(plots.activation_stats_bars(stats, "r"), 800)).iter(f"{NS}text")}
    assert "none: every MLP unit fires on this prompt" in texts
