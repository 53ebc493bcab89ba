"""A rectangle, or chosen cells, of a TIFF level's stored tiles at once (the
StoredTiles RPC), each answered without decoding: one call where a viewer's
neighbouring tiles would otherwise each pay a round trip through both services.

Both are counted in a grid of `span` x `span` groups of stored tiles:
span 1 is the stored grid itself; span 2 over 256 px stored tiles is the
grid of a viewer asking for 512 px tiles. Each group is answered with the
very bytes a render of its box at the level's own scale returns:

- a whole stored tile (span 1, inside the level): that tile, spliced into a
  stand-alone JPEG (passthrough.py);
- anything else (several tiles, or an edge tile stored padded past the
  level): the tiles under the box joined into one JPEG and cropped to the
  level (mosaic.py), when the native helper is built.

Groups that cannot be answered so are left out: the caller renders those.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, Protocol

from decoder import metrics
from decoder.engines.base import ImageInfo
from decoder.native import jpeg_mosaic
from decoder.pipeline import mosaic, passthrough
from decoder.pipeline.passthrough import NoStoredTiles
from decoder.plan import Box
from decoder.sources.base import ByteReader

Cell = tuple[int, int]  # column, row in a level's grid of groups

# Up to 4 x 4 stored tiles per group: as many as one mosaic joins.
MAX_SPAN: Final = 4
assert MAX_SPAN * MAX_SPAN <= mosaic.MAX_MOSAIC_TILES
# A call reads at most this many times its answer's byte cap.
READ_FACTOR: Final = 2


class TiledLevel(Protocol):
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def tile_width(self) -> int: ...
    @property
    def tile_height(self) -> int: ...


def group_grid(level: TiledLevel, span: int) -> tuple[int, int]:
    """Columns and rows of the grid of `span` x `span` groups of the level's
    tiles, partial groups at the right and bottom included. Pure."""
    if level.tile_width <= 0 or level.tile_height <= 0 or span < 1:
        return 0, 0
    return (
        -(-level.width // (span * level.tile_width)),
        -(-level.height // (span * level.tile_height)),
    )


def group_box(level: TiledLevel, span: int, column: int, row: int) -> Box | None:
    """The box (level pixels) of group (`column`, `row`) of `span` x `span`
    stored tiles, clipped to the level; None outside the grid. Pure."""
    across, down = group_grid(level, span)
    if not (0 <= column < across and 0 <= row < down):
        return None
    gw, gh = span * level.tile_width, span * level.tile_height
    x, y = column * gw, row * gh
    return Box(x, y, min(gw, level.width - x), min(gh, level.height - y))


def working_bytes(tile_width: int, tile_height: int, span: int) -> int:
    """Memory a call may need at once besides the tiles' bytes: the
    coefficients of one group being joined (6 bytes a pixel, covering input
    and output for any sampling)."""
    pixels = min(span * span * tile_width * tile_height, mosaic.MAX_MOSAIC_PIXELS)
    return 6 * pixels


def split_cells(cells: Sequence[Cell], parts: int) -> list[list[Cell]]:
    """`cells` in at most `parts` runs of consecutive cells, as even as they
    go (none empty; one empty run when there are no cells). Pure."""
    if not cells:
        return [[]]
    size = -(-len(cells) // max(1, parts))
    return [list(cells[i : i + size]) for i in range(0, len(cells), size)]


def rectangle_cells(level: TiledLevel, span: int, columns: range, rows: range) -> list[Cell]:
    """The cells of `columns` x `rows` in the level's grid of `span` x `span`
    groups, clipped to the grid, row by row. Pure."""
    across, down = group_grid(level, span)
    return [
        (column, row)
        for row in range(max(0, rows.start), min(down, rows.stop))
        for column in range(max(0, columns.start), min(across, columns.stop))
    ]


def read_stored_groups(
    reader: ByteReader,
    info: ImageInfo,
    cache_key: tuple[str, str],
    level_index: int,
    span: int,
    cells: Sequence[Cell],
    max_bytes: int,
) -> list[tuple[int, int, bytes]]:
    """(column, row, stand-alone JPEG) for the groups of `span` x `span`
    stored tiles of level `level_index` at `cells` (column, row in the grid
    of groups), in that order, each once; cells outside the grid are
    skipped. Leaves out groups that cannot be answered without decoding and
    those past `max_bytes` of answer (or of twice that in tiles read).
    Tiles close together in the file are read at once, announced first to
    readers that take hints (S3: a few coalesced GETs, not one per tile).

    Raises NoStoredTiles for a level without stored JPEG tiles, ValueError
    for a span outside 1..MAX_SPAN, and the reader's errors.
    """
    if not 1 <= span <= MAX_SPAN:
        raise ValueError(f"span must be within 1..{MAX_SPAN}")
    index = passthrough.index_for(reader, info, cache_key) if passthrough.is_enabled() else None
    level = index.levels[level_index] if index is not None else None
    if level is None:
        raise NoStoredTiles(f"level {level_index} has no tiles that can be sent as stored")
    across, down = group_grid(level, span)
    joinable = jpeg_mosaic.available()
    # Per group: None for a whole stored tile sent as it is, else the tiles to join.
    groups: list[tuple[int, int, mosaic.TileSpan | None]] = []
    for column, row in dict.fromkeys(cells):
        if not (0 <= column < across and 0 <= row < down):
            continue
        box = group_box(level, span, column, row)
        assert box is not None
        if span == 1 and (box.width, box.height) == (level.tile_width, level.tile_height):
            groups.append((column, row, None))
            continue
        tiles = mosaic.tile_span(level.tile_width, level.tile_height, box) if joinable else None
        if tiles is not None:
            groups.append((column, row, tiles))
    # Group by group, so that the read cap ends at a group; tiles next to
    # each other in the file are still read at once (a group's rows apart).
    needed = list(
        dict.fromkeys(
            place for c, r, tiles in groups for place in (tiles.tiles() if tiles else [(c, r)])
        )
    )
    # Joined groups repeat the tables once, not once a tile, so their tiles
    # read take more bytes than the answer: read up to twice the cap.
    read = {
        (c, r): data
        for c, r, data in passthrough.read_tiles(reader, level, needed, READ_FACTOR * max_bytes)
    }
    found: list[tuple[int, int, bytes]] = []
    total = 0
    for column, row, tiles in groups:
        if tiles is None:
            data = read.get((column, row))
        else:
            parts = [read[place] for place in tiles.tiles() if place in read]
            data = mosaic.join(tiles, parts) if len(parts) == tiles.columns * tiles.rows else None
        if data is None:
            continue
        total += len(data)
        if total > max_bytes:
            break
        if tiles is None:
            metrics.PASSTHROUGH.inc()
        found.append((column, row, data))
    return found
