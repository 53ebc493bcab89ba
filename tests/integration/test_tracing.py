"""One OpenTelemetry trace from the HTTP request through the gRPC call to the S3 GETs.

Both services export spans as JSON on stdout (the console exporter) with a
short batch delay; the test reads them back from the process logs.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import processes
from tests.conftest import start_decoder, start_gateway
from tests.integration import s3support
from tests.integration.s3support import decoder_s3_env, upload_tree

pytestmark = pytest.mark.integration

moto_endpoint = s3support.moto_endpoint  # a shared fixture

TRACING = {"OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_TRACES_SAMPLER": "always_on"}
SPAN = re.compile(
    r'"name": "(?P<name>[^"]+)",\s*"context": \{\s*"trace_id": "(?P<trace>0x[0-9a-f]+)"'
)


def spans(log: Path) -> list[tuple[str, str]]:
    """(span name, trace id) of every span a console exporter wrote to `log`."""
    return [(m["name"], m["trace"]) for m in SPAN.finditer(log.read_text(errors="replace"))]


@pytest.fixture(scope="module")
def traced_stack(
    image_root: Path, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Path]]:
    upload_tree(moto_endpoint, image_root, "traced")
    logs = tmp_path_factory.mktemp("trace-logs")
    empty = tmp_path_factory.mktemp("trace-empty")
    decoder, target = start_decoder(
        empty,
        logs,
        "decoder-traced",
        {
            **decoder_s3_env(moto_endpoint, "traced"),
            **TRACING,
            "IIIF_DECODER_TRACING": "true",
            "IIIF_DECODER_TRACING_EXPORTER": "console",
        },
    )
    try:
        gateway, port = start_gateway(
            target,
            logs,
            "gateway-traced",
            {**TRACING, "IIIF_GATEWAY_TRACING": "true", "IIIF_GATEWAY_TRACING_EXPORTER": "console"},
        )
        try:
            yield f"http://127.0.0.1:{port}", logs
        finally:
            processes.stop(gateway)
    finally:
        processes.stop(decoder)


def test_one_trace_spans_http_grpc_and_s3(traced_stack: tuple[str, Path]) -> None:
    base, logs = traced_stack
    resp = httpx.get(f"{base}/iiif/3/sample-pyramid/0,0,256,256/128,/0/default.jpg", timeout=30)
    assert resp.status_code == 200
    deadline = time.monotonic() + 15
    joined: set[str] = set()
    while time.monotonic() < deadline and not joined:
        gateway = spans(logs / "gateway-traced.log")
        decoder = spans(logs / "decoder-traced.log")
        http_traces = {t for name, t in gateway if name.startswith("GET /iiif/3")}
        grpc_server = {t for name, t in decoder if "Decoder/Render" in name}
        s3_calls = {t for name, t in decoder if name.startswith(("GET", "HEAD"))}
        joined = http_traces & grpc_server & s3_calls
        time.sleep(0.1)
    assert joined, (
        f"no trace joins HTTP, gRPC and S3 spans; gateway {gateway[-5:]}, decoder {decoder[-8:]}"
    )
