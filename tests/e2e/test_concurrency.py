"""Four browser sessions at once: two train, two inspect. Each sees its own pages, the registry
never mixes runs up, nothing crashes, and the concurrent-training limit is explained."""

import time

import pytest

from tinyviz.ui.registry import MAX_CONCURRENT

from .conftest import ARTIFACTS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def settle(page, timeout: float = 90):
    """Wait until Streamlit is not running a script (a live fragment may still tick)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.locator('[data-testid="stStatusWidget"]').count() == 0:
            time.sleep(0.5)
            return
        time.sleep(0.25)
    raise AssertionError("the page did not settle")


def open_page(page, url: str, title: str):
    page.goto(url)
    page.get_by_role("heading", name=title, level=1).wait_for()
    settle(page)


def no_exception(page, who: str):
    assert page.locator('[data-testid="stException"]').count() == 0, f"{who}: an exception is on the page"


def fill(page, key: str, value: str, prefix: bool = False):
    """Type into a text box by key; prefix=True for a key that carries a suffix (the run-name box is
    keyed by its suggested name)."""
    box = page.locator(f'[class*="st-key-{key}"] input' if prefix else f".st-key-{key} input")
    box.fill(value)
    box.press("Enter")
    settle(page)


def open_new_run_form(page):
    if page.locator(".st-key-train_start").count() == 0 or not page.locator(".st-key-train_start").is_visible():
        page.get_by_text("New run", exact=True).click()
    page.locator(".st-key-train_start button").wait_for()


def start_training(page, name: str):
    open_new_run_form(page)
    fill(page, "cfg_micro_train_steps", "100000")
    fill(page, "cfg_micro_train_checkpoint_interval", "50")
    fill(page, "train_name_", name, prefix=True)
    page.locator(".st-key-train_start button").click()
    settle(page)


def nav(page, name: str):
    page.locator('[data-testid="stSidebar"]').get_by_role("link", name=name).click()
    page.get_by_role("heading", name=name, level=1).wait_for()
    settle(page)


def stop_button(page, name: str):
    """Our Stop button (keyed per run: train_stop_<hash>), not a faded copy nor Streamlit's own header Stop,
    on a page that shows this run."""
    live_heading(page, name)
    stops = page.locator('[class*="st-key-train_stop_"]:not([data-stale="true"])')
    assert stops.count() == 1, f"{name}: {stops.count()} Stop buttons"
    return stops.locator("button").first


def live_heading(page, name: str, status: str = "training", timeout: float = 120_000):
    page.get_by_role("heading", name=f"{name} · {status}").wait_for(timeout=timeout)


def stays_on(page, name: str, seconds: float = 6):
    """The page keeps showing this run while its live panel refreshes (right after Start, a stale
    report from the sidebar's earlier picker once moved the session to the demo run)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert page.get_by_role("heading", name=f"{name} · training").count() == 1, f"{name}: the page left its run"
        time.sleep(0.25)


def test_four_sessions_two_training_two_inspecting(browser, app_url):
    ctxs = [browser.new_context(viewport={"width": 1400, "height": 1800}) for _ in range(4)]
    a, b, c, d = tabs = [ctx.new_page() for ctx in ctxs]
    for t in tabs:
        t.set_default_timeout(90_000)
    try:
        # two people start a training each
        open_page(a, f"{app_url}/train", "Train")
        start_training(a, "conc-a")
        live_heading(a, "conc-a")
        open_page(b, f"{app_url}/train", "Train")
        start_training(b, "conc-b")
        live_heading(b, "conc-b")
        stays_on(b, "conc-b")
        stays_on(a, "conc-a", seconds=1)

        # two others inspect the demo run meanwhile
        open_page(c, f"{app_url}/heads", "Heads")
        open_page(d, f"{app_url}/sample", "Sample")
        prompt = d.locator(".st-key-sample_prompt textarea")
        prompt.fill("Once upon a time")
        prompt.press("Control+Enter")
        settle(d)
        sample = d.locator('.st-key-sample_text:not([data-stale="true"])')
        deadline = time.monotonic() + 90
        while not (sample.count() and sample.first.inner_text().strip()):  # drawn after the rerun, not mid-redraw
            assert time.monotonic() < deadline, "d: no sample text"
            time.sleep(0.25)

        # each trainer still sees only their own run after going elsewhere and back
        for tab, mine, other in ((a, "conc-a", "conc-b"), (b, "conc-b", "conc-a")):
            nav(tab, "Heads")
            nav(tab, "Train")
            live_heading(tab, mine)
            assert tab.get_by_role("heading", name=f"{other} · training").count() == 0
            # a reload starts a new server session; the URL (?run=NAME) keeps the person on their run
            assert f"run={mine}" in tab.url
            tab.reload()
            tab.get_by_role("heading", name="Train", level=1).wait_for()
            live_heading(tab, mine)
        # the inspectors are where they were, on the demo run
        for tab, title in ((c, "Heads"), (d, "Sample")):
            assert tab.get_by_role("heading", name=title, level=1).is_visible()
            assert tab.get_by_text("Run **demo**").count() + tab.get_by_text("Run demo").count() >= 1 \
                or "demo" in tab.locator('[data-testid="stSidebar"]').inner_text()

        # a third training is refused, and the person is told why and what to do
        open_page(c, f"{app_url}/train", "Train")
        open_new_run_form(c)
        assert c.get_by_text(f"{MAX_CONCURRENT} runs are training, the most at once").is_visible()
        fill(c, "train_name_", "conc-c", prefix=True)
        c.locator(".st-key-train_start button").click()
        settle(c)
        refusal = c.locator('[data-testid="stAlert"]').filter(has_text=f"{MAX_CONCURRENT} runs are training already")
        refusal.wait_for()
        text = refusal.inner_text()
        assert "conc-a" in text and "conc-b" in text and "stop one or wait for it to finish" in text
        c.screenshot(path=str(ARTIFACTS / "concurrency-limit.png"))

        for tab, who in zip(tabs, "abcd"):
            no_exception(tab, who)

        # both trainers stop their own runs; the other's keeps its own state
        stop_button(a, "conc-a").click()
        live_heading(a, "conc-a", "stopped")
        live_heading(b, "conc-b", "training")
        stop_button(b, "conc-b").click()
        live_heading(b, "conc-b", "stopped")
        for tab, who in zip(tabs, "abcd"):
            no_exception(tab, who)
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        for tab, who in zip(tabs, "abcd"):
            tab.screenshot(path=str(ARTIFACTS / f"concurrency-{who}.png"))
        for ctx in ctxs:
            ctx.close()
