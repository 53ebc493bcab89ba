"""Pick the resolution level to decode from and the box to decode there."""

from __future__ import annotations

from decoder import levelcache
from decoder.engines.base import DecodeError, Engine, ImageInfo, RenderError, VipsImage
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
    whole once and cropped from memory afterwards.

    Raises RenderError for regions outside the image and DecodeError for
    unreadable sources (pyvips.Error when a cached level fails to decode).
    """
    level = choose_level(info, plan.region, plan.width, plan.height)
    box = level_box(info, level, plan.region)
    cache = level_cache if level_cache is not None else levelcache.shared()
    lvl = info.levels[level]
    if cache_key is None or not cache.accepts(lvl, info.bands, info.bits_per_sample // 8):
        announce(reader, info, level, box)
        return engine.load_region(reader, info, level, box)

    def load_whole() -> VipsImage:
        whole = Box(0, 0, lvl.width, lvl.height)
        announce(reader, info, level, whole)
        return engine.load_region(reader, info, level, whole)

    whole = cache.get_or_load((*cache_key, level), load_whole)
    if (whole.width, whole.height) != (lvl.width, lvl.height):
        raise DecodeError("cached level does not match the image's description")
    # Always a new image: the pipeline sets progress signals and the kill flag
    # on what it renders, which must never touch the shared cached one.
    if (box.width, box.height) == (lvl.width, lvl.height):
        return whole.copy()
    return whole.crop(box.x, box.y, box.width, box.height)
