"""A latency-and-fault HTTP proxy for an S3 endpoint, on 127.0.0.1 only.

Put it between a client and an S3 server (moto, SeaweedFS, MinIO) to make
tests and benchmarks deterministic about *work*, not time: it counts every
request (method, key, Range, status, body bytes sent), adds a fixed delay
per request, and injects faults.

API (all thread-safe)::

    from tests.s3proxy import Fault, ProxyThread

    with ProxyThread("http://127.0.0.1:5000", delay_s=0.020) as proxy:
        client = make_s3_client(endpoint_url=proxy.url)   # path-style addressing
        ...
        proxy.count("GET")          # GETs answered since the last reset()
        proxy.body_bytes("GET")     # response body bytes sent for them
        proxy.records()             # every request, as Record tuples
        proxy.inject(Fault.ERROR_500, times=2)          # next 2 GETs get 500
        proxy.inject(Fault.DROP_CONNECTION, method="GET")
        proxy.reset()               # clear counters and pending faults
        proxy.delay_s = 0.0         # change the latency at any time

`S3Proxy` is the same proxy for use on a running event loop
(``await proxy.start()`` / ``await proxy.stop()``); `ProxyThread` runs one
on its own loop in a daemon thread, for synchronous tests, benchmarks and
subprocesses pointed at ``proxy.url``.

Faults, each consumed by one matching request:

* ``ERROR_500``: 500 InternalError, upstream not contacted;
* ``SLOW_DOWN_503``: 503 SlowDown (S3 throttling);
* ``FORBIDDEN_403``: 403 AccessDenied;
* ``DROP_CONNECTION``: half the response body, then the connection closes;
* ``SLOW_BODY``: the body trickles, `slow_body_s` between 4 KiB pieces;
* ``STALL``: no answer at all until the client gives up.

One upstream connection per request (``Connection: close`` upstream), so
the proxy never has to frame upstream keep-alive; clients keep their
connections to the proxy alive. Requests with bodies (uploads) should go to
the upstream directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
import urllib.parse
from collections import deque
from dataclasses import dataclass
from types import TracebackType
from typing import NamedTuple


class Fault(enum.Enum):
    ERROR_500 = "500"
    SLOW_DOWN_503 = "503"
    FORBIDDEN_403 = "403"
    DROP_CONNECTION = "drop"
    SLOW_BODY = "slow"
    STALL = "stall"


class Record(NamedTuple):
    """One proxied request: method (GET, HEAD, ... and LIST for a GET of a
    bucket, path-style), path (bucket/key), Range header or '',
    status sent, response body bytes sent, fault applied or None."""

    method: str
    path: str
    range: str
    status: int
    body_bytes: int
    fault: Fault | None


_ERRORS = {
    Fault.ERROR_500: (500, "Internal Server Error", "InternalError"),
    Fault.SLOW_DOWN_503: (503, "Slow Down", "SlowDown"),
    Fault.FORBIDDEN_403: (403, "Forbidden", "AccessDenied"),
}


@dataclass
class _Pending:
    fault: Fault
    method: str | None
    times: int


class S3Proxy:
    """The proxy on the running event loop; see the module docstring."""

    def __init__(self, upstream: str, delay_s: float = 0.0, slow_body_s: float = 0.05) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        if parsed.hostname not in ("127.0.0.1", "localhost"):
            raise ValueError("the proxy only talks to loopback upstreams")
        self._up_host = "127.0.0.1"
        self._up_port = parsed.port or 80
        self.delay_s = delay_s
        self.slow_body_s = slow_body_s
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self._faults: deque[_Pending] = deque()
        self._server: asyncio.Server | None = None
        self._port = 0
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self._port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    # -- counters and faults ----------------------------------------------

    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records)

    def count(self, method: str | None = None) -> int:
        return sum(1 for r in self.records() if method is None or r.method == method)

    def body_bytes(self, method: str | None = None) -> int:
        return sum(r.body_bytes for r in self.records() if method is None or r.method == method)

    def reset(self) -> None:
        with self._lock:
            self._records.clear()
            self._faults.clear()

    def inject(self, fault: Fault, times: int = 1, method: str | None = "GET") -> None:
        """Apply `fault` to the next `times` requests with `method` (any if None)."""
        with self._lock:
            self._faults.append(_Pending(fault, method, times))

    def _take_fault(self, method: str) -> Fault | None:
        with self._lock:
            for pending in self._faults:
                if pending.method is None or pending.method == method:
                    pending.times -= 1
                    if pending.times <= 0:
                        self._faults.remove(pending)
                    return pending.fault
        return None

    def _record(self, record: Record) -> None:
        with self._lock:
            self._records.append(record)

    # -- serving ------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Proxy one request; False when the client connection should close."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = [tuple(line.split(":", 1)) for line in lines[1:] if ":" in line]
        length = next((int(v) for k, v in headers if k.strip().lower() == "content-length"), 0)
        body = await reader.readexactly(length) if length else b""
        path = urllib.parse.urlsplit(target).path.lstrip("/")
        rng = next((v.strip() for k, v in headers if k.strip().lower() == "range"), "")
        if method == "GET" and "/" not in path:
            method = "LIST"  # a GET of the bucket itself lists keys
        fault = self._take_fault(method)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if fault is Fault.STALL:
            self._record(Record(method, path, rng, 0, 0, fault))
            await asyncio.sleep(3600)
            return False
        if fault in _ERRORS:
            status, reason, code = _ERRORS[fault]
            xml = (
                f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>{reason} (injected)</Message></Error>"
            ).encode()
            payload = b"" if method == "HEAD" else xml
            # Recorded before the client can see the answer: counts are exact
            # as soon as the client has its response.
            self._record(Record(method, path, rng, status, len(payload), fault))
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
                f"Content-Length: {len(payload)}\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            return True
        status, resp_headers, resp_body = await self._upstream(
            "GET" if method == "LIST" else method, target, headers, body
        )
        out_headers = [
            (k, v)
            for k, v in resp_headers
            if k.lower() not in ("connection", "content-length", "transfer-encoding")
        ]
        declared = len(resp_body)
        head_out = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}:{v}\r\n" for k, v in out_headers)
        if method == "HEAD":
            # HEAD answers carry the object's length without a body.
            upstream_length = next(
                (v for k, v in resp_headers if k.lower() == "content-length"), "0"
            )
            head_out += f"Content-Length:{upstream_length}\r\n\r\n"
            self._record(Record(method, path, rng, status, 0, fault))
            writer.write(head_out.encode("latin-1"))
            await writer.drain()
            return True
        head_out += f"Content-Length: {declared}\r\n\r\n"
        writer.write(head_out.encode("latin-1"))
        if fault is Fault.DROP_CONNECTION:
            sent = resp_body[: declared // 2]
            self._record(Record(method, path, rng, status, len(sent), fault))
            writer.write(sent)
            await writer.drain()
            return False
        self._record(Record(method, path, rng, status, declared, fault))
        if fault is Fault.SLOW_BODY:
            for i in range(0, declared, 4096):
                writer.write(resp_body[i : i + 4096])
                await writer.drain()
                await asyncio.sleep(self.slow_body_s)
        else:
            writer.write(resp_body)
        await writer.drain()
        return True

    async def _upstream(
        self, method: str, target: str, headers: list[tuple[str, ...]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        up_reader, up_writer = await asyncio.open_connection(self._up_host, self._up_port)
        try:
            kept = [
                (k, v) for k, v in headers if k.strip().lower() not in ("connection", "keep-alive")
            ]
            request = f"{method} {target} HTTP/1.1\r\n"
            request += "".join(f"{k}:{v}\r\n" for k, v in kept)
            request += "Connection: close\r\n\r\n"
            up_writer.write(request.encode("latin-1") + body)
            await up_writer.drain()
            raw = await up_reader.read()  # until the upstream closes
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()
        head, _, rest = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        resp_headers = [
            (k.strip(), v.strip())
            for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
        ]
        if any(k.lower() == "transfer-encoding" and "chunked" in v for k, v in resp_headers):
            rest = _unchunk(rest)
        if method == "HEAD":
            rest = b""
        return status, resp_headers, rest


def _unchunk(data: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2


class ProxyThread:
    """An :class:`S3Proxy` on its own event loop in a daemon thread.

    Use as a context manager or call :meth:`start` / :meth:`stop`. Counter
    and fault methods delegate to the proxy (see the module docstring).
    """

    def __init__(self, upstream: str, delay_s: float = 0.0, slow_body_s: float = 0.05) -> None:
        self.proxy = S3Proxy(upstream, delay_s, slow_body_s)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="s3proxy")

    def start(self) -> ProxyThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> ProxyThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.proxy.url

    @property
    def delay_s(self) -> float:
        return self.proxy.delay_s

    @delay_s.setter
    def delay_s(self, value: float) -> None:
        self.proxy.delay_s = value

    def records(self) -> list[Record]:
        return self.proxy.records()

    def count(self, method: str | None = None) -> int:
        return self.proxy.count(method)

    def body_bytes(self, method: str | None = None) -> int:
        return self.proxy.body_bytes(method)

    def reset(self) -> None:
        self.proxy.reset()

    def inject(self, fault: Fault, times: int = 1, method: str | None = "GET") -> None:
        self.proxy.inject(fault, times, method)
