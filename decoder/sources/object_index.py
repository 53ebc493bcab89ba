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

Pure parsing over an async read function: nothing here knows HTTP, S3, IIIF
or any codec library. Malformed or hostile files yield no index (None), never
an error: the index is only an optimisation.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final, Literal

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

_SOC, _SOT, _SOD, _EOC = 0xFF4F, 0xFF90, 0xFF93, 0xFFD9
_TLM = 0xFF55
_JP2_SIGNATURE: Final = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


class _Malformed(Exception):
    """The bytes do not form a structure we can index."""


@dataclass(frozen=True, slots=True)
class ObjectIndex:
    """Structure bytes and data ranges of one object version.

    `known` is sorted, non-overlapping `(start, bytes)`; `segments` is
    sorted, non-overlapping `(start, end)` byte ranges of data; `tiled` says
    whether the data is cut into many independently decodable pieces (a
    JPEG 2000 file with several tiles, a tiled or stripped TIFF).
    """

    kind: Literal["jp2", "j2k", "tiff"]
    known: tuple[tuple[int, bytes], ...]
    segments: tuple[tuple[int, int], ...]
    tiled: bool
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
    return head.startswith(_JP2_SIGNATURE) or head[:2] == b"\xff\x4f"


async def build_index(read: ReadFn, size: int) -> ObjectIndex | None:
    """Index the object of `size` bytes that `read` reads, or None if it is
    not a JPEG 2000 or TIFF file, is malformed, or exceeds the index bounds.

    Raises only what `read` raises (source errors); parsing problems give None.
    """
    try:
        head = await read(0, min(size, 16))
        if head.startswith(_JP2_SIGNATURE):
            return await _index_jp2(read, size)
        if head[:2] == b"\xff\x4f":
            return await _index_codestream(read, 0, size, size, known=[], kind="j2k")
        if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
            return await _index_tiff(read, size, head)
    except (_Malformed, struct.error, ValueError, IndexError):
        return None
    return None


def _finish(
    kind: Literal["jp2", "j2k", "tiff"],
    known: list[tuple[int, bytes]],
    segments: list[tuple[int, int]],
    tiled: bool,
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
        raise _Malformed("index too large")
    clean: list[tuple[int, int]] = []
    for start, end in sorted(s for s in segments if s[1] > s[0]):
        if clean and start < clean[-1][1]:
            continue  # shared or overlapping data: leave it to plain blocks
        clean.append((start, end))
    return ObjectIndex(kind, tuple(merged), tuple(clean), tiled)


# -- JPEG 2000 ---------------------------------------------------------------


async def _index_jp2(read: ReadFn, size: int) -> ObjectIndex | None:
    pos = 0
    while pos + 8 <= size:
        header = await read(pos, 16)
        lbox, tbox = struct.unpack(">I4s", header[:8])
        hlen = 8
        if lbox == 1:
            (lbox,) = struct.unpack(">Q", header[8:16])
            hlen = 16
        elif lbox == 0:
            lbox = size - pos
        if lbox < hlen or pos + lbox > size:
            raise _Malformed("bad box length")
        if tbox == b"jp2c":
            start = pos + hlen
            if start > MAX_JP2_PREFIX:
                return None
            prefix = await read(0, start)
            return await _index_codestream(
                read, start, pos + lbox, size, known=[(0, prefix)], kind="jp2"
            )
        pos += lbox
    return None


async def _index_codestream(
    read: ReadFn,
    start: int,
    end: int,
    size: int,
    known: list[tuple[int, bytes]],
    kind: Literal["jp2", "j2k"],
) -> ObjectIndex:
    """Index the codestream in `[start, end)`: main header, every tile-part
    header, tile-part bodies as segments."""
    if await read(start, 2) != b"\xff\x4f":
        raise _Malformed("no SOC marker")
    pos = start + 2
    tiles = 1
    tlm: list[int] = []
    while True:
        if pos - start > MAX_MARKER_WALK or pos + 4 > end:
            raise _Malformed("main header too long")
        marker, length = struct.unpack(">HH", await read(pos, 4))
        if marker == _SOT:
            break
        if marker >> 8 != 0xFF or length < 2:
            raise _Malformed("bad marker in main header")
        if marker == 0xFF51:  # SIZ: the tile grid
            siz = await read(pos + 4, 36)
            xsiz, ysiz, _xo, _yo, xt, yt, xto, yto = struct.unpack(">8I", siz[2:34])
            if xt == 0 or yt == 0:
                raise _Malformed("zero tile size")
            tiles = -(-(xsiz - xto) // xt) * -(-(ysiz - yto) // yt)
        elif marker == _TLM:
            tlm.extend(_parse_tlm(await read(pos + 4, length - 2)))
        pos += 2 + length
    known.append((start, await read(start, pos - start)))
    segments: list[tuple[int, int]] = []
    eoc = end - 2 if end >= 2 and await read(end - 2, 2) == b"\xff\xd9" else end
    if tlm:
        positions = [pos]
        for length in tlm:
            positions.append(positions[-1] + length)
        if len(tlm) > MAX_TILE_PARTS or positions[-1] > eoc:
            raise _Malformed("TLM does not match the codestream")
        limit = asyncio.Semaphore(HEADER_FETCH_CONCURRENCY)

        async def one(tp_start: int, tp_end: int) -> tuple[int, bytes, int, int]:
            async with limit:
                return await _tile_part(read, tp_start, tp_end)

        parts = await asyncio.gather(*(one(a, b) for a, b in itertools.pairwise(positions)))
        last_end = positions[-1]
    else:
        parts = []
        while pos < eoc:
            if len(parts) >= MAX_TILE_PARTS:
                raise _Malformed("too many tile-parts")
            part = await _tile_part(read, pos, eoc)
            parts.append(part)
            pos = part[3]
        last_end = pos
    for tp_start, header, body_start, body_end in parts:
        known.append((tp_start, header))
        segments.append((body_start, body_end))
    tail_end = size if size - last_end <= MAX_TAIL else min(size, last_end + 2)
    known.append((last_end, await read(last_end, tail_end - last_end)))
    return _finish(kind, known, segments, tiled=tiles > 1)


def _parse_tlm(body: bytes) -> list[int]:
    """Tile-part lengths from one TLM marker body (after Ltlm)."""
    if len(body) < 2:
        raise _Malformed("short TLM")
    stlm = body[1]
    st = (stlm >> 4) & 0x3
    sp = 4 if stlm & 0x40 else 2
    if st == 3:
        raise _Malformed("bad TLM")
    entry = st + sp
    data = body[2:]
    if len(data) % entry:
        raise _Malformed("TLM length")
    fmt = ">I" if sp == 4 else ">H"
    return [struct.unpack(fmt, data[i + st : i + entry])[0] for i in range(0, len(data), entry)]


async def _tile_part(read: ReadFn, pos: int, eoc: int) -> tuple[int, bytes, int, int]:
    """(start, header bytes SOT..SOD, body start, body end) of the tile-part at `pos`."""
    sot = await read(pos, 12)
    marker, lsot, _isot, psot = struct.unpack(">HHHI", sot[:10])
    if marker != _SOT or lsot != 10:
        raise _Malformed("expected SOT")
    tp_end = pos + psot if psot else eoc
    if tp_end > eoc or tp_end < pos + 14:
        raise _Malformed("bad Psot")
    hpos = pos + 12
    while True:
        if hpos + 2 > tp_end:
            raise _Malformed("no SOD in tile-part")
        (marker,) = struct.unpack(">H", await read(hpos, 2))
        if marker == _SOD:
            hpos += 2
            break
        (length,) = struct.unpack(">H", await read(hpos + 2, 2))
        if marker >> 8 != 0xFF or length < 2:
            raise _Malformed("bad marker in tile-part header")
        hpos += 2 + length
    return pos, await read(pos, hpos - pos), hpos, tp_end


# -- TIFF --------------------------------------------------------------------

_TYPE_SIZES: Final = {
    1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
    13: 4, 16: 8, 17: 8, 18: 8,
}  # fmt: skip
_OFFSET_TAGS: Final = (273, 324)  # StripOffsets, TileOffsets
_COUNT_TAGS: Final = (279, 325)  # StripByteCounts, TileByteCounts
_SUBIFDS: Final = 330
_FIRST_DATA_PEEK: Final = 4096
_INT_FORMATS: Final = {3: "H", 4: "I", 13: "I", 16: "Q", 18: "Q"}


async def _index_tiff(read: ReadFn, size: int, head: bytes) -> ObjectIndex:
    bo = "<" if head[:2] == b"II" else ">"
    (magic,) = struct.unpack(bo + "H", head[2:4])
    big = magic == 43
    if big:
        (first,) = struct.unpack(bo + "Q", head[8:16])
        known: list[tuple[int, bytes]] = [(0, head[:16])]
    else:
        (first,) = struct.unpack(bo + "I", head[4:8])
        known = [(0, head[:8])]
    count_fmt, entry_size, next_fmt = ("Q", 20, "Q") if big else ("H", 12, "I")
    count_size, next_size = struct.calcsize(count_fmt), struct.calcsize(next_fmt)
    inline_size = 8 if big else 4
    segments: list[tuple[int, int]] = []
    queue, seen, tiled = [first], set[int](), False
    while queue:
        off = queue.pop(0)
        if off == 0 or off in seen:
            continue
        if off + count_size > size or len(seen) >= MAX_TIFF_DIRECTORIES:
            raise _Malformed("bad or too many directories")
        seen.add(off)
        (n,) = struct.unpack(bo + count_fmt, await read(off, count_size))
        table_len = count_size + n * entry_size + next_size
        if n == 0 or off + table_len > size:
            raise _Malformed("bad directory")
        table = await read(off, table_len)
        known.append((off, table))
        arrays: dict[int, list[int]] = {}
        for i in range(n):
            entry = table[count_size + i * entry_size : count_size + (i + 1) * entry_size]
            if big:
                tag, typ, count = struct.unpack(bo + "HHQ", entry[:12])
            else:
                tag, typ, count = struct.unpack(bo + "HHI", entry[:8])
            value = entry[4 + (8 if big else 4) :]
            total = count * _TYPE_SIZES.get(typ, 1)
            if total > inline_size:
                (voff,) = struct.unpack(bo + ("Q" if big else "I"), value)
                if voff + total > size or total > MAX_KNOWN_BYTES:
                    raise _Malformed("tag value outside the file")
                value = await read(voff, total)
                known.append((voff, value))
            wanted = tag in _OFFSET_TAGS or tag in _COUNT_TAGS or tag == _SUBIFDS
            if wanted and typ in _INT_FORMATS:
                fmt = f"{bo}{count}{_INT_FORMATS[typ]}"
                arrays[tag] = list(struct.unpack(fmt, value[: struct.calcsize(fmt)]))
        for offsets_tag, counts_tag in zip(_OFFSET_TAGS, _COUNT_TAGS, strict=True):
            offsets, counts = arrays.get(offsets_tag, []), arrays.get(counts_tag, [])
            pieces = [(o, min(o + c, size)) for o, c in zip(offsets, counts, strict=False) if c]
            segments.extend(pieces)
            tiled = tiled or len(offsets) > 1
            if pieces:
                # libtiff peeks at the start of each directory's first tile or
                # strip when it reads the directory (JPEG subsampling fix-up):
                # keep those bytes so opening a page costs no GET.
                start, end = pieces[0]
                known.append((start, await read(start, min(end - start, _FIRST_DATA_PEEK))))
        queue.extend(arrays.get(_SUBIFDS, []))
        (next_off,) = struct.unpack(bo + next_fmt, table[-next_size:])
        queue.append(next_off)
    return _finish("tiff", known, segments, tiled)
