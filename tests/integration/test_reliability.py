"""Load, deadlines, disconnects, shutdown and dead decoders: real processes, loopback only.

Every loop here is bounded in count and time; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests import processes
from tests.conftest import Stack, start_decoder, start_gateway
from tests.reliability_tools import memory_kib, metric

pytestmark = pytest.mark.integration

MiB = 1 << 20
TILE = "/iiif/3/sample-pyramid/{x},0,256,256/256,/0/default.jpg"
# 2400x1800 PNG upscaled from a 1200x900 JPEG: tens of MiB by the estimate.
BIG = "/iiif/3/sample-photo/full/^2400,/0/default.png"
# Far beyond any lane of a 96 MiB budget: refused at once.
HUGE = "/iiif/3/sample-photo/full/^5000,/0/default.png"
SLOW = "/iiif/3/sample-photo/full/^3000,/33/default.png"


async def _fetch_all(base: str, paths: list[str], concurrency: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        return await asyncio.gather(*(client.get(p) for p in paths))


def test_load_stays_inside_the_memory_budget(image_root: Path, tmp_path: Path) -> None:
    budget_mb = 96
    decoder, target = start_decoder(
        image_root,
        tmp_path,
        "decoder-load",
        {
            "IIIF_DECODER_RENDER_BUDGET_MB": str(budget_mb),
            "IIIF_DECODER_SMALL_RENDER_MB": "8",
            "IIIF_DECODER_DECODE_THREADS": "2",
            "IIIF_DECODER_MAX_QUEUED": "6",
            "IIIF_DECODER_QUEUE_TIMEOUT_S": "3",
            "MALLOC_ARENA_MAX": "2",
        },
    )
    gateway, port = start_gateway(target, tmp_path, "gateway-load")
    base = f"http://127.0.0.1:{port}"
    try:
        # Warm up every path once, then take the baseline.
        warm = asyncio.run(_fetch_all(base, [BIG, TILE.format(x=0)], 2))
        assert [r.status_code for r in warm] == [200, 200]
        baseline_kib = memory_kib(decoder.pid, "VmRSS")

        # Distinct big renders (identical ones would be shared, not queued).
        bigs = [BIG.replace("^2400,", f"^{2400 + i},") for i in range(16)]
        paths = bigs + [HUGE] * 4 + [TILE.format(x=256 * (i % 4)) for i in range(40)]
        responses = asyncio.run(_fetch_all(base, paths, 60))
        by_kind: dict[str, Counter[int]] = {"big": Counter(), "huge": Counter(), "tile": Counter()}
        for path, resp in zip(paths, responses, strict=True):
            kind = "big" if path in bigs else "huge" if path == HUGE else "tile"
            by_kind[kind][resp.status_code] += 1
            if resp.status_code == 503:
                assert int(resp.headers["retry-after"]) >= 1
        peak_kib = memory_kib(decoder.pid, "VmHWM")
        growth_mb = (peak_kib - baseline_kib) / 1024

        assert by_kind["huge"] == Counter({503: 4}), by_kind
        assert by_kind["tile"] == Counter({200: 40}), f"tiles starved: {by_kind}"
        assert set(by_kind["big"]) <= {200, 503}, by_kind
        assert by_kind["big"][200] >= 2, by_kind
        assert by_kind["big"][503] >= 1, "the bounded queue must refuse some big renders"
        # Stated overhead: the estimate covers pixel buffers; allocator slack,
        # encoder state and HTTP/2 buffers may add up to a quarter more.
        assert growth_mb <= budget_mb * 1.25, f"RSS grew {growth_mb:.0f} MiB"
        assert decoder.poll() is None, "the decoder must survive the load"
        print(f"load: {dict(by_kind)}; decoder RSS growth {growth_mb:.0f} MiB (budget {budget_mb})")
    finally:
        processes.stop(gateway)
        processes.stop(decoder)


def test_identical_renders_in_flight_are_done_once(stack: Stack) -> None:
    before = metric(stack.decoder_metrics_url, "iiif_decoder_shared_renders_total")
    path = "/iiif/3/sample-photo/full/^1900,/7/default.png"
    responses = asyncio.run(_fetch_all(stack.gateway_url, [path] * 6, 6))
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    shared = metric(stack.decoder_metrics_url, "iiif_decoder_shared_renders_total") - before
    assert shared >= 1, "concurrent identical renders should share one decode"


def _drained(metrics_url: str, deadline_s: float = 15) -> bool:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if metric(metrics_url, "iiif_decoder_memory_bytes") == 0:
            return True
        time.sleep(0.05)
    return False


def test_client_disconnect_cancels_the_render(stack: Stack) -> None:
    def cancelled() -> float:
        return metric(
            stack.decoder_metrics_url,
            "iiif_decoder_rpcs_total",
            {"rpc": "Render", "code": "CANCELLED"},
        )

    before = cancelled()
    for i in range(3):
        with socket.create_connection(("127.0.0.1", stack.gateway_port), timeout=5) as sock:
            path = SLOW.replace("/33/", f"/{33 + i}/")
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            time.sleep(0.3)  # let the render start, then hang up
    end = time.monotonic() + 15
    while cancelled() < before + 3 and time.monotonic() < end:
        time.sleep(0.05)
    assert cancelled() >= before + 3, "each abandoned render must be cancelled"
    assert _drained(stack.decoder_metrics_url), "cancelled renders must free their budget"


def test_deadline_gives_504_and_frees_the_decoder(stack: Stack, tmp_path: Path) -> None:
    gateway, port = start_gateway(
        stack.decoder_target,
        tmp_path,
        "gateway-deadline",
        {"IIIF_GATEWAY_REQUEST_TIMEOUT_S": "0.2"},
    )
    try:
        resp = httpx.get(f"http://127.0.0.1:{port}{SLOW.replace('/33/', '/44/')}", timeout=30)
        assert resp.status_code == 504
        assert _drained(stack.decoder_metrics_url)
    finally:
        processes.stop(gateway)


def test_graceful_shutdown_loses_no_accepted_request(image_root: Path, tmp_path: Path) -> None:
    decoder, target = start_decoder(
        image_root,
        tmp_path,
        "decoder-drain",
        # Generous: this test is about draining, not about admission timeouts.
        {"IIIF_DECODER_GRACE_PERIOD_S": "60", "IIIF_DECODER_QUEUE_TIMEOUT_S": "60"},
    )
    gateway, port = start_gateway(target, tmp_path, "gateway-drain")
    base = f"http://127.0.0.1:{port}"
    paths = [BIG.replace("^2400,", f"^{2000 + i},") for i in range(6)]

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            tasks = [asyncio.create_task(client.get(p)) for p in paths]
            await asyncio.sleep(0.3)  # all six are in the decoder now
            decoder.send_signal(signal.SIGTERM)
            return await asyncio.gather(*tasks)

    try:
        responses = asyncio.run(scenario())
        assert [r.status_code for r in responses] == [200] * 6
        assert decoder.wait(15) == 0, "the decoder exits cleanly after draining"
    finally:
        processes.stop(gateway)
        processes.stop(decoder)


def test_a_killed_decoder_fails_cleanly_and_traffic_moves_on(
    image_root: Path, tmp_path: Path
) -> None:
    first, first_target = start_decoder(image_root, tmp_path, "decoder-a")
    second, second_target = start_decoder(image_root, tmp_path, "decoder-b")
    targets = f"ipv4:{first_target},{second_target}"
    gateway, port = start_gateway(targets, tmp_path, "gateway-two")
    base = f"http://127.0.0.1:{port}"

    async def scenario() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            tasks = [
                asyncio.create_task(client.get(SLOW.replace("/33/", f"/{60 + i}/")))
                for i in range(6)
            ]
            await asyncio.sleep(0.3)
            first.kill()
            results: list[httpx.Response] = []
            for task in tasks:
                # A body cut off mid-stream: the client sees a broken response.
                with contextlib.suppress(httpx.HTTPError):
                    results.append(await task)
            return results

    try:
        responses = asyncio.run(scenario())
        assert {r.status_code for r in responses} <= {200, 502, 503}
        after = asyncio.run(_fetch_all(base, [TILE.format(x=256 * (i % 4)) for i in range(8)], 4))
        assert [r.status_code for r in after] == [200] * 8, "the survivor serves everything"
    finally:
        processes.stop(gateway)
        processes.stop(second)
        processes.stop(first)


def test_gateway_drains_in_flight_requests_on_sigterm(stack: Stack, tmp_path: Path) -> None:
    gateway, port = start_gateway(stack.decoder_target, tmp_path, "gateway-sigterm")
    path = BIG.replace("^2400,", "^2222,")

    async def scenario() -> httpx.Response:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            task = asyncio.create_task(client.get(path))
            await asyncio.sleep(0.2)
            gateway.send_signal(signal.SIGTERM)
            return await task

    try:
        assert asyncio.run(scenario()).status_code == 200
        # uvicorn re-raises SIGTERM once it has shut down cleanly.
        assert gateway.wait(30) in (0, -signal.SIGTERM)
    finally:
        processes.stop(gateway)


def test_a_busy_metrics_port_does_not_stop_the_decoder(image_root: Path, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        decoder, _target = start_decoder(
            image_root, tmp_path, "decoder-busy-metrics", {"IIIF_DECODER_METRICS_PORT": str(busy)}
        )  # start_decoder waits until the decoder answers SERVING
        try:
            assert "metrics port unavailable" in (tmp_path / "decoder-busy-metrics.log").read_text()
        finally:
            processes.stop(decoder)
