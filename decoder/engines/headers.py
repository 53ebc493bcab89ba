"""Cheap structure parsers for JPEG 2000 and TIFF headers.

libvips does not report JPEG 2000 resolution levels or tile sizes, nor TIFF
tile sizes, so we read them from the file ourselves. Reads go through a
ByteReader in a few large blocks (one or two for typical files), which keeps
this cheap for remote objects too. Codec-neutral: a future direct-OpenJPEG
or libtiff engine can reuse these.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from decoder.engines.base import DecodeError, UnsupportedSource
from decoder.sources.base import ByteReader

_BLOCK = 64 * 1024
# Headers are small; refuse to read more than this while looking for one, so
# a hostile file cannot make us read gigabytes of IFD chains.
_MAX_HEADER_BYTES = 16 * 1024 * 1024
_MAX_TIFF_PAGES = 1024


class _Blocks:
    """Reads `reader` in 64 KiB aligned blocks, caching them (not thread-safe:
    one instance per parse)."""

    def __init__(self, reader: ByteReader) -> None:
        self._reader = reader
        self._size = reader.size
        self._blocks: dict[int, bytes] = {}
        self._read_total = 0

    @property
    def size(self) -> int:
        return self._size

    def get(self, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset`; DecodeError if the file ends."""
        if offset < 0 or length < 0 or offset + length > self._size:
            raise DecodeError("truncated header")
        first, last = offset // _BLOCK, (offset + length - 1) // _BLOCK
        parts = [self._block(i) for i in range(first, last + 1)] if length else []
        data = b"".join(parts)
        start = offset - first * _BLOCK
        return data[start : start + length]

    def _block(self, index: int) -> bytes:
        block = self._blocks.get(index)
        if block is None:
            self._read_total += _BLOCK
            if self._read_total > _MAX_HEADER_BYTES:
                raise DecodeError("header too large")
            block = self._reader.read_at(index * _BLOCK, _BLOCK)
            self._blocks[index] = block
        return block


# -- JPEG 2000 -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class J2kHeader:
    """The codestream main header facts we need.

    Sizes are in full-resolution pixels of the reference grid (image area,
    offsets removed). `resolutions` is the smallest number of resolution
    levels over all components (decompositions + 1). `tile_width` and
    `tile_height` are the nominal tile size; `tiled` is False when one tile
    covers the whole image.
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

    def level_size(self, reduction: int) -> tuple[int, int]:
        """Image size in pixels after discarding `reduction` resolution levels
        (as OpenJPEG computes it: ceil-divided canvas corners)."""
        d = 1 << reduction
        return (-(-self.x1 // d) - -(-self.x0 // d), -(-self.y1 // d) - -(-self.y0 // d))


_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


def _find_codestream(blocks: _Blocks) -> int:
    """Offset of the J2K codestream: 0 for a raw codestream, else the body of
    the first top-level jp2c box."""
    if blocks.size >= 4 and blocks.get(0, 4) == b"\xff\x4f\xff\x51":
        return 0
    if blocks.size < 12 or blocks.get(0, 12) != _JP2_SIGNATURE:
        raise UnsupportedSource("not a JPEG 2000 file")
    pos = 0
    while pos + 8 <= blocks.size:
        length, kind = struct.unpack(">I4s", blocks.get(pos, 8))
        header = 8
        if length == 1:
            (length,) = struct.unpack(">Q", blocks.get(pos + 8, 8))
            header = 16
        elif length == 0:
            length = blocks.size - pos
        if length < header:
            raise DecodeError("corrupt JP2 box")
        if kind == b"jp2c":
            return pos + header
        pos += length
    raise DecodeError("JP2 file has no contiguous codestream (jp2c) box")


def parse_j2k_header(reader: ByteReader) -> J2kHeader:
    """Parse SIZ, COD and COC from a raw J2K codestream or a JP2/JPX file.

    Raises UnsupportedSource if the bytes are not JPEG 2000 and DecodeError
    if the header is truncated or inconsistent.
    """
    blocks = _Blocks(reader)
    start = _find_codestream(blocks)
    if blocks.get(start, 2) != b"\xff\x4f":
        raise DecodeError("codestream does not start with SOC")
    pos = start + 2
    siz: tuple[int, ...] | None = None
    components = 0
    resolutions: int | None = None
    coc_resolutions: list[int] = []
    while True:
        (marker,) = struct.unpack(">H", blocks.get(pos, 2))
        if marker in (0xFF90, 0xFF93, 0xFFD9):  # SOT, SOD, EOC: main header over
            break
        if marker < 0xFF30:
            raise DecodeError("corrupt codestream marker")
        if 0xFF30 <= marker <= 0xFF3F:  # markers without a segment
            pos += 2
            continue
        (seg_len,) = struct.unpack(">H", blocks.get(pos + 2, 2))
        if seg_len < 2:
            raise DecodeError("corrupt codestream marker segment")
        body = blocks.get(pos + 4, seg_len - 2)
        if marker == 0xFF51:  # SIZ
            if len(body) < 36:
                raise DecodeError("short SIZ segment")
            siz = struct.unpack(">HIIIIIIIIH", body[:36])
            components = siz[9]
        elif marker == 0xFF52:  # COD: SPcod starts after Scod(1) + SGcod(4)
            if len(body) < 6:
                raise DecodeError("short COD segment")
            resolutions = body[5] + 1
        elif marker == 0xFF53:  # COC: Ccoc is 2 bytes when Csiz >= 257
            offset = 1 + (2 if components >= 257 else 1)
            if len(body) < offset + 1:
                raise DecodeError("short COC segment")
            coc_resolutions.append(body[offset] + 1)
        pos += 2 + seg_len
    if siz is None or resolutions is None:
        raise DecodeError("codestream lacks SIZ or COD")
    _rsiz, x1, y1, x0, y0, tw, th, tx0, ty0, _csiz = siz
    if x1 <= x0 or y1 <= y0 or tw == 0 or th == 0 or components == 0:
        raise DecodeError("invalid SIZ values")
    return J2kHeader(
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
    )


# -- TIFF ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TiffPage:
    """One image file directory: size and tile size in pixels (0 = striped),
    samples per pixel, and the offsets of its SubIFDs (if any)."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    samples: int
    subifds: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TiffStructure:
    """The main IFD chain (`pages`) and page 0's SubIFDs (`subifds`)."""

    bigtiff: bool
    pages: tuple[TiffPage, ...]
    subifds: tuple[TiffPage, ...]


# TIFF field type -> (struct code, size in bytes), for the integer types.
_TIFF_TYPES: dict[int, tuple[str, int]] = {
    1: ("B", 1),  # BYTE
    3: ("H", 2),  # SHORT
    4: ("I", 4),  # LONG
    13: ("I", 4),  # IFD
    16: ("Q", 8),  # LONG8
    18: ("Q", 8),  # IFD8
}
_TAG_WIDTH, _TAG_LENGTH, _TAG_SAMPLES = 256, 257, 277
_TAG_TILE_WIDTH, _TAG_TILE_LENGTH, _TAG_SUBIFDS = 322, 323, 330
_WANTED_TAGS = frozenset(
    {_TAG_WIDTH, _TAG_LENGTH, _TAG_SAMPLES, _TAG_TILE_WIDTH, _TAG_TILE_LENGTH, _TAG_SUBIFDS}
)


class _TiffParser:
    def __init__(self, blocks: _Blocks) -> None:
        self._blocks = blocks
        head = blocks.get(0, 4) if blocks.size >= 4 else b""
        if head[:2] == b"II":
            self._bo = "<"
        elif head[:2] == b"MM":
            self._bo = ">"
        else:
            raise UnsupportedSource("not a TIFF file")
        (magic,) = struct.unpack(self._bo + "H", head[2:4])
        if magic == 42:
            self.bigtiff = False
            (self.first_ifd,) = struct.unpack(self._bo + "I", blocks.get(4, 4))
        elif magic == 43:
            self.bigtiff = True
            offsize, _zero, first = struct.unpack(self._bo + "HHQ", blocks.get(4, 12))
            if offsize != 8:
                raise DecodeError("unsupported BigTIFF offset size")
            self.first_ifd = first
        else:
            raise UnsupportedSource("not a TIFF file")

    def read_ifd(self, offset: int) -> tuple[TiffPage, int]:
        """The page at `offset` and the offset of the next IFD (0 = none)."""
        bo, blocks = self._bo, self._blocks
        if self.bigtiff:
            (count,) = struct.unpack(bo + "Q", blocks.get(offset, 8))
            entry_size, entries_at, inline = 20, offset + 8, 8
        else:
            (count,) = struct.unpack(bo + "H", blocks.get(offset, 2))
            entry_size, entries_at, inline = 12, offset + 2, 4
        if count == 0 or count > 4096:
            raise DecodeError("corrupt TIFF directory")
        raw = blocks.get(entries_at, count * entry_size)
        tags: dict[int, tuple[int, ...]] = {}
        for i in range(count):
            entry = raw[i * entry_size : (i + 1) * entry_size]
            if self.bigtiff:
                tag, typ, n = struct.unpack(bo + "HHQ", entry[:12])
            else:
                tag, typ, n = struct.unpack(bo + "HHI", entry[:8])
            if tag not in _WANTED_TAGS or typ not in _TIFF_TYPES or n == 0 or n > 65536:
                continue
            code, size = _TIFF_TYPES[typ]
            data = entry[entry_size - inline :]
            if n * size > inline:
                (where,) = struct.unpack(bo + ("Q" if self.bigtiff else "I"), data)
                data = blocks.get(where, n * size)
            tags[tag] = struct.unpack(f"{bo}{n}{code}", data[: n * size])
        next_fmt, next_size = ("Q", 8) if self.bigtiff else ("I", 4)
        (next_ifd,) = struct.unpack(
            bo + next_fmt, blocks.get(entries_at + count * entry_size, next_size)
        )
        if _TAG_WIDTH not in tags or _TAG_LENGTH not in tags:
            raise DecodeError("TIFF directory lacks image size")
        page = TiffPage(
            width=tags[_TAG_WIDTH][0],
            height=tags[_TAG_LENGTH][0],
            tile_width=tags.get(_TAG_TILE_WIDTH, (0,))[0],
            tile_height=tags.get(_TAG_TILE_LENGTH, (0,))[0],
            samples=tags.get(_TAG_SAMPLES, (1,))[0],
            subifds=tags.get(_TAG_SUBIFDS, ()),
        )
        if page.width == 0 or page.height == 0:
            raise DecodeError("TIFF page has zero size")
        return page, next_ifd


def parse_tiff_structure(reader: ByteReader) -> TiffStructure:
    """Walk the IFD chain of a TIFF or BigTIFF (either byte order).

    Reads only directories and the few tags we need (size, tile size,
    samples per pixel, SubIFDs). Raises UnsupportedSource if the bytes are
    not TIFF and DecodeError for truncated or corrupt structures.
    """
    parser = _TiffParser(_Blocks(reader))
    pages: list[TiffPage] = []
    seen: set[int] = set()
    offset = parser.first_ifd
    while offset and len(pages) < _MAX_TIFF_PAGES:
        if offset in seen:
            break  # an IFD loop: keep the pages read so far
        seen.add(offset)
        try:
            page, offset = parser.read_ifd(offset)
        except DecodeError:
            if not pages:
                raise
            break  # a damaged later page does not spoil the first ones
        pages.append(page)
    if not pages:
        raise DecodeError("TIFF has no image directory")
    subifds: list[TiffPage] = []
    for sub_offset in pages[0].subifds[:_MAX_TIFF_PAGES]:
        try:
            subifds.append(parser.read_ifd(sub_offset)[0])
        except DecodeError:
            break
    return TiffStructure(bigtiff=parser.bigtiff, pages=tuple(pages), subifds=tuple(subifds))


def reduction_factor(full: tuple[int, int], reduced: tuple[int, int]) -> int | None:
    """The integer downscale d >= 2 such that `reduced` is `full` divided by
    d (rounded down or up on each axis), or None if there is none."""
    (fw, fh), (rw, rh) = full, reduced
    if rw <= 0 or rh <= 0 or rw >= fw or rh >= fh:
        return None
    # The longer axis gives the most precise ratio; the other is then checked.
    d = round(fw / rw) if fw >= fh else round(fh / rh)
    if d < 2:
        return None
    for f, r in ((fw, rw), (fh, rh)):
        if r not in (f // d, -(-f // d)):
            return None
    return d
