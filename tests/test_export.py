"""Export: CSV of what a figure draws, offline HTML, PNG/SVG through kaleido, the write-up bundle."""

import io
import zipfile

import numpy as np
import pytest

from tinyviz.analysis import export, plots


@pytest.fixture
def grid():
    p = np.tril(np.ones((1, 2, 3, 3), np.float32))
    return plots.head_grid(p / p.sum(-1, keepdims=True), "demo", 10)


@pytest.fixture
def heatmap():
    p = np.tril(np.ones((3, 3), np.float32))
    return plots.head_heatmap(p / p.sum(-1, keepdims=True), ["a", "b", "a"], "demo", 0, 1, 10)


def test_figure_frame_has_one_row_per_cell_and_skips_click_overlays(grid, heatmap):
    df = export.figure_frame(grid)
    assert len(df) == 2 * 3 * 3 and set(df["trace"]) == {"heatmap 0", "heatmap 2"}
    big = export.figure_frame(heatmap)
    assert list(big.columns[:4]) == ["trace", "x", "y", "z"]
    assert big.loc[(big.x == 0) & (big.y == 2), "x_label"].item() == "a"
    assert big["z"].sum() == pytest.approx(3.0)
    csv = export.to_csv(big).decode()
    assert csv.splitlines()[0].startswith("trace,x,y,z")


def test_figure_frame_of_lines_and_bars():
    metrics = [{"step": s, "loss": 1.0 / s} for s in range(1, 4)]
    df = export.figure_frame(plots.loss_curves({"r": metrics}))
    assert list(df["x"]) == [1, 2, 3] and list(df["trace"]) == ["r train"] * 3


def test_html_is_self_contained(heatmap):
    page = export.to_html(heatmap).decode()
    assert "<html" in page and "Plotly.newPlot" in page
    assert 'src="https://cdn' not in page and len(page) > 1_000_000  # plotly.js is inside


def test_slug():
    assert export.slug("demo · layer 1 head 2 · step 300") == "demo-layer-1-head-2-step-300"
    assert export.slug("../../etc") == "etc"


def test_without_a_browser_images_say_so_and_the_rest_still_works(heatmap, monkeypatch):
    monkeypatch.setattr(export, "find_browser", lambda: None)
    assert not export.image_export_available()
    with pytest.raises(export.ExportError, match="Chrome or Chromium"):
        export.to_image(heatmap, "png")
    data, notes = export.bundle([("big", heatmap, None)], config={"model": {}})
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    # no PNG/SVG, but the HTML (which loads the bundle's one shared plotly.min.js), the CSV and the config
    assert sorted(names) == ["big.csv", "big.html", "config.json", "plotly.min.js"]
    assert notes == [export.NO_BROWSER]


def test_unknown_image_format_is_a_sentence(heatmap):
    with pytest.raises(ValueError, match="use one of: png, svg"):
        export.to_image(heatmap, "gif")


needs_browser = pytest.mark.skipif(not export.image_export_available(),
                                   reason="no Chrome/Chromium for kaleido on this machine")


@pytest.mark.slow
@needs_browser
def test_png_and_svg_through_kaleido(heatmap):
    png = export.to_image(heatmap, "png")
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    svg = export.to_image(heatmap, "svg")
    assert svg.lstrip().startswith(b"<svg")


@pytest.mark.slow
@needs_browser
def test_bundle_with_images(heatmap, grid):
    data, notes = export.bundle([("big", heatmap, None), ("grid", grid, None)], config={"seed": 0})
    names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    assert {"big.png", "big.svg", "grid.csv", "grid.html", "config.json"} <= names and not notes
