"""Fixtures for the real-browser tests: a Streamlit server on a free port and headless Chromium.

The server runs `streamlit run app.py` on a copy of the demo run in a temporary runs folder
(TINYVIZ_RUNS), so runs the tests train never land in checkpoints/. Chromium is Debian's
(/usr/bin/chromium or $TINYVIZ_CHROMIUM); without it the tests skip, except under CI,
where a missing browser fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = os.environ.get("TINYVIZ_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _require_browser() -> None:
    if Path(CHROMIUM).exists():
        return
    reason = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set TINYVIZ_CHROMIUM)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but the real-browser tests cannot run: {reason}.")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_runs_folder(dest: Path) -> Path:
    """dest/demo: a copy of checkpoints/demo, or a short micro run trained here when it is missing."""
    dest.mkdir(parents=True, exist_ok=True)
    demo = ROOT / "checkpoints" / "demo"
    if (demo / "model.safetensors").exists():
        shutil.copytree(demo, dest / "demo")
    else:
        subprocess.run([sys.executable, "-m", "tinyviz", "train", "--preset", "micro", "--steps", "60",
                        "--set", "snapshot_interval=20", "--out", str(dest / "demo")],
                       cwd=ROOT, check=True, capture_output=True)
    return dest


@pytest.fixture(scope="session")
def app_runs(tmp_path_factory) -> Path:
    """The runs folder the test server reads and writes (TINYVIZ_RUNS)."""
    _require_browser()
    return demo_runs_folder(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="session")
def app_url(tmp_path_factory, app_runs):
    runs = app_runs
    port = _free_port()
    env = {**os.environ, "TINYVIZ_RUNS": str(runs), "BROWSER_PATH": CHROMIUM}
    with open(tmp_path_factory.mktemp("server") / "streamlit.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port",
             str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 90
            while True:
                try:
                    if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the Streamlit server did not come up on port {port}; see {log.name}")
                time.sleep(0.5)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, app_url):
    """A fresh tab, tall enough that screenshots show whole pages, with downloads allowed."""
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1500, "height": 2200}, accept_downloads=True)
    tab = context.new_page()
    tab.set_default_timeout(60_000)
    yield tab
    context.close()
