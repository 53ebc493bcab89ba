"""Turns a decoder's image description into the sizes and tiles info.json advertises."""

from __future__ import annotations

from gateway.decoder_client import ImageDescription
from gateway.iiif.info import TileSpec
from gateway.iiif.types import Limits

# Untiled sources are still served in tiles; 512 keeps requests few without
# making each decode large.
DEFAULT_TILE = 512
# JPEG2000 is decoded region by region (code-blocks, not whole tiles), so
# large codestream tiles are served in pieces of at most this size.
MAX_JP2_TILE = 512


def _cheapest_tile(desc: ImageDescription) -> tuple[int, int]:
    """The tile size that costs least to serve from this source.

    A TIFF tile is decoded whole, so its own size is cheapest; JPEG2000
    decodes only the requested region, so tiles above MAX_JP2_TILE are split;
    untiled sources get DEFAULT_TILE.
    """
    width, height = desc.tile_width, desc.tile_height or desc.tile_width
    if not width:
        return DEFAULT_TILE, DEFAULT_TILE
    if desc.source_format == "jpeg2000" and max(width, height) > MAX_JP2_TILE:
        return MAX_JP2_TILE, MAX_JP2_TILE
    return width, height


def _fits(width: int, height: int, limits: Limits) -> bool:
    return (
        (limits.max_width is None or width <= limits.max_width)
        and (limits.max_height is None or height <= limits.max_height)
        and (limits.max_area is None or width * height <= limits.max_area)
    )


def advertised_sizes(desc: ImageDescription, limits: Limits) -> list[tuple[int, int]]:
    """The cheap sizes (one per stored level) within the limits, smallest first."""
    sizes = {(lv.width, lv.height) for lv in desc.levels if _fits(lv.width, lv.height, limits)}
    return sorted(sizes)


def advertised_tiles(desc: ImageDescription) -> list[TileSpec]:
    """One tile grid of the cheapest tile size, scale factors down to one tile."""
    width, height = _cheapest_tile(desc)
    factors = [1]
    # Viewers walk scale factors down to the level where the whole image is one tile.
    while max(desc.width, desc.height) / factors[-1] > max(width, height):
        factors.append(factors[-1] * 2)
    return [TileSpec(width=width, height=height, scale_factors=tuple(factors))]
