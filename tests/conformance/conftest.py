"""The validator runs against its own gateway (sharing the session's decoder) with the
output limits switched off: its size_up test expects `^max` to be the image's own
size, which is only true of a server that declares no maxWidth/maxHeight/maxArea
(with a maxArea, Image API 3.0 section 4.2 makes `^max` upscale to that area,
as tests/integration/test_gateway_http.py checks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import processes
from tests.conftest import Stack, start_gateway


@pytest.fixture(scope="session")
def unlimited_gateway_port(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    logs: Path = tmp_path_factory.mktemp("conformance-logs")
    proc, port = start_gateway(
        stack.decoder_target, logs, "gateway-unlimited", {"IIIF_GATEWAY_MAX_AREA": "none"}
    )
    try:
        yield port
    finally:
        processes.stop(proc)
