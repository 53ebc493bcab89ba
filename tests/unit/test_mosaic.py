"""Stored-tile mosaics in the pipeline (decoder/pipeline/mosaic.py): a plan
for a box of one TIFF level's stored JPEG tiles, at that level's scale, is
answered with one JPEG joined from the tiles' coefficients; everything else,
and anything the native helper refuses, is decoded as before.

A mosaic's pixels are libtiff's decode of the box (exactly for 4:4:4 tiles,
up to chroma upsampling at tile seams for 4:2:0); the decoded path re-encodes,
so against it they differ by re-encoding error only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pyvips
from prometheus_client import REGISTRY

from decoder import levelcache
from decoder.engines.base import ImageInfo, Level, SourceFormat
from decoder.engines.vips import VipsEngine
from decoder.native.jpeg_mosaic import MosaicError
from decoder.pipeline import passthrough, run_pipeline
from decoder.pipeline.mosaic import mosaic_box
from decoder.plan import Box, OutputFormat, Plan, Quality
from decoder.sources.base import ByteReader
from tests.images import make_pyramid_tiff, pattern
from tests.pixels import load_strict, mean_abs_diff

ReaderFactory = Callable[[Path], ByteReader]
Describe = Callable[[ByteReader], ImageInfo]

# The decoded path re-encodes; rendered at Q 95 for the comparison, it
# differs from the mosaic by a mean of 0.3 to 2.4 (measured).
REENCODE_TOLERANCE = 3.0
# A 4:2:0 mosaic against libtiff decoding its tiles one by one differs only
# next to tile seams and the box's edges (see test_jpeg_mosaic.py): measured
# means 0.01 to 1.4, the highest for the smallest boxes, which are mostly
# edge. A tile out of place would be tens.
SEAM_TOLERANCE = 2.0

# 600 x 400 in 64 px tiles. Level 0: 10 x 7 tiles, the last column 24 px
# wide and the last row 16 px high; level 1: 300 x 200, 5 x 4 tiles.
WIDTH, HEIGHT, TILE = 600, 400, 64


def mosaics(outcome: str) -> float:
    return REGISTRY.get_sample_value("iiif_decoder_tile_mosaics_total", {"outcome": outcome}) or 0.0


def passthrough_total() -> float:
    return REGISTRY.get_sample_value("iiif_decoder_passthrough_total") or 0.0


def counters() -> tuple[float, float, float]:
    """(mosaics joined, mosaics failed, passthroughs) so far."""
    return mosaics("joined"), mosaics("failed"), passthrough_total()


def textured(width: int, height: int) -> Any:
    """The test pattern with seeded noise, so that the tiles' blocks all
    differ and a block out of place would show."""
    noise = [
        pyvips.Image.gaussnoise(width, height, mean=0, sigma=8, seed=band + 1) for band in range(3)
    ]
    return (pattern(width, height) + noise[0].bandjoin(noise[1:])).cast("uchar")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mosaic")
    image = textured(WIDTH, HEIGHT)
    # Q 75: YCbCr tiles with 4:2:0 chroma; Q 90: RGB (see make_pyramid_tiff).
    return {
        "ycbcr": make_pyramid_tiff(
            root / "ycbcr.tif", WIDTH, HEIGHT, tile=TILE, image=image, quality=75
        ),
        "rgb": make_pyramid_tiff(root / "rgb.tif", WIDTH, HEIGHT, tile=TILE, image=image),
    }


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    """Passthrough (which mosaics follow) on with an empty index; level cache
    off, so the decoded path really decodes."""
    passthrough.configure(enabled=True)
    levelcache.configure(max_bytes=0)
    yield
    passthrough.configure(enabled=True)
    levelcache.configure()


def key(name: str) -> tuple[str, str]:
    return (f"{name}.tif", "v1")


def decoded(
    engine: VipsEngine, reader: ByteReader, info: ImageInfo, plan: Plan, name: str
) -> tuple[bytes, tuple[float, float, float]]:
    """The plan rendered by decoding, as with passthrough (and so mosaics)
    off, and the counters' change meanwhile."""
    before = counters()
    passthrough.configure(enabled=False)
    try:
        data = run_pipeline(engine, reader, info, plan, cache_key=key(name))
    finally:
        passthrough.configure(enabled=True)
    after = counters()
    return data, (after[0] - before[0], after[1] - before[1], after[2] - before[2])


# -- which plans map onto a box (pure) --------------------------------------

INFO = ImageInfo(
    width=WIDTH,
    height=HEIGHT,
    levels=(
        Level(600, 400, 1, TILE, TILE),
        Level(300, 200, 2, TILE, TILE),
        Level(150, 100, 4, TILE, TILE),
    ),
    bands=3,
    bits_per_sample=8,
    format=SourceFormat.TIFF,
    has_icc=False,
)
TWO_BY_TWO = Plan(Box(64, 128, 128, 128), 128, 128)


def test_a_box_at_full_resolution() -> None:
    assert mosaic_box(INFO, TWO_BY_TWO) == (0, Box(64, 128, 128, 128))


def test_a_box_at_a_reduced_level() -> None:
    # 256 px of the full image shown as 128: level 1's own pixels.
    plan = Plan(Box(128, 128, 256, 256), 128, 128)

    assert mosaic_box(INFO, plan) == (1, Box(64, 64, 128, 128))


def test_an_edge_box_is_clipped_to_the_level() -> None:
    plan = Plan(Box(576, 384, 24, 16), 24, 16)

    assert mosaic_box(INFO, plan) == (0, Box(576, 384, 24, 16))


@pytest.mark.parametrize(
    "plan",
    [
        pytest.param(replace(TWO_BY_TWO, width=100, height=100), id="downscaled"),
        pytest.param(replace(TWO_BY_TWO, width=256, height=256), id="upscaled"),
        pytest.param(replace(TWO_BY_TWO, width=128, height=127), id="one-row-short"),
        # 3/4 of the size: level 0 reduced, not any level's own pixels.
        pytest.param(Plan(Box(0, 0, 256, 256), 192, 192), id="between-levels"),
        pytest.param(replace(TWO_BY_TWO, rotation=90.0), id="rotation"),
        pytest.param(replace(TWO_BY_TWO, mirror=True), id="mirror"),
        pytest.param(replace(TWO_BY_TWO, format=OutputFormat.PNG), id="png"),
        pytest.param(replace(TWO_BY_TWO, quality=Quality.GRAY), id="gray"),
        pytest.param(replace(TWO_BY_TWO, progressive=True), id="progressive"),
    ],
)
def test_plans_that_change_the_pixels_are_not_boxes(plan: Plan) -> None:
    assert mosaic_box(INFO, plan) is None


@pytest.mark.parametrize(
    "info",
    [
        pytest.param(replace(INFO, format=SourceFormat.JPEG2000), id="jpeg2000"),
        pytest.param(replace(INFO, has_icc=True), id="icc-profile"),
        pytest.param(replace(INFO, bits_per_sample=16), id="16-bit"),
    ],
)
def test_sources_without_stored_jpeg_pixels_have_no_boxes(info: ImageInfo) -> None:
    assert mosaic_box(info, TWO_BY_TWO) is None


# -- rendering ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["ycbcr", "rgb"])
@pytest.mark.parametrize(
    ("plan", "level", "box"),
    [
        # 2 x 2 whole tiles at level 0.
        pytest.param(TWO_BY_TWO, 0, Box(64, 128, 128, 128), id="2x2"),
        # The bottom right tile of level 0, stored padded to 64 x 64.
        pytest.param(Plan(Box(576, 384, 24, 16), 24, 16), 0, Box(576, 384, 24, 16), id="edge"),
        # The bottom right 2 x 2 tiles, the outer ones partial.
        pytest.param(Plan(Box(512, 320, 88, 80), 88, 80), 0, Box(512, 320, 88, 80), id="edge-2x2"),
        # Inside one tile, from an MCU boundary (16 px: both samplings').
        pytest.param(Plan(Box(80, 96, 40, 24), 40, 24), 0, Box(80, 96, 40, 24), id="in-a-tile"),
        # Level 1 (300 x 200): 2 x 2 whole tiles.
        pytest.param(
            Plan(Box(128, 128, 256, 256), 128, 128), 1, Box(64, 64, 128, 128), id="level-1"
        ),
        # Level 1's bottom right corner: 44 x 8 px of the tile (4, 3).
        pytest.param(
            Plan(Box(512, 384, 88, 16), 44, 8), 1, Box(256, 192, 44, 8), id="level-1-edge"
        ),
    ],
)
def test_a_box_of_stored_tiles_is_joined(
    images: dict[str, Path],
    reader_for: ReaderFactory,
    describe: Describe,
    engine: VipsEngine,
    name: str,
    plan: Plan,
    level: int,
    box: Box,
) -> None:
    reader = reader_for(images[name])
    info = describe(reader)
    assert mosaic_box(info, plan) == (level, box)
    joined, failed, passed = counters()

    data = run_pipeline(engine, reader, info, plan, cache_key=key(name))

    assert counters() == (joined + 1, failed, passed)
    image = load_strict(data)
    assert (image.width, image.height) == (plan.width, plan.height)
    # libtiff's decode of the same box, tile by tile.
    stored = engine.load_region(reader, info, level, box)
    if name == "rgb":
        assert float((image.cast("float") - stored.cast("float")).abs().max()) == 0
    else:
        assert mean_abs_diff(image, stored) <= SEAM_TOLERANCE
    reference, changes = decoded(engine, reader, info, replace(plan, encode_quality=95), name)
    assert changes == (0, 0, 0)
    assert mean_abs_diff(image, load_strict(reference)) <= REENCODE_TOLERANCE


@pytest.mark.parametrize(
    "plan",
    [
        # Off the 8 px grid: no JPEG block starts there.
        pytest.param(Plan(Box(4, 0, 128, 128), 128, 128), id="x-off-grid"),
        pytest.param(Plan(Box(64, 68, 64, 64), 64, 64), id="y-off-grid"),
        pytest.param(replace(TWO_BY_TWO, width=127, height=127), id="resized"),
        pytest.param(replace(TWO_BY_TWO, quality=Quality.GRAY), id="gray"),
        # 3 x 6 = 18 tiles, more than MAX_MOSAIC_TILES.
        pytest.param(Plan(Box(0, 0, 192, 384), 192, 384), id="too-many-tiles"),
    ],
)
def test_other_plans_are_decoded(
    images: dict[str, Path],
    reader_for: ReaderFactory,
    describe: Describe,
    engine: VipsEngine,
    plan: Plan,
) -> None:
    reader = reader_for(images["rgb"])
    info = describe(reader)
    before = counters()

    data = run_pipeline(engine, reader, info, plan, cache_key=key("rgb"))

    assert counters() == before
    assert data == run_pipeline(engine, reader, info, plan)


def test_no_mosaic_when_passthrough_is_off(
    images: dict[str, Path], reader_for: ReaderFactory, describe: Describe, engine: VipsEngine
) -> None:
    reader = reader_for(images["rgb"])
    info = describe(reader)

    data, changes = decoded(engine, reader, info, TWO_BY_TWO, "rgb")

    assert changes == (0, 0, 0)
    assert data == run_pipeline(engine, reader, info, TWO_BY_TWO)


def test_no_mosaic_without_a_cache_key(
    images: dict[str, Path], reader_for: ReaderFactory, describe: Describe, engine: VipsEngine
) -> None:
    reader = reader_for(images["rgb"])
    info = describe(reader)
    before = counters()

    run_pipeline(engine, reader, info, TWO_BY_TWO)

    assert counters() == before


def test_one_whole_tile_is_passed_through_not_joined(
    images: dict[str, Path], reader_for: ReaderFactory, describe: Describe, engine: VipsEngine
) -> None:
    reader = reader_for(images["ycbcr"])
    info = describe(reader)
    joined, failed, passed = counters()

    run_pipeline(engine, reader, info, Plan(Box(64, 64, 64, 64), 64, 64), cache_key=key("ycbcr"))

    assert counters() == (joined, failed, passed + 1)


def test_a_refused_mosaic_is_decoded(
    images: dict[str, Path],
    reader_for: ReaderFactory,
    describe: Describe,
    engine: VipsEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object, **kwargs: object) -> bytes:
        raise MosaicError("tiles differ in size, components or tables")

    monkeypatch.setattr("decoder.pipeline.mosaic.jpeg_mosaic.mosaic", refuse)
    reader = reader_for(images["rgb"])
    info = describe(reader)
    joined, failed, passed = counters()

    data = run_pipeline(engine, reader, info, TWO_BY_TWO, cache_key=key("rgb"))

    assert counters() == (joined, failed + 1, passed)
    image = load_strict(data)
    assert (image.width, image.height) == (128, 128)
    assert data == run_pipeline(engine, reader, info, TWO_BY_TWO)


def test_a_box_off_the_420_mcu_grid_is_decoded(
    images: dict[str, Path], reader_for: ReaderFactory, describe: Describe, engine: VipsEngine
) -> None:
    # On the 8 px grid but not on 4:2:0's 16 px MCUs: the helper refuses the
    # origin, and the answer is the decoded one. Not a failure: nothing is
    # wrong with the tiles.
    reader = reader_for(images["ycbcr"])
    info = describe(reader)
    plan = Plan(Box(72, 64, 64, 64), 64, 64)
    before = counters()

    data = run_pipeline(engine, reader, info, plan, cache_key=key("ycbcr"))

    assert counters() == before
    assert data == run_pipeline(engine, reader, info, plan)
