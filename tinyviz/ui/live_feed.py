"""A loopback feed of what a live view shows, so the browser can redraw it without a Streamlit rerun.

While a run trains, the Train page and the sidebar change every few seconds. Streamlit's way is a fragment that
reruns on a timer, and on a 2-core laptop every rerun costs the browser 0.15-0.3 s of CPU (React re-rendering
the page's elements and their styles, whatever changed), which the training process loses twice over (its two
threads wait for each other at every barrier): a dip in tokens/s at every refresh (benchmarks/app_speed.py).

So the views publish a builder here, and the page's light elements (widgets.live_html) keep one stream open per
view (server-sent events, ``GET /live/<token>?stream=<ms>``) and swap only the parts whose HTML changed: no rerun,
no React. The server pushes an answer only when it changed, and every stream of this server at the same instants
(multiples of the period on the clock), so the page's two views wake the machine once per period, not twice. A
stream, not a poll: a fetch costs Chromium more than the redraw it brings (measured: a page fetching an unchanged
answer every 5 s was followed by a slow training step after 67 % of the fetches, an unchanged answer pushed on
an open stream after none; see docs/performance.md). ``GET /live/<token>`` answers once.

The server listens on 127.0.0.1 only, a builder is reached by an unguessable token, and a page that cannot reach
it (opened from another machine) asks Streamlit to rerun its fragment instead, as before. Builders run in this
server's threads: they must not call Streamlit.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "127.0.0.1"
PREFIX = "/live/"
MAX_BUILDERS = 64  # views published and not yet dropped (one per run and chart option per session)
EVERY_S = 5.0  # how often the live views refresh; one period for all, so a page's streams push together
STREAM_S = (1.0, 60.0)  # the shortest and longest period a stream may ask for
KEEPALIVE_S = 30.0  # a stream whose view does not change still writes this often, to notice a page that left


class Feed:
    """One loopback HTTP server; GET /live/<token> answers the token's builder as JSON, once or as a stream."""

    def __init__(self, host: str = HOST):
        self._lock = threading.Lock()
        self._builders: OrderedDict[str, Callable[[], dict]] = OrderedDict()
        self._tokens: dict[Hashable, str] = {}
        feed = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server's name)
                path, _, query = self.path.partition("?")
                every = stream_period(query)
                first = feed._answer(path)
                if every is None or first[0] == 404:
                    self._head(first[0], "application/json", len(first[1]))
                    self.wfile.write(first[1])
                    return
                self._head(200, "text/event-stream")
                feed._stream(path, every, self._push, first)

            def _head(self, status: int, kind: str, length: int | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                if length is not None:
                    self.send_header("Content-Length", str(length))
                self.send_header("Cache-Control", "no-store")
                # the page is another origin (Streamlit's port); the token, not the origin, guards the data
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()

            def _push(self, event: bytes) -> None:
                self.wfile.write(event)
                self.wfile.flush()

            def log_message(self, *args):  # the server's log is not a place for every answer
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # a page closed mid-answer: nothing to report
                pass

        self._closed = threading.Event()
        self._server = Server((host, 0), Handler)
        self.host, self.port = host, self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, name="tinyviz-live-feed", daemon=True).start()

    def publish(self, key: Hashable, build: Callable[[], dict]) -> str:
        """The URL that answers build() (a JSON-able dict); the same key keeps its URL and takes the new builder."""
        with self._lock:
            token = self._tokens.get(key) or secrets.token_urlsafe(18)
            self._tokens[key] = token
            self._builders[token] = build
            self._builders.move_to_end(token)
            while len(self._builders) > MAX_BUILDERS:
                old, _ = self._builders.popitem(last=False)
                self._tokens = {k: t for k, t in self._tokens.items() if t != old}
        return f"http://{self.host}:{self.port}{PREFIX}{token}"

    def answer(self, path: str) -> tuple[int, bytes]:
        """(HTTP status, JSON body) of the view at `path` (/live/<token>)."""
        return self._answer(path)[:2]

    def _answer(self, path: str) -> tuple[int, bytes, bool]:
        """answer() and whether the view says its run ended."""
        token = path.split("?", 1)[0].removeprefix(PREFIX) if path.startswith(PREFIX) else ""
        with self._lock:
            build = self._builders.get(token)
        if build is None:
            return 404, b'{"error": "no such view; reload the page"}', False
        try:
            view = build()
            return 200, json.dumps(view).encode(), bool(view.get("ended"))
        except Exception as e:  # a run folder deleted under it, a torn file: the page keeps what it shows
            return 500, json.dumps({"error": f"{type(e).__name__}: {e}"}).encode(), False

    def _stream(self, path: str, every: float, push: Callable[[bytes], None],
                first: tuple[int, bytes, bool]) -> None:
        """Push the view's answer (`first`, just built), then at every multiple of `every` seconds on the clock
        when it changed, until it says the run ended, its token is dropped, the page goes (a write fails) or the
        feed closes. A failing builder's answer is pushed too (the page then falls back to a rerun)."""
        last, wrote, (status, body, ended) = None, time.monotonic(), first
        while status != 404:
            try:
                if body != last:
                    push(b"data: " + body + b"\n\n")
                    last, wrote = body, time.monotonic()
                elif time.monotonic() - wrote >= KEEPALIVE_S:
                    push(b": still here\n\n")
                    wrote = time.monotonic()
            except OSError:
                return
            if ended or self._closed.wait(every - time.time() % every):
                return
            status, body, ended = self._answer(path)

    def close(self) -> None:
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()


def stream_period(query: str) -> float | None:
    """The period in seconds a ``stream=<ms>`` query asks for, within STREAM_S; None for a one-off answer."""
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name == "stream" and value.isdigit():
            return min(max(int(value) / 1000, STREAM_S[0]), STREAM_S[1])
    return None


_feed: Feed | None = None
_feed_lock = threading.Lock()


def feed() -> Feed | None:
    """The process's feed, started on first use; None where no loopback port can be opened (the pages then
    rerun their fragments on a timer)."""
    global _feed
    with _feed_lock:
        if _feed is None:
            try:
                _feed = Feed()
            except OSError:
                return None
        return _feed
