"""S3 faults end to end: HTTP client → gateway → decoder → fault proxy → moto.

Requests fail cleanly (503/504 with a reason) or succeed after retries,
nothing outlives its deadline, and no memory stays reserved afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import processes
from tests.conftest import start_decoder, start_gateway
from tests.integration import s3support
from tests.integration.s3support import decoder_s3_env, upload_tree
from tests.reliability_tools import metric
from tests.s3proxy import Fault, ProxyThread

pytestmark = pytest.mark.integration

moto_endpoint = s3support.moto_endpoint  # a shared fixture

BUCKET = "faults"
GATEWAY_DEADLINE_S = 4.0


class Faulty:
    def __init__(self, base: str, proxy: ProxyThread, metrics_url: str) -> None:
        self.base = base
        self.proxy = proxy
        self.metrics_url = metrics_url


@pytest.fixture(scope="module")
def faulty(
    image_root: Path, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Faulty]:
    upload_tree(moto_endpoint, image_root, BUCKET)
    logs = tmp_path_factory.mktemp("fault-logs")
    empty = tmp_path_factory.mktemp("fault-empty")
    metrics_port = processes.free_port()
    with ProxyThread(moto_endpoint, delay_s=0.0) as proxy:
        decoder, target = start_decoder(
            empty,
            logs,
            "decoder-faults",
            {
                **decoder_s3_env(proxy.url, BUCKET),
                "IIIF_DECODER_S3_MAX_ATTEMPTS": "3",
                "IIIF_DECODER_S3_REQUEST_TIMEOUT_S": "0.5",
                "IIIF_DECODER_S3_BLOCK_CACHE_MB": "0",
                # Every request must reach S3: no cached decoded levels either.
                "IIIF_DECODER_LEVEL_CACHE_MB": "0",
                "IIIF_DECODER_S3_STAT_TTL_S": "0",
                "IIIF_DECODER_METRICS_PORT": str(metrics_port),
            },
        )
        try:
            gateway, port = start_gateway(
                target,
                logs,
                "gateway-faults",
                {
                    "IIIF_GATEWAY_REQUEST_TIMEOUT_S": str(GATEWAY_DEADLINE_S),
                    "IIIF_GATEWAY_DESCRIBE_CACHE_TTL_S": "0",
                },
            )
            try:
                yield Faulty(
                    f"http://127.0.0.1:{port}", proxy, f"http://127.0.0.1:{metrics_port}/metrics"
                )
            finally:
                processes.stop(gateway)
        finally:
            processes.stop(decoder)


def _nothing_reserved(metrics_url: str) -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if (
            metric(metrics_url, "iiif_decoder_memory_bytes") == 0
            and metric(metrics_url, "iiif_decoder_source_budget_bytes") == 0
        ):
            return True
        time.sleep(0.2)
    return False


def _get(faulty: Faulty, path: str) -> httpx.Response:
    # The client's own timeout is far past the gateway's deadline: a hang
    # would show up as a client timeout, not as a slow pass.
    return httpx.get(f"{faulty.base}{path}", timeout=GATEWAY_DEADLINE_S * 5)


@pytest.mark.parametrize(
    "fault", [Fault.ERROR_500, Fault.SLOW_DOWN_503, Fault.DROP_CONNECTION, Fault.SLOW_BODY]
)
def test_transient_faults_are_retried_to_success(faulty: Faulty, fault: Fault) -> None:
    size = 100 + list(Fault).index(fault)
    path = f"/iiif/3/sample-pyramid/0,0,512,512/{size},/0/default.jpg"
    if fault is Fault.SLOW_BODY:
        # A body long enough that trickling it outlasts the per-GET timeout.
        path = f"/iiif/3/sample-pyramid/full/{1000 + size},/0/default.jpg"
    faulty.proxy.reset()
    faulty.proxy.inject(fault, times=1, method="GET")
    resp = _get(faulty, path)
    assert resp.status_code == 200, resp.text
    # The proxy records a request when it has finished answering it; a slow
    # body abandoned by the client may still be trickling out.
    deadline = time.monotonic() + 10
    while faulty.proxy.count("GET") < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert faulty.proxy.count("GET") >= 2, "the fault was met, then retried"
    assert _nothing_reserved(faulty.metrics_url)


@pytest.mark.parametrize("fault", [Fault.ERROR_500, Fault.STALL])
def test_persistent_faults_fail_cleanly_within_the_deadline(faulty: Faulty, fault: Fault) -> None:
    faulty.proxy.reset()
    faulty.proxy.inject(fault, times=1000)
    resp = _get(faulty, f"/iiif/3/sample-tiled/full/{90 + list(Fault).index(fault)},/0/default.jpg")
    faulty.proxy.reset()
    assert resp.status_code in (503, 504), resp.text
    assert resp.text.strip()
    assert _nothing_reserved(faulty.metrics_url)
    # And the same image serves again once S3 is healthy. A few tries: on a
    # starved machine a healthy GET can outlast the 0.5 s per-GET timeout set
    # above, and the gateway's deadline with it; what was fetched is kept.
    statuses = [
        _get(faulty, "/iiif/3/sample-tiled/full/80,/0/default.jpg").status_code for _ in range(3)
    ]
    assert 200 in statuses, statuses
