"""A rectangle of groups of stored tiles (the StoredTiles RPC's reading):
each group the very bytes a render of its box sends, edges cropped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from decoder import levelcache
from decoder.engines.base import ImageInfo, Level
from decoder.engines.vips import VipsEngine
from decoder.native import jpeg_mosaic
from decoder.pipeline import passthrough, run_pipeline
from decoder.pipeline.stored_tiles import (
    MAX_SPAN,
    group_box,
    group_grid,
    read_stored_groups,
    rectangle_cells,
)
from decoder.plan import Box, Plan
from decoder.sources.base import ByteReader
from tests.images import make_pyramid_tiff
from tests.pixels import load_strict

ReaderFactory = Callable[[Path], ByteReader]


def read_stored_tiles(
    reader: ByteReader,
    info: ImageInfo,
    cache_key: tuple[str, str],
    level: int,
    span: int,
    columns: range,
    rows: range,
    max_bytes: int,
) -> list[tuple[int, int, bytes]]:
    """The groups of a rectangle, as the service reads them."""
    cells = rectangle_cells(info.levels[level], span, columns, rows)
    return read_stored_groups(reader, info, cache_key, level, span, cells, max_bytes)


Describe = Callable[[ByteReader], ImageInfo]

# 600 x 400 in 64 px tiles: level 0 is 10 x 7 tiles, the last column 24 px
# wide and the last row 16 px high; level 1 (300 x 200) is 5 x 4 tiles, the
# last column 44 px wide and the last row 8 px high.
WIDTH, HEIGHT, TILE = 600, 400, 64
ALL = range(0, 1000)
NO_CAP = 1 << 30


def counted(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def counters() -> tuple[float, float]:
    """(stored tiles sent as they are, mosaics joined) so far."""
    return (
        counted("iiif_decoder_passthrough_total"),
        counted("iiif_decoder_tile_mosaics_total", {"outcome": "joined"}),
    )


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stored-tiles")
    # Q 75: YCbCr tiles with 4:2:0 chroma; Q 90: RGB (see make_pyramid_tiff).
    return {
        "ycbcr": make_pyramid_tiff(root / "ycbcr.tif", WIDTH, HEIGHT, tile=TILE, quality=75),
        "rgb": make_pyramid_tiff(root / "rgb.tif", WIDTH, HEIGHT, tile=TILE),
    }


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    passthrough.configure(enabled=True)
    levelcache.configure(max_bytes=0)
    yield
    passthrough.configure(enabled=True)
    levelcache.configure()


def key(name: str) -> tuple[str, str]:
    return (f"{name}.tif", "v1")


def render_of(info: ImageInfo, level: int, box: Box) -> Plan:
    """The request for `box` of `level` at that level's own scale."""
    d = info.levels[level].downscale
    region = Box(box.x * d, box.y * d, box.width * d, box.height * d)
    clipped = Box(
        region.x,
        region.y,
        min(region.width, info.width - region.x),
        min(region.height, info.height - region.y),
    )
    return Plan(clipped, box.width, box.height)


# -- the grid of groups (pure) ------------------------------------------------


def test_group_grid_and_boxes() -> None:
    level0 = Level(WIDTH, HEIGHT, 1, TILE, TILE)
    assert group_grid(level0, 1) == (10, 7)
    assert group_grid(level0, 2) == (5, 4)
    assert group_grid(level0, 4) == (3, 2)
    assert group_box(level0, 1, 9, 6) == Box(576, 384, 24, 16)
    assert group_box(level0, 2, 4, 3) == Box(512, 384, 88, 16)
    assert group_box(level0, 2, 1, 1) == Box(128, 128, 128, 128)
    assert group_box(level0, 2, 5, 0) is None
    assert group_box(level0, 2, 0, -1) is None
    assert group_grid(Level(WIDTH, HEIGHT, 1, 0, 0), 1) == (0, 0)


@given(
    st.integers(1, 3000),
    st.integers(1, 3000),
    st.sampled_from((16, 64, 128, 256)),
    st.sampled_from((16, 64, 128, 256)),
    st.integers(1, MAX_SPAN),
)
def test_groups_cover_the_level_once(width: int, height: int, tw: int, th: int, span: int) -> None:
    level = Level(width, height, 1, tw, th)
    across, down = group_grid(level, span)
    area = 0
    for row in range(down):
        for column in range(across):
            box = group_box(level, span, column, row)
            assert box is not None
            assert (box.x, box.y) == (column * span * tw, row * span * th)
            assert 1 <= box.width <= span * tw
            assert 1 <= box.height <= span * th
            assert box.right <= width
            assert box.bottom <= height
            area += box.width * box.height
    assert area == width * height


# -- reading groups -------------------------------------------------------------


@pytest.mark.parametrize("name", ["ycbcr", "rgb"])
@pytest.mark.parametrize(("level", "span"), [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 4)])
def test_each_group_is_what_a_render_of_its_box_sends(
    images: dict[str, Path],
    reader_for: ReaderFactory,
    describe: Describe,
    engine: VipsEngine,
    name: str,
    level: int,
    span: int,
) -> None:
    reader = reader_for(images[name])
    info = describe(reader)
    lvl = info.levels[level]
    across, down = group_grid(lvl, span)
    before = counters()

    found = read_stored_tiles(reader, info, key(name), level, span, ALL, ALL, NO_CAP)

    # Every group, edges included, row by row.
    assert [(c, r) for c, r, _ in found] == [(c, r) for r in range(down) for c in range(across)]
    whole = 0
    for column, row, data in found:
        box = group_box(lvl, span, column, row)
        assert box is not None
        image = load_strict(data)
        assert (image.width, image.height) == (box.width, box.height)
        whole += span == 1 and (box.width, box.height) == (TILE, TILE)
        # Byte for byte what a render of that box answers (passthrough for
        # a whole stored tile, else a mosaic).
        plan = render_of(info, level, box)
        assert run_pipeline(engine, reader, info, plan, cache_key=key(name)) == data
    after = counters()
    # Counted once by the read and once by the renders above.
    assert after[0] - before[0] == 2 * whole
    assert after[1] - before[1] == 2 * (len(found) - whole)


def test_a_rectangle_is_clipped_to_the_grid_of_groups(
    images: dict[str, Path], reader_for: ReaderFactory, describe: Describe
) -> None:
    reader = reader_for(images["ycbcr"])
    info = describe(reader)
    everything = read_stored_tiles(reader, info, key("ycbcr"), 0, 2, ALL, ALL, NO_CAP)
    assert len(everything) == 5 * 4

    part = read_stored_tiles(reader, info, key("ycbcr"), 0, 2, range(3, 9), range(-1, 2), NO_CAP)

    assert part == [t for t in everything if t[0] >= 3 and t[1] < 2]
    assert read_stored_tiles(reader, info, key("ycbcr"), 0, 2, range(5, 9), ALL, NO_CAP) == []


def test_groups_past_the_byte_cap_are_left_out(
    images: dict[str, Path], reader_for: ReaderFactory, describe: Describe
) -> None:
    reader = reader_for(images["rgb"])
    info = describe(reader)
    everything = read_stored_tiles(reader, info, key("rgb"), 0, 2, ALL, range(1), NO_CAP)
    k = 3
    cap = sum(len(data) for _c, _r, data in everything[:k])

    capped = read_stored_tiles(reader, info, key("rgb"), 0, 2, ALL, range(1), cap)

    assert capped == everything[:k]
    assert (
        read_stored_tiles(reader, info, key("rgb"), 0, 2, ALL, range(1), cap - 1)
        == (everything[: k - 1])
    )
    assert read_stored_tiles(reader, info, key("rgb"), 0, 2, ALL, ALL, 0) == []


def test_without_the_native_helper_only_whole_tiles_are_sent(
    images: dict[str, Path],
    reader_for: ReaderFactory,
    describe: Describe,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reader = reader_for(images["rgb"])
    info = describe(reader)
    monkeypatch.setattr(jpeg_mosaic, "available", lambda: False)

    found = read_stored_tiles(reader, info, key("rgb"), 0, 1, ALL, ALL, NO_CAP)

    # 9 x 6 whole tiles; the edge column and row would need joining.
    assert [(c, r) for c, r, _ in found] == [(c, r) for r in range(6) for c in range(9)]
    assert read_stored_tiles(reader, info, key("rgb"), 0, 2, ALL, ALL, NO_CAP) == []


@pytest.mark.parametrize("span", [0, MAX_SPAN + 1])
def test_a_span_out_of_range_is_refused(
    images: dict[str, Path], reader_for: ReaderFactory, describe: Describe, span: int
) -> None:
    reader = reader_for(images["rgb"])
    info = describe(reader)
    with pytest.raises(ValueError, match="span"):
        read_stored_tiles(reader, info, key("rgb"), 0, span, ALL, ALL, NO_CAP)
