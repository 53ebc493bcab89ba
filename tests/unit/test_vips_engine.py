"""VipsEngine and the header parsers: levels, tiles, region loads, errors.

The level sizes are checked against what libvips itself decodes at each
level, which pins down the libvips 8.14 behaviour the engine relies on
(jp2kload `page` = resolution reduction, tiffload `page`/`subifd`, jpegload
`shrink` rounding down).
"""

from __future__ import annotations

import gc
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import pyvips

from decoder.engines import (
    DecodeError,
    EngineRegistry,
    ImageInfo,
    Level,
    RenderError,
    SourceFormat,
    UnsupportedSource,
    default_registry,
)
from decoder.engines.headers import parse_j2k_header, parse_tiff_structure, reduction_factor
from decoder.engines.vips import VipsEngine
from decoder.plan import Box
from decoder.sources.base import ByteReader
from tests.images import SourceSet, make_pyramid_tiff, pattern
from tests.pixels import mean_abs_diff
from tests.readers import BytesReader

ReaderFactory = Callable[[Path], ByteReader]
Describe = Callable[[ByteReader], ImageInfo]

# Mean absolute difference (0-255 scale) allowed between a reduced level as
# the codec decodes it and the full image downsampled by libvips' lanczos3:
# the filters differ (DWT low-pass, TIFF pyramid box filter, JPEG DCT
# scaling), the 64-pixel checkerboard edges show it most.
LEVEL_TOLERANCE = 6.0


def pyramid_levels(width: int, height: int, tile: int, count: int) -> tuple[Level, ...]:
    return tuple(Level(width // 2**n, height // 2**n, 2**n, tile, tile) for n in range(count))


# -- describe ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pyramid_tiff", "bigtiff", "subifd_tiff"])
def test_describe_pyramid_tiff(
    sources: SourceSet, reader_for: ReaderFactory, describe: Describe, kind: str
) -> None:
    info = describe(reader_for(getattr(sources, kind)))
    assert info.format is SourceFormat.TIFF
    assert (info.width, info.height) == (600, 400)
    # libvips halves with floor and stops once the level fits in one tile.
    assert info.levels == pyramid_levels(600, 400, 128, 4)
    assert (info.tile_width, info.tile_height) == (128, 128)
    assert (info.bands, info.bits_per_sample, info.has_icc) == (3, 8, False)


def test_describe_striped_tiff(
    sources: SourceSet, reader_for: ReaderFactory, describe: Describe
) -> None:
    info = describe(reader_for(sources.striped_tiff))
    assert info.levels == (Level(600, 400, 1, 0, 0),)
    assert (info.tile_width, info.tile_height) == (0, 0)


def test_multipage_document_is_not_a_pyramid(
    tmp_path: Path, reader_for: ReaderFactory, describe: Describe
) -> None:
    path = tmp_path / "pages.tif"
    page = pattern(200, 100)
    page.join(page, "vertical").join(page, "vertical").tiffsave(str(path), page_height=100)
    assert pyvips.Image.tiffload(str(path)).get("n-pages") == 3
    info = describe(reader_for(path))
    assert info.levels == (Level(200, 100, 1, 0, 0),)


@pytest.mark.parametrize("kind", ["jp2", "j2k"])
def test_describe_tiled_jpeg2000(
    sources: SourceSet, reader_for: ReaderFactory, describe: Describe, kind: str
) -> None:
    path = getattr(sources, kind)
    info = describe(reader_for(path))
    assert info.format is SourceFormat.JPEG2000
    assert (info.width, info.height, info.bands, info.bits_per_sample) == (600, 400, 3, 8)
    # Tiles are reported in each level's own pixels: 128 / 2^r.
    assert info.levels == (
        Level(600, 400, 1, 128, 128),
        Level(300, 200, 2, 64, 64),
        Level(150, 100, 4, 32, 32),
        Level(75, 50, 8, 16, 16),
    )
    # Verified libvips fact: jp2kload page=r decodes resolution reduction r,
    # and asking for as many reductions as there are resolutions fails.
    for r, level in enumerate(info.levels):
        image = pyvips.Image.jp2kload(str(path), page=r)
        assert (image.width, image.height) == (level.width, level.height)
    with pytest.raises(pyvips.Error):
        pyvips.Image.jp2kload(str(path), page=len(info.levels)).avg()


def test_describe_jpeg_levels_round_down(
    sources: SourceSet, reader_for: ReaderFactory, describe: Describe
) -> None:
    path = sources.jpeg
    info = describe(reader_for(path))
    assert info.format is SourceFormat.JPEG
    assert info.levels == (
        Level(601, 401, 1, 0, 0),
        Level(300, 200, 2, 0, 0),
        Level(150, 100, 4, 0, 0),
        Level(75, 50, 8, 0, 0),
    )
    for level in info.levels:  # verified: libvips' shrink-on-load floors
        image = pyvips.Image.jpegload(str(path), shrink=level.downscale)
        assert (image.width, image.height) == (level.width, level.height)


def test_describe_png_and_bands(
    sources: SourceSet, reader_for: ReaderFactory, describe: Describe
) -> None:
    info = describe(reader_for(sources.png))
    assert info.format is SourceFormat.PNG
    assert info.levels == (Level(600, 400, 1, 0, 0),)
    assert describe(reader_for(sources.rgba_png)).bands == 4
    assert describe(reader_for(sources.grey_png)).bands == 1


def test_describe_icc(sources: SourceSet, reader_for: ReaderFactory, describe: Describe) -> None:
    assert describe(reader_for(sources.icc_jpeg)).has_icc
    assert not describe(reader_for(sources.jpeg)).has_icc


def test_describe_16_bit(tmp_path: Path, reader_for: ReaderFactory, describe: Describe) -> None:
    path = tmp_path / "deep.tif"
    image = (pattern(64, 48) * 257).cast("ushort").copy(interpretation="rgb16")
    make_pyramid_tiff(path, 64, 48, tile=16, compression="deflate", image=image)
    info = describe(reader_for(path))
    assert info.bits_per_sample == 16
    assert [lvl.downscale for lvl in info.levels] == [1, 2, 4]


def test_describe_through_callbacks_matches(
    sources: SourceSet,
    reader_for: ReaderFactory,
    callback_reader_for: ReaderFactory,
    describe: Describe,
) -> None:
    for path in (sources.jp2, sources.bigtiff, sources.jpeg, sources.png):
        assert describe(callback_reader_for(path)) == describe(reader_for(path))


def test_describe_wrong_format_is_unsupported(
    sources: SourceSet, reader_for: ReaderFactory, engine: VipsEngine
) -> None:
    with pytest.raises(DecodeError):
        engine.describe(reader_for(sources.png), SourceFormat.JPEG)


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xd8\xff", b"II*\x00\xff\xff\xff\x7f", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40],
)
def test_describe_garbage_raises_decode_error(engine: VipsEngine, data: bytes) -> None:
    for fmt in SourceFormat:
        with pytest.raises(DecodeError):
            engine.describe(BytesReader(data), fmt)


@pytest.mark.parametrize("kind", ["jp2", "j2k", "pyramid_tiff", "jpeg", "png"])
def test_describe_truncated_header_raises_decode_error(
    sources: SourceSet, engine: VipsEngine, describe: Describe, kind: str
) -> None:
    data = getattr(sources, kind).read_bytes()[:60]
    with pytest.raises(DecodeError):
        describe(BytesReader(data))


# -- load_region ------------------------------------------------------------


@pytest.mark.parametrize(
    "kind", ["jp2", "j2k", "pyramid_tiff", "bigtiff", "subifd_tiff", "jpeg", "png"]
)
def test_load_region_at_every_level(
    sources: SourceSet, reader_for: ReaderFactory, describe: Describe, kind: str
) -> None:
    path = getattr(sources, kind)
    reader = reader_for(path)
    info = describe(reader)
    full = pyvips.Image.new_from_file(str(path))
    engine = VipsEngine()
    for index, level in enumerate(info.levels):
        box = Box(level.width // 5, level.height // 4, level.width // 2, level.height // 3)
        got = engine.load_region(reader, info, index, box)
        assert (got.width, got.height) == (box.width, box.height)
        expected = full.resize(
            level.width / info.width, vscale=level.height / info.height, kernel="lanczos3"
        ).crop(box.x, box.y, box.width, box.height)
        tolerance = 0.5 if index == 0 else LEVEL_TOLERANCE
        assert mean_abs_diff(got, expected) <= tolerance, (kind, index)


def test_callback_reader_gives_identical_pixels(
    sources: SourceSet,
    reader_for: ReaderFactory,
    callback_reader_for: ReaderFactory,
    describe: Describe,
    engine: VipsEngine,
) -> None:
    for path in (sources.jp2, sources.subifd_tiff, sources.jpeg, sources.png):
        local = reader_for(path)
        remote = callback_reader_for(path)
        info = describe(local)
        box = Box(10, 20, 100, 60)
        level = len(info.levels) - 1 if info.levels[-1].width > 110 else 1
        a = engine.load_region(local, info, level, box)
        b = engine.load_region(remote, info, level, box)
        assert mean_abs_diff(a, b) == 0.0, path.name


def test_lazy_image_outlives_its_callback_source(
    sources: SourceSet, callback_reader_for: ReaderFactory, describe: Describe, engine: VipsEngine
) -> None:
    # Regression: a pyvips SourceCustom collected while a lazy image still
    # reads from it makes cffi abort the whole process.
    reader = callback_reader_for(sources.png)
    info = describe(reader)
    image = engine.load_region(reader, info, 0, Box(0, 0, 50, 50)).resize(0.5)
    gc.collect()
    assert image.avg() > 0


def test_load_region_is_thread_safe(
    sources: SourceSet, reader_for: ReaderFactory, describe: Describe, engine: VipsEngine
) -> None:
    reader = reader_for(sources.jp2)
    info = describe(reader)
    boxes = [Box(x * 20, x * 10, 150, 100) for x in range(8)]
    expected = [engine.load_region(reader, info, 1, b).avg() for b in boxes]
    results: dict[int, float] = {}

    def work(i: int) -> None:
        results[i] = engine.load_region(reader, info, 1, boxes[i]).avg()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(boxes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(len(boxes))] == expected


@pytest.mark.parametrize(
    ("level", "box"),
    [
        (0, Box(0, 0, 601, 10)),
        (0, Box(-1, 0, 10, 10)),
        (0, Box(0, 0, 0, 10)),
        (1, Box(200, 100, 101, 1)),
        (4, Box(0, 0, 1, 1)),
        (-1, Box(0, 0, 1, 1)),
    ],
)
def test_load_region_out_of_range(
    sources: SourceSet,
    reader_for: ReaderFactory,
    describe: Describe,
    engine: VipsEngine,
    level: int,
    box: Box,
) -> None:
    reader = reader_for(sources.pyramid_tiff)
    with pytest.raises(RenderError):
        engine.load_region(reader, describe(reader), level, box)


def test_load_region_detects_a_changed_file(
    sources: SourceSet, reader_for: ReaderFactory, describe: Describe, engine: VipsEngine
) -> None:
    stale = ImageInfo(
        width=800,
        height=400,
        levels=(Level(800, 400, 1, 0, 0),),
        bands=3,
        bits_per_sample=8,
        format=SourceFormat.PNG,
        has_icc=False,
    )
    with pytest.raises(DecodeError):
        engine.load_region(reader_for(sources.png), stale, 0, Box(0, 0, 10, 10))


# -- registry -----------------------------------------------------------------


def test_default_registry_covers_every_format() -> None:
    registry = default_registry()
    assert registry.formats == frozenset(SourceFormat)
    assert all(isinstance(registry.for_format(f), VipsEngine) for f in SourceFormat)
    with pytest.raises(UnsupportedSource):
        EngineRegistry().for_format(SourceFormat.PNG)
    png_only = EngineRegistry().with_engine(VipsEngine(), frozenset({SourceFormat.PNG}))
    assert SourceFormat.PNG in png_only
    assert SourceFormat.TIFF not in png_only


# -- header parsers on hand-made bytes ------------------------------------------


def _siz(x1: int, y1: int, x0: int, y0: int, tw: int, th: int, comps: int = 3) -> bytes:
    body = struct.pack(">HIIIIIIIIH", 0, x1, y1, x0, y0, tw, th, 0, 0, comps)
    body += bytes([7, 1, 1]) * comps
    return b"\xff\x51" + struct.pack(">H", len(body) + 2) + body


def _cod(decompositions: int) -> bytes:
    body = bytes([0, 0, 0, 1, 0, decompositions, 4, 4, 0, 0])
    return b"\xff\x52" + struct.pack(">H", len(body) + 2) + body


def _coc(component: int, decompositions: int) -> bytes:
    body = bytes([component, 0, decompositions, 4, 4, 0, 0])
    return b"\xff\x53" + struct.pack(">H", len(body) + 2) + body


def test_j2k_header_offsets_coc_and_comments() -> None:
    com = b"\xff\x64\x00\x06\x00\x01hi"
    stream = b"\xff\x4f" + _siz(1001, 700, 1, 0, 1001, 700) + com + _cod(5) + _coc(1, 3)
    header = parse_j2k_header(BytesReader(stream + b"\xff\x90" + b"\x00" * 10))
    assert (header.width, header.height) == (1000, 700)
    assert header.resolutions == 4  # COC lowers component 1 to 3 decompositions
    assert not header.tiled  # one tile (grid origin 0) covers the image
    # OpenJPEG's reduced size: ceil(x1 / 2^r) - ceil(x0 / 2^r).
    assert header.level_size(1) == (501 - 1, 350)
    assert header.level_size(3) == (126 - 1, 88)


def test_j2k_header_inside_jp2_boxes() -> None:
    codestream = b"\xff\x4f" + _siz(640, 480, 0, 0, 256, 256) + _cod(2) + b"\xff\x90"
    boxes = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
    boxes += b"\x00\x00\x00\x14ftypjp2 \x00\x00\x00\x00jp2 "
    boxes += b"\x00\x00\x00\x10xml <a>hi</a>"[:16]
    boxes += struct.pack(">I4s", 0, b"jp2c") + codestream  # length 0: to end of file
    header = parse_j2k_header(BytesReader(boxes))
    assert (header.width, header.height, header.resolutions) == (640, 480, 3)
    assert (header.tile_width, header.tile_height, header.tiled) == (256, 256, True)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\x4f\xff\x51\x00",  # truncated SIZ
        b"\xff\x4f" + _siz(10, 10, 0, 0, 10, 10) + b"\xff\x90",  # no COD
        b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00\x00\x00\x08free",  # no jp2c
        b"\x00\x00\x00\x0cjP  \r\n\x87\n\x00\x00\x00\x03abcd",  # bad box length
    ],
)
def test_j2k_header_errors(data: bytes) -> None:
    with pytest.raises(DecodeError):
        parse_j2k_header(BytesReader(data))


def _tiff_be(pages: list[tuple[int, int, int]]) -> bytes:
    """A big-endian classic TIFF with one IFD per (width, height, tile)."""
    out = bytearray(b"MM\x00*" + struct.pack(">I", 8))
    for i, (w, h, tile) in enumerate(pages):
        entries = [(256, 4, 1, w), (257, 3, 1, h), (277, 3, 1, 3)]
        if tile:
            entries += [(322, 3, 1, tile), (323, 3, 1, tile)]
        ifd = struct.pack(">H", len(entries))
        for tag, typ, count, value in entries:
            packed = struct.pack(">I", value) if typ == 4 else struct.pack(">HH", value, 0)
            ifd += struct.pack(">HHI", tag, typ, count) + packed
        nxt = len(out) + len(ifd) + 4 if i + 1 < len(pages) else 0
        out += ifd + struct.pack(">I", nxt)
    return bytes(out)


def test_tiff_structure_big_endian() -> None:
    structure = parse_tiff_structure(BytesReader(_tiff_be([(1000, 800, 256), (500, 400, 0)])))
    assert not structure.bigtiff
    assert [(p.width, p.height, p.tile_width, p.samples) for p in structure.pages] == [
        (1000, 800, 256, 3),
        (500, 400, 0, 3),
    ]


def test_tiff_structure_errors() -> None:
    with pytest.raises(UnsupportedSource):
        parse_tiff_structure(BytesReader(b"XX*\x00"))
    with pytest.raises(DecodeError):
        parse_tiff_structure(BytesReader(b"II*\x00\x00\x10\x00\x00"))  # IFD past the end


def test_reduction_factor() -> None:
    assert reduction_factor((1001, 701), (500, 350)) == 2  # floor
    assert reduction_factor((1001, 701), (501, 351)) == 2  # ceil
    assert reduction_factor((7, 1000), (1, 250)) == 4  # the long side decides
    assert reduction_factor((1000, 800), (1000, 800)) is None
    assert reduction_factor((1000, 800), (333, 400)) is None  # not one factor
    assert reduction_factor((1000, 800), (25, 20)) == 40
