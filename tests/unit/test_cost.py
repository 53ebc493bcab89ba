"""The memory estimate that admission control weighs renders by."""

from __future__ import annotations

from decoder.cost import BASE_BYTES, estimate_render_bytes
from decoder.engines.base import ImageInfo, Level, SourceFormat
from decoder.plan import Box, Plan

MiB = 1 << 20


def info(fmt: SourceFormat, tile: int) -> ImageInfo:
    levels = tuple(Level(-(-8000 // 2**n), -(-6000 // 2**n), 2**n, tile, tile) for n in range(6))
    return ImageInfo(8000, 6000, levels, 3, 8, fmt, False)


def test_a_tile_costs_far_less_than_a_full_render() -> None:
    jp2 = info(SourceFormat.JPEG2000, 1024)
    tile = estimate_render_bytes(jp2, Plan(Box(0, 0, 1024, 1024), 256, 256), 50 * MiB)
    full = estimate_render_bytes(jp2, Plan(Box(0, 0, 8000, 6000), 8000, 6000), 50 * MiB)
    assert BASE_BYTES < tile < 32 * MiB
    assert full > 8000 * 6000 * 3 * 4  # int32 decode of every sample, at least
    assert full > 20 * tile


def test_untiled_jpeg2000_counts_the_whole_object() -> None:
    untiled = info(SourceFormat.JPEG2000, 0)
    small = Plan(Box(0, 0, 256, 256), 256, 256)
    assert estimate_render_bytes(untiled, small, 200 * MiB) > 200 * MiB


def test_reduced_levels_make_thumbnails_cheap() -> None:
    tif = info(SourceFormat.TIFF, 256)
    thumb = estimate_render_bytes(tif, Plan(Box(0, 0, 8000, 6000), 200, 150), 0)
    assert thumb < 8 * MiB


def test_rotation_and_upscaling_raise_the_estimate() -> None:
    tif = info(SourceFormat.TIFF, 256)
    plain = estimate_render_bytes(tif, Plan(Box(0, 0, 500, 500), 500, 500), 0)
    rotated = estimate_render_bytes(tif, Plan(Box(0, 0, 500, 500), 500, 500, rotation=45), 0)
    upscaled = estimate_render_bytes(tif, Plan(Box(0, 0, 500, 500), 5000, 5000), 0)
    assert plain < rotated < upscaled
    assert upscaled > 5000 * 5000 * 4
