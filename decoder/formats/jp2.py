"""JPEG 2000 structure: JP2 boxes, the codestream main header (SIZ, COD,
COC, TLM) and tile-part headers (SOT ... SOD), per ISO/IEC 15444-1.

Each function is a :mod:`decoder.formats` parser. :func:`read_codestream_header`
is all the engines need; the S3 index also walks tile-parts
(:func:`read_tile_part`, :func:`read_tile_parts`, :func:`tile_part_lengths`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from decoder.formats.base import FormatError, NotThisFormat, Parser

JP2_SIGNATURE: Final = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
"""The JP2 signature box: the first 12 bytes of a .jp2 / .jpx file."""
SOC: Final = b"\xff\x4f"
"""The first two bytes of a raw codestream (start of codestream marker)."""
SOC_SIZ: Final = b"\xff\x4f\xff\x51"
"""The first four bytes of a raw codestream: SOC, then SIZ (which must follow)."""

_SIZ, _COD, _COC, _TLM = 0xFF51, 0xFF52, 0xFF53, 0xFF55
_SOT, _SOD, _EOC = 0xFF90, 0xFF93, 0xFFD9
_SOT_SEGMENT: Final = 12  # SOT marker, Lsot = 10, Isot, Psot, TPsot, TNsot


@dataclass(frozen=True, slots=True)
class J2kHeader:
    """The codestream main header facts we need.

    Sizes are in full-resolution pixels of the reference grid (image area,
    offsets removed). `resolutions` is the smallest number of resolution
    levels over all components (decompositions + 1). `tile_width` and
    `tile_height` are the nominal tile size, `tile_x0` and `tile_y0` where
    the tile grid starts on the reference grid; `tiled` is False when one
    tile covers the whole image.
    """

    width: int
    height: int
    x0: int
    y0: int
    x1: int
    y1: int
    tile_width: int
    tile_height: int
    tiled: bool
    components: int
    resolutions: int
    tile_x0: int = 0
    tile_y0: int = 0

    def level_size(self, reduction: int) -> tuple[int, int]:
        """Image size in pixels after discarding `reduction` resolution levels
        (as OpenJPEG computes it: ceil-divided canvas corners)."""
        d = 1 << reduction
        return (-(-self.x1 // d) - -(-self.x0 // d), -(-self.y1 // d) - -(-self.y0 // d))


@dataclass(frozen=True, slots=True)
class MainHeader:
    """A codestream's main header: its facts, the byte offset `end` of the
    marker that ends it (the first SOT normally) and the bodies of its TLM
    marker segments (after Ltlm), in order; decode them with
    :func:`tile_part_lengths`."""

    header: J2kHeader
    end: int
    tlm: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class TilePart:
    """One tile-part, as byte offsets: its SOT marker at `start`, its data
    from `body` (just after SOD) to `end` (exclusive); the `tile` it
    belongs to (Isot)."""

    start: int
    body: int
    end: int
    tile: int = 0


def locate_codestream(size: int) -> Parser[tuple[int, int]]:
    """``(start, end)`` byte offsets of the codestream in a file of `size`
    bytes: ``(0, size)`` for a raw codestream, else the body of the first
    top-level jp2c box (whose declared `end` may lie past a truncated file's
    end). Raises NotThisFormat for anything but JPEG 2000 and FormatError for
    a corrupt box or no jp2c box."""
    if size >= 4 and (yield (0, 4)) == SOC_SIZ:
        return 0, size
    if size < 12 or (yield (0, 12)) != JP2_SIGNATURE:
        raise NotThisFormat("not a JPEG 2000 file")
    pos = 0
    while pos + 8 <= size:
        length, kind = struct.unpack(">I4s", (yield (pos, 8)))
        header = 8
        if length == 1:  # XLBox: a 64-bit length follows
            (length,) = struct.unpack(">Q", (yield (pos + 8, 8)))
            header = 16
        elif length == 0:  # the last box: runs to the end of the file
            length = size - pos
        if length < header:
            raise FormatError("corrupt JP2 box")
        if kind == b"jp2c":
            return pos + header, pos + length
        pos += length
    raise FormatError("JP2 file has no contiguous codestream (jp2c) box")


def read_main_header(start: int, max_length: int | None = None) -> Parser[MainHeader]:
    """The main header of the codestream at byte `start` (its SOC), reading
    only the SIZ, COD, COC and TLM bodies. Raises FormatError if it is longer
    than `max_length` bytes (no bound if None), truncated, lacks SIZ or COD,
    or holds invalid values."""
    if (yield (start, 2)) != SOC:
        raise FormatError("codestream does not start with SOC")
    pos = start + 2
    siz: tuple[int, ...] | None = None
    components = 0
    resolutions: int | None = None
    coc_resolutions: list[int] = []
    tlm: list[bytes] = []
    while True:
        if max_length is not None and pos - start > max_length:
            raise FormatError("codestream main header too long")
        (marker,) = struct.unpack(">H", (yield (pos, 2)))
        if marker in (_SOT, _SOD, _EOC):  # the main header is over
            break
        if marker < 0xFF30:
            raise FormatError("corrupt codestream marker")
        if marker <= 0xFF3F:  # reserved markers without a segment
            pos += 2
            continue
        (seg_len,) = struct.unpack(">H", (yield (pos + 2, 2)))
        if seg_len < 2:
            raise FormatError("corrupt codestream marker segment")
        if marker in (_SIZ, _COD, _COC, _TLM):
            body = yield (pos + 4, seg_len - 2)
            if marker == _SIZ:
                if len(body) < 36:
                    raise FormatError("short SIZ segment")
                siz = struct.unpack(">HIIIIIIIIH", body[:36])
                components = siz[9]
            elif marker == _COD:  # SPcod starts after Scod(1) + SGcod(4)
                if len(body) < 6:
                    raise FormatError("short COD segment")
                resolutions = body[5] + 1
            elif marker == _COC:  # Ccoc is 2 bytes when Csiz >= 257
                offset = 1 + (2 if components >= 257 else 1)
                if len(body) < offset + 1:
                    raise FormatError("short COC segment")
                coc_resolutions.append(body[offset] + 1)
            else:
                tlm.append(body)
        pos += 2 + seg_len
    if siz is None or resolutions is None:
        raise FormatError("codestream lacks SIZ or COD")
    _rsiz, x1, y1, x0, y0, tw, th, tx0, ty0, _csiz = siz
    if x1 <= x0 or y1 <= y0 or tw == 0 or th == 0 or components == 0:
        raise FormatError("invalid SIZ values")
    header = J2kHeader(
        width=x1 - x0,
        height=y1 - y0,
        x0=x0,
        y0=y0,
        x1=x1,
        y1=y1,
        tile_width=tw,
        tile_height=th,
        tiled=tx0 + tw < x1 or ty0 + th < y1,
        components=components,
        resolutions=min([resolutions, *coc_resolutions]),
        tile_x0=tx0,
        tile_y0=ty0,
    )
    return MainHeader(header, pos, tuple(tlm))


def read_codestream_header(size: int) -> Parser[J2kHeader]:
    """The main header facts of a raw codestream or JP2/JPX file of `size`
    bytes. Raises NotThisFormat for anything but JPEG 2000 and FormatError
    for truncated or inconsistent headers."""
    start, _end = yield from locate_codestream(size)
    main = yield from read_main_header(start)
    return main.header


def tile_part_lengths(main: MainHeader) -> tuple[int, ...]:
    """The tile-part lengths (Ptlm, in bytes, in codestream order) its TLM
    markers give; empty without TLM. Raises FormatError for a malformed TLM."""
    lengths: list[int] = []
    for body in main.tlm:
        if len(body) < 2:
            raise FormatError("short TLM segment")
        stlm = body[1]  # after Ztlm: ST (Ttlm size) in bits 4-5, SP in bit 6
        st, sp = (stlm >> 4) & 0x3, 4 if stlm & 0x40 else 2
        if st == 3:
            raise FormatError("bad TLM segment")
        entry, data = st + sp, body[2:]
        if len(data) % entry:
            raise FormatError("TLM segment length")
        code = ">I" if sp == 4 else ">H"
        lengths.extend(
            struct.unpack(code, data[i + st : i + entry])[0] for i in range(0, len(data), entry)
        )
    return tuple(lengths)


def find_data_end(end: int) -> Parser[int]:
    """Where the tile-parts of a codestream ending at byte `end` must end:
    the offset of its EOC marker, or `end` when EOC is missing."""
    if end >= 2 and (yield (end - 2, 2)) == b"\xff\xd9":
        return end - 2
    return end


def read_tile_part(pos: int, limit: int) -> Parser[TilePart]:
    """The tile-part whose SOT is at byte `pos`, which must end by byte
    `limit`; Psot 0 (the last tile-part, length unknown) ends it at `limit`.
    Raises FormatError for a missing SOT or SOD, or a bad Psot."""
    sot = yield (pos, _SOT_SEGMENT)
    marker, lsot, isot, psot = struct.unpack(">HHHI", sot[:10])
    if marker != _SOT or lsot != _SOT_SEGMENT - 2:
        raise FormatError("expected SOT")
    end = pos + psot if psot else limit
    if end > limit or end < pos + _SOT_SEGMENT + 2:
        raise FormatError("bad Psot")
    at = pos + _SOT_SEGMENT
    while True:
        if at + 2 > end:
            raise FormatError("no SOD in tile-part")
        (marker,) = struct.unpack(">H", (yield (at, 2)))
        if marker == _SOD:
            return TilePart(pos, at + 2, end, isot)
        if at + 4 > end:
            raise FormatError("no SOD in tile-part")
        (length,) = struct.unpack(">H", (yield (at + 2, 2)))
        if marker >> 8 != 0xFF or length < 2:
            raise FormatError("bad marker in tile-part header")
        at += 2 + length


def read_tile_parts(pos: int, limit: int, max_parts: int) -> Parser[list[TilePart]]:
    """Follow the SOT chain from byte `pos` to byte `limit` (each tile-part's
    Psot gives the next one's start). Raises FormatError past `max_parts`
    tile-parts or for a malformed one."""
    parts: list[TilePart] = []
    while pos < limit:
        if len(parts) >= max_parts:
            raise FormatError("too many tile-parts")
        part = yield from read_tile_part(pos, limit)
        parts.append(part)
        pos = part.end
    return parts
