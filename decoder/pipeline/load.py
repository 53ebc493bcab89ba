"""Pick the resolution level to decode from and the box to decode there."""

from __future__ import annotations

from typing import Final

from decoder import levelcache
from decoder.engines.base import (
    BlockEngine,
    DecodeError,
    Engine,
    ImageInfo,
    RenderError,
    SourceFormat,
    VipsImage,
)
from decoder.levelcache import LevelCache
from decoder.pipeline.prefetch import announce
from decoder.plan import Box, Plan
from decoder.sources.base import ByteReader


def choose_level(info: ImageInfo, region: Box, width: int, height: int) -> int:
    """The index of the smallest level (largest downscale) at which `region`
    (full-resolution pixels) still measures at least `width` x `height`
    pixels, so a reduced level is never upscaled; 0 when the output is
    larger than the region. Pure; raises nothing.
    """
    chosen = 0
    for index, level in enumerate(info.levels):
        # Region size at this level, compared exactly with integer arithmetic:
        # region.width * level.width / info.width >= width.
        if (
            region.width * level.width >= width * info.width
            and region.height * level.height >= height * info.height
        ):
            chosen = index
        else:
            break  # levels shrink monotonically: no smaller one can fit
    return chosen


def level_box(info: ImageInfo, level: int, region: Box) -> Box:
    """`region` (full-resolution pixels) in the pixels of `info.levels[level]`:
    origin floored, far edge ceiled, clipped to the level, at least 1 x 1.

    Raises RenderError if `level` is out of range.
    """
    if not 0 <= level < len(info.levels):
        raise RenderError(f"level {level} out of range")
    lvl = info.levels[level]
    x0, x1 = _scale_span(region.x, region.right, lvl.width, info.width)
    y0, y1 = _scale_span(region.y, region.bottom, lvl.height, info.height)
    return Box(x0, y0, x1 - x0, y1 - y0)


# JPEG 2000 regions up to half this size, inside one aligned block of a
# level, are decoded as that whole block and cached (see
# decoder/levelcache.py). Measured on a 6000 x 8000 master: a 1024 px block
# costs 4 (1024 px tiles) to 6.5 (untiled, 256 px precincts) times less per
# 256 px tile than decoding each tile alone, and twice less per 512 px tile.
JP2_BLOCK: Final = 1024
# Blocks follow a tiled image's codestream tiles where those are smaller at
# a reduced level (a 1024 px tile is 512 px at level 1), but no smaller than
# this: whole tiles decode without OpenJPEG's slower partial-tile path, and a
# viewer's tiles around one point cover fewer of them. Over the benchmark's
# tile session on 1024 px tiles: 12% less decoding CPU than 1024 px blocks
# at every level; 256 px blocks were no better (twice the decodes).
# An untiled image (one codestream tile) is cut into blocks of this size at
# every level: over the benchmark's session, in-process, they cost the same
# decoding CPU as 1024 px blocks within the noise (with 256 px precincts, and
# without precincts), but each decode takes half as long, so a tile waits less
# and more decodes run side by side. Through the stack, first passes over the
# untiled master (alternating runs): 1.19 of the rate at c=4 with p99 309
# against 480 ms, 1.10 at c=16; 256 px blocks halved the rate (docs/jpeg2000.md).
JP2_MIN_BLOCK: Final = 512


def block_side(info: ImageInfo, level: int) -> int:
    """The side of the aligned blocks of `info.levels[level]` (JPEG 2000)
    that small regions are decoded as: the level's codestream tile size,
    within JP2_MIN_BLOCK..JP2_BLOCK; JP2_MIN_BLOCK when untiled. Pure."""
    lvl = info.levels[level]
    tile = max(lvl.tile_width, lvl.tile_height)
    if tile <= 0:
        return JP2_MIN_BLOCK
    return min(JP2_BLOCK, max(JP2_MIN_BLOCK, tile))


def decode_block(info: ImageInfo, level: int, box: Box) -> Box | None:
    """The aligned block of `info.levels[level]` to decode for `box` (that
    level's pixels) instead of the box itself, or None to decode the box:
    JPEG 2000 only, boxes of at most half of JP2_BLOCK that lie inside one
    block (see :func:`block_side`). Pure."""
    if info.format is not SourceFormat.JPEG2000 or not 0 <= level < len(info.levels):
        return None
    if box.width > JP2_BLOCK // 2 or box.height > JP2_BLOCK // 2 or box.x < 0 or box.y < 0:
        return None
    b = block_side(info, level)
    col, row = box.x // b, box.y // b
    if (box.right - 1) // b != col or (box.bottom - 1) // b != row:
        return None
    lvl = info.levels[level]
    x, y = col * b, row * b
    if x >= lvl.width or y >= lvl.height:
        return None
    return Box(x, y, min(b, lvl.width - x), min(b, lvl.height - y))


def cache_block(info: ImageInfo, level_cache: LevelCache | None = None) -> int:
    """The side of aligned squares that each hold whole blocks that small
    regions of `info` are decoded as and cached by (see :func:`decode_block`;
    blocks are this size or half of it), or 0 when there are none: not JPEG
    2000, or the level cache (default the process-wide one) is off."""
    cache = level_cache if level_cache is not None else levelcache.shared()
    if info.format is not SourceFormat.JPEG2000 or cache.max_bytes <= 0:
        return 0
    return JP2_BLOCK


def _scale_span(start: int, end: int, size: int, full: int) -> tuple[int, int]:
    lo = max(0, min(size - 1, start * size // full))
    hi = max(lo + 1, min(size, -(-end * size // full)))
    return lo, hi


def load_region(
    engine: Engine,
    reader: ByteReader,
    info: ImageInfo,
    plan: Plan,
    cache_key: tuple[str, str] | None = None,
    level_cache: LevelCache | None = None,
) -> VipsImage:
    """Decode `plan.region` from the smallest level that keeps enough pixels
    for `plan.width` x `plan.height`. The result is at that level's scale
    (resize() brings it to the exact output size).

    With `cache_key` ((source key, version)), a level small enough for the
    level cache (`level_cache`, default the process-wide one) is decoded
    whole once and cropped from memory afterwards, and so is the aligned
    block around a small JPEG 2000 region (see :func:`decode_block`); where
    such blocks are whole codestream tiles, a small level's block is decoded
    alone unless the whole level is already kept (see
    :func:`blocks_are_whole_tiles`).

    Raises RenderError for regions outside the image and DecodeError for
    unreadable sources (pyvips.Error when a cached level fails to decode).
    """
    level = choose_level(info, plan.region, plan.width, plan.height)
    box = level_box(info, level, plan.region)
    cache = level_cache if level_cache is not None else levelcache.shared()
    lvl = info.levels[level]
    bytes_per_sample = info.bits_per_sample // 8
    block = decode_block(info, level, box)
    whole_level = Box(0, 0, lvl.width, lvl.height)
    if (
        cache_key is not None
        and cache.accepts(lvl, info.bands, bytes_per_sample)
        and not _block_first(cache, (*cache_key, level), info, level, block)
    ):
        whole = _cached(
            cache,
            (*cache_key, level),
            engine,
            reader,
            info,
            level,
            whole_level,
        )
        return _crop(whole, box, whole_level)
    if cache_key is not None and block is not None and cache.max_bytes > 0:
        key = (*cache_key, level, block.x, block.y)
        image = _cached(cache, key, engine, reader, info, level, block, image_key=cache_key)
        return _crop(image, box, block)
    announce(reader, info, level, box)
    return engine.load_region(reader, info, level, box)


def blocks_are_whole_tiles(info: ImageInfo, level: int) -> bool:
    """Whether the blocks of `info.levels[level]` (see :func:`block_side`)
    are made of whole codestream tiles, which decode independently. Then a
    small level is decoded block by block rather than whole: the whole level
    costs the sum of its blocks (measured within 10% on the benchmark's
    master), and a block's tiles are answered as soon as it is done instead
    of after the whole level (0.5 s for the master's 750 x 1000 level 3).
    Blocks that cut codestream tiles (an untiled image is one tile) would
    decode the tiles' low resolutions once per block: there, the whole level
    costs less. Pure."""
    if info.format is not SourceFormat.JPEG2000 or not 0 <= level < len(info.levels):
        return False
    lvl = info.levels[level]
    side = block_side(info, level)
    return (
        0 < lvl.tile_width <= side
        and 0 < lvl.tile_height <= side
        and side % lvl.tile_width == 0
        and side % lvl.tile_height == 0
    )


def _block_first(
    cache: LevelCache,
    level_key: levelcache.LevelKey,
    info: ImageInfo,
    level: int,
    block: Box | None,
) -> bool:
    """Whether a small level's `block` is decoded alone rather than the
    whole level: when blocks are whole codestream tiles, the block is not
    the whole level, and the whole level is not already in `cache`."""
    if block is None or not blocks_are_whole_tiles(info, level):
        return False
    lvl = info.levels[level]
    if (block.width, block.height) == (lvl.width, lvl.height):
        return False
    return cache.get(level_key) is None


def _cached(
    cache: LevelCache,
    key: levelcache.LevelKey,
    engine: Engine,
    reader: ByteReader,
    info: ImageInfo,
    level: int,
    area: Box,
    image_key: tuple[str, str] | None = None,
) -> VipsImage:
    """`area` of `level`, decoded once into `cache` under `key`; a block of
    the image `image_key` (see :class:`BlockEngine`) when given."""

    def load() -> VipsImage:
        announce(reader, info, level, area)
        if image_key is not None and isinstance(engine, BlockEngine):
            return engine.load_block(reader, info, level, area, image_key)
        return engine.load_region(reader, info, level, area)

    image = cache.get_or_load(key, load)
    if (image.width, image.height) != (area.width, area.height):
        raise DecodeError("cached pixels do not match the image's description")
    return image


def _crop(image: VipsImage, box: Box, area: Box) -> VipsImage:
    """`box` (level pixels) out of `image`, which holds `area` of the level.

    Always a new image: the pipeline sets progress signals and the kill flag
    on what it renders, which must never touch the shared cached one."""
    if (box.x, box.y, box.width, box.height) == (area.x, area.y, area.width, area.height):
        return image.copy()
    return image.crop(box.x - area.x, box.y - area.y, box.width, box.height)
