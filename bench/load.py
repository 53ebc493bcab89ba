"""The load client: wrk with a URL-list script, else an async httpx client.

wrk is C, event-driven and runs here with one thread, so it takes a small
share of a core even at thousands of requests per second; the Python
fallback costs far more CPU and is used only where wrk is not installed (the
report says which client measured what).

Every step is bounded twice: by duration and, when `limit` is given, by the
number of responses (a cold pass asks each URL once).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import httpx

WRK_SCRIPT = Path(__file__).resolve().parent / "wrk_urls.lua"
Client = Literal["auto", "wrk", "httpx"]


@dataclass(frozen=True)
class LoadResult:
    """What one load step measured. Latencies in milliseconds."""

    client: str
    concurrency: int
    requests: int
    duration_s: float
    bytes: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        """Completed requests per second (errors included, as wrk counts them)."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict, `rps` included."""
        return {**asdict(self), "rps": self.rps}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadResult:
        """The inverse of `to_json`."""
        fields = {k: v for k, v in data.items() if k != "rps"}
        return cls(**fields)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The nearest-rank `p`-th percentile of ascending `sorted_values` (0 if empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarise(
    client: str,
    concurrency: int,
    latencies_s: Sequence[float],
    duration_s: float,
    nbytes: int,
    errors: int,
) -> LoadResult:
    """A LoadResult from per-request latencies (seconds)."""
    ordered = sorted(latencies_s)
    return LoadResult(
        client=client,
        concurrency=concurrency,
        requests=len(ordered) + errors,
        duration_s=duration_s,
        bytes=nbytes,
        errors=errors,
        p50_ms=percentile(ordered, 50) * 1000,
        p95_ms=percentile(ordered, 95) * 1000,
        p99_ms=percentile(ordered, 99) * 1000,
        max_ms=(ordered[-1] * 1000) if ordered else 0.0,
    )


def have_wrk() -> bool:
    """True when wrk is on PATH."""
    return shutil.which("wrk") is not None


def parse_wrk_output(stdout: str, concurrency: int) -> LoadResult:
    """The LoadResult in wrk_urls.lua's ``BENCH_JSON`` line."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("BENCH_JSON "):
            data = json.loads(line.removeprefix("BENCH_JSON "))
            break
    else:
        raise RuntimeError(f"wrk printed no BENCH_JSON line:\n{stdout[-2000:]}")
    lat = data["latency_us"]
    return LoadResult(
        client="wrk",
        concurrency=concurrency,
        requests=int(data["requests"]),
        duration_s=data["duration_us"] / 1e6,
        bytes=int(data["bytes"]),
        errors=sum(int(v) for v in data["errors"].values()),
        p50_ms=lat["p50"] / 1000,
        p95_ms=lat["p95"] / 1000,
        p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000,
    )


def run_wrk(
    base_url: str,
    targets: Sequence[str],
    concurrency: int,
    duration_s: float,
    limit: int | None,
    timeout_s: float,
) -> LoadResult:
    """One wrk run over `targets` (cycled) with `concurrency` connections.

    With a `limit`, the script reports reaching it on stderr and we SIGINT
    wrk, which otherwise sleeps out the whole duration. Its clock then
    includes our reaction time, so a limited run at c=1, whose requests are
    strictly sequential, takes the sum of its latencies as its duration.
    """
    with tempfile.NamedTemporaryFile("w", suffix=".urls", delete=False) as listing:
        listing.write("\n".join(targets) + "\n")
    try:
        # wrk takes whole seconds only.
        seconds = max(1, math.ceil(duration_s))
        cmd = [
            "wrk",
            "-t1",
            f"-c{concurrency}",
            f"-d{seconds}s",
            f"--timeout={max(1, math.ceil(timeout_s))}s",
            "-s",
            str(WRK_SCRIPT),
            base_url,
            "--",
            listing.name,
            str(limit or 0),
        ]
        # wrk installs its SIGINT handler just before printing "Running ...":
        # a SIGINT before that would kill it. Line-buffered output (stdbuf)
        # shows when that point has passed.
        stdbuf = shutil.which("stdbuf")
        argv = [stdbuf, "-oL", *cmd] if stdbuf else cmd
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        started = time.monotonic()
        limit_hit, armed = threading.Event(), threading.Event()
        stdout_lines: list[str] = []
        stderr_lines: list[str] = []

        def watch_stdout() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("Running"):
                    armed.set()
                stdout_lines.append(line)

        def watch_stderr() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if line.strip() == "BENCH_LIMIT":
                    limit_hit.set()
                else:
                    stderr_lines.append(line)

        watchers = [
            threading.Thread(target=watch_stdout, daemon=True),
            threading.Thread(target=watch_stderr, daemon=True),
        ]
        for watcher in watchers:
            watcher.start()
        deadline = started + seconds + timeout_s + 30
        while proc.poll() is None:
            ready = armed.is_set() or (stdbuf is None and time.monotonic() - started > 0.2)
            if limit_hit.is_set() and ready:
                # Repeated: one that lands before wrk's main thread starts
                # sleeping would not wake it.
                proc.send_signal(signal.SIGINT)
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise TimeoutError("wrk did not finish")
            time.sleep(0.01)
        for watcher in watchers:
            watcher.join(5)
        stdout = "".join(stdout_lines)
        if proc.returncode != 0:
            raise RuntimeError(f"wrk failed ({proc.returncode}): {''.join(stderr_lines).strip()}")
        result = parse_wrk_output(stdout, concurrency)
        if limit and concurrency == 1 and result.requests >= limit:
            mean_ms = _mean_latency_ms(stdout)
            result = replace(result, duration_s=mean_ms * result.requests / 1000)
        return result
    finally:
        Path(listing.name).unlink(missing_ok=True)


def _mean_latency_ms(stdout: str) -> float:
    for line in reversed(stdout.splitlines()):
        if line.startswith("BENCH_JSON "):
            return float(json.loads(line.removeprefix("BENCH_JSON "))["latency_us"]["mean"]) / 1000
    return 0.0


async def _run_httpx(
    base_url: str,
    targets: Sequence[str],
    concurrency: int,
    duration_s: float,
    limit: int | None,
    timeout_s: float,
) -> LoadResult:
    latencies: list[float] = []
    errors = 0
    nbytes = 0
    counter = itertools.count()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    start = time.perf_counter()
    deadline = start + duration_s
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=timeout_s) as client:

        async def worker() -> None:
            nonlocal errors, nbytes
            while time.perf_counter() < deadline:
                i = next(counter)
                if limit is not None and i >= limit:
                    return
                t0 = time.perf_counter()
                try:
                    response = await client.get(targets[i % len(targets)])
                except httpx.HTTPError:
                    errors += 1
                    continue
                nbytes += len(response.content)
                if response.is_success:
                    latencies.append(time.perf_counter() - t0)
                else:
                    errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summarise("httpx", concurrency, latencies, time.perf_counter() - start, nbytes, errors)


def run_load(
    base_url: str,
    targets: Sequence[str],
    concurrency: int,
    duration_s: float,
    limit: int | None = None,
    timeout_s: float = 60.0,
    client: Client = "auto",
) -> LoadResult:
    """Drive `base_url` with `targets` at fixed `concurrency`, bounded by
    `duration_s` and (if given) `limit` responses."""
    if not targets:
        raise ValueError("no targets")
    use_wrk = client == "wrk" or (client == "auto" and have_wrk())
    if use_wrk:
        return run_wrk(base_url, targets, concurrency, duration_s, limit, timeout_s)
    return asyncio.run(_run_httpx(base_url, targets, concurrency, duration_s, limit, timeout_s))
