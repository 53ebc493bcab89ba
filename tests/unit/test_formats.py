"""The shared container parsers on hand-made bytes: TIFF and BigTIFF in both
byte orders, SubIFDs, JP2 boxes and raw codestreams, TLM present and absent,
and truncated or hostile input giving FormatError."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TypeVar

import pytest

from decoder.formats import (
    BlockReads,
    FormatError,
    NotThisFormat,
    Parser,
    jp2,
    parse,
    run,
    run_async,
    tiff,
)
from tests.readers import BytesReader

T = TypeVar("T")


def parse_bytes(parser: Parser[T], data: bytes) -> T:
    return parse(parser, BytesReader(data))


# -- drivers --------------------------------------------------------------------


def _two_reads() -> Parser[tuple[bytes, str]]:
    first = yield (0, 2)
    try:
        second = yield (100, 4)
    except FormatError as exc:
        return first, str(exc)
    return first, second.decode()


def test_out_of_range_and_short_reads_are_thrown_into_the_parser() -> None:
    data = b"abcdef"
    assert run(_two_reads(), lambda o, n: data[o : o + n], len(data))[0] == b"ab"
    assert "outside" in run(_two_reads(), lambda o, n: data[o : o + n], len(data))[1]
    # A read function that returns short (the object shrank) is caught too.
    _first, message = run(_two_reads(), lambda o, n: data[o : o + n], 1000)
    assert "short read" in message


async def test_async_driver_runs_the_same_parser() -> None:
    data = b"xy" + b"\x00" * 98 + b"abcd"

    async def read(offset: int, length: int) -> bytes:
        return data[offset : offset + length]

    assert await run_async(_two_reads(), read, len(data)) == (b"xy", "abcd")


def test_other_read_errors_pass_through_unchanged() -> None:
    def read(offset: int, length: int) -> bytes:
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        run(_two_reads(), read, 10)


def test_block_reads_fetch_each_block_once_within_a_budget() -> None:
    data = bytes(range(256)) * 1024  # 256 KiB: four blocks
    reader = BytesReader(data)
    reads = BlockReads(reader, budget=2 * 64 * 1024)
    assert reads(65530, 10) == data[65530:65540]  # spans blocks 0 and 1
    assert reads(10, 5) == data[10:15]
    assert reader.reads == 2
    with pytest.raises(FormatError, match="too large"):
        reads(3 * 64 * 1024, 1)


# -- TIFF -----------------------------------------------------------------------

Entry = tuple[int, int, Sequence[int] | bytes]  # (tag, field type, values or raw bytes)
_CODES = {1: "B", 3: "H", 4: "I", 7: "B", 16: "Q"}


def build_tiff(
    pages: list[list[Entry]],
    subifds: Sequence[list[Entry]] = (),
    *,
    byte_order: str = "<",
    big: bool = False,
) -> bytes:
    """A TIFF whose main chain is `pages` and whose page 0 has `subifds`
    (a SubIFDs entry is added for them); values that do not fit in an entry
    go after all directories."""
    bo = byte_order
    word_code, count_code = ("Q", "Q") if big else ("I", "H")
    word, count_size = struct.calcsize(word_code), struct.calcsize(count_code)
    entry_size = 4 + 2 * word
    if subifds:
        pages = [[*pages[0], (tiff.SUB_IFDS, 16 if big else 4, [0] * len(subifds))], *pages[1:]]
    directories = [*pages, *subifds]
    at = 16 if big else 8
    offsets = []
    for entries in directories:
        offsets.append(at)
        at += count_size + len(entries) * entry_size + word
    if subifds:
        pages[0][-1] = (tiff.SUB_IFDS, 16 if big else 4, offsets[len(pages) :])
    data_area = bytearray()
    out = bytearray(b"II" if bo == "<" else b"MM")
    out += struct.pack(bo + "HHHQ", 43, 8, 0, offsets[0]) if big else struct.pack(bo + "HI", 42, 8)
    for i, entries in enumerate(directories):
        out += struct.pack(bo + count_code, len(entries))
        for tag, typ, values in entries:
            raw = (
                bytes(values)
                if isinstance(values, bytes)
                else struct.pack(f"{bo}{len(values)}{_CODES[typ]}", *values)
            )
            count = len(raw) // struct.calcsize(_CODES[typ])
            if len(raw) <= word:
                value = raw.ljust(word, b"\x00")
            else:
                value = struct.pack(bo + word_code, at + len(data_area))
                data_area += raw + b"\x00" * (len(raw) % 2)
            out += struct.pack(bo + "HH" + word_code, tag, typ, count) + value
        is_last_page = i + 1 >= len(pages)
        out += struct.pack(bo + word_code, 0 if is_last_page else offsets[i + 1])
    return bytes(out + data_area)


def page(width: int, height: int, tile: int = 0, **extra: Sequence[int] | bytes) -> list[Entry]:
    entries: list[Entry] = [(256, 4, [width]), (257, 3, [height]), (258, 3, [8, 8, 8])]
    entries += [(277, 3, [3]), (259, 3, [7]), (262, 3, [6])]
    if tile:
        tiles = -(-width // tile) * -(-height // tile)
        entries += [(322, 3, [tile]), (323, 3, [tile])]
        entries += [(324, 4, list(range(1000, 1000 + tiles))), (325, 4, [77] * tiles)]
    names = {"icc": (34675, 7), "tables": (347, 7), "subfile": (254, 4)}
    entries += [(names[k][0], names[k][1], v) for k, v in extra.items()]
    return entries


@pytest.mark.parametrize(("byte_order", "big"), [("<", False), (">", False), ("<", True)])
def test_tiff_structure_in_every_layout(byte_order: str, big: bool) -> None:
    tables = b"\xff\xd8\xff\xdb\x00\x04\x00\x00\xff\xd9"
    data = build_tiff(
        [page(1000, 800, 256, tables=tables), page(100, 80, subfile=[1], icc=b"icc!profile")],
        [page(500, 400, 256), page(250, 200, 256)],
        byte_order=byte_order,
        big=big,
    )
    structure = parse_bytes(tiff.read_structure(), data)
    assert structure.bigtiff is big
    first, thumb = structure.pages
    assert (first.width, first.height, first.tile_width, first.tile_height) == (1000, 800, 256, 256)
    assert (first.samples, first.bits_per_sample, first.compression) == (3, (8, 8, 8), 7)
    assert (first.photometric, first.planar_configuration, first.sample_format) == (6, 1, (1,))
    assert not first.has_icc
    assert not first.has_extra_samples
    assert first.new_subfile_type == 0
    assert [(p.width, p.tile_width) for p in structure.subifds] == [(500, 256), (250, 256)]
    assert len(first.subifds) == 2
    assert (thumb.tile_width, thumb.new_subfile_type, thumb.has_icc) == (0, 1, True)
    assert thumb.tile_offsets is None

    reader = BytesReader(data)
    assert first.tile_offsets is not None
    assert first.tile_byte_counts is not None
    assert first.tile_offsets.count == 4 * 4
    assert first.tile_offsets.get(reader, 5) == 1005
    assert first.tile_byte_counts.get(reader, 15) == 77
    assert first.tile_offsets.get(reader, 16) is None
    assert first.jpeg_tables is not None
    assert parse_bytes(tiff.read_blob(first.jpeg_tables, 1024), data) == tables


def test_tiff_raw_directories_and_values() -> None:
    data = build_tiff([page(64, 32, 16)], byte_order=">")
    header = parse_bytes(tiff.read_header(), data)
    assert (header.byte_order, header.bigtiff, header.first_ifd, header.length) == (
        ">",
        False,
        8,
        8,
    )
    ifd = parse_bytes(tiff.read_ifd(header, header.first_ifd), data)
    assert data[ifd.offset : ifd.offset + len(ifd.raw)] == ifd.raw
    assert ifd.next == 0
    width = ifd.fields[tiff.IMAGE_WIDTH]
    assert width.inline == struct.pack(">I", 64)
    assert data[width.offset : width.offset + 4] == width.inline
    values = parse_bytes(tiff.read_values(ifd, 1 << 20), data)
    offsets = ifd.fields[tiff.TILE_OFFSETS]
    assert offsets.inline is None
    assert values[tiff.TILE_OFFSETS] == data[offsets.offset : offsets.offset + offsets.nbytes]
    assert tiff.unpack_ints(header, offsets, values[tiff.TILE_OFFSETS]) == tuple(range(1000, 1008))
    assert tiff.unpack_ints(header, ifd.fields[tiff.IMAGE_WIDTH], width.inline) == (64,)
    with pytest.raises(FormatError, match="bytes long"):
        parse_bytes(tiff.read_value(offsets, 16), data)


def _first_ifd(data: bytes) -> tuple[tiff.TiffHeader, tiff.Ifd]:
    header = parse_bytes(tiff.read_header(), data)
    return header, parse_bytes(tiff.read_ifd(header, header.first_ifd), data)


def test_tiff_damaged_later_pages_and_subifds_keep_what_came_before() -> None:
    data = bytearray(build_tiff([page(100, 100), page(50, 50)], [page(40, 40), page(20, 20)]))
    _header, ifd = _first_ifd(bytes(data))
    data[ifd.next : ifd.next + 2] = b"\x00\x00"  # the second page: an empty directory
    structure = parse_bytes(tiff.read_structure(), bytes(data))
    assert [p.width for p in structure.pages] == [100]
    assert [p.width for p in structure.subifds] == [40, 20]


def test_tiff_directory_loop_ends_the_walk() -> None:
    data = bytearray(build_tiff([page(100, 100), page(50, 50)]))
    _header, ifd = _first_ifd(bytes(data))
    next_at = ifd.offset + len(ifd.raw) - 4
    data[next_at : next_at + 4] = struct.pack("<I", 8)  # page 0 points back at itself
    assert len(parse_bytes(tiff.read_structure(), bytes(data)).pages) == 1


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", NotThisFormat),
        (b"XX*\x00\x08\x00\x00\x00", NotThisFormat),
        (b"II\x2a", NotThisFormat),  # shorter than a header
        (b"II*\x00\x00\x10\x00\x00", FormatError),  # first IFD past the end
        (b"II+\x00\x04\x00\x00\x00" + bytes(8), FormatError),  # 4-byte BigTIFF offsets
        (build_tiff([[(258, 3, [8])]]), FormatError),  # no image size
        (build_tiff([[(256, 3, [0]), (257, 3, [5])]]), FormatError),  # zero width
    ],
)
def test_tiff_errors(data: bytes, error: type[FormatError]) -> None:
    with pytest.raises(error):
        parse_bytes(tiff.read_structure(), data)


def test_truncated_tiff_gives_a_format_error_or_an_intact_page_0() -> None:
    data = build_tiff([page(1000, 800, 256)], [page(500, 400, 256)], big=True)
    intact = parse_bytes(tiff.read_structure(), data)
    outcomes = set()
    for length in range(len(data)):
        try:
            structure = parse_bytes(tiff.read_structure(), data[:length])
        except FormatError:
            outcomes.add("error")
            continue
        # Past page 0 and its values, a cut only loses the SubIFD.
        assert structure.pages == intact.pages
        assert structure.subifds in ((), intact.subifds)
        outcomes.add("page 0")
    assert outcomes == {"error", "page 0"}


# -- JPEG 2000 ------------------------------------------------------------------


def _segment(marker: int, body: bytes) -> bytes:
    return struct.pack(">HH", marker, len(body) + 2) + body


def _siz(x1: int, y1: int, tw: int, th: int, comps: int = 3) -> bytes:
    body = struct.pack(">HIIIIIIIIH", 0, x1, y1, 0, 0, tw, th, 0, 0, comps)
    return _segment(0xFF51, body + bytes([7, 1, 1]) * comps)


def _cod(decompositions: int) -> bytes:
    return _segment(0xFF52, bytes([0, 0, 0, 1, 0, decompositions, 4, 4, 0, 0]))


def _tile_part(index: int, data: bytes, psot: bool = True) -> bytes:
    length = 12 + 2 + len(data)
    return (
        struct.pack(">HHHIBB", 0xFF90, 10, index, length if psot else 0, 0, 1) + b"\xff\x93" + data
    )


def codestream(tlm: bool) -> tuple[bytes, list[bytes]]:
    """A 2 x 2-tile codestream with tile-parts of 5, 6, 7 and 8 data bytes."""
    parts = [_tile_part(i, bytes([i]) * (5 + i)) for i in range(4)]
    main = b"\xff\x4f" + _siz(200, 100, 100, 50) + _cod(3)
    if tlm:  # Ztlm 0, Stlm: Ttlm of 1 byte, Ptlm of 4 bytes
        main += _segment(0xFF55, bytes([0, 0x50]) + b"".join(
            struct.pack(">BI", i, len(p)) for i, p in enumerate(parts)
        ))  # fmt: skip
    return main + b"".join(parts) + b"\xff\xd9", parts


def jp2_file(stream: bytes, *, xl: bool = False) -> bytes:
    boxes = jp2.JP2_SIGNATURE + struct.pack(">I4s", 20, b"ftyp") + b"jp2 " + bytes(4) + b"jp2 "
    if xl:
        return boxes + struct.pack(">I4sQ", 1, b"jp2c", 16 + len(stream)) + stream
    return boxes + struct.pack(">I4s", 8 + len(stream), b"jp2c") + stream


@pytest.mark.parametrize("tlm", [True, False])
@pytest.mark.parametrize("wrap", ["raw", "jp2", "jp2-xl"])
def test_codestream_layout(tlm: bool, wrap: str) -> None:
    stream, parts = codestream(tlm)
    data = stream if wrap == "raw" else jp2_file(stream, xl=wrap == "jp2-xl")
    start, end = parse_bytes(jp2.locate_codestream(len(data)), data)
    assert (data[start : start + 2], end) == (jp2.SOC, len(data))
    main = parse_bytes(jp2.read_main_header(start), data)
    header = main.header
    assert (header.width, header.height, header.tile_width, header.tiled) == (200, 100, 100, True)
    assert (header.components, header.resolutions) == (3, 4)
    assert data[main.end : main.end + 2] == b"\xff\x90"
    lengths = jp2.tile_part_lengths(main)
    assert lengths == (tuple(len(p) for p in parts) if tlm else ())
    eoc = parse_bytes(jp2.find_data_end(end), data)
    assert eoc == end - 2
    chain = parse_bytes(jp2.read_tile_parts(main.end, eoc, 100), data)
    assert [p.end - p.start for p in chain] == [len(p) for p in parts]
    assert [data[p.body : p.end] for p in chain] == [p[14:] for p in parts]
    assert parse_bytes(jp2.read_codestream_header(len(data)), data) == header


def test_last_tile_part_without_psot_runs_to_eoc() -> None:
    stream = b"\xff\x4f" + _siz(10, 10, 10, 10) + _cod(0)
    data = stream + _tile_part(0, b"abc", psot=False) + b"\xff\xd9"
    (part,) = parse_bytes(jp2.read_tile_parts(len(stream), len(data) - 2, 10), data)
    assert data[part.body : part.end] == b"abc"
    assert not parse_bytes(jp2.read_codestream_header(len(data)), data).tiled


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(8), NotThisFormat),
        (b"\xff\x4f", NotThisFormat),  # too short to be anything
        (b"\xff\x4f\xff\x51\x00", FormatError),  # truncated SIZ
        (b"\xff\x4f" + _siz(10, 10, 10, 10) + b"\xff\x90", FormatError),  # no COD
        (b"\xff\x4f" + _siz(10, 10, 0, 10) + _cod(1) + b"\xff\x90", FormatError),  # tile 0
        (b"\xff\x4f\xff\x51\x00\x01", FormatError),  # segment length below 2
        (b"\xff\x4f\xff\x51" + b"\x00\x06\x00\x00\x00\x00\x12\x34", FormatError),  # short SIZ
        (jp2.JP2_SIGNATURE + struct.pack(">I4s", 8, b"free"), FormatError),  # no jp2c
        (jp2.JP2_SIGNATURE + struct.pack(">I4s", 3, b"abcd"), FormatError),  # bad box length
    ],
)
def test_codestream_errors(data: bytes, error: type[FormatError]) -> None:
    with pytest.raises(error):
        parse_bytes(jp2.read_codestream_header(len(data)), data)


def test_truncated_codestream_is_a_format_error_at_every_length() -> None:
    stream, _parts = codestream(tlm=True)
    data = jp2_file(stream)
    header_end = len(data) - len(stream) + stream.index(b"\xff\x90")
    for length in range(header_end):
        with pytest.raises(FormatError):
            parse_bytes(jp2.read_codestream_header(len(data[:length])), data[:length])


def test_bounds_and_malformed_tile_parts() -> None:
    stream, _parts = codestream(tlm=True)
    with pytest.raises(FormatError, match="too long"):
        parse_bytes(jp2.read_main_header(0, max_length=20), stream)
    main = parse_bytes(jp2.read_main_header(0), stream)
    with pytest.raises(FormatError, match="too many"):
        parse_bytes(jp2.read_tile_parts(main.end, len(stream) - 2, 3), stream)
    with pytest.raises(FormatError, match="expected SOT"):
        parse_bytes(jp2.read_tile_part(main.end + 1, len(stream)), stream)
    with pytest.raises(FormatError, match="Psot"):
        parse_bytes(jp2.read_tile_part(main.end, main.end + 10), stream)
    bad_tlm = jp2.MainHeader(main.header, main.end, (bytes([0, 0x30, 1]),))  # ST = 3
    with pytest.raises(FormatError, match="TLM"):
        jp2.tile_part_lengths(bad_tlm)
    odd_tlm = jp2.MainHeader(main.header, main.end, (bytes([0, 0x50, 1, 2]),))
    with pytest.raises(FormatError, match="TLM"):
        jp2.tile_part_lengths(odd_tlm)
