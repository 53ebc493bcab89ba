"""The gateway tests and the IIIF validator again, with the decoder reading
the sample images from S3 (moto over real HTTP) instead of a local folder.

The test functions are imported from the filesystem suites; this module's
`stack` and `http` fixtures override the session ones for them.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pyvips

from tests import processes
from tests.conformance.test_iiif_validator import test_validator
from tests.conftest import Stack, start_decoder, start_gateway
from tests.integration import s3support
from tests.integration.s3support import decoder_s3_env, upload_tree
from tests.integration.test_gateway_http import (
    test_2x_allows_upscaling_without_caret,
    test_base_uri_redirects_to_info,
    test_encoded_slash_identifier,
    test_errors_are_short_and_clear,
    test_head_sends_headers_without_rendering,
    test_image_headers_and_conditional_get,
    test_info_json_ld_when_asked,
    test_info_json_v2,
    test_info_json_v3,
)
from tests.reliability_tools import metric

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

STACK_BUCKET = "iiif-samples"
moto_endpoint = s3support.moto_endpoint  # a shared fixture

__all__ = [
    "test_2x_allows_upscaling_without_caret",
    "test_base_uri_redirects_to_info",
    "test_encoded_slash_identifier",
    "test_errors_are_short_and_clear",
    "test_head_sends_headers_without_rendering",
    "test_image_headers_and_conditional_get",
    "test_info_json_ld_when_asked",
    "test_info_json_v2",
    "test_info_json_v3",
    "test_validator",
]


@pytest.fixture(scope="module")
def stack(
    image_root: Path, moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    upload_tree(moto_endpoint, image_root, STACK_BUCKET)
    logs = tmp_path_factory.mktemp("s3-logs")
    # image_root is not read by this decoder: it points to an empty folder.
    empty = tmp_path_factory.mktemp("empty")
    metrics_port = processes.free_port()
    env = {
        **decoder_s3_env(moto_endpoint, STACK_BUCKET),
        "IIIF_DECODER_METRICS_PORT": str(metrics_port),
    }
    decoder, target = start_decoder(empty, logs, "decoder-s3", env)
    try:
        gateway, port = start_gateway(target, logs, "gateway-s3")
        try:
            values: dict[str, Any] = {
                "image_root": image_root,
                "decoder_target": target,
                "gateway_url": f"http://127.0.0.1:{port}",
                "gateway_port": port,
                "decoder_metrics_url": f"http://127.0.0.1:{metrics_port}/metrics",
                "logs": logs,
            }
            # Stack grows fields over time: fill those we know by name.
            yield Stack(**{f.name: values[f.name] for f in dataclasses.fields(Stack)})
        finally:
            processes.stop(gateway)
    finally:
        processes.stop(decoder)


@pytest.fixture(scope="module")
def unlimited_gateway_port(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A gateway without output limits, for the validator (as tests/conformance does)."""
    logs = tmp_path_factory.mktemp("s3-conformance-logs")
    proc, port = start_gateway(
        stack.decoder_target, logs, "gateway-s3-unlimited", {"IIIF_GATEWAY_MAX_AREA": "none"}
    )
    try:
        yield port
    finally:
        processes.stop(proc)


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=30.0) as client:
        yield client


def test_tiles_of_one_image_come_from_s3(http: httpx.Client) -> None:
    for x in (0, 256, 512):
        resp = http.get(f"/iiif/3/sample-tiled/{x},0,256,256/256,/0/default.jpg")
        assert resp.status_code == 200
        assert resp.headers["content-type"] == "image/jpeg"


def test_s3_counters_are_exported(http: httpx.Client, stack: Stack) -> None:
    for _ in range(2):
        assert (
            http.get("/iiif/3/sample-pyramid/256,256,256,256/128,/0/default.jpg").status_code == 200
        )
    url = stack.decoder_metrics_url
    # The S3 counters are copied from the source by a sampler once a second
    # (decoder/metrics.py): wait for its next round, not for luck.
    deadline = time.monotonic() + 5
    while metric(url, "iiif_decoder_s3_gets_total") < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert metric(url, "iiif_decoder_s3_gets_total") >= 1
    assert metric(url, "iiif_decoder_s3_bytes_total") > 0
    assert metric(url, "iiif_decoder_s3_requests_total", {"method": "HEAD"}) >= 1
    assert metric(url, "iiif_decoder_block_cache_hits_total") >= 1
    assert metric(url, "iiif_decoder_decode_seconds_count", {"format": "tiff"}) >= 1


def test_stored_tile_mosaics_are_joined_from_s3(http: httpx.Client, stack: Stack) -> None:
    # A 512 px tile over 256 px stored tiles and a partial edge tile: joined
    # from stored tiles read from S3 (tile reads announced to the reader),
    # pixels as the decoded path's (PNG is never joined).
    url = stack.decoder_metrics_url
    joined = metric(url, "iiif_decoder_tile_mosaics_total", {"outcome": "joined"})
    for region, size in (("0,0,512,512", "512,512"), ("1024,768,176,132", "176,132")):
        got = http.get(f"/iiif/3/sample-pyramid/{region}/{size}/0/default.jpg")
        want = http.get(f"/iiif/3/sample-pyramid/{region}/{size}/0/default.png")
        assert got.status_code == want.status_code == 200
        diff = (
            pyvips.Image.new_from_buffer(got.content, "").cast("int")
            - pyvips.Image.new_from_buffer(want.content, "").cast("int")
        ).abs()
        assert diff.avg() < 0.5  # chroma upsampling across seams only
    assert metric(url, "iiif_decoder_tile_mosaics_total", {"outcome": "joined"}) == joined + 2
