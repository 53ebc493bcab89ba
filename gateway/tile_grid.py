"""Which stored tile a render is, and the batch of stored tiles around it (pure).

A decoder marks the levels whose whole tiles it can send as stored
(`Level.stored_tiles`: a TIFF pyramid's JPEG tiles). A render that is exactly
one such tile, as IIIF viewers derive tile requests from info.json (the
tile's box times the level's downscale, clipped to the image; the tile size
as output; JPEG, colour, unrotated), costs the decoder a few reads; what it
costs is the round trip. Viewers ask for neighbouring tiles next, so the
gateway fetches the aligned square of tiles around a missed one in one call
and keeps them (see gateway/tile_batches.py).

The mapping is the decoder's (`tile_for`'s client-derived branch in
decoder/pipeline/passthrough.py); a test holds the two equal.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from gateway.iiif.types import PixelBox, RenderPlan


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
    """A tile of one level's grid."""

    level: int
    column: int
    row: int


@dataclass(frozen=True, slots=True)
class TileBatch:
    """An aligned rectangle of one level's tile grid, clipped to its whole tiles."""

    level: int
    column: int
    row: int
    columns: int
    rows: int

    def tiles(self) -> Iterator[TileRef]:
        for row in range(self.row, self.row + self.rows):
            for column in range(self.column, self.column + self.columns):
                yield TileRef(self.level, column, row)


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


def stored_tile(
    levels: Sequence[StoredLevel], width: int, height: int, plan: RenderPlan
) -> TileRef | None:
    """The whole stored tile that `plan` is exactly, on a level with stored
    tiles, or None."""
    if not sends_stored_bytes(plan):
        return None
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


def tile_plan(
    levels: Sequence[StoredLevel], width: int, height: int, tile: TileRef, like: RenderPlan
) -> RenderPlan:
    """The plan a viewer's request for `tile` resolves to, in the quality and
    format of `like`."""
    level = levels[tile.level]
    d = max(1, level.downscale)
    span_w, span_h = level.tile_width * d, level.tile_height * d
    x, y = tile.column * span_w, tile.row * span_h
    return RenderPlan(
        crop=PixelBox(x, y, min(span_w, width - x), min(span_h, height - y)),
        width=level.tile_width,
        height=level.tile_height,
        rotation=0.0,
        mirror=False,
        quality=like.quality,
        format=like.format,
    )


def batch_around(levels: Sequence[StoredLevel], tile: TileRef, side: int) -> TileBatch:
    """The aligned `side` x `side` square of the level's whole tiles that
    holds `tile` (smaller at the grid's right and bottom)."""
    across, down = _whole_tiles(levels[tile.level])
    column, row = tile.column - tile.column % side, tile.row - tile.row % side
    return TileBatch(tile.level, column, row, min(side, across - column), min(side, down - row))
