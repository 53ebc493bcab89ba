"""Stored-tile mosaics through the whole stack: a real gateway and decoder
answering tiles that are a box of a TIFF level's stored JPEG tiles (bigger
than the stored tiles, or a level's partial edge) with one JPEG joined from
the stored tiles' coefficients, counted by the decoder's metric."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import pyvips

from tests import processes
from tests.conftest import start_decoder, start_gateway
from tests.images import make_pyramid_tiff
from tests.reliability_tools import metric_in as metric

pytestmark = pytest.mark.integration

# 1100 x 900 in 128 px stored tiles; level 1 is 550 x 450 (libvips floors).
WIDTH, HEIGHT, TILE = 1100, 900, 128
IDENTIFIER = "mosaic.tif"
JOINED = ("iiif_decoder_tile_mosaics_total", {"outcome": "joined"})
PASSED = ("iiif_decoder_passthrough_total", None)


@dataclass(frozen=True)
class Stack:
    base: str
    metrics: str
    http: httpx.Client

    def get(self, path: str) -> httpx.Response:
        response = self.http.get(f"{self.base}/iiif/3/{IDENTIFIER}/{path}")
        assert response.status_code == 200, response.text
        return response

    def count(self, which: tuple[str, dict[str, str] | None]) -> float:
        return metric(self.http.get(self.metrics).text, which[0], which[1])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("mosaic-images")
    make_pyramid_tiff(root / IDENTIFIER, WIDTH, HEIGHT, tile=TILE)
    logs = tmp_path_factory.mktemp("mosaic-logs")
    metrics_port = processes.free_port()
    started: list[subprocess.Popen[bytes]] = []
    try:
        decoder, target = start_decoder(
            root, logs, "decoder-mosaics", {"IIIF_DECODER_METRICS_PORT": str(metrics_port)}
        )
        started.append(decoder)
        gateway, port = start_gateway(target, logs, "gateway-mosaics")
        started.append(gateway)
        with httpx.Client(timeout=30) as http:
            metrics = f"http://127.0.0.1:{metrics_port}/metrics"
            yield Stack(f"http://127.0.0.1:{port}", metrics, http)
    finally:
        for proc in reversed(started):
            processes.stop(proc)


def decoded(data: bytes) -> pyvips.Image:
    return pyvips.Image.new_from_buffer(data, "").cast("int")


def assert_close(got: pyvips.Image, want: pyvips.Image) -> None:
    """Same pixels up to chroma upsampling: a mosaic interpolates chroma
    across the seams between stored tiles, where separately decoded tiles
    repeat their edge (measured: mean under 0.1, a few seam pixels up to 13)."""
    assert (got.width, got.height, got.bands) == (want.width, want.height, want.bands)
    diff = (got - want).abs()
    assert diff.avg() < 0.5
    assert diff.max() <= 32


def test_a_tile_twice_the_stored_size_is_joined_from_four_stored_tiles(stack: Stack) -> None:
    joined, passed = stack.count(JOINED), stack.count(PASSED)
    big = stack.get("256,256,256,256/256,256/0/default.jpg")
    assert stack.count(JOINED) == joined + 1
    assert stack.count(PASSED) == passed
    assert big.headers["content-type"] == "image/jpeg"
    # The four stored tiles under it, each passed through as stored.
    parts = [
        decoded(stack.get(f"{x},{y},128,128/128,128/0/default.jpg").content)
        for y in (256, 384)
        for x in (256, 384)
    ]
    assert stack.count(PASSED) == passed + 4
    assert_close(decoded(big.content), pyvips.Image.arrayjoin(parts, across=2))


def test_edge_tiles_and_reduced_levels_are_cropped_mosaics(stack: Stack) -> None:
    joined = stack.count(JOINED)
    # The bottom-right stored tile of level 0 is 76 x 4 px of image in a
    # padded 128 x 128 tile; the right column of 512 px tiles of level 1
    # (scale 2) covers 38 x 450 px of 4 stored tiles.
    cases = [
        ("1024,896,76,4", "76,4"),
        ("1024,0,76,900", "38,450"),
        ("0,0,1024,900", "512,450"),
    ]
    for region, size in cases:
        mosaic = stack.get(f"{region}/{size}/0/default.jpg")
        # PNG is never a mosaic: the decoded path, losslessly encoded.
        reference = stack.get(f"{region}/{size}/0/default.png")
        assert_close(decoded(mosaic.content), decoded(reference.content))
    assert stack.count(JOINED) == joined + len(cases)


def test_requests_that_need_pixels_processed_are_decoded(stack: Stack) -> None:
    joined = stack.count(JOINED)
    for path in (
        "256,256,256,256/128,128/0/default.jpg",  # resized
        "260,256,256,256/256,256/0/default.jpg",  # origin off the JPEG block grid
        "256,256,256,256/256,256/90/default.jpg",  # rotated
        "256,256,256,256/256,256/0/gray.jpg",
    ):
        stack.get(path)
    assert stack.count(JOINED) == joined
