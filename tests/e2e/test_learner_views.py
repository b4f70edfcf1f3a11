"""Issue 11's last learner items in a real browser: the Train page's head grid opens a head on Heads,
the head view (one token in every head), and ablation runs in the sidebar's run picker."""

import time

import pytest

from .test_browser import CENTRE, by_key, chart_title, open_page, settle, shot

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

def wait_for(fn, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not (value := fn()):
        assert time.monotonic() < deadline, what
        time.sleep(0.25)
    return value


def click_head(page, key: str, layer: int, head: int) -> None:
    plot = page.locator(f"{by_key(key)} .js-plotly-plot").first
    plot.scroll_into_view_if_needed()
    x, y = wait_for(lambda: plot.evaluate(CENTRE, [layer, head]), f"the head grid {key} was not drawn")
    page.mouse.click(x, y)


def test_a_click_in_the_train_pages_head_grid_opens_that_head_on_heads(page, app_url):
    open_page(page, app_url, "train?run=demo", "Train")
    grid = wait_for(lambda: chart_title(page, "train_heads"), "the Train page shows no head grid")
    step = grid.rsplit("step ", 1)[1].split()[0]
    page.locator(by_key("train_heads")).scroll_into_view_if_needed()
    shot(page, "train-heads-grid")
    click_head(page, "train_heads", 1, 0)
    page.get_by_role("heading", name="Heads", level=1).wait_for(timeout=60_000)
    title = wait_for(lambda: page.locator(by_key("heads_big")).count() and chart_title(page, "heads_big"),
                     "Heads drew no head heatmap")
    settle(page)
    title = chart_title(page, "heads_big")
    assert "layer 1, head 0 " in title + " " and f"step {step}" in title, title
    assert "/heads" in page.url and "run=demo" in page.url
    shot(page, "train-click-opens-heads")


def test_clicking_a_token_shows_where_it_attends_in_every_head(page, app_url):
    open_page(page, app_url, "heads?run=demo", "Heads")
    view = by_key("heads_token_view")
    before = wait_for(lambda: chart_title(page, "heads_token_view"), "Heads shows no head view")
    n = page.locator(f"{by_key('heads_query_box')} [role=radio]").count()
    assert f"(position {n - 1})" in before  # the last token of the prompt, to begin with
    rows = "el => el.data.filter(t => t.type === 'heatmap').map(t => t.z.map(r => r.slice()))"
    z_before = page.locator(f"{view} .js-plotly-plot").first.evaluate(rows)
    pill = page.locator(f"{by_key('heads_query_box')} [role=radio]").nth(20)
    pill.scroll_into_view_if_needed()
    t0 = time.monotonic()
    pill.click()
    after = wait_for(lambda: "(position 20)" in (t := chart_title(page, "heads_token_view")) and t,
                     "the head view did not move to the clicked token")
    seconds = time.monotonic() - t0
    settle(page)
    print(f"click a token -> head view redrawn: {seconds:.2f} s")
    z_after = page.locator(f"{view} .js-plotly-plot").first.evaluate(rows)
    assert len(z_after) == len(z_before) == 3  # the demo's three layers, one panel each
    assert all(v is None for layer in z_after for row in layer for v in row[21:])  # later keys masked (grey)
    assert z_after != z_before
    assert "step 3000" in after and "demo" in after
    page.locator(view).scroll_into_view_if_needed()
    shot(page, "heads-token-view")

    # a click on a cell of the chart makes its column's token the query (layer 0, head 0, key 10)
    plot = page.locator(f"{view} .js-plotly-plot").first
    cell = """(el, [key, head]) => {
        const full = el._fullLayout || {}, xa = full.xaxis, ya = full.yaxis;
        if (!xa || !ya) return null;
        const box = el.getBoundingClientRect();
        return [box.x + xa._offset + xa.l2p(key), box.y + ya._offset + ya.l2p(head)];
    }"""
    x, y = wait_for(lambda: plot.evaluate(cell, [10, 0]), "the head view has no axes")
    page.mouse.click(x, y)
    wait_for(lambda: "(position 10)" in chart_title(page, "heads_token_view"),
             "a click on the head view did not move the query to that column")
    settle(page)
    picked = page.locator(f"{by_key('heads_query_box')} [role=radio][aria-checked=true]")
    assert picked.count() == 1 and picked.first.evaluate("el => [...el.parentNode.children].indexOf(el)") == 10
    page.locator(by_key("heads_query_box")).scroll_into_view_if_needed()
    shot(page, "heads-token-view-chart-click")


@pytest.fixture(scope="module")
def ablation_runs(app_runs):
    """Two output folders (an ablation's, a sweep's) as `ablate` and `sweep` leave them, each run a copy of the
    demo, one folder name (full-seed0) in both."""
    import shutil

    for rel in ("ablate-demo/full-seed0", "ablate-demo/nores-seed0", "sweep-demo/full-seed0"):
        if not (app_runs / rel).exists():
            shutil.copytree(app_runs / "demo", app_runs / rel, ignore=shutil.ignore_patterns("history"))
    (app_runs / "ablate-demo" / "summary.md").write_text("# an ablation's summary\n")
    return ["ablate-demo/full-seed0", "ablate-demo/nores-seed0", "sweep-demo/full-seed0"]


def test_ablation_and_sweep_runs_are_in_the_run_picker_grouped_and_open_by_address(page, app_url, ablation_runs):
    open_page(page, app_url, "heads?run=sweep-demo/full-seed0", "Heads")
    assert page.get_by_text("Run sweep-demo / full-seed0", exact=False).first.is_visible()
    assert "full-seed0" in chart_title(page, "heads_big")
    assert "run=sweep-demo%2Ffull-seed0" in page.url or "run=sweep-demo/full-seed0" in page.url
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.locator('[data-testid="stSelectbox"]').first.click()
    options = page.locator('[role="option"]')
    options.first.wait_for()
    labels = [options.nth(i).inner_text() for i in range(options.count())]
    assert labels[0] == "demo"
    assert labels.index("ablate-demo / full-seed0") < labels.index("ablate-demo / nores-seed0") \
        < labels.index("sweep-demo / full-seed0")
    shot(page, "run-picker-groups")
    options.nth(labels.index("ablate-demo / nores-seed0")).click()
    # generous: on a busy machine the browser is slow to answer while it draws the page's charts
    wait_for(lambda: "nores-seed0" in chart_title(page, "heads_big"), "picking a run of the ablation did not open it",
             180)
    settle(page)
    main = page.locator('[data-testid="stMain"]')
    assert "Run ablate-demo / nores-seed0" in main.inner_text()
    page.get_by_role("link", name="Predictions").click()  # page links carry ?run=GROUP/RUN
    page.get_by_role("heading", name="Predictions", level=1).wait_for()
    settle(page)
    assert "Run ablate-demo / nores-seed0" in main.inner_text()
    assert "run=ablate-demo%2Fnores-seed0" in page.url or "run=ablate-demo/nores-seed0" in page.url
    assert page.locator('[data-testid="stException"]').count() == 0
