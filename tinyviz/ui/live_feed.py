"""A loopback feed of what a live view shows, so the browser can redraw it without a Streamlit rerun.

While a run trains, the Train page and the sidebar change every few seconds. Streamlit's way is a fragment that
reruns on a timer, and on a 2-core laptop every rerun costs the browser 0.15-0.3 s of CPU (React re-rendering
the page's elements and their styles, whatever changed), which the training process loses twice over (its two
threads wait for each other at every barrier): a dip in tokens/s at every refresh (benchmarks/app_speed.py).

So the views publish a builder here, and the page's light elements (widgets.live_html) fetch its JSON every few
seconds and swap only the parts whose HTML changed: no rerun, no React. The server listens on 127.0.0.1 only, a
builder is reached by an unguessable token, and a page that cannot reach it (opened from another machine) asks
Streamlit to rerun its fragment instead, as before. Builders run in this server's threads: they must not call
Streamlit.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "127.0.0.1"
PREFIX = "/live/"
MAX_BUILDERS = 64  # views published and not yet dropped (one per run and chart option per session)


class Feed:
    """One loopback HTTP server; GET /live/<token> answers the token's builder as JSON."""

    def __init__(self, host: str = HOST):
        self._lock = threading.Lock()
        self._builders: OrderedDict[str, Callable[[], dict]] = OrderedDict()
        self._tokens: dict[Hashable, str] = {}
        feed = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the http.server's name)
                status, body = feed.answer(self.path)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                # the page is another origin (Streamlit's port); the token, not the origin, guards the data
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # the server's log is not a place for every poll
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):  # a page closed mid-answer: nothing to report
                pass

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
        token = path.split("?", 1)[0].removeprefix(PREFIX) if path.startswith(PREFIX) else ""
        with self._lock:
            build = self._builders.get(token)
        if build is None:
            return 404, b'{"error": "no such view; reload the page"}'
        try:
            return 200, json.dumps(build()).encode()
        except Exception as e:  # a run folder deleted under it, a torn file: the page keeps what it shows
            return 500, json.dumps({"error": f"{type(e).__name__}: {e}"}).encode()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


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
