"""Golden pixels: the gateway's output against the same operation done directly with
pyvips on the source file (never against files the server wrote).

Tolerance: mean absolute difference per sample below 4 levels of 255. The server
may decode a reduced resolution level (JPEG2000 reduction, TIFF pyramid page,
JPEG shrink-on-load) where the reference decodes full resolution and resizes,
so the two are close but not identical; lossless PNG output keeps encoding out
of the comparison.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
import pyvips

from tests.conftest import Stack

pytestmark = pytest.mark.integration

TOLERANCE = 4.0
FILES = {
    "sample-photo": "sample-photo.jpg",
    "sample-pyramid": "sample-pyramid.tif",
    "sample-tiled": "sample-tiled.jp2",
    "sample-png": "sample-png.png",
}

Op = Callable[[pyvips.Image], pyvips.Image]


def _resize_to(width: int, height: int) -> Op:
    return lambda im: im.resize(width / im.width, vscale=height / im.height, kernel="lanczos3")


CASES: list[tuple[str, str, Op]] = [
    (
        "sample-photo",
        "100,50,400,300/200,150/0/default.png",
        lambda im: _resize_to(200, 150)(im.crop(100, 50, 400, 300)),
    ),
    (
        "sample-pyramid",
        "0,0,512,512/256,/0/default.png",
        lambda im: _resize_to(256, 256)(im.crop(0, 0, 512, 512)),
    ),
    (
        "sample-tiled",
        "256,256,512,256/max/0/default.png",
        lambda im: im.crop(256, 256, 512, 256),
    ),
    (
        "sample-tiled",
        "full/300,225/0/default.png",
        _resize_to(300, 225),
    ),
    (
        "sample-png",
        "full/max/!90/default.png",
        lambda im: im.fliphor().rot90(),
    ),
    (
        "sample-photo",
        "200,200,300,300/150,/270/gray.png",
        lambda im: _resize_to(150, 150)(im.crop(200, 200, 300, 300)).rot270().colourspace("b-w"),
    ),
]


@pytest.mark.parametrize(("identifier", "tail", "op"), CASES, ids=[c[1] for c in CASES])
def test_matches_pyvips_direct(
    http: httpx.Client, stack: Stack, identifier: str, tail: str, op: Op
) -> None:
    resp = http.get(f"/iiif/3/{identifier}/{tail}")
    assert resp.status_code == 200, resp.text
    served = pyvips.Image.new_from_buffer(resp.content, "")
    source = pyvips.Image.new_from_file(str(stack.image_root / FILES[identifier]))
    expected = op(source.colourspace("srgb") if "gray" not in tail else source)
    if expected.hasalpha():
        expected = expected.flatten(background=[255, 255, 255])
    if served.hasalpha():
        served = served.flatten(background=[255, 255, 255])
    assert (served.width, served.height) == (expected.width, expected.height)
    assert served.bands == expected.bands
    diff = (served.cast("float") - expected.cast("float")).abs().avg()
    assert diff < TOLERANCE, f"mean absolute difference {diff:.2f} >= {TOLERANCE}"
