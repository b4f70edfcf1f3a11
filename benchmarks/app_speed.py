"""App vs CLI training speed: the same preset trained by `python -m tinyviz train` and by the real app
(Streamlit server + headless Chromium with the Train page open, its live panel refreshing).

    python -m benchmarks.app_speed [--preset induction] [--steps 600] [--rounds 3] [--closed]

Both sides are timed the same way, from outside: this process polls the run folder's metrics.jsonl
every 0.1 s and takes steps per second of wall clock over the middle of the run (steps 10 % .. 90 %,
so start-up, the first compile-like warm steps and the final checkpoint count on neither side), which
includes every evaluation, snapshot and sample preview. Also reported: the median of the trainer's own
per-step tokens/s (what the panel shows) and "dips", the fraction of steps slower than 0.7x that median
(a panel refresh that steals the interpreter shows up as a dip), and how often a slow step comes just after
a refresh of the live page against half-way between two (the dip per refresh). Needs Chromium and Playwright;
without them ``measure`` returns {"skipped": reason}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("TINYVIZ_CHROMIUM", "/usr/bin/chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except OSError:
        return 0


def _cpu_seconds() -> dict[int, tuple[int, float]]:
    """{pid: (parent pid, CPU seconds used so far)} for every process this machine shows in /proc."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(d.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / tick)
    return out


def _cpu_groups(server: int | None) -> dict[str, float]:
    """CPU seconds so far of the server itself, its children (the trainer) and the browser (this
    process's other descendants): the panel's cost is what the server and the browser use."""
    procs = _cpu_seconds()

    def under(root: int) -> set[int]:
        found, todo = set(), [root]
        while todo:
            p = todo.pop()
            kids = [c for c, (pp, _) in procs.items() if pp == p and c not in found]
            found.update(kids)
            todo.extend(kids)
        return found

    srv = {server} if server else set()
    trainer = under(server) if server else set()
    browser = under(os.getpid()) - srv - trainer
    return {"server": sum(procs[p][1] for p in srv if p in procs),
            "trainer": sum(procs[p][1] for p in trainer if p in procs),
            "browser": sum(procs[p][1] for p in browser if p in procs)}


def _watch(metrics: Path, steps: int, alive, timeout: float, server: int | None = None) -> list[tuple]:
    """(time, steps logged, CPU seconds by group, wall clock) every 0.1 s until the run has logged `steps` steps or
    alive() turns False. The CPU groups are read only when the run first passes 10 % and 90 % of its
    steps (reading every process's /proc entry each 0.1 s would itself cost the app side CPU)."""
    trace, deadline, marks = [], time.monotonic() + timeout, [0.1 * steps, 0.9 * steps]
    while time.monotonic() < deadline:
        n = _lines(metrics)
        cpu = {}
        if server and marks and n >= marks[0]:
            cpu = _cpu_groups(server)
            while marks and n >= marks[0]:
                marks.pop(0)
        trace.append((time.monotonic(), n, cpu, time.time()))
        if n >= steps or not alive():
            break
        time.sleep(0.1)
    return trace


def _cpu_share(trace: list[tuple], steps: int) -> dict[str, float]:
    """Each group's CPU use between 10 % and 90 % of the steps, as a fraction of one core."""
    lo = next((x for x in trace if x[1] >= 0.1 * steps), None)
    hi = next((x for x in trace if x[1] >= 0.9 * steps), None)
    if lo is None or hi is None or hi[0] <= lo[0] or not lo[2] or not hi[2]:
        return {}
    return {k: (hi[2][k] - lo[2][k]) / (hi[0] - lo[0]) for k in lo[2]}


def _rate(trace: list[tuple], steps: int) -> float | None:
    """Steps per second between the first sample past 10 % and the first past 90 % of the steps."""
    lo = next(((t, n) for t, n, *_ in trace if n >= 0.1 * steps), None)
    hi = next(((t, n) for t, n, *_ in trace if n >= 0.9 * steps), None)
    if lo is None or hi is None or hi[0] <= lo[0]:
        return None
    return (hi[1] - lo[1]) / (hi[0] - lo[0])


def _per_step(metrics: Path) -> dict:
    recs = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    tps = [r["tokens_per_s"] for r in recs[len(recs) // 10:]]
    med = statistics.median(tps)
    return {"median_tokens_per_s": med, "dips": sum(t < 0.7 * med for t in tps) / len(tps)}


def _refresh_dips(metrics: Path, trace: list[tuple], every: float | None = None, window: float = 0.4) -> dict:
    """How often a slow step (< 0.7x the median) ends within `window` s after a refresh of the live page (its
    feed pushes at the multiples of `every` s on the clock: tinyviz.ui.live_feed), against the same half-way
    between two refreshes. A step's end is when this process first saw its line (sampled every 0.1 s). For
    the CLI the same instants are the machine's background."""
    if every is None:
        from tinyviz.ui.live_feed import EVERY_S as every
    recs = [json.loads(x) for x in metrics.read_text().splitlines() if x.strip()]
    start = len(recs) // 10
    first = next((t[3] for t in trace if t[1] > start), None)
    if not recs or first is None:
        return {"at_refresh": 0.0, "between": 0.0, "refreshes": 0}
    med = statistics.median(r["tokens_per_s"] for r in recs[start:])
    seen, k = [], 0
    for i in range(start, len(recs)):
        while k < len(trace) and trace[k][1] < i + 1:
            k += 1
        if k < len(trace) and recs[i]["tokens_per_s"] < 0.7 * med:
            seen.append(trace[k][3])
    lo, hi = first, trace[-1][3] - window
    instants = [j * every for j in range(int(lo // every) + 1, int(hi // every) + 1)]

    def share(offset: float) -> float:
        hits = [any(t + offset <= x <= t + offset + window for x in seen) for t in instants]
        return sum(hits) / max(1, len(hits))
    return {"at_refresh": share(0.0), "between": share(every / 2), "refreshes": len(instants)}


def _cli(preset: str, steps: int, out: Path, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "tinyviz", "train", "--preset", preset, "--set", f"steps={steps}", "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trace = _watch(out / "metrics.jsonl", steps, lambda: proc.poll() is None, timeout)
    proc.wait(timeout)
    return {"steps_per_s": _rate(trace, steps), **_per_step(out / "metrics.jsonl"),
            "refresh_dips": _refresh_dips(out / "metrics.jsonl", trace)}


def _app(preset: str, steps: int, runs: Path, timeout: float, panel: bool = True) -> dict:
    from playwright.sync_api import sync_playwright

    port = _free_port()
    env = {**os.environ, "TINYVIZ_RUNS": str(runs)}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync"])
            page = browser.new_page(viewport={"width": 1500, "height": 2200})
            page.set_default_timeout(120_000)
            page.goto(f"{url}/train")
            page.get_by_role("heading", name="Train", level=1).wait_for()
            page.locator(".st-key-train_preset input").first.click()
            page.get_by_role("option", name=preset, exact=True).click()
            box = page.locator(f".st-key-cfg_{preset}_train_steps input").first
            box.wait_for()
            time.sleep(1.0)
            box.fill(str(steps))
            box.press("Enter")
            time.sleep(1.5)
            page.locator(".st-key-train_start button").first.click()
            name = f"{preset}-tinytales-1"
            metrics = runs / name / "metrics.jsonl"
            if not panel:  # the same run with the page closed
                for _ in range(600):
                    if metrics.exists():
                        break
                    time.sleep(0.1)
                page.goto("about:blank")
            trace = _watch(metrics, steps, lambda: True, timeout, server=server.pid)
            browser.close()
        return {"steps_per_s": _rate(trace, steps), "cpu_cores": _cpu_share(trace, steps), **_per_step(metrics),
                "refresh_dips": _refresh_dips(metrics, trace)}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def measure(preset: str = "induction", steps: int = 600, timeout: float = 600, closed: bool = False,
            rounds: int = 1) -> dict:
    """{"cli": {...}, "app": {...}, "ratio": app/cli steps per second, "load": (1, 5, 15 min)} or {"skipped"}.

    With rounds > 1 the CLI and the app (and the closed page) take turns that many times, so a slow
    minute of the machine lands on both sides; "ratio" is then the median of the rounds' ratios, "cli"
    and "app" are the median round's, and "rounds" has them all."""
    if not Path(CHROMIUM).exists():
        return {"skipped": f"no Chromium at {CHROMIUM} (apt-get install chromium, or set TINYVIZ_CHROMIUM)"}
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return {"skipped": "playwright is not installed (pip install -r requirements-dev.txt)"}
    res = {"preset": preset, "steps": steps, "load_before": os.getloadavg(), "rounds": []}
    for _ in range(max(1, rounds)):
        with tempfile.TemporaryDirectory() as d:
            tmp = Path(d)
            (tmp / "runs").mkdir()
            if (ROOT / "checkpoints" / "demo").exists():
                shutil.copytree(ROOT / "checkpoints" / "demo", tmp / "runs" / "demo")
            one = {"cli": _cli(preset, steps, tmp / "cli", timeout), "app": _app(preset, steps, tmp / "runs", timeout)}
            if closed:
                shutil.rmtree(tmp / "runs" / f"{preset}-tinytales-1")
                one["app_closed"] = _app(preset, steps, tmp / "runs", timeout, panel=False)
        cli_rate = one["cli"]["steps_per_s"]
        for side in ("app", "app_closed"):
            if side in one and cli_rate and one[side]["steps_per_s"]:
                one["ratio" if side == "app" else "closed_ratio"] = one[side]["steps_per_s"] / cli_rate
        res["rounds"].append(one)
    res["load_after"] = os.getloadavg()
    done = sorted((r for r in res["rounds"] if "ratio" in r), key=lambda r: r["ratio"])
    if done:
        mid = done[(len(done) - 1) // 2]  # the lower median: an even count does not round up
        res.update(cli=mid["cli"], app=mid["app"], ratio=mid["ratio"])
        if "app_closed" in mid:
            res["app_closed"] = mid["app_closed"]
    else:
        res.update(cli=res["rounds"][0]["cli"], app=res["rounds"][0]["app"])
    return res


def report(res: dict) -> str:
    """One paragraph for the benchmark's report."""
    if "skipped" in res:
        return f"app vs CLI: skipped ({res['skipped']})"
    cli, app = res["cli"], res["app"]
    ratio = f"{res['ratio']:.2f}x" if "ratio" in res else "n/a"
    return (f"app vs CLI, {res['preset']} {res['steps']} steps, Train page open in Chromium: app "
            f"{app['steps_per_s'] or 0:.1f} steps/s vs CLI {cli['steps_per_s'] or 0:.1f} = {ratio}; per-step "
            f"tokens/s median app {app['median_tokens_per_s']:,.0f} vs CLI {cli['median_tokens_per_s']:,.0f}; steps "
            f"slower than 0.7x the median: app {app['dips']:.1%}, CLI {cli['dips']:.1%}"
            + "".join(f"; {_refreshes(side, r['refresh_dips'])}" for side, r in (("app", app), ("CLI", cli))
                      if r.get("refresh_dips"))
            + f"; load "
            f"{res['load_before'][0]:.1f} -> {res['load_after'][0]:.1f}"
            + ("; CPU while training with the page open (cores): " + ", ".join(
                f"{k} {v:.2f}" for k, v in app["cpu_cores"].items()) if app.get("cpu_cores") else "")
            + _rounds_line(res))


def _refreshes(side: str, r: dict) -> str:
    return (f"{side}: a slow step just after {r['at_refresh']:.0%} of {r['refreshes']} refresh instants "
            f"({r['between']:.0%} half-way between)")


def _rounds_line(res: dict) -> str:
    """'; 3 rounds, app/CLI 0.84x 0.86x 0.88x (median 0.86x), page closed 0.95x ...' when there were several."""
    rounds = res.get("rounds") or []
    if len(rounds) < 2:
        return ""

    def listed(key):
        vals = [r[key] for r in rounds if key in r]
        return " ".join(f"{v:.2f}x" for v in vals) + f" (median {statistics.median(vals):.2f}x)" if vals else "n/a"

    closed = any("closed_ratio" in r for r in rounds)
    return (f"; {len(rounds)} rounds, app/CLI {listed('ratio')}"
            + (f", page closed {listed('closed_ratio')}" if closed else ""))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.app_speed", description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="induction")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--closed", action="store_true", help="also time the app with the page closed")
    p.add_argument("--rounds", type=int, default=1, help="CLI and app take turns this many times (median ratio)")
    args = p.parse_args(argv)
    res = measure(args.preset, args.steps, closed=args.closed, rounds=args.rounds)
    print(json.dumps(res, indent=2))
    print(report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
