"""Native-tile passthrough: answer a request for exactly one stored JPEG tile
of a pyramidal TIFF with that tile's own bytes, without decoding it and
without re-encoding.

Viewers ask for the image's own tile grid, so for a JPEG-compressed pyramid
most requests are "give me stored tile (x, y) of level L as JPEG". Decoding
and re-encoding such a tile costs milliseconds of CPU and adds a second
generation of JPEG loss; copying it costs a few reads.

When a request qualifies (see :func:`tile_for`): the output is JPEG, quality
color, no rotation or mirror, not progressive, and its region and size map
onto one whole stored tile of a JPEG-compressed (Compression 7), 8-bit,
1- or 3-sample, chunky TIFF level without an ICC profile. The encode quality
of the plan is *not* honoured: the stored tile keeps the quality the master
was written with (a re-encode could only lose detail, never add it). A
progressive request is decoded and re-encoded, since stored tiles are
baseline.

libtiff writes JPEG tiles as "abbreviated" streams (TIFF Technical Note 2):
the quantisation and Huffman tables shared by all tiles of a page live once
in the page's JPEGTables field (tag 347, itself a JPEG stream of SOI,
DQT/DHT segments, EOI), and libtiff suppresses the JFIF and Adobe markers.
We splice the tables' segments in after the tile's SOI and add the marker a
stand-alone decoder needs to pick the colour space: a JFIF APP0 for YCbCr
(Photometric 6) and grey data, an Adobe APP14 with transform 0 for data
coded as RGB (Photometric 2), which readers would otherwise treat as YCbCr.

The TIFF structure (where each level's tile offsets, byte counts and tables
are) is parsed once per (source key, version) and kept in a small LRU; a
request then reads the tile's offset and byte count (two tiny reads) and the
tile itself.

:func:`read_tiles` reads several tiles of a level at once, for a mosaic
(mosaic.py) or a rectangle of tiles (stored_tiles.py, the StoredTiles RPC):
tiles next to each other in the file in one read.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from cachetools import LRUCache

from decoder import metrics
from decoder.engines.base import DecodeError, ImageInfo, Level, SourceFormat
from decoder.formats import FormatError, Parser, parse, tiff
from decoder.formats.tiff import IntArray, TiffPage
from decoder.pipeline.load import choose_level, level_box
from decoder.plan import Box, OutputFormat, Plan, Quality
from decoder.sources.base import ByteReader

# -- the tile index ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JpegLevel:
    """One pyramid level whose tiles can be passed through: its size and tile
    size in pixels, where its tile offsets and byte counts are, the body of
    its JPEGTables (segments between SOI and EOI; empty when the tiles carry
    their own tables) and the colour marker segment to add."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    samples: int
    offsets: IntArray
    byte_counts: IntArray
    tables: bytes
    marker: bytes

    @property
    def tiles_across(self) -> int:
        return -(-self.width // self.tile_width)


@dataclass(frozen=True, slots=True)
class TileIndex:
    """Per level of an ImageInfo (same order), the JpegLevel or None when
    that level's tiles cannot be passed through."""

    levels: tuple[JpegLevel | None, ...]


# -- configuration ----------------------------------------------------------

DEFAULT_INDEX_ENTRIES: Final = 4096

_lock = threading.Lock()
_enabled = True
# (source key, version) -> the parsed tile index, or None for a source that
# can never pass through (not a tiled JPEG TIFF), so it is not parsed again.
_indexes: LRUCache[tuple[str, str], TileIndex | None] = LRUCache(maxsize=DEFAULT_INDEX_ENTRIES)


def configure(enabled: bool = True, index_entries: int = DEFAULT_INDEX_ENTRIES) -> None:
    """Turn passthrough on or off for this process and size the cache of
    parsed TIFF structures (`index_entries` sources, each a few hundred
    bytes plus its JPEG tables). Clears the cache."""
    global _enabled, _indexes
    with _lock:
        _enabled = enabled
        _indexes = LRUCache(maxsize=max(1, index_entries))


def is_enabled() -> bool:
    """Whether passthrough is on."""
    return _enabled


# JFIF APP0, version 1.01, no units, 1:1 density, no thumbnail: tells readers
# three components are YCbCr (and is harmless for grey).
JFIF_APP0: Final = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
# Adobe APP14, version 100, no flags, transform 0: components are not
# colour-transformed (RGB as coded).
ADOBE_APP14_RGB: Final = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"

_PHOTOMETRIC_GREY, _PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR = 1, 2, 6
# (samples per pixel, Photometric) -> the marker that makes a stand-alone JPEG
# reader see the same colour space libtiff does.
_COLOUR_MARKERS: Final[dict[tuple[int, int], bytes]] = {
    (1, _PHOTOMETRIC_GREY): JFIF_APP0,
    (3, _PHOTOMETRIC_YCBCR): JFIF_APP0,
    (3, _PHOTOMETRIC_RGB): ADOBE_APP14_RGB,
}
_COMPRESSION_JPEG = 7
# Bounds against hostile files: JPEGTables size, one tile's size.
_MAX_TABLES_BYTES = 64 * 1024
_MAX_TILE_BYTES = 32 * 1024 * 1024


def _segments(data: bytes, start: int) -> Iterator[tuple[int, int, int]]:
    """(marker, segment start, segment end) of the marker segments in `data`
    from `start` up to and including SOS (whose end is where the entropy-coded
    data begins) or the end of `data`. Raises DecodeError on malformed data."""
    pos = start
    while pos < len(data):
        if pos + 4 > len(data) or data[pos] != 0xFF:
            raise DecodeError("malformed JPEG marker")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if length < 2 or end > len(data):
            raise DecodeError("truncated JPEG segment")
        yield marker, pos, end
        if marker == 0xDA:  # SOS: the scan data follows
            return
        pos = end


def _tables_body(tables: bytes | None) -> bytes:
    """The segments of a JPEGTables stream (between its SOI and EOI); only
    DQT, DHT, DRI and COM are expected there."""
    if tables is None:
        return b""
    if len(tables) < 4 or tables[:2] != b"\xff\xd8" or tables[-2:] != b"\xff\xd9":
        raise DecodeError("JPEGTables is not an SOI ... EOI stream")
    body = tables[2:-2]
    for marker, _start, _end in _segments(body, 0):
        if marker not in (0xDB, 0xC4, 0xDD, 0xFE):
            raise DecodeError("unexpected segment in JPEGTables")
    return body


def _read_jpeg_level(page: TiffPage, level: Level, bands: int) -> Parser[JpegLevel | None]:
    """The passthrough description of `page` (which holds `level`), or None
    if its tiles cannot be passed through as they are."""
    samples = page.samples
    if (
        page.compression != _COMPRESSION_JPEG
        or samples not in (1, 3)
        or samples != bands
        or any(b != 8 for b in page.bits_per_sample)
        or any(f != 1 for f in page.sample_format)
        or (page.planar_configuration != 1 and samples > 1)
        or page.has_extra_samples
        # libvips would apply a level's own profile; we cannot without decoding.
        or page.has_icc
        or page.photometric is None
    ):
        return None
    marker = _COLOUR_MARKERS.get((samples, page.photometric))
    if marker is None:
        return None  # MinIsWhite, palette, CMYK, ...: a reader would misread it
    offsets, counts = page.tile_offsets, page.tile_byte_counts
    if offsets is None or counts is None or level.tile_width <= 0 or level.tile_height <= 0:
        return None
    tiles = -(-level.width // level.tile_width) * -(-level.height // level.tile_height)
    if offsets.count < tiles or counts.count < tiles:
        return None
    tables = b""
    if page.jpeg_tables is not None:
        tables = _tables_body((yield from tiff.read_blob(page.jpeg_tables, _MAX_TABLES_BYTES)))
    return JpegLevel(
        width=level.width,
        height=level.height,
        tile_width=level.tile_width,
        tile_height=level.tile_height,
        samples=samples,
        offsets=offsets,
        byte_counts=counts,
        tables=tables,
        marker=marker,
    )


def _read_tile_index(info: ImageInfo) -> Parser[TileIndex | None]:
    """:func:`parse_tile_index` as one parser, so that the structure walk and
    the JPEGTables reads share one set of cached blocks."""
    structure = yield from tiff.read_structure()
    first, reduced = structure.pages[:1], structure.pages[1:] + structure.subifds
    levels: list[JpegLevel | None] = []
    for index, level in enumerate(info.levels):
        want = (level.width, level.height, level.tile_width, level.tile_height)
        matches = [
            page
            for page in (first if index == 0 else reduced)
            if (page.width, page.height, page.tile_width, page.tile_height) == want
        ]
        jpeg = None
        if len(matches) == 1:
            jpeg = yield from _read_jpeg_level(matches[0], level, info.bands)
        levels.append(jpeg)
    if not any(levels):
        return None
    return TileIndex(tuple(levels))


def parse_tile_index(reader: ByteReader, info: ImageInfo) -> TileIndex | None:
    """Locate, for every level of `info`, the TIFF directory holding it and
    describe its tiles for passthrough; None if no level qualifies.

    A level is matched to the one directory (main chain after page 0, or
    SubIFD of page 0) with its exact size and tile size; levels with no or
    several such directories are left out rather than guessed. Raises
    DecodeError for unreadable structures and the reader's errors on I/O
    failure.
    """
    if info.format is not SourceFormat.TIFF:
        return None
    try:
        return parse(_read_tile_index(info), reader)
    except FormatError as exc:
        raise DecodeError(str(exc)) from exc


def index_for(reader: ByteReader, info: ImageInfo, cache_key: tuple[str, str]) -> TileIndex | None:
    """The parsed tile index of the source (key, version) `cache_key`,
    parsed on first use and kept; None for a source with no level whose
    tiles can be sent as stored."""
    with _lock:
        if cache_key in _indexes:
            return _indexes[cache_key]
        cache = _indexes
    try:
        index = parse_tile_index(reader, info)
    except DecodeError:
        index = None  # not something we can pass through: remember that
    # Two threads may parse the same source at once; both get the same answer.
    with _lock:
        if cache is _indexes:
            _indexes[cache_key] = index
    return index


# -- matching a plan to a tile ------------------------------------------------


def _whole_tile(level: Level, box: Box) -> tuple[int, int] | None:
    """(column, row) of the stored tile that `box` (level pixels) is exactly,
    if that tile lies wholly inside the level (edge tiles are stored padded to
    the full tile size, so a partial one is not the requested image)."""
    tw, th = level.tile_width, level.tile_height
    if (
        box.width != tw
        or box.height != th
        or box.x % tw
        or box.y % th
        or box.right > level.width
        or box.bottom > level.height
    ):
        return None
    return box.x // tw, box.y // th


def keeps_stored_pixels(info: ImageInfo, plan: Plan) -> bool:
    """Whether `plan` wants a TIFF's stored JPEG pixels as they are (JPEG,
    color, no rotation or mirror, baseline), so stored tiles can answer it
    when its region and size fit them."""
    return not (
        plan.format is not OutputFormat.JPEG
        or plan.quality is not Quality.COLOR
        or plan.rotation % 360 != 0
        or plan.mirror
        or plan.progressive
        or info.format is not SourceFormat.TIFF
        or info.has_icc
        or info.bits_per_sample != 8
        or info.bands not in (1, 3)
    )


def tile_for(info: ImageInfo, plan: Plan) -> tuple[int, int, int] | None:
    """(level, column, row) of the stored tile that `plan` asks for as it is,
    or None when the plan needs pixels processed.

    The plan must keep the tile's pixels (JPEG, color, no rotation or mirror,
    baseline) and its output size must equal the tile's. Its region matches
    the tile either the way the decoded path maps it (choose_level picks the
    tile's level and level_box gives exactly the tile, so the decoded path
    would output those very pixels) or as a IIIF client derives tile regions:
    the tile's box times the level's downscale, clipped to the image. With
    levels whose size is not exactly the full size over the downscale, the
    latter is off from the decoded path's mapping by under one level pixel;
    the stored tile is then the better answer.
    """
    if not keeps_stored_pixels(info, plan):
        return None
    region = plan.region
    chosen = choose_level(info, region, plan.width, plan.height)
    for index, level in enumerate(info.levels):
        if (plan.width, plan.height) != (level.tile_width, level.tile_height):
            continue
        if index == chosen:
            tile = _whole_tile(level, level_box(info, index, region))
            if tile is not None:
                return index, *tile
        d = level.downscale
        span_w, span_h = level.tile_width * d, level.tile_height * d
        if region.x % span_w or region.y % span_h:
            continue
        if (region.width, region.height) != (
            min(span_w, info.width - region.x),
            min(span_h, info.height - region.y),
        ):
            continue
        box = Box(region.x // d, region.y // d, level.tile_width, level.tile_height)
        tile = _whole_tile(level, box)
        if tile is not None:
            return index, *tile
    return None


# -- splicing -----------------------------------------------------------------


def splice(tile: bytes, level: JpegLevel) -> bytes | None:
    """One stand-alone baseline JPEG from a stored tile: SOI, the colour
    marker, the page's tables, the tile after its SOI. None if the tile is
    not a complete baseline 8-bit JPEG of the level's tile size and samples
    (progressive, arithmetic-coded, truncated, or carrying its own JFIF or
    Adobe marker, which might contradict the TIFF's colour space)."""
    if len(tile) < 4 or tile[:2] != b"\xff\xd8" or tile[-2:] != b"\xff\xd9":
        return None
    out = b"".join((b"\xff\xd8", level.marker, level.tables, tile[2:]))
    try:
        seen_sof = seen_dqt = seen_dht = seen_sos = False
        for marker, start, _end in _segments(out, 2):
            if marker in (0xC0, 0xC1):  # baseline / extended sequential Huffman
                precision, height, width, components = struct.unpack(
                    ">BHHB", out[start + 4 : start + 10]
                )
                if (precision, width, height, components) != (
                    8,
                    level.tile_width,
                    level.tile_height,
                    level.samples,
                ):
                    return None
                seen_sof = True
            elif 0xC2 <= marker <= 0xCF and marker not in (0xC4, 0xC8):
                return None  # progressive, lossless, hierarchical or arithmetic
            elif marker == 0xDB:
                seen_dqt = True
            elif marker == 0xC4:
                seen_dht = True
            elif marker == 0xDA:
                seen_sos = True
            elif marker in (0xE0, 0xEE) and start != 2:
                return None  # the tile brought its own colour marker
    except DecodeError:
        return None
    if not (seen_sof and seen_dqt and seen_dht and seen_sos):
        return None
    return out


def try_passthrough(
    reader: ByteReader, info: ImageInfo, plan: Plan, cache_key: tuple[str, str] | None
) -> bytes | None:
    """The stored JPEG tile that answers `plan` exactly, as a stand-alone
    JPEG, or None when the plan must be decoded (does not map onto a whole
    stored JPEG tile, passthrough is off, or no `cache_key` to remember the
    parsed structure under).

    Reads the TIFF structure once per `cache_key` ((source key, version)),
    then two small reads and the tile per request. Raises only the reader's
    errors (e.g. SourceUnavailable); anything odd in the file means None,
    and the decoded path then reports it properly.
    """
    if not _enabled or cache_key is None:
        return None
    target = tile_for(info, plan)
    if target is None:
        return None
    index = index_for(reader, info, cache_key)
    if index is None:
        return None
    level_index, column, row = target
    level = index.levels[level_index]
    if level is None:
        return None
    found = read_tiles(reader, level, [(column, row)], _MAX_TILE_BYTES)
    if not found:
        return None
    metrics.PASSTHROUGH.inc()
    return found[0][2]


# -- several tiles at once ------------------------------------------------------


class NoStoredTiles(DecodeError):
    """The level's tiles cannot be sent as stored (not JPEG tiles, or
    passthrough is off)."""


# Stored tiles further apart than this in the file are read separately.
MAX_GAP_BYTES: Final = 16 * 1024


def stored_levels(
    reader: ByteReader, info: ImageInfo, cache_key: tuple[str, str]
) -> tuple[bool, ...]:
    """Per level of `info`: whether it has whole tiles that can be sent as
    stored (a level smaller than one tile has none: its only tile is padded)."""
    index = index_for(reader, info, cache_key) if _enabled else None
    if index is None:
        return (False,) * len(info.levels)
    return tuple(
        level is not None and level.width >= level.tile_width and level.height >= level.tile_height
        for level in index.levels
    )


def read_tiles(
    reader: ByteReader, level: JpegLevel, wanted: list[tuple[int, int]], max_bytes: int
) -> list[tuple[int, int, bytes]]:
    """(column, row, stand-alone JPEG) of the `wanted` tiles of `level`, in
    that order, leaving out sparse tiles, tiles that do not splice, and all
    tiles past `max_bytes`; edge tiles come as stored (padded)."""
    # Where each tile is; offset 0 or length 0 marks a sparse (never
    # written) tile. Stop where the answer (tiles plus the spliced marker
    # and tables) would pass the byte cap.
    located: list[tuple[int, int, int, int]] = []
    added = len(level.marker) + len(level.tables)
    total = 0
    for column, row in wanted:
        n = row * level.tiles_across + column
        offset = level.offsets.get(reader, n)
        length = level.byte_counts.get(reader, n)
        if not offset or not length or length > _MAX_TILE_BYTES:
            continue
        total += length + added
        if total > max_bytes:
            break
        located.append((column, row, offset, length))
    will_need = getattr(reader, "will_need", None)
    if will_need is not None and len(located) > 1:
        will_need([(offset, offset + length) for _c, _r, offset, length in located])
    found: list[tuple[int, int, bytes]] = []
    for span in _spans(located):
        start = span[0][2]
        end = max(offset + length for _c, _r, offset, length in span)
        data = reader.read_at(start, end - start)
        for column, row, offset, length in span:
            tile = data[offset - start : offset - start + length]
            if len(tile) != length:
                continue  # the file ends early
            spliced = splice(tile, level)
            if spliced is not None:
                found.append((column, row, spliced))
    return found


def _spans(
    located: list[tuple[int, int, int, int]],
) -> Iterator[list[tuple[int, int, int, int]]]:
    """Runs of tiles that follow each other in the file with small gaps, in
    the order given (a tile stored before the previous one starts a run)."""
    run: list[tuple[int, int, int, int]] = []
    end = 0
    for tile in located:
        offset, length = tile[2], tile[3]
        if run and not (end <= offset <= end + MAX_GAP_BYTES):
            yield run
            run = []
        run.append(tile)
        end = offset + length
    if run:
        yield run
