"""Small JPEG 2000 regions are decoded as the aligned block around them,
once, and their neighbours are cropped from it: same pixels, fewer decodes."""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvips
from hypothesis import given
from hypothesis import strategies as st

from decoder.cost import estimate_render_bytes
from decoder.engines.base import ImageInfo, Level, SourceFormat
from decoder.engines.registry import registry_for
from decoder.levelcache import LevelCache
from decoder.pipeline.load import (
    JP2_BLOCK,
    JP2_MIN_BLOCK,
    block_side,
    blocks_are_whole_tiles,
    decode_block,
    load_region,
)
from decoder.plan import Box, Plan
from decoder.sources.filesystem import FilesystemSource
from tests.counting_engine import CountingEngine

KEY = ("big.jp2", "v1")


def jp2_info(
    width: int, height: int, fmt: SourceFormat = SourceFormat.JPEG2000, tile: int = 512
) -> ImageInfo:
    levels = tuple(
        Level(-(-width // 2**r), -(-height // 2**r), 2**r, tile >> r, tile >> r) for r in range(4)
    )
    return ImageInfo(width, height, levels, 3, 8, fmt, False)


def test_blocks_follow_the_codestream_tiles_within_bounds() -> None:
    def sides(tile: int) -> list[int]:
        return [block_side(jp2_info(9000, 9000, tile=tile), r) for r in range(4)]

    assert sides(2048) == [1024, 1024, 512, 512]
    assert sides(1024) == [1024, 512, 512, 512]
    assert sides(512) == [512, 512, 512, 512]
    assert sides(0) == [512, 512, 512, 512]  # untiled: one codestream tile
    assert JP2_MIN_BLOCK == JP2_BLOCK // 2, "a block is the announced square or half of it"


@given(
    st.integers(1, 5000), st.integers(1, 5000), st.integers(0, 3),
    st.integers(0, 4999), st.integers(0, 4999), st.integers(1, 1200), st.integers(1, 1200),
    st.sampled_from((0, 256, 512, 1024, 2048)),
)  # fmt: skip
def test_a_block_is_aligned_inside_the_level_and_holds_the_box(
    width: int, height: int, level: int, x: int, y: int, w: int, h: int, tile: int
) -> None:
    info = jp2_info(width, height, tile=tile)
    lvl = info.levels[level]
    box = Box(x % lvl.width, y % lvl.height, w, h)
    box = Box(box.x, box.y, min(w, lvl.width - box.x), min(h, lvl.height - box.y))
    block = decode_block(info, level, box)
    b = block_side(info, level)
    assert b in (JP2_MIN_BLOCK, JP2_BLOCK)
    one_block = box.x // b == (box.right - 1) // b and box.y // b == (box.bottom - 1) // b
    half = JP2_BLOCK // 2
    if box.width > half or box.height > half or not one_block:
        assert block is None
        return
    assert block is not None
    assert block.x % b == 0
    assert block.y % b == 0
    assert block.right <= lvl.width
    assert block.bottom <= lvl.height
    assert block.x <= box.x
    assert box.right <= block.right
    assert block.y <= box.y
    assert box.bottom <= block.bottom
    assert decode_block(jp2_info(width, height, SourceFormat.TIFF), level, box) is None


def test_the_memory_estimate_covers_the_whole_block() -> None:
    for side in (512, 1024):
        info = jp2_info(4000, 3000, tile=side)
        tile = Plan(Box(1024, 1024, 256, 256), 256, 256)
        assert estimate_render_bytes(info, tile, 10_000_000) >= side * side * 3 * 4


@pytest.fixture(scope="module")
def big_jp2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("blocks")
    image = (pyvips.Image.gaussnoise(2300, 1500, sigma=40) + 100).cast("uchar")
    image = image.bandjoin([image.rot180().flip("horizontal"), image.flip("vertical")])
    image.copy(interpretation="srgb").jp2ksave(
        str(root / "big.jp2"), tile_width=512, tile_height=512, lossless=True
    )
    return root


def test_neighbouring_tiles_share_one_block_decode_and_match_direct_decodes(
    big_jp2: Path,
) -> None:
    import asyncio

    reader = asyncio.run(FilesystemSource(big_jp2).open("big.jp2")).reader
    engine = CountingEngine(registry_for().for_format(SourceFormat.JPEG2000))
    info = engine.describe(reader, SourceFormat.JPEG2000)
    # Whole levels are not cached here, so only blocks are.
    cache = LevelCache(max_bytes=64 << 20, max_pixels=1)
    tiles = [Box(1024, 0, 256, 256), Box(1280, 256, 256, 256), Box(1024, 256, 256, 256)]
    images = [load_region(engine, reader, info, Plan(t, 256, 256), KEY, cache) for t in tiles]
    # All three lie in the block at column 2, row 0 of level 0 (512 px tiles:
    # 512 px blocks): one decode.
    assert engine.loads == [(0, Box(1024, 0, 512, 512))]
    assert (cache.misses, cache.hits) == (1, 2)
    for tile, image in zip(tiles, images, strict=True):
        direct = engine.load_region(reader, info, 0, tile)
        assert (image.width, image.height) == (256, 256)
        assert (image.cast("float") - direct.cast("float")).abs().max() <= 1
    # A tile across two blocks, and one without a cache key, decode directly.
    across = Box(400, 0, 256, 256)
    load_region(engine, reader, info, Plan(across, 256, 256), KEY, cache)
    load_region(engine, reader, info, Plan(tiles[0], 256, 256), None, cache)
    assert engine.loads[-2:] == [(0, across), (0, tiles[0])]
    reader.close()


@pytest.fixture(scope="module")
def one_tile_jp2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("one-tile")
    image = (pyvips.Image.gaussnoise(1500, 1100, sigma=40) + 100).cast("uchar")
    image = image.bandjoin([image.flip("vertical"), image.rot180()])
    image.copy(interpretation="srgb").jp2ksave(
        str(root / "big.jp2"), tile_width=1500, tile_height=1100, lossless=True
    )
    return root


def test_a_small_tiled_level_is_decoded_block_by_block(big_jp2: Path) -> None:
    import asyncio

    reader = asyncio.run(FilesystemSource(big_jp2).open("big.jp2")).reader
    engine = CountingEngine(registry_for().for_format(SourceFormat.JPEG2000))
    info = engine.describe(reader, SourceFormat.JPEG2000)
    # Level 1 (1150 x 750, 256 px codestream tiles) is small enough to be
    # kept whole, but its 512 px blocks are whole tiles: a tile's request
    # decodes its block alone, and a neighbour in the block decodes nothing.
    cache = LevelCache(max_bytes=64 << 20, max_pixels=4_000_000)
    assert cache.accepts(info.levels[1], 3, 1)
    first = load_region(engine, reader, info, Plan(Box(0, 0, 512, 512), 256, 256), KEY, cache)
    load_region(engine, reader, info, Plan(Box(512, 512, 512, 512), 256, 256), KEY, cache)
    assert engine.loads == [(1, Box(0, 0, 512, 512))]
    direct = engine.load_region(reader, info, 1, Box(0, 0, 256, 256))
    assert (first.cast("float") - direct.cast("float")).abs().max() <= 1
    # The whole level asked for is decoded whole, as before; once it is
    # kept, the level's tiles are cropped from it, not decoded by block.
    engine.loads.clear()
    load_region(engine, reader, info, Plan(Box(0, 0, 2300, 1500), 1150, 750), KEY, cache)
    load_region(engine, reader, info, Plan(Box(1024, 1024, 512, 476), 256, 238), KEY, cache)
    assert engine.loads == [(1, Box(0, 0, 1150, 750))]
    reader.close()


def test_blocks_are_whole_tiles_only_where_blocks_never_cut_a_codestream_tile() -> None:
    # 2048 px tiles: level 0's 1024 px blocks cut them; from level 1 on, a
    # block is one tile (1024), then 2 x 2 (512 px tiles in 512 px blocks),
    # then 4 x 4 (256 px tiles).
    info = jp2_info(8000, 6000, tile=2048)
    assert [blocks_are_whole_tiles(info, n) for n in range(4)] == [False, True, True, True]
    # 300 px tiles do not divide 512 px blocks; untiled images are one tile.
    assert not blocks_are_whole_tiles(jp2_info(4000, 3000, tile=300), 0)
    assert not blocks_are_whole_tiles(jp2_info(4000, 3000, tile=0), 0)
    # Only JPEG 2000 has blocks; levels out of range have none.
    assert not blocks_are_whole_tiles(jp2_info(4000, 3000, SourceFormat.TIFF), 0)
    assert not blocks_are_whole_tiles(jp2_info(4000, 3000), 9)


def test_a_small_level_of_one_codestream_tile_is_decoded_whole(one_tile_jp2: Path) -> None:
    import asyncio

    reader = asyncio.run(FilesystemSource(one_tile_jp2).open("big.jp2")).reader
    engine = CountingEngine(registry_for().for_format(SourceFormat.JPEG2000))
    info = engine.describe(reader, SourceFormat.JPEG2000)
    cache = LevelCache(max_bytes=64 << 20, max_pixels=4_000_000)
    # Blocks would cut the one tile: its low resolutions would be decoded
    # once per block, so the level is decoded whole and cropped.
    load_region(engine, reader, info, Plan(Box(0, 0, 256, 256), 256, 256), KEY, cache)
    load_region(engine, reader, info, Plan(Box(1024, 0, 256, 256), 256, 256), KEY, cache)
    assert engine.loads == [(0, Box(0, 0, 1500, 1100))]
    reader.close()
