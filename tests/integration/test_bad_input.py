"""Hostile URLs and broken images: a clear 4xx/5xx answer, never a crash or a hang."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack

pytestmark = pytest.mark.integration

CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "bad_urls.txt"
URLS = [
    line.strip()
    for line in CORPUS.read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


@pytest.mark.parametrize("version", ["3", "2"])
def test_bad_urls_get_short_client_errors(http: httpx.Client, version: str) -> None:
    long_id = "a" * 5000
    extra = [f"/{long_id}/info.json", f"/{long_id}/full/max/0/default.jpg"]
    for tail in [*URLS, *extra]:
        path = f"/iiif/{version}{tail}" if tail.startswith("/") else f"/iiif/{version}/{tail}"
        resp = http.get(path)
        assert 400 <= resp.status_code < 500 or resp.status_code == 501, (
            f"{path}: {resp.status_code} {resp.text[:200]}"
        )
        assert len(resp.content) < 1000, path


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` but holds one tiny row of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" + b"\x80" * 30)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _tiff_with_offsets_past_the_end(source: bytes) -> bytes:
    """The pyramid TIFF cut to its first 4 KiB: tile offsets point past the end."""
    return source[:4096]


def _jp2_with_broken_marker(source: bytes) -> bytes:
    data = bytearray(source)
    soc = data.find(b"\xff\x4f\xff\x51")  # SOC then SIZ
    data[soc + 2 : soc + 4] = b"\xff\x00"  # SIZ replaced by garbage
    return bytes(data)


@pytest.fixture(scope="module")
def broken_images(stack: Stack) -> list[str]:
    root = stack.image_root / "broken"
    root.mkdir(exist_ok=True)
    tif = (stack.image_root / "sample-pyramid.tif").read_bytes()
    jp2 = (stack.image_root / "sample-tiled.jp2").read_bytes()
    files = {
        "liar.png": _png_claiming(100_000, 100_000),
        "cut.tif": _tiff_with_offsets_past_the_end(tif),
        "badmarker.jp2": _jp2_with_broken_marker(jp2),
        "halfjp2.jp2": jp2[: len(jp2) // 2],
        "empty.tif": b"",
        "header-only.jpg": b"\xff\xd8\xff\xe0" + b"\x00" * 20,
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return [f"broken%2F{name.rsplit('.', 1)[0]}" for name in files]


# Truncated files keep a valid header and some tiles: describing them, or
# rendering an intact tile, may rightly succeed.
TRUNCATED = {"broken%2Fhalfjp2", "broken%2Fcut"}


def test_broken_images_get_clear_errors_and_the_decoder_lives_on(
    http: httpx.Client, broken_images: list[str]
) -> None:
    for identifier in broken_images:
        for tail in ("info.json", "full/max/0/default.jpg", "0,0,256,256/256,/0/default.jpg"):
            resp = http.get(f"/iiif/3/{identifier}/{tail}")
            if resp.status_code == 200 and identifier in TRUNCATED:
                continue
            assert resp.status_code in (400, 500, 503), (identifier, tail, resp.status_code)
            assert resp.headers["content-type"].startswith("text/plain"), (identifier, tail)
            assert 0 < len(resp.text) < 500
        if identifier in TRUNCATED:
            # Rendering the whole image needs the missing bytes: never grey filler.
            assert http.get(f"/iiif/3/{identifier}/full/max/0/default.jpg").status_code == 500
        # The decoder is still there and still serving.
        assert http.get("/iiif/3/sample-photo/full/64,/0/default.jpg").status_code == 200
