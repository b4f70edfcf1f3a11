"""The live feed the Train page and the sidebar redraw from while a run trains (no Streamlit rerun): what it
serves, to whom, and what the Train page's parts say at each stage of a run."""

import json
import re
import threading
import time
import urllib.error
import urllib.request

import pytest

from tinyviz.config import apply_overrides, preset
from tinyviz.training.session import TrainingSession
from tinyviz.ui import live_feed, live_parts, train_live, train_panel

SMALL = ["n_layers=2", "n_heads=2", "d_model=32", "d_ff=64", "n_ctx=32", "batch_size=8", "steps=60",
         "warmup_steps=5", "eval_interval=20", "eval_batches=2", "snapshot_interval=20", "checkpoint_interval=20",
         "sample_interval=20", "corpus_chars=20000"]


def get(url: str) -> tuple[int, dict, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


@pytest.fixture
def feed():
    f = live_feed.Feed()
    yield f
    f.close()


def test_the_feed_serves_a_published_view_on_loopback_only(feed):
    calls = []
    url = feed.publish("run-a", lambda: calls.append(1) or {"parts": {"numbers": "<b>1.23</b>"}, "ended": False})
    assert url.startswith("http://127.0.0.1:") and feed.host == "127.0.0.1"
    status, headers, body = get(url)
    assert status == 200 and body == {"parts": {"numbers": "<b>1.23</b>"}, "ended": False} and calls == [1]
    assert headers["Cache-Control"] == "no-store"  # a poll must never be answered from a cache
    assert headers["Access-Control-Allow-Origin"] == "*"  # the page is Streamlit's origin, another port
    # the same key keeps its address and answers with the newest builder (a rerun re-publishes it)
    assert feed.publish("run-a", lambda: {"parts": {}, "ended": True}) == url
    assert get(url)[2] == {"parts": {}, "ended": True}


def test_unknown_tokens_and_failing_builders_answer_an_error_not_a_traceback(feed):
    url = feed.publish("a", lambda: {"parts": {}})
    status, _, body = get(url[:-4] + "zzzz")
    assert status == 404 and "reload the page" in body["error"]
    assert get(url.rsplit("/live/", 1)[0] + "/other")[0] == 404

    def broken():
        raise FileNotFoundError("metrics.jsonl is gone")
    bad = feed.publish("b", broken)
    status, _, body = get(bad)
    assert status == 500 and "metrics.jsonl is gone" in body["error"]
    assert get(url)[0] == 200  # the server still answers


def test_tokens_are_unguessable_and_old_views_are_dropped(feed, monkeypatch):
    monkeypatch.setattr(live_feed, "MAX_BUILDERS", 3)
    urls = [feed.publish(k, lambda k=k: {"k": k}) for k in range(4)]
    assert len(set(urls)) == 4 and all(len(u.rsplit("/", 1)[1]) >= 24 for u in urls)
    assert get(urls[0])[0] == 404  # the oldest went when the fourth came
    assert [get(u)[2]["k"] for u in urls[1:]] == [1, 2, 3]
    assert feed.publish(0, lambda: {"k": 0}) != urls[0]  # its key gets a new token


def events(url: str, n: int, timeout: float = 20) -> tuple[dict, list[dict], float]:
    """(headers, the first n answers the stream pushed, seconds until the stream ended or the n-th came)."""
    start, got = time.monotonic(), []
    with urllib.request.urlopen(url, timeout=timeout) as r:
        headers = dict(r.headers)
        for line in r:
            if line.startswith(b"data: "):
                got.append(json.loads(line[6:]))
                if len(got) == n:
                    break
    return headers, got, time.monotonic() - start


def test_a_stream_pushes_an_answer_only_when_it_changed_and_ends_with_the_run(feed, monkeypatch):
    monkeypatch.setattr(live_feed, "STREAM_S", (0.05, 60.0))
    answers = iter([{"parts": {"n": "1"}}] + [{"parts": {"n": "1"}}] * 5 + [{"parts": {"n": "2"}}] * 5
                   + [{"parts": {"n": "3"}, "ended": True}] + [{"parts": {"n": "4"}}] * 99)
    url = feed.publish("run", lambda: next(answers))
    headers, got, _ = events(url + "?stream=50", 99)  # the stream ends by itself after the run's end
    assert headers["Content-Type"] == "text/event-stream" and headers["Cache-Control"] == "no-store"
    assert [a["parts"]["n"] for a in got] == ["1", "2", "3"] and got[-1]["ended"]
    assert next(answers)["parts"]["n"] == "4"  # nothing was built after the end


def test_streams_push_together_at_multiples_of_their_period(feed, monkeypatch):
    monkeypatch.setattr(live_feed, "STREAM_S", (0.05, 60.0))
    built = {"a": [], "b": []}

    def view(name):
        built[name].append(time.time())
        return {"parts": {"t": str(len(built[name]))}}
    urls = [feed.publish(k, lambda k=k: view(k)) for k in built]
    threads = [threading.Thread(target=events, args=(u + "?stream=500", 4)) for u in urls]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    for times in built.values():  # after the answer on connecting, every build lands just after a multiple of 0.5 s
        assert len(times) >= 4 and all(t % 0.5 < 0.15 for t in times[1:4]), times


def test_a_stream_period_is_bounded_and_unknown_tokens_end_at_once(feed):
    assert live_feed.stream_period("stream=5000") == 5.0 and live_feed.stream_period("") is None
    assert live_feed.stream_period("stream=1") == live_feed.STREAM_S[0]
    assert live_feed.stream_period("x=1&stream=999999999") == live_feed.STREAM_S[1]
    assert live_feed.stream_period("stream=-5") is None and live_feed.stream_period("stream=abc") is None
    url = feed.publish("a", lambda: {"parts": {}})
    status, _, body = get(url[:-4] + "zzzz?stream=5000")  # not a stream that never ends: a 404 and a sentence
    assert status == 404 and "reload the page" in body["error"]


def test_a_stream_outlives_a_failing_builder_and_says_why(feed, monkeypatch):
    monkeypatch.setattr(live_feed, "STREAM_S", (0.05, 60.0))
    answers = iter([{"parts": {"n": "1"}}, OSError("metrics.jsonl is gone"), {"parts": {"n": "2"}, "ended": True}])

    def build():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer
    url = feed.publish("run", build)
    _, got, _ = events(url + "?stream=50", 3)
    assert got[0] == {"parts": {"n": "1"}} and "metrics.jsonl is gone" in got[1]["error"]  # the page reruns
    assert got[2]["parts"] == {"n": "2"}


def test_closing_the_feed_ends_its_streams(monkeypatch):
    monkeypatch.setattr(live_feed, "STREAM_S", (0.05, 60.0))
    f = live_feed.Feed()
    url = f.publish("run", lambda: {"parts": {"t": str(time.time())}})
    done = []
    reader = threading.Thread(target=lambda: done.append(events(url + "?stream=100", 10_000, timeout=30)))
    reader.start()
    time.sleep(0.5)
    f.close()
    reader.join(10)
    assert done and done[0][2] < 10  # it ended with the feed, not at the reader's timeout


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("live") / "live-run"
    session = TrainingSession.start(apply_overrides(preset("micro"), SMALL), out)
    assert session.train() == "done"
    return out


class Job:
    """A training job as the registry's, at a chosen point of the run's records."""

    def __init__(self, run_dir, metrics, alive=True):
        self.run_id, self.metrics, self.alive, self.total = str(run_dir), metrics, alive, 60

    def snapshot(self):
        step = self.metrics[-1]["step"] if self.metrics else 0
        return {"step": step, "total": self.total, "metrics": list(self.metrics), "eta": 12.0 if self.alive else None}


def test_the_train_view_at_every_stage_of_a_run(run_dir, monkeypatch):
    from tinyviz.training.runs import Run

    records = Run.open(run_dir).metrics()
    now = [0.0]
    job = Job(run_dir, [])
    view = train_live.TrainView(job, log_y=True, smoothing=0.0, clock=lambda: now[0])
    before = view()
    assert before["ended"] is False and "step 0 of 60" in before["parts"]["progress"]
    assert train_live.NOT_YET in before["parts"]["numbers"]
    assert all(before["parts"][k] == "" for k in ("loss", "lr", "tps", "grad", "heads", "heads_title", "acts"))

    # the first steps: the numbers, the loss and (at once, not SLOW_REFRESH_S later) the slower charts
    job.metrics = [r for r in records if r["step"] <= 5]
    now[0] = 1.0
    first = view()["parts"]
    assert f"{job.metrics[-1]['loss']:.3f}" in first["numbers"] and "Train loss" in first["numbers"]
    assert first["loss"].startswith("<svg") and "What to look for" in first["loss"]
    assert first["lr"].startswith("<svg") and first["grad"].startswith("<svg")
    assert "Heads at step 0" in first["heads_title"]  # the snapshot taken at the start
    assert "about 12 s left" in first["progress"]

    # later steps: the numbers follow every step; the slower charts wait their turn ...
    job.metrics = [r for r in records if r["step"] <= 45]
    turn = train_live.SLOW_REFRESH_S / len(train_live.SLOW)
    now[0] = 1.0 + turn - 0.5
    later = view()["parts"]
    assert f"{job.metrics[-1]['loss']:.3f}" in later["numbers"] and later["loss"] != first["loss"]
    assert all(later[k] == first[k] for k in ("lr", "tps", "grad", "heads_title", "heads"))
    # ... one chart per turn (lr first), never all at once (a burst of the server's CPU beside the training)
    now[0] = 1.0 + turn
    after = view()["parts"]
    assert after["lr"] != first["lr"] and all(after[k] == first[k] for k in ("tps", "grad", "heads_title"))
    for i, kind in enumerate(train_live.SLOW[1:], start=2):
        now[0] = 1.0 + i * turn
        assert view()["parts"][kind] != first[kind], kind
    # ... and each takes the latest snapshot at its turn
    assert "Heads at step 40" in view()["parts"]["heads_title"]

    job.alive = False
    assert view()["ended"] is True


def test_the_first_snapshot_is_drawn_as_soon_as_it_lands(run_dir, monkeypatch):
    from tinyviz.training.runs import Run

    records = Run.open(run_dir).metrics()
    job = Job(run_dir, [r for r in records if r["step"] <= 5])
    view = train_live.TrainView(job, log_y=False, smoothing=0.5, clock=lambda: 0.0)  # the clock never moves
    real = view.run.snapshot_steps
    monkeypatch.setattr(view.run, "snapshot_steps", lambda: [])
    assert view()["parts"]["heads"] == ""
    monkeypatch.setattr(view.run, "snapshot_steps", real)
    job.metrics = [r for r in records if r["step"] <= 25]
    heads = view()["parts"]["heads"]
    # one click target per head, each naming the step it shows (the grid is redrawn in place, no rerun)
    assert sorted(re.findall(r'data-click="([^"]+)"', heads)) == ["[0, 0, 20]", "[0, 1, 20]", "[1, 0, 20]",
                                                                  "[1, 1, 20]"]


def test_a_click_on_a_live_head_opens_the_step_it_showed(monkeypatch):
    put = {}
    monkeypatch.setattr(train_panel.widgets, "selection",
                        lambda key: {"selection": {"points": [{"customdata": [1, 0, 300]}]}})
    monkeypatch.setattr(train_panel.state, "put", lambda key, value: put.update({key: value}))
    train_panel._on_heads_click(None)
    assert put == {train_panel.state.TRAIN_JUMP: (1, 0, 300)}
    # the interactive grid of a stopped run: [layer, head] and the step it was drawn at
    monkeypatch.setattr(train_panel.widgets, "selection",
                        lambda key: {"selection": {"points": [{"customdata": [0, 1]}]}})
    train_panel._on_heads_click(200)
    assert put == {train_panel.state.TRAIN_JUMP: (0, 1, 200)}


def test_live_parts_escape_what_the_run_wrote():
    html = live_parts.sample([{"step": 20, "extra": {"sample": "<script>alert(1)</script> & more"}}])
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert "step 20" in html
    assert live_parts.sample([{"step": 1, "loss": 2.0}]) == ""
    bar = live_parts.progress(250, 1000, 75)
    assert "step 250 of 1000 · about 1 min 15 s left" in bar and "width:25.00%" in bar
    assert "width:100.00%" in live_parts.progress(1200, 1000)  # a resumed run past its old total stays in the bar


def test_health_lines_name_the_step_and_severity():
    class W:
        def __init__(self, severity, step, message):
            self.severity, self.step, self.message = severity, step, message
    html = live_parts.health([W("warning", 300, "val loss rising <since> step 300"), W("error", 5, "loss is NaN")])
    assert html.count('role="alert"') == 2 and "Step 300: val loss rising &lt;since&gt; step 300" in html
    assert "Health: no problems seen" in live_parts.health([])


def test_the_sidebar_status_follows_the_training_job(run_dir, monkeypatch):
    from tinyviz.training.runs import Run
    from tinyviz.ui import sidebar
    from tinyviz.ui.registry import registry

    records = Run.open(run_dir).metrics()
    settled = sidebar._StatusView(str(run_dir))()  # a run no process trains: its folder's line, nothing trains
    assert "step 60 of 60 · done" in settled["parts"]["status"] and "Training now" not in settled["parts"]["status"]
    assert settled["ended"] is True and settled["version"] == len(Run.open(run_dir).history.steps()) > 0

    job = Job(run_dir, [r for r in records if r["step"] <= 30])
    job.snapshot = lambda: {"step": 30, "total": 60, "metrics": [], "eta": None, "status": "running"}
    monkeypatch.setitem(registry().jobs, str(run_dir), job)
    view = sidebar._StatusView(str(run_dir))
    live = view()
    assert "step 30 of 60 · training · 2L 2H d32" in live["parts"]["status"]
    assert f"Training now: {run_dir.name}" in live["parts"]["status"] and live["ended"] is False
    job.alive = False  # it ended while the page was open: its status as the job says, and the feed says so
    job.snapshot = lambda: {"step": 42, "total": 60, "metrics": [], "eta": None, "status": "stopped"}
    ended = view()
    assert "step 42 of 60 · stopped" in ended["parts"]["status"] and ended["ended"] is True


def test_figures_built_for_svg_draw_the_same_svg(run_dir):
    """The live view skips applying Plotly's template (half the time of building a figure): the SVG renderer must
    not read it, or the live charts would change."""
    from tinyviz.analysis import plots, svg
    from tinyviz.training.runs import Run

    run = Run.open(run_dir)
    records = run.metrics()

    def every_svg():
        figs = train_live.slow_figures(run, records, 60, run.load_snapshot, lambda steps: None)
        figs["loss"] = plots.loss_curves({"r": records}, log_y=True, smoothing=0.5)
        return {k: svg.figure_svg(f, 700) for k, f in figs.items() if hasattr(f, "data")}

    with plots.for_svg():
        light = every_svg()
    full = every_svg()
    assert set(full) == {"loss", "lr", "tps", "grad", "acts", "heads"} and light == full
    with plots.for_svg():
        assert plots.metric_curve(records, "lr", "r", "lr").layout.template.layout.paper_bgcolor is None
    assert plots.metric_curve(records, "lr", "r", "lr").layout.template.layout.paper_bgcolor is not None


def test_the_benchmark_counts_slow_steps_after_refreshes_against_between(tmp_path):
    """benchmarks/app_speed's dip-per-refresh figure: 100 steps a second from wall clock 1000 s, every step
    at 100k tokens/s but the one ending just after each refresh (multiples of 5 s) at 40k."""
    from benchmarks.app_speed import _refresh_dips
    ends = [1000 + 0.01 * (i + 1) for i in range(2000)]
    slow = {i for i, t in enumerate(ends) if (t % 5) < 0.01 + 1e-9 and i > 300}
    (tmp_path / "m.jsonl").write_text("".join(
        json.dumps({"step": i + 1, "tokens_per_s": 40e3 if i in slow else 100e3}) + "\n" for i in range(2000)))
    trace = [(t, i + 1, {}, t) for i, t in enumerate(ends)]  # seen as each line lands
    got = _refresh_dips(tmp_path / "m.jsonl", trace, every=5.0, window=0.4)
    assert got["refreshes"] == 3 and got["at_refresh"] == 1.0 and got["between"] == 0.0
    no_dips = _refresh_dips(tmp_path / "m.jsonl", trace, every=3.7, window=0.4)  # other instants: fewer hits
    assert no_dips["at_refresh"] < 1.0
    assert _refresh_dips(tmp_path / "m.jsonl", [], every=5.0)["refreshes"] == 0  # a run that logged nothing seen
