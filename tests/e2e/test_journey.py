"""The learner's journey (issue 11) in a real browser: the headline preset, live truth, nothing leaves the machine."""

import json
import subprocess
import sys
import time

import pytest

from .conftest import ROOT
from .test_browser import button, by_key, open_page, settle, shot

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def pick(page, key: str, option: str) -> None:
    """Choose an option in a Streamlit selectbox."""
    page.locator(f"{by_key(key)} input").first.click()
    page.get_by_role("option", name=option, exact=True).click()
    settle(page)


def fill(page, key: str, value) -> None:
    box = page.locator(f"{by_key(key)} input").first
    box.fill(str(value))
    box.press("Enter")
    settle(page)


def test_induction_preset_in_the_app_writes_the_clis_config(page, app_url, app_runs, tmp_path):
    open_page(page, app_url)
    open_page(page, app_url, "train", "Train")
    pick(page, "train_preset", "induction")
    # the form shows the preset's data settings, not the form's old defaults
    assert page.locator(f"{by_key('cfg_induction_data_corpus_chars')} input").input_value() == "300000"
    fill(page, "cfg_induction_train_steps", 150)  # shortened, as a person could; the CLI gets the same
    shot(page, "journey-induction-form")
    button(page, "train_start").click()
    page.get_by_role("heading", name="induction-tinytales-1", exact=False).first.wait_for(timeout=120_000)
    cli = tmp_path / "cli"
    subprocess.run([sys.executable, "-m", "tinyviz", "train", "--preset", "induction", "--set", "steps=150",
                    "--out", str(cli)], cwd=ROOT, check=True, capture_output=True, timeout=600)
    app_cfg = json.loads((app_runs / "induction-tinytales-1" / "config.json").read_text())
    assert app_cfg == json.loads((cli / "config.json").read_text())
    deadline = time.monotonic() + 300
    while "done" not in json.loads((app_runs / "induction-tinytales-1" / "state.json").read_text()).get("status", ""):
        assert time.monotonic() < deadline, "the app's run did not finish"
        time.sleep(1)
    settle(page)
    shot(page, "journey-induction-done")


def sidebar_step(page) -> int:
    import re

    # a caption, or while a run trains the light element the live feed keeps up to date
    text = page.locator('[data-testid="stSidebar"] [data-testid="stCaptionContainer"], '
                        '[data-testid="stSidebar"] .tinyviz-live').all_text_contents()
    found = [int(m.group(1)) for t in text if (m := re.search(r"step (\d+) of", t))]
    return found[0] if found else -1


def test_while_training_the_sidebar_and_compare_refresh_without_a_reload(page, app_url, app_runs):
    open_page(page, app_url)
    open_page(page, app_url, "train", "Train")
    pick(page, "train_preset", "micro")
    fill(page, "cfg_micro_train_steps", 20000)
    # the suggested name: earlier browser tests on this server may have used micro-tinytales-1 already
    name = page.locator('[class*="st-key-train_name_"] input').first.input_value()
    button(page, "train_start").click()
    page.get_by_role("heading", name=f"{name} · training").wait_for(timeout=120_000)
    try:
        first = sidebar_step(page)
        deadline = time.monotonic() + 120
        while sidebar_step(page) <= max(first, 0):
            assert time.monotonic() < deadline, "the sidebar's step did not move"
            time.sleep(0.5)
        time.sleep(6)  # the toast's lifetime
        assert page.get_by_text(f"Started {name}").count() == 0, "the 'Started' message stayed"
        shot(page, "journey-train-live")
        page.locator('[data-testid="stSidebar"]').get_by_role("link", name="Compare").click()
        page.get_by_role("heading", name="Compare", level=1).wait_for()
        settle(page)
        runs = page.locator(f"{by_key('compare_runs')}")
        if name not in runs.text_content():
            runs.locator("input").first.click()
            page.get_by_role("option", name=name).click()
            page.keyboard.press("Escape")
            settle(page)
        plot = page.locator(f"{by_key('compare_loss')} .js-plotly-plot").first
        # el.data is undefined for a moment while Plotly draws the chart anew (a refresh): -1, "not drawn"
        count = (f"el => el.data ? Math.max(0, ...el.data.filter(t => (t.name || '').startsWith('{name}'))"
                 ".map(t => t.x ? t.x.length : 0)) : -1")
        deadline = time.monotonic() + 60
        while (before := plot.evaluate(count)) < 0:
            assert time.monotonic() < deadline, "Compare's loss chart was not drawn"
            time.sleep(0.2)
        deadline = time.monotonic() + 120
        while plot.evaluate(count) <= before:
            assert time.monotonic() < deadline, "Compare's curve of the training run did not grow"
            time.sleep(0.5)
        shot(page, "journey-compare-live")
    finally:  # stop the run even when a check failed: the later tests share this server
        page.locator('[data-testid="stSidebar"]').get_by_role("link", name="Train").click()
        page.locator('[class*="st-key-train_stop_"]:not([data-stale="true"])').get_by_role("button").first.click()
    page.get_by_text("stopped by request", exact=False).wait_for(timeout=120_000)


def test_no_request_leaves_this_machine(page, app_url):
    """Every page, with the browser's network log: no request goes anywhere but the app's own server (the
    favicon was a Material icon fetched from fonts.gstatic.com). The only 4xx answers allowed are the
    frontend's probes of /<page>/_stcore/health and host-config, which it makes when a page's own address
    is opened directly and then finds at the root (Streamlit's, not the app's: st.navigation keeps them)."""
    from urllib.parse import urlparse

    outside, failed = [], []
    local = {"127.0.0.1", "localhost"}
    page.on("request", lambda r: None if r.url.startswith(("data:", "blob:")) or urlparse(r.url).hostname in local
            else outside.append(r.url))
    page.on("response", lambda r: failed.append((r.status, urlparse(r.url).path)) if r.status >= 400 else None)
    open_page(page, app_url)
    for path, title in (("train", "Train"), ("heads", "Heads"), ("predictions", "Predictions"), ("sample", "Sample"),
                        ("compare", "Compare")):
        open_page(page, app_url, path, title)
        shot(page, f"journey-page-{path}")
    assert outside == [], outside
    probes = {f"/{p}/_stcore/{what}" for p in ("train", "heads", "predictions", "sample", "compare")
              for what in ("health", "host-config")}
    assert {p for _, p in failed} <= probes, failed
