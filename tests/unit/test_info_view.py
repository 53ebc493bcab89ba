from __future__ import annotations

from datetime import UTC, datetime

from gateway.decoder_client import ImageDescription, Level
from gateway.iiif.types import Limits
from gateway.info_view import DEFAULT_TILE, advertised_sizes, advertised_tiles


def _desc(tile: int, fmt: str = "tiff") -> ImageDescription:
    levels = tuple(Level(-(-6000 // 2**n), -(-4000 // 2**n), 2**n, tile, tile) for n in range(6))
    return ImageDescription(6000, 4000, levels, tile, tile, "v", datetime.now(UTC), fmt)


def test_sizes_are_the_levels_within_limits_smallest_first() -> None:
    sizes = advertised_sizes(_desc(256), Limits(None, None, 1_000_000))
    assert sizes == [(188, 125), (375, 250), (750, 500)]


def test_tiles_use_the_native_tile_and_reach_one_tile() -> None:
    (spec,) = advertised_tiles(_desc(256))
    assert (spec.width, spec.height) == (256, 256)
    assert spec.scale_factors == (1, 2, 4, 8, 16, 32)
    assert 6000 / spec.scale_factors[-1] <= 256


def test_untiled_sources_get_the_default_tile() -> None:
    (spec,) = advertised_tiles(_desc(0))
    assert spec.width == DEFAULT_TILE


def test_large_jpeg2000_tiles_are_served_in_pieces_tiff_tiles_whole() -> None:
    (jp2,) = advertised_tiles(_desc(1024, "jpeg2000"))
    (tif,) = advertised_tiles(_desc(1024, "tiff"))
    (small_jp2,) = advertised_tiles(_desc(256, "jpeg2000"))
    assert (jp2.width, tif.width, small_jp2.width) == (512, 1024, 256)
