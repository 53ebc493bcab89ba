"""Per-object byte maps of JPEG 2000 and TIFF files, for remote reads.

Codecs read a remote image in two kinds of places: *structure* (the JP2 boxes
and main header, every tile-part header; the TIFF header, directories and
their out-of-line values such as tile offset tables) and *data* (tile-part
bodies, TIFF tiles and strips). OpenJPEG walks every tile-part header of the
file to find one tile, and libtiff makes hundreds of reads of a few bytes;
each is a round trip when read on demand.

An :class:`ObjectIndex` holds the structure bytes themselves (`known`) and the
byte ranges of data (`segments`). A reader serves structure reads from the
index without any request, and fetches exactly the data segment a read falls
in, so a tile of a tiled file costs one GET for its data. Building an index
costs round trips (one per tile-part for JPEG 2000 files without TLM
markers), so indexes are cached by (object, ETag).

Works over an async read function; the container parsing is
:mod:`decoder.formats`'. Nothing here knows HTTP, S3, IIIF or any codec
library. Malformed or hostile files yield no index (None), never an error: the
index is only an optimisation.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Literal

from decoder.formats import FormatError, jp2, run_async, tiff
from decoder.sources.layout import Jp2Layout, Range, TiffDirectory, TiffLayout

ReadFn = Callable[[int, int], Awaitable[bytes]]
"""`read(offset, length)`: exactly `length` bytes (fewer only at the end)."""

# Bounds that keep index building cheap and an index small whatever the file.
MAX_KNOWN_BYTES: Final = 8 * 1024 * 1024
MAX_TILE_PARTS: Final = 200_000
MAX_TIFF_DIRECTORIES: Final = 1024
MAX_JP2_PREFIX: Final = 1024 * 1024
MAX_MARKER_WALK: Final = 4 * 1024 * 1024
# JPEG 2000 files with TLM markers: tile-part headers are fetched this many
# at a time.
HEADER_FETCH_CONCURRENCY: Final = 8
# Bytes after the last tile-part (EOC and trailing boxes) kept in the index
# when that tail is small; codecs read the EOC marker.
MAX_TAIL: Final = 64 * 1024
# libtiff peeks at the start of each directory's first tile or strip when it
# reads the directory (JPEG subsampling fix-up): the index keeps these bytes.
_FIRST_DATA_PEEK: Final = 4096
_ROWS_PER_STRIP: Final = 278


@dataclass(frozen=True, slots=True)
class ObjectIndex:
    """Structure bytes and data ranges of one object version.

    `known` is sorted, non-overlapping `(start, bytes)`; `segments` is
    sorted, non-overlapping `(start, end)` byte ranges of data; `tiled` says
    whether the data is cut into many independently decodable pieces (a
    JPEG 2000 file with several tiles, a tiled or stripped TIFF). `layout`
    maps image geometry to data ranges (see decoder.sources.layout).
    """

    kind: Literal["jp2", "j2k", "tiff"]
    known: tuple[tuple[int, bytes], ...]
    segments: tuple[tuple[int, int], ...]
    tiled: bool
    layout: Jp2Layout | TiffLayout | None = None
    _known_starts: list[int] = field(init=False, repr=False, compare=False)
    _segment_starts: list[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_known_starts", [start for start, _ in self.known])
        object.__setattr__(self, "_segment_starts", [start for start, _ in self.segments])

    @property
    def known_bytes(self) -> int:
        """Bytes of structure held in the index."""
        return sum(len(data) for _, data in self.known)

    @property
    def data_bytes(self) -> int:
        """Bytes covered by data segments."""
        return sum(end - start for start, end in self.segments)

    def known_at(self, pos: int) -> tuple[int, bytes] | None:
        """The known range holding byte `pos`, as (start, bytes), or None."""
        i = bisect.bisect_right(self._known_starts, pos) - 1
        if i >= 0:
            start, data = self.known[i]
            if pos < start + len(data):
                return start, data
        return None

    def next_known_start(self, pos: int) -> int | None:
        """Where the first known range starting after byte `pos` starts, or None."""
        i = bisect.bisect_right(self._known_starts, pos)
        return self._known_starts[i] if i < len(self._known_starts) else None

    def segment_at(self, pos: int) -> tuple[int, int] | None:
        """The data segment holding byte `pos`, as (start, end), or None."""
        i = bisect.bisect_right(self._segment_starts, pos) - 1
        if i >= 0:
            start, end = self.segments[i]
            if pos < end:
                return start, end
        return None


def accepts_short_reads(head: bytes) -> bool:
    """Whether the codec of a file starting with `head` (>= 12 bytes) copes
    with reads that return fewer bytes than asked before the end.

    JPEG 2000 only: OpenJPEG loops until its buffer is full. libtiff takes a
    short read as a read error ("got 4096 bytes, expected 11337").
    """
    return head.startswith(jp2.JP2_SIGNATURE) or head[:2] == jp2.SOC


async def build_index(read: ReadFn, size: int) -> ObjectIndex | None:
    """Index the object of `size` bytes that `read` reads, or None if it is
    not a JPEG 2000 or TIFF file, is malformed, or exceeds the index bounds.

    Raises only what `read` raises (source errors); parsing problems give None.
    """
    try:
        head = await read(0, min(size, 16))
        if accepts_short_reads(head):
            return await _index_jpeg2000(read, size)
        if head[:4] in tiff.SIGNATURES:
            return await _index_tiff(read, size)
    except FormatError:
        return None
    return None


def _finish(
    kind: Literal["jp2", "j2k", "tiff"],
    known: list[tuple[int, bytes]],
    segments: list[tuple[int, int]],
    tiled: bool,
    layout: Jp2Layout | TiffLayout | None,
) -> ObjectIndex:
    """Sort, merge adjacent known ranges, drop overlapping segments."""
    merged: list[tuple[int, bytes]] = []
    for start, data in sorted((k for k in known if k[1]), key=lambda k: k[0]):
        if merged:
            prev_start, prev = merged[-1]
            prev_end = prev_start + len(prev)
            if start <= prev_end:
                if start + len(data) > prev_end:
                    merged[-1] = (prev_start, prev + data[prev_end - start :])
                continue
        merged.append((start, data))
    if sum(len(d) for _, d in merged) > MAX_KNOWN_BYTES:
        raise FormatError("index too large")
    clean: list[tuple[int, int]] = []
    for start, end in sorted(s for s in segments if s[1] > s[0]):
        if clean and start < clean[-1][1]:
            continue  # shared or overlapping data: leave it to plain blocks
        clean.append((start, end))
    return ObjectIndex(kind, tuple(merged), tuple(clean), tiled, layout)


# -- JPEG 2000 ---------------------------------------------------------------


async def _index_jpeg2000(read: ReadFn, size: int) -> ObjectIndex | None:
    """Index a JP2 file or raw codestream: the boxes before the codestream,
    its main header, every tile-part header, tile-part bodies as segments."""
    start, end = await run_async(jp2.locate_codestream(size), read, size)
    if end > size:
        raise FormatError("codestream box runs past the end of the file")
    if start > MAX_JP2_PREFIX:
        return None
    known = [(0, await read(0, start))] if start else []
    main = await run_async(jp2.read_main_header(start, MAX_MARKER_WALK), read, size)
    if main.end > end:
        raise FormatError("main header runs past the codestream")
    known.append((start, await read(start, main.end - start)))
    eoc = await run_async(jp2.find_data_end(end), read, size)

    async def with_header(part: jp2.TilePart) -> tuple[jp2.TilePart, bytes]:
        return part, await read(part.start, part.body - part.start)

    lengths = jp2.tile_part_lengths(main)
    if lengths:
        positions = list(itertools.accumulate(lengths, initial=main.end))
        if len(lengths) > MAX_TILE_PARTS or positions[-1] > eoc:
            raise FormatError("TLM does not match the codestream")
        limit = asyncio.Semaphore(HEADER_FETCH_CONCURRENCY)

        async def one(tp_start: int, tp_end: int) -> tuple[jp2.TilePart, bytes]:
            async with limit:
                return await with_header(
                    await run_async(jp2.read_tile_part(tp_start, tp_end), read, size)
                )

        parts = await asyncio.gather(*(one(a, b) for a, b in itertools.pairwise(positions)))
        last_end = positions[-1]
    else:
        chain = await run_async(jp2.read_tile_parts(main.end, eoc, MAX_TILE_PARTS), read, size)
        parts = [await with_header(part) for part in chain]
        last_end = chain[-1].end if chain else main.end
    segments: list[tuple[int, int]] = []
    tiles: dict[int, list[Range]] = {}
    for part, header in parts:
        known.append((part.start, header))
        segments.append((part.body, part.end))
        tiles.setdefault(part.tile, []).append((part.body, part.end))
    tail_end = size if size - last_end <= MAX_TAIL else min(size, last_end + 2)
    known.append((last_end, await read(last_end, tail_end - last_end)))
    layout = Jp2Layout(main.header, {tile: tuple(r) for tile, r in tiles.items()})
    kind: Literal["jp2", "j2k"] = "jp2" if start else "j2k"
    return _finish(kind, known, segments, main.header.tiled, layout)


# -- TIFF --------------------------------------------------------------------

# (offsets, byte counts) tags of the two ways a TIFF cuts its data.
_DATA_TAGS: Final = (
    (tiff.STRIP_OFFSETS, tiff.STRIP_BYTE_COUNTS),
    (tiff.TILE_OFFSETS, tiff.TILE_BYTE_COUNTS),
)


async def _index_tiff(read: ReadFn, size: int) -> ObjectIndex:
    """Index every directory (the main chain and all SubIFDs, breadth
    first) with all its out-of-line values; strips and tiles as segments."""
    header = await run_async(tiff.read_header(), read, size)
    known = [(0, await read(0, header.length))]
    segments: list[tuple[int, int]] = []
    directories: dict[int, tuple[TiffDirectory | None, tuple[int, ...], int]] = {}
    queue, seen, tiled = collections.deque([header.first_ifd]), set[int](), False
    while queue:
        offset = queue.popleft()
        if offset == 0 or offset in seen:
            continue
        if len(seen) >= MAX_TIFF_DIRECTORIES:
            raise FormatError("too many directories")
        seen.add(offset)
        ifd = await run_async(tiff.read_ifd(header, offset), read, size)
        known.append((offset, ifd.raw))
        # libtiff reads every value of a directory it opens, wanted or not.
        values = await run_async(tiff.read_values(ifd, MAX_KNOWN_BYTES), read, size)
        known.extend((f.offset, values[f.tag]) for f in ifd.fields.values() if f.inline is None)
        grid: TiffDirectory | None = None
        for offsets_tag, counts_tag in _DATA_TAGS:
            offsets = _ints(header, ifd, values, offsets_tag)
            counts = _ints(header, ifd, values, counts_tag)
            pieces = [(o, min(o + c, size)) for o, c in zip(offsets, counts, strict=False) if c]
            segments.extend(pieces)
            tiled = tiled or len(offsets) > 1
            if pieces:
                start, end = pieces[0]
                known.append((start, await read(start, min(end - start, _FIRST_DATA_PEEK))))
            if offsets and len(offsets) == len(counts):
                grid = _grid(header, ifd, values, offsets_tag, offsets, counts, size) or grid
        subifds = _ints(header, ifd, values, tiff.SUB_IFDS)
        directories[offset] = (grid, subifds, ifd.next)
        queue.extend(subifds)
        queue.append(ifd.next)
    return _finish("tiff", known, segments, tiled, _tiff_layout(header.first_ifd, directories))


def _grid(
    header: tiff.TiffHeader,
    ifd: tiff.Ifd,
    values: dict[int, bytes],
    offsets_tag: int,
    offsets: tuple[int, ...],
    counts: tuple[int, ...],
    size: int,
) -> TiffDirectory | None:
    """The grid of a directory whose pieces are `offsets` / `counts`."""
    width = _ints(header, ifd, values, tiff.IMAGE_WIDTH)
    height = _ints(header, ifd, values, tiff.IMAGE_LENGTH)
    if not width or not height:
        return None
    if offsets_tag == tiff.TILE_OFFSETS:
        tw = _ints(header, ifd, values, tiff.TILE_WIDTH)
        th = _ints(header, ifd, values, tiff.TILE_LENGTH)
        if not tw or not th:
            return None
        tile = (tw[0], th[0])
    else:
        rows = _ints(header, ifd, values, _ROWS_PER_STRIP)
        tile = (width[0], min(rows[0], height[0]) if rows else height[0])
    pieces = tuple((o, min(o + c, size)) for o, c in zip(offsets, counts, strict=True))
    return TiffDirectory(width[0], height[0], tile[0], tile[1], pieces)


def _tiff_layout(
    first: int, directories: dict[int, tuple[TiffDirectory | None, tuple[int, ...], int]]
) -> TiffLayout | None:
    """Pages (the main chain from `first`) and their SubIFDs, or None when
    a directory on the way has no usable grid."""
    pages: list[TiffDirectory] = []
    subifds: list[tuple[TiffDirectory, ...]] = []
    offset, seen = first, set[int]()
    while offset and offset in directories and offset not in seen:
        seen.add(offset)
        grid, subs, offset = directories[offset]
        children = [directories[s][0] for s in subs if s in directories]
        if grid is None or any(c is None for c in children):
            return None
        pages.append(grid)
        subifds.append(tuple(c for c in children if c is not None))
    return TiffLayout(tuple(pages), tuple(subifds)) if pages else None


def _ints(
    header: tiff.TiffHeader, ifd: tiff.Ifd, values: dict[int, bytes], tag: int
) -> tuple[int, ...]:
    """The integer values of `tag` in `ifd` (whose value bytes are `values`);
    empty when it is absent or not of an integer type."""
    field = ifd.fields.get(tag)
    if field is None:
        return ()
    return tiff.unpack_ints(header, field, values[tag]) or ()
