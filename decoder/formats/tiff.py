"""TIFF and BigTIFF structure: the header, image file directories (IFDs),
their fields' values, and the decoded facts of each page.

Layers, each a :mod:`decoder.formats` parser: :func:`read_header` and
:func:`read_ifd` give the raw directory (every entry, where each value is);
:func:`read_page` decodes one directory into a :class:`TiffPage`;
:func:`read_structure` walks the main IFD chain and page 0's SubIFDs.
Large arrays (tile offsets and byte counts) are left in the file as
:class:`IntArray` locations, and JPEGTables as a :class:`Field`, so a walk
reads only the directories and a few small values.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, NamedTuple

from decoder.formats.base import FormatError, NotThisFormat, Parser
from decoder.sources.base import ByteReader

SIGNATURES: Final = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
"""The first four bytes of a classic TIFF and a BigTIFF, in either byte order."""

# Tags (TIFF 6.0, TIFF/EP, BigTIFF).
NEW_SUBFILE_TYPE: Final = 254
IMAGE_WIDTH: Final = 256
IMAGE_LENGTH: Final = 257
BITS_PER_SAMPLE: Final = 258
COMPRESSION: Final = 259
PHOTOMETRIC: Final = 262
STRIP_OFFSETS: Final = 273
SAMPLES_PER_PIXEL: Final = 277
STRIP_BYTE_COUNTS: Final = 279
PLANAR_CONFIGURATION: Final = 284
TILE_WIDTH: Final = 322
TILE_LENGTH: Final = 323
TILE_OFFSETS: Final = 324
TILE_BYTE_COUNTS: Final = 325
SUB_IFDS: Final = 330
EXTRA_SAMPLES: Final = 338
SAMPLE_FORMAT: Final = 339
JPEG_TABLES: Final = 347
ICC_PROFILE: Final = 34675

# Field type -> bytes per value. Unknown types count as one byte, as libtiff
# skips them: only where the value is matters then.
TYPE_SIZES: Final[Mapping[int, int]] = {
    1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8,
    13: 4, 16: 8, 17: 8, 18: 8,
}  # fmt: skip
# Unsigned integer field types -> struct code: BYTE, SHORT, LONG, IFD, LONG8, IFD8.
_INT_CODES: Final[Mapping[int, str]] = {1: "B", 3: "H", 4: "I", 13: "I", 16: "Q", 18: "Q"}
# The types the specs allow for offset and byte-count arrays: SHORT, LONG, LONG8.
_ARRAY_TYPES: Final = frozenset({3, 4, 16})
_BYTE, _UNDEFINED = 1, 7

# Bounds against hostile files.
MAX_ENTRIES: Final = 4096
"""Entries in one directory."""
MAX_VALUES: Final = 65536
"""Values of a small integer field a page decodes (a longer one counts as absent)."""
MAX_PAGES: Final = 1024
"""Pages walked along the main chain, and SubIFDs of page 0."""


@dataclass(frozen=True, slots=True)
class TiffHeader:
    """The file header: byte order (``"<"`` for II, ``">"`` for MM), whether
    the file is a BigTIFF (64-bit offsets) and the first IFD's offset."""

    byte_order: str
    bigtiff: bool
    first_ifd: int

    @property
    def length(self) -> int:
        """Bytes of the header as stored: 8, or 16 for a BigTIFF."""
        return 16 if self.bigtiff else 8


class Field(NamedTuple):
    """One directory entry: its tag, field type, number of values and the
    file offset of its value (inside the entry when it fits there, and then
    `inline` holds the value's bytes; else `inline` is None).

    A named tuple rather than a frozen dataclass: a walk makes one per entry
    of every directory, and a tuple is about twice as cheap to build.
    """

    tag: int
    type: int
    value_count: int
    offset: int
    inline: bytes | None

    @property
    def nbytes(self) -> int:
        """The value's size in bytes."""
        return self.value_count * TYPE_SIZES.get(self.type, 1)


@dataclass(frozen=True, slots=True)
class Ifd:
    """One image file directory at byte `offset`: `raw` is the directory as
    stored (entry count, entries, next-IFD offset), `fields` its entries by
    tag (the last one wins), `next` the next IFD's offset (0 = none)."""

    offset: int
    raw: bytes
    fields: Mapping[int, Field]
    next: int


@dataclass(frozen=True, slots=True)
class IntArray:
    """An integer array left in the file: `count` items of `size` bytes
    (struct code `code`, byte order `byte_order`) at byte `offset`. Tile
    offset arrays of large levels hold hundreds of thousands of entries;
    keeping their location instead of their values keeps a page small."""

    offset: int
    count: int
    code: str
    size: int
    byte_order: str

    def get(self, reader: ByteReader, index: int) -> int | None:
        """Item `index`, or None if it is out of range or the file ends.
        Raises the reader's errors on I/O failure."""
        if not 0 <= index < self.count:
            return None
        raw = reader.read_at(self.offset + index * self.size, self.size)
        if len(raw) != self.size:
            return None
        value: int = struct.unpack(self.byte_order + self.code, raw)[0]
        return value


@dataclass(frozen=True, slots=True)
class TiffPage:
    """One directory decoded.

    Sizes in pixels: `width`, `height`, and `tile_width`, `tile_height` (0 for
    a striped page). Absent tags take the TIFF defaults: 1 sample of 1 bit,
    compression 1 (none), planar configuration 1 (chunky), sample format 1
    (unsigned), NewSubfileType 0; `photometric` is None when absent.
    `subifds` are the offsets of its SubIFDs; `tile_offsets` and
    `tile_byte_counts` locate its tiles (None unless present as SHORT, LONG or
    LONG8 arrays); `jpeg_tables` is the JPEGTables entry, read on demand with
    :func:`read_blob`.
    """

    width: int
    height: int
    tile_width: int
    tile_height: int
    samples: int
    subifds: tuple[int, ...]
    bits_per_sample: tuple[int, ...]
    sample_format: tuple[int, ...]
    compression: int
    photometric: int | None
    planar_configuration: int
    new_subfile_type: int
    has_extra_samples: bool
    has_icc: bool
    tile_offsets: IntArray | None
    tile_byte_counts: IntArray | None
    jpeg_tables: Field | None


@dataclass(frozen=True, slots=True)
class TiffStructure:
    """The main IFD chain (`pages`) and page 0's SubIFDs (`subifds`)."""

    bigtiff: bool
    pages: tuple[TiffPage, ...]
    subifds: tuple[TiffPage, ...]


def read_header() -> Parser[TiffHeader]:
    """Parse the 8- or 16-byte header. Raises NotThisFormat for anything but
    a TIFF or BigTIFF and FormatError for a BigTIFF with other than 8-byte
    offsets."""
    try:
        head = yield (0, 4)
    except FormatError:
        raise NotThisFormat("not a TIFF file") from None
    if head[:2] == b"II":
        bo = "<"
    elif head[:2] == b"MM":
        bo = ">"
    else:
        raise NotThisFormat("not a TIFF file")
    (magic,) = struct.unpack(bo + "H", head[2:4])
    if magic == 42:
        (first,) = struct.unpack(bo + "I", (yield (4, 4)))
        return TiffHeader(bo, False, first)
    if magic == 43:
        offset_size, _zero, first = struct.unpack(bo + "HHQ", (yield (4, 12)))
        if offset_size != 8:
            raise FormatError("unsupported BigTIFF offset size")
        return TiffHeader(bo, True, first)
    raise NotThisFormat("not a TIFF file")


def read_ifd(header: TiffHeader, offset: int) -> Parser[Ifd]:
    """The directory at byte `offset`: two reads (entry count, then entries
    and next offset). Raises FormatError if it is empty, has more than
    :data:`MAX_ENTRIES` entries or lies outside the file."""
    bo = header.byte_order
    # Classic TIFF: 2-byte count, 12-byte entries, 4-byte values and offsets;
    # BigTIFF: 8, 20 and 8.
    count_code, word_code = ("Q", "Q") if header.bigtiff else ("H", "I")
    count_size, word = struct.calcsize(count_code), struct.calcsize(word_code)
    entry_size = 4 + 2 * word
    head = yield (offset, count_size)
    (count,) = struct.unpack(bo + count_code, head)
    if not 0 < count <= MAX_ENTRIES:
        raise FormatError("corrupt TIFF directory")
    body = yield (offset + count_size, count * entry_size + word)
    fields: dict[int, Field] = {}
    entries = struct.iter_unpack(f"{bo}HH{word_code}{word}s", body[: count * entry_size])
    # The first value byte of entry i, for values that fit inside the entry.
    inline_at = offset + count_size + 4 + word
    for i, (tag, typ, n, value) in enumerate(entries):
        size = n * TYPE_SIZES.get(typ, 1)
        if size <= word:
            fields[tag] = Field(tag, typ, n, inline_at + i * entry_size, value[:size])
        else:
            (where,) = struct.unpack(bo + word_code, value)
            fields[tag] = Field(tag, typ, n, where, None)
    (next_ifd,) = struct.unpack(bo + word_code, body[-word:])
    return Ifd(offset, head + body, fields, next_ifd)


def read_value(field: Field, limit: int) -> Parser[bytes]:
    """The raw bytes of `field`'s value (no read when it is inline). Raises
    FormatError if it is longer than `limit` bytes or lies outside the file."""
    if field.inline is not None:
        return field.inline
    if field.nbytes > limit:
        raise FormatError(f"TIFF tag {field.tag} is {field.nbytes} bytes long")
    data = yield (field.offset, field.nbytes)
    return data


def read_values(ifd: Ifd, limit: int) -> Parser[dict[int, bytes]]:
    """Every field's value bytes by tag, each at most `limit` bytes (else
    FormatError), in entry order."""
    values: dict[int, bytes] = {}
    for tag, field in ifd.fields.items():
        values[tag] = yield from read_value(field, limit)
    return values


def read_blob(field: Field, limit: int) -> Parser[bytes]:
    """The value of a BYTE or UNDEFINED field (JPEGTables, an ICC profile).
    Raises FormatError for another type or more than `limit` bytes."""
    if field.type not in (_BYTE, _UNDEFINED) or field.value_count > limit:
        raise FormatError(f"unexpected TIFF tag {field.tag}")
    return (yield from read_value(field, limit))


def unpack_ints(header: TiffHeader, field: Field, data: bytes) -> tuple[int, ...] | None:
    """The values of an unsigned integer `field` from its value bytes
    `data`, or None if the field is not of an integer type."""
    if field.type not in _INT_CODES or len(data) != field.nbytes:
        return None
    return _unpack(header, field, data)


def _unpack(header: TiffHeader, field: Field, data: bytes) -> tuple[int, ...]:
    # Callers have checked that `field` is an integer type and `data` its size.
    code = _INT_CODES[field.type]
    return struct.unpack(f"{header.byte_order}{field.value_count}{code}", data)


def int_array(header: TiffHeader, field: Field | None) -> IntArray | None:
    """Where `field`'s values lie, if it is a SHORT, LONG or LONG8 array."""
    if field is None or field.type not in _ARRAY_TYPES:
        return None
    code, size = _INT_CODES[field.type], TYPE_SIZES[field.type]
    return IntArray(field.offset, field.value_count, code, size, header.byte_order)


# The integer tags a page decodes.
_PAGE_TAGS: Final = (
    IMAGE_WIDTH, IMAGE_LENGTH, TILE_WIDTH, TILE_LENGTH, SAMPLES_PER_PIXEL, SUB_IFDS,
    BITS_PER_SAMPLE, SAMPLE_FORMAT, COMPRESSION, PHOTOMETRIC, PLANAR_CONFIGURATION,
    NEW_SUBFILE_TYPE,
)  # fmt: skip


def read_page(header: TiffHeader, ifd: Ifd) -> Parser[TiffPage]:
    """Decode `ifd`, reading its small out-of-line values (e.g. 3-sample
    BitsPerSample). Integer fields of another type or with 0 or more than
    :data:`MAX_VALUES` values count as absent. Raises FormatError if the
    page has no or a zero image size, or a value lies outside the file."""
    ints: dict[int, tuple[int, ...]] = {}
    for tag in _PAGE_TAGS:
        field = ifd.fields.get(tag)
        if field is None or field.type not in _INT_CODES or not 0 < field.value_count <= MAX_VALUES:
            continue  # the TIFF default applies
        # Most values sit inside their entry: no read, and no sub-parser.
        data = field.inline if field.inline is not None else (yield (field.offset, field.nbytes))
        ints[tag] = _unpack(header, field, data)
    if IMAGE_WIDTH not in ints or IMAGE_LENGTH not in ints:
        raise FormatError("TIFF directory lacks image size")

    def first(tag: int, default: int) -> int:
        return ints[tag][0] if tag in ints else default

    width, height = first(IMAGE_WIDTH, 0), first(IMAGE_LENGTH, 0)
    if width == 0 or height == 0:
        raise FormatError("TIFF page has zero size")
    fields = ifd.fields
    return TiffPage(
        width=width,
        height=height,
        tile_width=first(TILE_WIDTH, 0),
        tile_height=first(TILE_LENGTH, 0),
        samples=first(SAMPLES_PER_PIXEL, 1),
        subifds=ints.get(SUB_IFDS, ()),
        bits_per_sample=ints.get(BITS_PER_SAMPLE, (1,)),
        sample_format=ints.get(SAMPLE_FORMAT, (1,)),
        compression=first(COMPRESSION, 1),
        photometric=ints[PHOTOMETRIC][0] if PHOTOMETRIC in ints else None,
        planar_configuration=first(PLANAR_CONFIGURATION, 1),
        new_subfile_type=first(NEW_SUBFILE_TYPE, 0),
        has_extra_samples=EXTRA_SAMPLES in fields,
        has_icc=ICC_PROFILE in fields,
        tile_offsets=int_array(header, fields.get(TILE_OFFSETS)),
        tile_byte_counts=int_array(header, fields.get(TILE_BYTE_COUNTS)),
        jpeg_tables=fields.get(JPEG_TABLES),
    )


def read_structure() -> Parser[TiffStructure]:
    """Walk the main IFD chain (at most :data:`MAX_PAGES` pages, stopping at
    a loop) and the SubIFDs of page 0 (at most :data:`MAX_PAGES`).

    A damaged page after the first ends the chain, and a damaged SubIFD the
    SubIFDs, keeping what was read before: a broken thumbnail must not spoil
    the levels before it. Raises NotThisFormat for anything but a TIFF and
    FormatError if page 0 cannot be read.
    """
    header = yield from read_header()
    pages: list[TiffPage] = []
    seen: set[int] = set()
    offset = header.first_ifd
    while offset and offset not in seen and len(pages) < MAX_PAGES:
        seen.add(offset)
        try:
            ifd = yield from read_ifd(header, offset)
            page = yield from read_page(header, ifd)
        except FormatError:
            if not pages:
                raise
            break
        pages.append(page)
        offset = ifd.next
    if not pages:
        raise FormatError("TIFF has no image directory")
    subifds: list[TiffPage] = []
    for sub_offset in pages[0].subifds[:MAX_PAGES]:
        try:
            ifd = yield from read_ifd(header, sub_offset)
            subifds.append((yield from read_page(header, ifd)))
        except FormatError:
            break
    return TiffStructure(bigtiff=header.bigtiff, pages=tuple(pages), subifds=tuple(subifds))
