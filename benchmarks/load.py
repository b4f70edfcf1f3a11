"""Load: 8 real browser sessions on one tinyviz server for a few minutes, then figures.

Two sessions train (each its own micro run) and reload their Train page now and then; six move the
Heads prompt, the Sample temperature slider and open Compare on the demo run, over and over. It reports:

- errors: exceptions shown on a page, and tracebacks in the server's log (must be 0);
- cross-talk: a session seeing a run it did not pick (a trainer's Train page heading another run, an
  inspector's page on anything but the demo) (must be 0);
- interaction latency p50 / p95: from the action (a key or click) to the server's "script finished"
  message for that session, read off the page's websocket (fragment reruns are not counted);
- the trainers' tokens/s during the load against the same config trained alone by the CLI just before,
  and the load average of the machine (others' work included).

Loopback only (the server binds 127.0.0.1), Debian's /usr/bin/chromium headless, bounded in time: it
stops its runs, the browser and the server by itself.

    python -m benchmarks.load [--seconds 300] [--port 8650] [--sessions 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("TINYVIZ_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
TRAIN_SETS = ["steps=100000", "checkpoint_interval=200"]  # on the micro preset, as the Train form's defaults
PROMPTS = ["Once upon a time", "Kelomi had a red ball.", "the cat sat", "Tobin gave Mara a stone", "abc abc abc"]


def _start_server(port: int, runs: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "TINYVIZ_RUNS": str(runs)}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"],
                            cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                return proc
        except OSError:
            time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit(f"the server did not come up on port {port}; see {log}")


def _idle_tokens_per_s(runs: Path, seconds: float) -> float:
    """tokens/s of the trainers' config trained alone by the CLI (1 thread, as the app gives each run)."""
    out = runs.parent / "idle-baseline"
    proc = subprocess.Popen([sys.executable, "-m", "tinyviz", "train", "--preset", "micro", "--out", str(out),
                             *[a for s in TRAIN_SETS + ["threads=1"] for a in ("--set", s)]],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.monotonic()
    metrics = out / "metrics.jsonl"
    while time.monotonic() - t0 < 300 and (time.monotonic() - t0 < seconds or not metrics.exists()
                                           or metrics.read_bytes().count(b"\n") < 80):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    proc.wait(60)
    return _tokens_per_s(out, 0.0)


def _tokens_per_s(run: Path, since: float) -> float:
    """Median tokens/s of the steps logged after `since` seconds of the run's training (the first 20 steps
    are warm-up)."""
    recs = []
    for line in (run / "metrics.jsonl").read_bytes().splitlines():
        try:
            recs.append(json.loads(line))
        except ValueError:
            continue
    vals = [r["tokens_per_s"] for r in recs[20:] if r.get("elapsed", 0) >= since]
    return statistics.median(vals) if vals else float("nan")


class Session:
    """One browser context (one Streamlit session) and what it saw."""

    def __init__(self, name: str, page, stats: dict):
        self.name, self.page, self.stats = name, page, stats
        self.finished = asyncio.Event()
        page.on("websocket", self._watch)
        page.on("pageerror", lambda e: stats["errors"].append(f"{name}: page error {e}"))

    def _watch(self, ws):
        def frame(payload):
            if isinstance(payload, str):
                return
            try:
                msg = ForwardMsg.FromString(payload)
            except Exception:  # noqa: BLE001 - a frame that is not a ForwardMsg says nothing here
                return
            if msg.WhichOneof("type") == "script_finished" and \
                    msg.script_finished != ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY:
                self.finished.set()

        ws.on("framereceived", frame)

    async def timed(self, action, what: str) -> None:
        """Run action (a coroutine function) and record the time until the session's script finishes."""
        self.finished.clear()
        t0 = time.monotonic()
        await action()
        try:
            await asyncio.wait_for(self.finished.wait(), 120)
        except TimeoutError:
            self.stats["timeouts"].append(f"{self.name}: no rerun finished within 120 s after {what}")
            return
        self.stats["latency"].append((what, time.monotonic() - t0))
        await self.check()

    async def check(self) -> None:
        if await self.page.locator('[data-testid="stException"]').count():
            text = await self.page.locator('[data-testid="stException"]').first.inner_text()
            self.stats["errors"].append(f"{self.name}: exception on the page: {text[:200]}")

    async def goto(self, url: str, title: str) -> None:
        async def go():
            await self.page.goto(url)
        await self.timed(go, f"open {title}")
        await self.page.get_by_role("heading", name=title, level=1).wait_for()


async def trainer(s: Session, url: str, name: str, until: float) -> None:
    for _ in range(3):
        try:
            await _start_run(s, url, name)
            break
        except Exception as e:  # noqa: BLE001 - a browser wait that ran out: try the form again
            if "Timeout" not in type(e).__name__:
                raise
            s.stats["timeouts"].append(f"{s.name}: {str(e).splitlines()[0][:120]}")
    await _watch_run(s, url, name, until)


async def _start_run(s: Session, url: str, name: str) -> None:
    page = s.page
    await s.goto(f"{url}/train", "Train")
    if not await page.locator(".st-key-train_start").is_visible():
        await page.get_by_text("New run", exact=True).click()
    for key, value in (("cfg_micro_train_steps", "100000"), ("cfg_micro_train_checkpoint_interval", "200")):
        box = page.locator(f".st-key-{key} input")
        await box.fill(value)
        await s.timed(lambda box=box: box.press("Enter"), "type a Train field")
    box = page.locator('[class*="st-key-train_name_"] input')
    await box.fill(name)
    await s.timed(lambda: box.press("Enter"), "type the run name")
    await s.timed(lambda: page.locator(".st-key-train_start button").click(), "start training")
    s.stats["started"][name] = time.monotonic()


async def _watch_run(s: Session, url: str, name: str, until: float) -> None:
    page = s.page
    while time.monotonic() < until:
        await asyncio.sleep(random.uniform(10, 20))
        await s.goto(f"{url}/train?run={name}", "Train")  # a reload: a new server session on the same run
        heading = page.get_by_role("heading", level=3).filter(has_text=" · ")
        try:
            await heading.first.wait_for(timeout=60_000)
            text = await heading.first.inner_text()
        except Exception:  # noqa: BLE001
            text = ""
        if not text.strip().split(" · ")[0].endswith(name):
            s.stats["crosstalk"].append(f"{s.name}: the Train page shows {text!r}, not {name}")
    stop = page.locator('[class*="st-key-train_stop_"]:not([data-stale="true"]) button')
    if await stop.count():
        await stop.first.click()


async def inspector(s: Session, url: str, until: float) -> None:
    rng = random.Random(s.name)
    while time.monotonic() < until:
        try:
            await _inspect_once(s, url, rng)
        except Exception as e:  # noqa: BLE001 - a browser wait that ran out: slow, not an app error
            if "Timeout" not in type(e).__name__:
                raise
            s.stats["timeouts"].append(f"{s.name}: {str(e).splitlines()[0][:120]}")


async def _inspect_once(s: Session, url: str, rng: random.Random) -> None:
    page = s.page
    kind = rng.choice(["heads", "sample", "compare"])
    if kind == "heads":
        await s.goto(f"{url}/heads?run=demo", "Heads")
        prompt = page.locator(".st-key-heads_prompt textarea")
        if await prompt.count():
            await prompt.fill(rng.choice(PROMPTS))
            await s.timed(lambda prompt=prompt: prompt.press("Control+Enter"), "change the Heads prompt")
    elif kind == "sample":
        await s.goto(f"{url}/sample?run=demo", "Sample")
        thumb = page.locator(".st-key-sample_temperature [tabindex='0']").first  # the slider's thumb
        for _ in range(3):
            await thumb.focus()
            key = rng.choice(["ArrowRight", "ArrowLeft"])
            await s.timed(lambda key=key, thumb=thumb: thumb.press(key), "move the temperature slider")
    else:
        await s.goto(f"{url}/compare?run=demo", "Compare")
    if "run=demo" not in page.url:
        s.stats["crosstalk"].append(f"{s.name}: the address moved to {page.url}")
    # the run picker is a combobox: its choice is the input's value, not part of the sidebar's text
    picked = await page.locator('[data-testid="stSidebar"] input[aria-label="Current run"]').first.input_value()
    if picked != "demo":
        s.stats["crosstalk"].append(f"{s.name}: the sidebar's run picker shows {picked!r}, not the demo run")
    await asyncio.sleep(rng.uniform(0.5, 2.0))


async def drive(url: str, seconds: float, sessions: int, stats: dict) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pages = []
        for _ in range(sessions):
            ctx = await browser.new_context(viewport={"width": 1400, "height": 1600})
            page = await ctx.new_page()
            page.set_default_timeout(120_000)
            pages.append(page)
        until = time.monotonic() + seconds
        n_train = min(2, sessions)
        jobs = [trainer(Session(f"trainer-{i}", pages[i], stats), url, f"load-t{i}", until) for i in range(n_train)]
        jobs += [inspector(Session(f"inspector-{i}", pages[i], stats), url, until) for i in range(n_train, sessions)]
        results = await asyncio.gather(*jobs, return_exceptions=True)
        for i, r in enumerate(results):
            if isinstance(r, Exception):
                stats["errors"].append(f"session {i}: {type(r).__name__}: {str(r)[:200]}")
        await browser.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=300)
    ap.add_argument("--port", type=int, default=8650)
    ap.add_argument("--sessions", type=int, default=8)
    ap.add_argument("--idle-seconds", type=float, default=30, help="how long the CLI baseline trains alone")
    args = ap.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"no Chromium at {CHROMIUM}; install it (apt-get install chromium) or set TINYVIZ_CHROMIUM.")
        return 2
    work = Path(tempfile.mkdtemp(prefix="tinyviz-load-"))
    runs = work / "runs"
    runs.mkdir()
    shutil.copytree(ROOT / "checkpoints" / "demo", runs / "demo")
    load_before = os.getloadavg()
    idle = _idle_tokens_per_s(runs, args.idle_seconds)
    log = work / "server.log"
    server = _start_server(args.port, runs, log)
    stats = {"latency": [], "errors": [], "crosstalk": [], "timeouts": [], "started": {}}
    loads = []
    try:
        async def sample_load():
            while True:
                loads.append(os.getloadavg()[0])
                await asyncio.sleep(10)

        async def run():
            sampler = asyncio.create_task(sample_load())
            await drive(f"http://127.0.0.1:{args.port}", args.seconds, args.sessions, stats)
            sampler.cancel()

        t0 = time.monotonic()
        asyncio.run(run())
        wall = time.monotonic() - t0
        time.sleep(3)  # the trainers' Stop lands, a checkpoint is written
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
    tracebacks = len(re.findall(r"Traceback \(most recent call last\)", log.read_text(errors="replace")))
    if tracebacks:
        stats["errors"].append(f"{tracebacks} traceback(s) in the server log {log}")
    lat = sorted(t for _, t in stats["latency"])
    q = lambda f: lat[min(len(lat) - 1, int(f * len(lat)))] if lat else float("nan")  # noqa: E731
    per_kind = {}
    for what, t in stats["latency"]:
        per_kind.setdefault(what, []).append(t)
    trained = {n: _tokens_per_s(runs / n, 0.0) for n in stats["started"] if (runs / n / "metrics.jsonl").exists()}
    print(f"{args.sessions} sessions for {wall:.0f} s on 127.0.0.1:{args.port}; load average before "
          f"{load_before[0]:.2f}, during {min(loads or [0]):.2f}-{max(loads or [0]):.2f} "
          f"(mean {statistics.mean(loads or [0]):.2f}) on {os.cpu_count()} cores")
    print(f"errors: {len(stats['errors'])}")
    for e in stats["errors"][:20]:
        print(f"  {e}")
    print(f"browser waits that ran out (120 s; slowness, not an app error): {len(stats['timeouts'])}")
    for c in stats["timeouts"][:10]:
        print(f"  {c}")
    print(f"cross-talk: {len(stats['crosstalk'])}")
    for c in stats["crosstalk"][:20]:
        print(f"  {c}")
    print(f"interactions: {len(lat)}; latency p50 {q(0.5):.2f} s, p95 {q(0.95):.2f} s, max {q(1.0):.2f} s")
    for what, ts in sorted(per_kind.items()):
        ts.sort()
        p95 = ts[min(len(ts) - 1, int(0.95 * len(ts)))]
        print(f"  {what}: {len(ts)}, p50 {ts[len(ts) // 2]:.2f} s, p95 {p95:.2f} s")
    for name, tps in trained.items():
        print(f"trainer {name}: {tps:,.0f} tokens/s under load vs {idle:,.0f} alone (CLI, 1 thread): "
              f"{tps / idle:.2f}x")
    print(f"server log and runs: {work}")
    return 0 if not stats["errors"] and not stats["crosstalk"] else 1


if __name__ == "__main__":
    sys.exit(main())
