"""Stored-tile mosaics: answer a request for a box of one TIFF level, at
that level's own scale, with one JPEG made from the stored JPEG tiles under
it, their DCT coefficients copied (decoder/native/jpeg_mosaic.c), never
decoded to pixels or quantised again.

Passthrough (passthrough.py) answers requests for exactly one whole stored
tile. Viewers also ask for tiles of another size than the stored one (512 px
over 256 px tiles: 2 x 2 stored tiles) and for the edge tiles of a level,
which are stored padded to the full tile size: both are a box of stored
tiles, cropped. Decoding and re-encoding those costs about 8 ms of CPU for a
512 px tile on our machines; joining the coefficients about 2 ms, and the
answer keeps the master's own quality (no second generation of loss).

Same rules as passthrough (see passthrough.tile_for): JPEG, color, no
rotation, no mirror, baseline; the plan's encode quality is not honoured.
The box must start on a JPEG MCU boundary (tile origins always do) and its
size must be the request's output size, so nothing is resized. Anything the
C helper rejects (tiles with different tables, odd sampling, corrupt data)
falls back to decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from decoder import metrics
from decoder.engines.base import ImageInfo
from decoder.native import jpeg_mosaic
from decoder.pipeline import passthrough
from decoder.pipeline.load import choose_level, level_box
from decoder.plan import Box, Plan
from decoder.sources.base import ByteReader

# At most this many stored tiles per mosaic (a 1024 px box of 256 px tiles),
# this many pixels of them (their coefficients are all held at once: up to
# 6 bytes a pixel) and this many bytes: bigger boxes take the decoding path,
# whose admission cost covers them.
MAX_MOSAIC_TILES: Final = 16
MAX_MOSAIC_PIXELS: Final = 4 * 1024 * 1024
MAX_MOSAIC_BYTES: Final = 8 * 1024 * 1024
# JPEG blocks are 8 px: an origin off that grid can never be on an MCU.
_BLOCK: Final = 8


def mosaic_box(info: ImageInfo, plan: Plan) -> tuple[int, Box] | None:
    """(level, box in that level's pixels) that `plan` asks for at the
    level's own scale, or None when its pixels must be processed (see
    passthrough.keeps_stored_pixels) or resized. Pure."""
    if not passthrough.keeps_stored_pixels(info, plan):
        return None
    level = choose_level(info, plan.region, plan.width, plan.height)
    box = level_box(info, level, plan.region)
    if (box.width, box.height) != (plan.width, plan.height):
        return None
    return level, box


@dataclass(frozen=True, slots=True)
class TileSpan:
    """The stored tiles under a box of one level: the first tile's column and
    row, how many columns and rows, and the box in the mosaic's pixels."""

    column: int
    row: int
    columns: int
    rows: int
    crop: tuple[int, int, int, int]

    def tiles(self) -> list[tuple[int, int]]:
        """(column, row) of each tile, row by row (the helper's order)."""
        return [
            (column, row)
            for row in range(self.row, self.row + self.rows)
            for column in range(self.column, self.column + self.columns)
        ]


def tile_span(tile_width: int, tile_height: int, box: Box) -> TileSpan | None:
    """The stored tiles of `tile_width` x `tile_height` under `box` (level
    pixels), or None when they are too many to join (the decoding path's
    admission covers those) or the box starts off the 8 px block grid. Pure."""
    tw, th = tile_width, tile_height
    if tw <= 0 or th <= 0 or box.width < 1 or box.height < 1 or box.x < 0 or box.y < 0:
        return None
    first_column, first_row = box.x // tw, box.y // th
    columns = (box.right - 1) // tw - first_column + 1
    rows = (box.bottom - 1) // th - first_row + 1
    x0, y0 = box.x - first_column * tw, box.y - first_row * th
    if (
        columns * rows > MAX_MOSAIC_TILES
        or columns * rows * tw * th > MAX_MOSAIC_PIXELS
        or x0 % _BLOCK
        or y0 % _BLOCK
    ):
        return None
    return TileSpan(first_column, first_row, columns, rows, (x0, y0, box.width, box.height))


def join(span: TileSpan, tiles: Sequence[bytes]) -> bytes | None:
    """One JPEG of `span`'s box from its stored tiles (stand-alone JPEGs, in
    the order of span.tiles()), or None when they cannot be joined (counted
    as failed, except for an origin off the tiles' MCU grid, which is a
    request of another shape)."""
    try:
        data = jpeg_mosaic.mosaic(tiles, span.columns, span.rows, span.crop)
    except jpeg_mosaic.OffMcuGrid:
        return None  # e.g. an 8 px origin over 4:2:0 tiles: decode
    except jpeg_mosaic.MosaicError:
        metrics.MOSAICS.labels("failed").inc()
        return None
    metrics.MOSAICS.labels("joined").inc()
    return data


def try_mosaic(
    reader: ByteReader, info: ImageInfo, plan: Plan, cache_key: tuple[str, str] | None
) -> bytes | None:
    """A JPEG of the stored tiles under `plan`'s box, joined and cropped, or
    None when the plan must be decoded (see the module docstring; also when
    passthrough is off, the native helper is not built, or there is no
    `cache_key` to find the parsed TIFF structure under).

    Raises only the reader's errors.
    """
    if not passthrough.is_enabled() or cache_key is None or not jpeg_mosaic.available():
        return None
    found = mosaic_box(info, plan)
    if found is None:
        return None
    level_index, box = found
    index = passthrough.index_for(reader, info, cache_key)
    level = index.levels[level_index] if index is not None else None
    if level is None:
        return None
    span = tile_span(level.tile_width, level.tile_height, box)
    if span is None:
        return None
    wanted = span.tiles()
    tiles = passthrough.read_tiles(reader, level, wanted, MAX_MOSAIC_BYTES)
    if len(tiles) != len(wanted):
        return None  # a sparse or odd tile: decode
    return join(span, [tile for _column, _row, tile in tiles])
