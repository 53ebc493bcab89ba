"""Which data byte ranges of a file one region of one level needs.

A remote read plan is only as good as its knowledge of what the codec will
read. The object index records where every JPEG 2000 tile-part and every
TIFF tile or strip lies; these layouts add the grids those pieces belong to,
so that before a decode starts we can name exactly the pieces it will read
and fetch them all at once (coalesced, in parallel) instead of one round
trip per piece as the codec asks.

Pure: no I/O, nothing about HTTP, S3 or codec libraries. Results are hints;
a piece missed here is still read on demand, a piece named but not read only
costs bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from decoder.formats.jp2 import J2kHeader

Range = tuple[int, int]
"""``(start, end)``: bytes ``start`` to ``end`` (exclusive) of the object."""


@dataclass(frozen=True, slots=True)
class Jp2Layout:
    """A codestream's tile grid and, per tile index, the data ranges of its
    tile-parts in codestream order."""

    header: J2kHeader
    tiles: Mapping[int, tuple[Range, ...]]


@dataclass(frozen=True, slots=True)
class TiffDirectory:
    """One TIFF image directory's grid: its size, its tile size (strips are
    tiles as wide as the image, `rows per strip` high) and the data ranges
    of its tiles or strips, row-major, plane after plane."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    pieces: tuple[Range, ...]


@dataclass(frozen=True, slots=True)
class TiffLayout:
    """The directories of the main IFD chain in order (`pages`) and, per
    page, its SubIFDs in order."""

    pages: tuple[TiffDirectory, ...]
    subifds: tuple[tuple[TiffDirectory, ...], ...]


def jp2_ranges(layout: Jp2Layout, gx0: int, gy0: int, gx1: int, gy1: int) -> list[Range]:
    """Data ranges OpenJPEG reads to decode the window ``[gx0, gx1) x
    [gy0, gy1)`` of the reference grid (as opj_set_decode_area takes it,
    whatever the reduction): every tile-part of the tiles the window touches.
    OpenJPEG 2.5 reads a tile's tile-parts of discarded resolutions too
    (measured), so they are not left out even where tile-parts are split by
    resolution."""
    h = layout.header
    gx0, gy0, gx1, gy1 = max(gx0, h.x0), max(gy0, h.y0), min(gx1, h.x1), min(gy1, h.y1)
    if gx1 <= gx0 or gy1 <= gy0 or h.tile_width < 1 or h.tile_height < 1:
        return []
    across = -(-(h.x1 - h.tile_x0) // h.tile_width)
    cols = range((gx0 - h.tile_x0) // h.tile_width, (gx1 - 1 - h.tile_x0) // h.tile_width + 1)
    rows = range((gy0 - h.tile_y0) // h.tile_height, (gy1 - 1 - h.tile_y0) // h.tile_height + 1)
    ranges: list[Range] = []
    for row in rows:
        for col in cols:
            ranges.extend(layout.tiles.get(row * across + col, ()))
    return ranges


def tiff_ranges(
    directory: TiffDirectory, x0: int, y0: int, x1: int, y1: int, margin: int = 0
) -> list[Range]:
    """Data ranges of the tiles or strips of `directory` that pixels
    ``[x0, x1) x [y0, y1)`` of it touch, widened by `margin` pixels (libvips
    asks for a little more than the region when it resizes). Empty when the
    piece count does not match the grid (an unusual layout: read on demand)."""
    d = directory
    if d.tile_width < 1 or d.tile_height < 1 or d.width < 1 or d.height < 1:
        return []
    x0, y0 = max(0, x0 - margin), max(0, y0 - margin)
    x1, y1 = min(d.width, x1 + margin), min(d.height, y1 + margin)
    if x1 <= x0 or y1 <= y0:
        return []
    across = -(-d.width // d.tile_width)
    down = -(-d.height // d.tile_height)
    per_plane = across * down
    if not d.pieces or len(d.pieces) % per_plane:
        return []
    planes = len(d.pieces) // per_plane
    ranges: list[Range] = []
    for plane in range(planes):
        for row in range(y0 // d.tile_height, (y1 - 1) // d.tile_height + 1):
            first = plane * per_plane + row * across
            ranges.extend(
                d.pieces[first + col]
                for col in range(x0 // d.tile_width, (x1 - 1) // d.tile_width + 1)
            )
    return ranges


def coalesce(ranges: list[Range], gap: int, max_run: int) -> list[list[Range]]:
    """Group `ranges` into runs, each fetched with one request: sorted,
    duplicates dropped, a range joins the previous run when it starts at most
    `gap` bytes after that run's end and the run stays within `max_run` bytes
    (a single bigger range is a run of its own)."""
    runs: list[list[Range]] = []
    run_start = run_end = 0
    for start, end in sorted(set(ranges)):
        if end <= start:
            continue
        if runs and start - run_end <= gap and max(end, run_end) - run_start <= max_run:
            runs[-1].append((start, end))
            run_end = max(run_end, end)
            continue
        runs.append([(start, end)])
        run_start, run_end = start, end
    return runs
