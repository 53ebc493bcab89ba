"""The load client against a tiny local HTTP server: a limited pass asks each URL once.

A cold or first pass (`limit=len(targets)`) must never count the answer to a
repeated URL, which a server would serve from its caches, in place of one it
has not answered yet; at c > 1 wrk would otherwise wrap round to the top of
the list while the last URLs are still in flight.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from bench.load import Client, have_wrk, run_load

pytestmark = pytest.mark.integration


class _Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: ClassVar[Counter[str]] = Counter()
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            self.seen[self.path] += 1
        # The last URLs are the slowest: a client that wraps round answers its
        # repeats (fast) before them.
        time.sleep(0.03 if self.path.endswith(("/8", "/9")) else 0.001)
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.parametrize("client", ["wrk", "httpx"])
@pytest.mark.parametrize("concurrency", [1, 4, 8])
def test_limited_pass_asks_every_url_exactly_once(
    server: str, client: Client, concurrency: int
) -> None:
    if client == "wrk" and not have_wrk():
        pytest.skip("wrk is not installed")
    targets = [f"/u/{i}" for i in range(10)]
    _Counting.seen.clear()
    result = run_load(server, targets, concurrency, 10.0, len(targets), client=client)
    assert result.requests == len(targets)
    assert result.errors == 0
    assert _Counting.seen == Counter(targets)
    assert result.duration_s < 5


def test_unlimited_run_keeps_cycling(server: str) -> None:
    if not have_wrk():
        pytest.skip("wrk is not installed")
    targets = [f"/u/{i}" for i in range(3)]
    _Counting.seen.clear()
    result = run_load(server, targets, 2, 1.0, None, client="wrk")
    assert result.requests > len(targets)
    assert set(_Counting.seen) == set(targets)
