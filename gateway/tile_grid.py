"""Which stored tile a render is, and the batch of stored tiles around it (pure).

A decoder marks the levels whose whole tiles it can send as stored
(`Level.stored_tiles`: a TIFF pyramid's JPEG tiles). A render that is exactly
one such tile, as IIIF viewers derive tile requests from info.json (the
tile's box times the level's downscale, clipped to the image; the tile size
as output; JPEG, colour, unrotated), costs the decoder a few reads; what it
costs is the round trip. Viewers ask for neighbouring tiles next, so the
gateway fetches the aligned square of tiles around a missed one in one call
and keeps them (see gateway/tile_batches.py).

A render of a group of `span` x `span` stored tiles at the level's own scale
(a viewer asking for 512 px tiles over 256 px stored ones) or of an edge
tile of a level is cheap too: the decoder joins the stored tiles under it
without decoding them. Each costs a join, so those are not fetched on
speculation (see batch_around); those asked for together still share a call
(gateway/group_gathering.py).

The mappings are the decoder's (`tile_for` in decoder/pipeline/passthrough.py
for whole tiles, `mosaic_box` in decoder/pipeline/mosaic.py for groups); a
test holds them equal.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.iiif.types import PixelBox, RenderPlan
from gateway.routing import choose_level, level_box

# Stored tiles per side of a group: the decoder's limit (MAX_SPAN in
# decoder/pipeline/stored_tiles.py).
MAX_SPAN = 4


class StoredLevel(Protocol):
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def downscale(self) -> int: ...
    @property
    def tile_width(self) -> int: ...
    @property
    def tile_height(self) -> int: ...
    @property
    def stored_tiles(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class TileRef:
    """A group of `span` x `span` stored tiles of one level (span 1: one
    stored tile), by its place in the level's grid of such groups."""

    level: int
    column: int
    row: int
    span: int = 1


@dataclass(frozen=True, slots=True)
class TileBatch:
    """An aligned rectangle of one level's grid of `span` x `span` groups of
    stored tiles: a square of whole tiles, or one group or edge tile."""

    level: int
    column: int
    row: int
    columns: int
    rows: int
    span: int = 1

    def tiles(self) -> Iterator[TileRef]:
        for row in range(self.row, self.row + self.rows):
            for column in range(self.column, self.column + self.columns):
                yield TileRef(self.level, column, row, self.span)


def sends_stored_bytes(plan: RenderPlan) -> bool:
    """Whether the plan keeps a stored JPEG tile's pixels as they are."""
    return (
        plan.format == "jpg"
        and plan.quality in ("default", "color")
        and plan.rotation == 0
        and not plan.mirror
    )


def _whole_tiles(level: StoredLevel) -> tuple[int, int]:
    # Edge tiles are stored padded past the level, so they are not the image.
    return level.width // level.tile_width, level.height // level.tile_height


def group_grid(level: StoredLevel, span: int) -> tuple[int, int]:
    """Columns and rows of the level's grid of `span` x `span` groups of
    tiles, partial groups at the right and bottom included."""
    if level.tile_width <= 0 or level.tile_height <= 0 or span < 1:
        return 0, 0
    return (
        -(-level.width // (span * level.tile_width)),
        -(-level.height // (span * level.tile_height)),
    )


def stored_tile(
    levels: Sequence[StoredLevel], width: int, height: int, plan: RenderPlan
) -> TileRef | None:
    """The whole stored tile, or the group of stored tiles, that `plan` is
    exactly, on a level with stored tiles, or None."""
    if not sends_stored_bytes(plan):
        return None
    return _whole_tile(levels, width, height, plan) or _group(levels, width, height, plan)


def _whole_tile(
    levels: Sequence[StoredLevel], width: int, height: int, plan: RenderPlan
) -> TileRef | None:
    """A whole stored tile as a viewer derives its request: the tile's box
    times the downscale, clipped to the image, at the tile size."""
    crop = plan.crop
    for index, level in enumerate(levels):
        tw, th = level.tile_width, level.tile_height
        if not level.stored_tiles or tw <= 0 or th <= 0 or (plan.width, plan.height) != (tw, th):
            continue
        d = max(1, level.downscale)
        span_w, span_h = tw * d, th * d
        if crop.x % span_w or crop.y % span_h:
            continue
        if (crop.w, crop.h) != (min(span_w, width - crop.x), min(span_h, height - crop.y)):
            continue
        column, row = crop.x // span_w, crop.y // span_h
        across, down = _whole_tiles(level)
        if column < across and row < down:
            return TileRef(index, column, row)
    return None


def _group(
    levels: Sequence[StoredLevel], width: int, height: int, plan: RenderPlan
) -> TileRef | None:
    """A group of stored tiles (or an edge tile) as the decoder maps a
    render: the region in the pixels of the level it decodes from is the
    group's box, clipped to the level, and so is the output size."""
    if not levels:
        return None
    crop = plan.crop
    region = (crop.x, crop.y, crop.w, crop.h)
    index = choose_level(levels, width, height, region, plan.width, plan.height)
    level = levels[index]
    tw, th = level.tile_width, level.tile_height
    if not level.stored_tiles or tw <= 0 or th <= 0:
        return None
    x, y, w, h = level_box(level, width, height, region)
    if (w, h) != (plan.width, plan.height):
        return None
    span = max(-(-w // tw), -(-h // th))
    gw, gh = span * tw, span * th
    if span > MAX_SPAN or x % gw or y % gh:
        return None
    if (w, h) != (min(gw, level.width - x), min(gh, level.height - y)):
        return None
    return TileRef(index, x // gw, y // gh, span)


def tile_plan(
    levels: Sequence[StoredLevel], width: int, height: int, tile: TileRef, like: RenderPlan
) -> RenderPlan:
    """The plan a viewer's request for `tile` resolves to, in the quality and
    format of `like`: the group's box (clipped to the level) times the
    downscale, clipped to the image, at the box's size."""
    level = levels[tile.level]
    d = max(1, level.downscale)
    gw, gh = tile.span * level.tile_width, tile.span * level.tile_height
    x, y = tile.column * gw, tile.row * gh
    return RenderPlan(
        crop=PixelBox(x * d, y * d, min(gw * d, width - x * d), min(gh * d, height - y * d)),
        width=min(gw, level.width - x),
        height=min(gh, level.height - y),
        rotation=0.0,
        mirror=False,
        quality=like.quality,
        format=like.format,
    )


def batch_around(levels: Sequence[StoredLevel], tile: TileRef, side: int) -> TileBatch:
    """The aligned `side` x `side` square of the level's whole tiles that
    holds `tile` (smaller at the grid's right and bottom), or `tile` alone
    when it is a group or an edge tile.

    Why alone: a whole tile costs the decoder a few reads, so sending its
    neighbours on speculation is cheap; a group or an edge tile costs a
    mosaic each, about as much as a call. Measured on the benchmark's tile
    session, batches of 2 x 2 groups made 158 mosaics for 88 requested and
    cost the decoder 2.3 ms a request, one group a call 1.9 ms.
    """
    across, down = _whole_tiles(levels[tile.level])
    if tile.span > 1 or tile.column >= across or tile.row >= down:
        return TileBatch(tile.level, tile.column, tile.row, 1, 1, tile.span)
    column, row = tile.column - tile.column % side, tile.row - tile.row % side
    return TileBatch(tile.level, column, row, min(side, across - column), min(side, down - row))
