"""The app in a real browser: what a person clicks. Screenshots go to test-artifacts/."""

import time
from pathlib import Path

import pytest
from playwright.sync_api import Error as PlaywrightError

from .conftest import ARTIFACTS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


# the centre of subplot (layer, head) of a head grid in page pixels, from Plotly's own axis layout (null while
# it draws)
CENTRE = """(el, [layer, head]) => {
    const heads = (el.layout.annotations || []).filter(a => a.text.startsWith("L0H")).length;
    const n = layer * heads + head + 1, sfx = n === 1 ? "" : String(n);
    const full = el._fullLayout || {}, xa = full["xaxis" + sfx], ya = full["yaxis" + sfx];
    if (!heads || !xa || !ya) return null;
    const box = el.getBoundingClientRect();
    return [box.x + xa._offset + xa._length / 2, box.y + ya._offset + ya._length / 2];
}"""


def open_page(page, app_url: str, path: str = "", title: str = "tinyviz"):
    """Load a page and wait until its script has finished and its charts are drawn."""
    page.goto(f"{app_url}/{path}")
    page.get_by_role("heading", name=title, level=1).wait_for()
    settle(page)


def settle(page, timeout: float = 60):
    """Wait until Streamlit is not running a script and every chart has its SVG."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        charts = page.locator('[data-testid="stPlotlyChart"]').count()
        drawn = page.locator('[data-testid="stPlotlyChart"] .main-svg').count()
        if not running and drawn >= charts:
            time.sleep(0.5)
            return
        time.sleep(0.25)
    raise AssertionError("the page did not settle")


def by_key(key: str) -> str:
    """The element of a Streamlit key, not the faded copy a rerun leaves until it finishes."""
    return f'.st-key-{key}:not([data-stale="true"])'


def button(page, key: str):
    return page.locator(by_key(key)).get_by_role("button").first


def chart_title(page, key: str) -> str:
    return page.locator(f"{by_key(key)} .gtitle").first.text_content()


def points(page, key: str) -> int:
    """How many points the first trace of a chart holds: from Plotly's own data, or from the light SVG a
    live chart is drawn as while its run trains."""
    live = page.locator(f"{by_key(key)} svg[data-points]")
    if live.count():
        try:
            return int(live.first.get_attribute("data-points", timeout=5_000))
        except PlaywrightError:
            return -1
    plot = page.locator(f"{by_key(key)} .js-plotly-plot")
    try:
        return plot.first.evaluate("el => (el.data && el.data[0] && el.data[0].x) ? el.data[0].x.length : -1",
                                   timeout=5_000)
    except PlaywrightError:  # not drawn yet, or replaced by a refresh while being read
        return -1


def shot(page, name: str):
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_home_opens_on_the_demo_run(page, app_url):
    open_page(page, app_url)
    assert page.get_by_text("Current run: demo").is_visible()
    for name in ("Train", "Heads", "Predictions", "Sample", "Compare"):
        assert page.locator('[data-testid="stSidebar"]').get_by_role("link", name=name).count() == 1
    shot(page, "home")


def test_train_live_loss_updates_then_stop(page, app_url):
    open_page(page, app_url, "train", "Train")
    steps = page.locator(f"{by_key('cfg_micro_train_steps')} input")
    steps.fill("20000")  # long enough that it is still training when Stop is pressed, however busy the machine
    steps.press("Enter")
    settle(page)
    button(page, "train_start").click()
    page.get_by_role("heading", name="micro-tinytales-1 · training").wait_for(timeout=120_000)
    deadline = time.monotonic() + 120  # generous: the machine running the tests may be busy
    while points(page, "train_loss") < 1:
        assert time.monotonic() < deadline, "the loss chart has no points"
        time.sleep(0.25)
    # from here the page is kept up to date by the live feed on this machine, not by Streamlit reruns: the
    # loss curve grows while the page sends Streamlit nothing (a rerun is a message on its websocket)
    sent, feed = [], []
    page.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(time.monotonic())))
    page.on("request", lambda r: feed.append(r.url) if "/live/" in r.url else None)
    page.reload()
    page.get_by_role("heading", name="micro-tinytales-1 · training").wait_for(timeout=120_000)
    settle(page)
    quiet_from, drawn = time.monotonic(), points(page, "train_loss")
    deadline = quiet_from + 120
    while points(page, "train_loss") <= drawn:
        assert time.monotonic() < deadline, "the loss chart did not update"
        page.wait_for_timeout(500)  # (Playwright hands over the network events only while it is called)
    page.wait_for_timeout(max(0, int((quiet_from + 12 - time.monotonic()) * 1000)))
    assert feed and all(url.startswith("http://127.0.0.1:") for url in feed), feed
    # the sidebar's slider may take a newly kept step (one rerun of its fragment, at most every 30 s)
    assert len([t for t in sent if t >= quiet_from]) <= 1, "the live page asked Streamlit to rerun"
    # it is one stream per view, opened once, not a request per refresh
    assert all("?stream=" in url for url in feed) and len(feed) == len(set(feed)) <= 2, feed
    # a page that cannot reach the feed (opened from another machine) has its fragment rerun instead
    page.route("**/live/**", lambda route: route.abort())
    page.reload()
    page.get_by_role("heading", name="micro-tinytales-1 · training").wait_for(timeout=120_000)
    settle(page)
    refused_from = time.monotonic()
    drawn, deadline = points(page, "train_loss"), time.monotonic() + 120
    while points(page, "train_loss") <= drawn:
        assert time.monotonic() < deadline, "without the feed the loss chart did not update"
        page.wait_for_timeout(500)
    assert len([t for t in sent if t >= refused_from]) >= 1  # ... by asking Streamlit
    page.unroute("**/live/**")
    assert page.get_by_text("training", exact=False).first.is_visible()
    # while it trains the charts are light SVGs without export buttons, and the page says why
    assert page.locator(f"{by_key('train_loss')} svg[data-points]").count() == 1
    assert page.locator(by_key("export_train_loss")).count() == 0
    assert page.get_by_text("its charts are drawn light", exact=False).first.is_visible()
    shot(page, "train-live")
    # the head grid (drawn with the first snapshot) is light too, and a click on a head still opens it on Heads
    cell = page.locator(f"{by_key('train_heads')} [data-click]")
    deadline = time.monotonic() + 120
    while cell.count() < 2:
        assert time.monotonic() < deadline, "the live head grid was not drawn"
        time.sleep(0.5)
    assert page.locator(f"{by_key('train_heads')} .js-plotly-plot").count() == 0
    assert cell.nth(1).get_attribute("data-click").startswith("[0, 1, ")  # [layer, head, the grid's step]
    cell.nth(1).click()
    page.get_by_role("heading", name="Heads", level=1).wait_for(timeout=60_000)
    deadline = time.monotonic() + 60
    big = page.locator(by_key("heads_big"))
    while not (big.count() and "layer 0, head 1 " in chart_title(page, "heads_big") + " "):
        assert time.monotonic() < deadline, "a click on the live head grid did not open that head on Heads"
        time.sleep(0.25)
    assert "run=micro-tinytales-1" in page.url
    open_page(page, app_url, "train?run=micro-tinytales-1", "Train")
    page.locator('[class*="st-key-train_stop_"]:not([data-stale="true"])').get_by_role("button").first.click()
    page.get_by_text("stopped by request", exact=False).wait_for(timeout=120_000)
    assert "of 20000" in page.locator('[data-testid="stProgress"]').first.text_content()
    resume = page.locator('[class*="st-key-train_resume_"]:not([data-stale="true"])').get_by_role("button")
    assert resume.first.is_visible()
    settle(page)
    # stopped: the interactive Plotly chart is back, with every logged step
    deadline = time.monotonic() + 60
    while page.locator(f"{by_key('train_loss')} .js-plotly-plot").count() == 0:
        assert time.monotonic() < deadline, "the interactive loss chart did not come back after Stop"
        time.sleep(0.25)
    assert points(page, "train_loss") > 0
    assert page.locator(f"{by_key('train_loss')} svg[data-points]").count() == 0
    assert page.locator(by_key("export_train_loss")).count() == 1  # the export buttons are back
    shot(page, "train-stopped")


@pytest.mark.parametrize("cell", ["last", "second"])
def test_heads_click_a_grid_cell_opens_that_head(page, app_url, cell):
    open_page(page, app_url, "heads", "Heads")
    plot = page.locator(f"{by_key('heads_grid')} .js-plotly-plot").first
    titles = plot.evaluate("el => el.layout.annotations.map(a => a.text)")
    n_heads = sum(t.startswith("L0H") for t in titles)
    layer, head = (len(titles) // n_heads - 1, n_heads - 1) if cell == "last" else (0, 1)
    deadline = time.monotonic() + 30
    while (xy := plot.evaluate(CENTRE, [layer, head])) is None:
        assert time.monotonic() < deadline, "the head grid was not drawn"
        time.sleep(0.25)
    x, y = xy
    page.mouse.click(x, y)
    deadline = time.monotonic() + 30
    while f"layer {layer}, head {head} " not in chart_title(page, "heads_big") + " ":
        assert time.monotonic() < deadline, chart_title(page, "heads_big")
        time.sleep(0.25)
    settle(page)
    title = chart_title(page, "heads_big")
    assert "demo" in title and f"layer {layer}, head {head} " in title + " " and "step" in title
    shot(page, f"heads-L{layer}H{head}")


def test_sample_temperature_slider_changes_the_text(page, app_url):
    open_page(page, app_url, "sample", "Sample")
    text = page.locator(by_key("sample_text"))
    before = text.inner_text()
    slider = page.locator(f"{by_key('sample_temperature')} input[type=range]")
    slider.focus()
    for _ in range(12):  # 0.80 -> 1.40 in steps of 0.05
        page.keyboard.press("ArrowRight")
    deadline = time.monotonic() + 30
    while text.inner_text() == before:
        assert time.monotonic() < deadline, "the sample did not change"
        time.sleep(0.25)
    settle(page)
    assert "T=1.4" in chart_title(page, "sample_candidates")
    shot(page, "sample")


def test_png_export_button_downloads_a_png(page, app_url):
    open_page(page, app_url, "heads", "Heads")
    with page.expect_download(timeout=90_000) as download:
        button(page, "export_heads_big_png").click()
    data = Path(download.value.path()).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert download.value.suggested_filename.endswith(".png")
    (ARTIFACTS / "exported-head.png").write_bytes(data)


@pytest.mark.parametrize("path, title", [("predictions", "Predictions"), ("compare", "Compare")])
def test_other_pages_render(page, app_url, path, title):
    open_page(page, app_url, path, title)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    shot(page, path)


@pytest.mark.parametrize("mb, refused", [(51, True), (1, False)])
def test_corpus_upload_above_the_server_cap_is_refused_in_the_browser(page, app_url, tmp_path, mb, refused):
    """server.maxUploadSize (50 MB) stops a bigger file before it is sent; a small one reaches app code."""
    open_page(page, app_url, "train", "Train")
    page.locator(by_key("train_source")).get_by_text("Upload a .txt", exact=True).click()
    settle(page)
    uploader = page.locator(by_key("train_upload"))
    data = (b"The cat sat on the mat. " * (mb * 1024 * 1024 // 24 + 1))[: mb * 1024 * 1024 + (1 if refused else 0)]
    (tmp_path / "big.txt").write_bytes(data)
    uploader.locator("input[type=file]").set_input_files(tmp_path / "big.txt")
    if refused:
        uploader.get_by_text("File must be 50.0MB or smaller.").wait_for(timeout=30_000)
        assert page.get_by_text("characters,").count() == 0  # nothing reached the app
    else:
        page.get_by_text("distinct; saved as").wait_for(timeout=60_000)
    settle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    shot(page, f"upload-{mb}mb")
