"""Native-tile passthrough: a request that is exactly one stored JPEG tile of
a pyramidal TIFF is answered with that tile's bytes (plus its JPEGTables and
a colour marker), and every other request still goes through the decoder.

The passthrough output must be a JPEG that strict stand-alone decoders load
and whose pixels are exactly libtiff's decode of the stored tile; against
the decoded path (which re-encodes) it may differ by JPEG re-encoding error.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pyvips
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from decoder import levelcache
from decoder.engines.base import ImageInfo
from decoder.engines.vips import VipsEngine
from decoder.pipeline import passthrough, run_pipeline, stored_tiles
from decoder.pipeline.passthrough import (
    ADOBE_APP14_RGB,
    JFIF_APP0,
    MAX_GAP_BYTES,
    JpegLevel,
    NoStoredTiles,
    _spans,
    splice,
    tile_for,
)
from decoder.plan import Box, OutputFormat, Plan, Quality
from decoder.sources.base import ByteReader
from tests.images import make_pyramid_tiff, make_striped_tiff, make_tiled_jp2, pattern
from tests.pixels import load_strict, max_abs_diff, mean_abs_diff

ReaderFactory = Callable[[Path], ByteReader]
Describe = Callable[[ByteReader], ImageInfo]

KEY = ("image.tif", "v1")
# The decoded path re-encodes the tile (at Q 95 here): allowed mean difference.
REENCODE_TOLERANCE = 1.5


class CountingReader:
    """Wraps a reader (keeping its local path) and counts reads."""

    def __init__(self, inner: ByteReader) -> None:
        self._inner = inner
        self.reads = 0

    @property
    def size(self) -> int:
        return self._inner.size

    @property
    def path(self) -> Path | None:
        return self._inner.path

    def read_at(self, offset: int, length: int) -> bytes:
        self.reads += 1
        return self._inner.read_at(offset, length)

    def close(self) -> None:
        self._inner.close()


class RecordingReader(CountingReader):
    """A CountingReader that also keeps every read's (offset, length)."""

    def __init__(self, inner: ByteReader) -> None:
        super().__init__(inner)
        self.calls: list[tuple[int, int]] = []

    def read_at(self, offset: int, length: int) -> bytes:
        self.calls.append((offset, length))
        return super().read_at(offset, length)


def passthrough_total() -> float:
    return REGISTRY.get_sample_value("iiif_decoder_passthrough_total") or 0.0


# -- a hand-made YCbCr JPEG-in-TIFF, as libtiff/GDAL write them -------------


def _jpeg_segments(data: bytes) -> list[tuple[int, bytes]]:
    """(marker, whole segment) up to SOS; the last item is (0, scan data + EOI)."""
    out, pos = [], 2
    while True:
        marker = data[pos + 1]
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        out.append((marker, data[pos : pos + 2 + length]))
        pos += 2 + length
        if marker == 0xDA:
            out.append((0, data[pos:]))
            return out


def write_ycbcr_jpeg_tiff(path: Path, image: Any, tile: int) -> Path:
    """One tiled page of JPEG tiles coded as YCbCr 4:2:0 (Photometric 6),
    abbreviated the way libtiff writes them: shared DQT/DHT in JPEGTables,
    no JFIF marker in the tiles, edge tiles padded to the full tile size."""
    width, height = image.width, image.height
    across, down = -(-width // tile), -(-height // tile)
    tables: bytes | None = None
    tiles: list[bytes] = []
    for ty in range(down):
        for tx in range(across):
            w, h = min(tile, width - tx * tile), min(tile, height - ty * tile)
            part = image.crop(tx * tile, ty * tile, w, h).embed(0, 0, tile, tile, extend="copy")
            # Q < 90: libvips subsamples chroma 2x2; default Huffman tables, so
            # every tile has the same tables.
            data = bytes(part.jpegsave_buffer(Q=85, strip=True))
            segments = _jpeg_segments(data)
            shared = b"".join(s for m, s in segments if m in (0xDB, 0xC4))
            own = b"".join(s for m, s in segments if m not in (0xDB, 0xC4, 0xE0))
            if tables is None:
                tables = b"\xff\xd8" + shared + b"\xff\xd9"
            assert tables == b"\xff\xd8" + shared + b"\xff\xd9"
            tiles.append(b"\xff\xd8" + own)
    assert tables is not None
    entries: list[tuple[int, int, int, bytes]] = []  # tag, type, count, value bytes
    offsets_at = 8  # tile data right after the header
    blob = b"".join(tiles)
    offsets, pos = [], offsets_at
    for t in tiles:
        offsets.append(pos)
        pos += len(t)
    entries = [
        (256, 3, 1, struct.pack("<H", width)),
        (257, 3, 1, struct.pack("<H", height)),
        (258, 3, 3, struct.pack("<3H", 8, 8, 8)),
        (259, 3, 1, struct.pack("<H", 7)),
        (262, 3, 1, struct.pack("<H", 6)),
        (277, 3, 1, struct.pack("<H", 3)),
        (284, 3, 1, struct.pack("<H", 1)),
        (322, 3, 1, struct.pack("<H", tile)),
        (323, 3, 1, struct.pack("<H", tile)),
        (324, 4, len(tiles), struct.pack(f"<{len(tiles)}I", *offsets)),
        (325, 4, len(tiles), struct.pack(f"<{len(tiles)}I", *map(len, tiles))),
        (347, 7, len(tables), tables),
        (530, 3, 2, struct.pack("<2H", 2, 2)),
    ]
    ifd_at = offsets_at + len(blob)
    ifd_at += ifd_at % 2
    extra_at = ifd_at + 2 + 12 * len(entries) + 4
    ifd, extra = b"", b""
    for tag, typ, count, value in entries:
        if len(value) <= 4:
            ifd += struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\0")
        else:
            ifd += struct.pack("<HHII", tag, typ, count, extra_at + len(extra))
            extra += value + b"\0" * (len(value) % 2)
    header = b"II" + struct.pack("<HI", 42, ifd_at)
    body = header + blob
    body += b"\0" * (ifd_at - len(body))
    path.write_bytes(body + struct.pack("<H", len(entries)) + ifd + b"\0\0\0\0" + extra)
    return path


# -- fixtures ---------------------------------------------------------------


def noise(width: int, height: int) -> Any:
    """An sRGB image of Gaussian noise: JPEG tiles of it are large."""
    bands = [
        pyvips.Image.gaussnoise(width, height, mean=128, sigma=60).cast("uchar") for _ in range(3)
    ]
    return bands[0].bandjoin(bands[1:]).copy(interpretation="srgb")


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("passthrough")
    return {
        # libvips writes Photometric RGB JPEG tiles (no colour transform).
        "rgb": make_pyramid_tiff(root / "rgb.tif", 1024, 768, tile=256),
        "grey": make_pyramid_tiff(root / "grey.tif", 1024, 768, tile=256, bands=1),
        # Levels 1001x777, 500x388, 250x194, ...: partial edge tiles, and
        # levels that are not exactly the full size over the downscale.
        "odd": make_pyramid_tiff(root / "odd.tif", 1001, 777, tile=128),
        "big": make_pyramid_tiff(root / "big.tif", 1024, 768, tile=256, bigtiff=True),
        "subifd": make_pyramid_tiff(root / "subifd.tif", 1024, 768, tile=256, subifd=True),
        "deflate": make_pyramid_tiff(root / "deflate.tif", 1024, 768, compression="deflate"),
        "ycbcr": write_ycbcr_jpeg_tiff(root / "ycbcr.tif", pattern(600, 400), tile=128),
        # Noise compresses badly: 128 px tiles of ~30 KB, so a row of 8 is
        # far more than MAX_GAP_BYTES and a column's tiles are far apart.
        "noise": make_pyramid_tiff(root / "noise.tif", 1024, 256, tile=128, image=noise(1024, 256)),
        "jp2": make_tiled_jp2(root / "tiled.jp2", 512, 384, tile=128, resolutions=3),
        "striped": make_striped_tiff(root / "striped.tif", 600, 400),
    }


@pytest.fixture(autouse=True)
def fresh_caches() -> Iterator[None]:
    """Passthrough on with an empty index; level cache off, so the decoded
    path really decodes."""
    passthrough.configure(enabled=True)
    levelcache.configure(max_bytes=0)
    yield
    passthrough.configure(enabled=True)
    levelcache.configure()


def tile_plan(info: ImageInfo, level: int, column: int, row: int, **changes: Any) -> Plan:
    """The IIIF request for stored tile (column, row) of `level`."""
    lvl = info.levels[level]
    d = lvl.downscale
    x, y = column * lvl.tile_width * d, row * lvl.tile_height * d
    region = Box(
        x, y, min(lvl.tile_width * d, info.width - x), min(lvl.tile_height * d, info.height - y)
    )
    fields: dict[str, Any] = {"width": lvl.tile_width, "height": lvl.tile_height}
    fields.update(changes)
    return Plan(region, **fields)


def stored_tile(
    engine: VipsEngine, reader: ByteReader, info: ImageInfo, level: int, column: int, row: int
) -> Any:
    """libtiff's decode of a stored tile (through the engine)."""
    lvl = info.levels[level]
    box = Box(column * lvl.tile_width, row * lvl.tile_height, lvl.tile_width, lvl.tile_height)
    return engine.load_region(reader, info, level, box)


# -- tests ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "level", "column", "row", "marker"),
    [
        ("rgb", 0, 0, 0, "adobe"),
        ("rgb", 0, 3, 2, "adobe"),
        ("rgb", 1, 1, 0, "adobe"),
        ("grey", 0, 2, 1, "jfif"),
        ("big", 1, 0, 0, "adobe"),
        ("subifd", 1, 1, 0, "adobe"),
        ("ycbcr", 0, 1, 2, "jfif"),
    ],
)
def test_stored_tile_is_passed_through(
    images: dict[str, Path],
    reader_for: ReaderFactory,
    describe: Describe,
    engine: VipsEngine,
    name: str,
    level: int,
    column: int,
    row: int,
    marker: str,
) -> None:
    segment = {"adobe": ADOBE_APP14_RGB, "jfif": JFIF_APP0}[marker]
    reader = reader_for(images[name])
    info = describe(reader)
    plan = tile_plan(info, level, column, row)
    before = passthrough_total()

    data = run_pipeline(engine, reader, info, plan, cache_key=KEY)

    assert passthrough_total() == before + 1
    assert data[:2] == b"\xff\xd8"
    assert data[2 : 2 + len(segment)] == segment
    image = load_strict(data)
    assert (image.width, image.height) == (plan.width, plan.height)
    assert max_abs_diff(image, stored_tile(engine, reader, info, level, column, row)) == 0
    # Without a key the pipeline decodes; at Q 95 its re-encoding error is small.
    decoded = load_strict(run_pipeline(engine, reader, info, replace(plan, encode_quality=95)))
    assert mean_abs_diff(image, decoded) <= REENCODE_TOLERANCE


def test_nominal_tile_of_an_inexact_level_passes_through(
    images: dict[str, Path], reader_for: ReaderFactory, describe: Describe, engine: VipsEngine
) -> None:
    # Level 1 of 1001 x 777 is 500 x 388: a client's tile region (tile box
    # times 2) does not map onto the tile by level_box's proportional
    # rounding, but the stored tile is exactly that region.
    reader = reader_for(images["odd"])
    info = describe(reader)
    assert (info.levels[1].width, info.levels[1].height) == (500, 388)
    plan = tile_plan(info, 1, 2, 1)
    assert plan.region == Box(512, 256, 256, 256)

    data = run_pipeline(engine, reader, info, plan, cache_key=KEY)

    image = load_strict(data)
    assert max_abs_diff(image, stored_tile(engine, reader, info, 1, 2, 1)) == 0
    decoded = load_strict(run_pipeline(engine, reader, info, plan))
    assert mean_abs_diff(image, decoded) <= 3.0  # decoded from level 0, lanczos-reduced


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"rotation": 90.0}, id="rotation"),
        pytest.param({"mirror": True}, id="mirror"),
        pytest.param({"quality": Quality.GRAY}, id="gray"),
        pytest.param({"format": OutputFormat.PNG}, id="png"),
        pytest.param({"progressive": True}, id="progressive"),
        pytest.param({"width": 255, "height": 255}, id="other-size"),
    ],
)
def test_processed_requests_are_decoded(
    images: dict[str, Path],
    reader_for: ReaderFactory,
    describe: Describe,
    engine: VipsEngine,
    change: dict[str, Any],
) -> None:
    reader = reader_for(images["rgb"])
    info = describe(reader)
    plan = tile_plan(info, 0, 1, 1, **change)
    assert tile_for(info, plan) is None
    before = passthrough_total()

    data = run_pipeline(engine, reader, info, plan, cache_key=KEY)

    assert passthrough_total() == before
    assert data == run_pipeline(engine, reader, info, plan)


@pytest.mark.parametrize(
    ("name", "plan"),
    [
        # Partial edge tile at level 0 (1001 - 7 * 128 = 105 pixels wide):
        # stored padded to 128, so its bytes are not the requested image.
        pytest.param("odd", Plan(Box(896, 0, 105, 128), 105, 128), id="edge-tile"),
        # Same size as a tile, but off the tile grid.
        pytest.param("rgb", Plan(Box(128, 0, 256, 256), 256, 256), id="off-grid"),
        # Two tiles' width at level 0, scaled to one tile's size: level 1's
        # tile (0, 0) spans 512 x 512, not 512 x 256.
        pytest.param("rgb", Plan(Box(0, 0, 512, 256), 256, 256), id="wrong-aspect"),
        pytest.param("deflate", Plan(Box(0, 0, 256, 256), 256, 256), id="deflate"),
    ],
)
def test_requests_that_are_not_one_whole_jpeg_tile_are_decoded(
    images: dict[str, Path],
    reader_for: ReaderFactory,
    describe: Describe,
    engine: VipsEngine,
    name: str,
    plan: Plan,
) -> None:
    reader = reader_for(images[name])
    info = describe(reader)
    before = passthrough_total()

    assert passthrough.try_passthrough(reader, info, plan, KEY) is None
    data = run_pipeline(engine, reader, info, plan, cache_key=KEY)

    # Decoded, or (edge-tile, off-grid) joined from the stored tiles under
    # it (tests/unit/test_mosaic.py): never one stored tile as it is.
    assert passthrough_total() == before
    image = pyvips.Image.new_from_buffer(data, "")
    assert (image.width, image.height) == (plan.width, plan.height)


def test_without_a_cache_key_or_when_off_nothing_passes_through(
    images: dict[str, Path], reader_for: ReaderFactory, describe: Describe, engine: VipsEngine
) -> None:
    reader = reader_for(images["rgb"])
    info = describe(reader)
    plan = tile_plan(info, 0, 0, 0)
    assert passthrough.try_passthrough(reader, info, plan, None) is None
    passthrough.configure(enabled=False)
    assert passthrough.try_passthrough(reader, info, plan, KEY) is None
    passthrough.configure(enabled=True)
    assert passthrough.try_passthrough(reader, info, plan, KEY) is not None


def test_structure_is_parsed_once_per_source_version(
    images: dict[str, Path], reader_for: ReaderFactory, describe: Describe
) -> None:
    reader = CountingReader(reader_for(images["rgb"]))
    info = describe(reader)
    first = passthrough.try_passthrough(reader, info, tile_plan(info, 0, 0, 0), KEY)
    assert first is not None

    reader.reads = 0
    second = passthrough.try_passthrough(reader, info, tile_plan(info, 0, 1, 0), KEY)

    assert second is not None
    assert second != first
    assert reader.reads == 3  # tile offset, tile byte count, the tile
    reader.reads = 0
    assert passthrough.try_passthrough(reader, info, tile_plan(info, 0, 1, 0), ("x", "v2"))
    assert reader.reads > 3  # another version: parsed again


def test_sources_that_cannot_pass_through_are_remembered(
    images: dict[str, Path], reader_for: ReaderFactory, describe: Describe
) -> None:
    reader = CountingReader(reader_for(images["deflate"]))
    info = describe(reader)
    plan = tile_plan(info, 0, 0, 0)
    assert passthrough.try_passthrough(reader, info, plan, KEY) is None
    reader.reads = 0
    assert passthrough.try_passthrough(reader, info, plan, KEY) is None
    assert reader.reads == 0


def test_splice_refuses_incomplete_or_non_baseline_tiles(
    images: dict[str, Path], reader_for: ReaderFactory, describe: Describe
) -> None:
    reader = reader_for(images["rgb"])
    info = describe(reader)
    index = passthrough.parse_tile_index(reader, info)
    assert index is not None
    level = index.levels[0]
    assert level is not None
    offset = level.offsets.get(reader, 0)
    length = level.byte_counts.get(reader, 0)
    assert offset
    assert length
    tile = reader.read_at(offset, length)
    assert splice(tile, level) is not None
    assert splice(tile[:-2], level) is None  # truncated: no EOI
    assert splice(tile.replace(b"\xff\xc0", b"\xff\xc2", 1), level) is None  # progressive
    assert splice(b"\xff\xd8" + JFIF_APP0 + tile[2:], level) is None  # own colour marker


# -- several stored tiles at once (stored_tiles.read_stored_groups, span 1) --------


def jpeg_level(reader: ByteReader, info: ImageInfo, level: int) -> JpegLevel:
    index = passthrough.parse_tile_index(reader, info)
    assert index is not None
    found = index.levels[level]
    assert found is not None
    return found


def whole_tiles(info: ImageInfo, level: int) -> list[tuple[int, int]]:
    """(column, row) of the tiles of `level` that lie wholly inside it, row by row."""
    lvl = info.levels[level]
    across, down = lvl.width // lvl.tile_width, lvl.height // lvl.tile_height
    return [(column, row) for row in range(down) for column in range(across)]


def read_level(
    reader: ByteReader,
    info: ImageInfo,
    level: int,
    columns: range,
    rows: range,
    max_bytes: int = 1 << 30,
) -> list[tuple[int, int, bytes]]:
    cells = stored_tiles.rectangle_cells(info.levels[level], 1, columns, rows)
    return stored_tiles.read_stored_groups(reader, info, KEY, level, 1, cells, max_bytes)


@pytest.mark.parametrize(
    ("name", "level"),
    [
        ("rgb", 0),
        ("rgb", 1),
        ("grey", 0),
        ("odd", 0),  # partial edge column and row
        ("odd", 1),  # 500 x 388: not exactly the full size over the downscale
        ("big", 1),
        ("subifd", 1),
        ("ycbcr", 0),
    ],
)
def test_stored_tiles_are_the_passthrough_bytes_row_by_row(
    images: dict[str, Path],
    reader_for: ReaderFactory,
    describe: Describe,
    engine: VipsEngine,
    name: str,
    level: int,
) -> None:
    reader = reader_for(images[name])
    info = describe(reader)
    lvl = info.levels[level]
    # The whole grid, edge tiles included (joined and cropped: see
    # test_stored_tiles.py); the whole tiles are sent as stored.
    grid = (
        range(-(-lvl.width // lvl.tile_width)),
        range(-(-lvl.height // lvl.tile_height)),
    )
    before = passthrough_total()

    found = read_level(reader, info, level, *grid)

    assert [(c, r) for c, r, _ in found] == [(c, r) for r in grid[1] for c in grid[0]]
    whole = [(c, r, data) for c, r, data in found if (c, r) in set(whole_tiles(info, level))]
    assert whole, "the level has whole tiles"
    assert passthrough_total() == before + len(whole)
    for column, row, data in whole:
        # Byte for byte what a render of exactly that tile answers, as a
        # IIIF client derives its region (see tile_plan).
        plan = tile_plan(info, level, column, row)
        assert passthrough.try_passthrough(reader, info, plan, KEY) == data, (column, row)
        # ... and a stand-alone JPEG of exactly libtiff's pixels of that tile.
        image = load_strict(data)
        assert max_abs_diff(image, stored_tile(engine, reader, info, level, column, row)) == 0


def test_the_rectangle_is_clipped_to_the_grid(
    images: dict[str, Path], reader_for: ReaderFactory, describe: Describe
) -> None:
    # Level 0 of rgb: 4 x 3 whole tiles of 256 px.
    reader = reader_for(images["rgb"])
    info = describe(reader)
    everything = read_level(reader, info, 0, range(4), range(3))
    assert len(everything) == 12

    clipped = read_level(reader, info, 0, range(-2, 10), range(-1, 2))

    assert clipped == everything[:8]  # columns 0..3 of rows 0 and 1
    assert read_level(reader, info, 0, range(2, 1000), range(2, 3)) == everything[10:]
    assert read_level(reader, info, 0, range(4, 9), range(3)) == []  # right of the grid
    assert read_level(reader, info, 0, range(4), range(3, 5)) == []  # below the grid
    assert read_level(reader, info, 0, range(3, 3), range(3)) == []  # empty


def test_the_byte_cap_stops_adding_tiles(
    images: dict[str, Path], reader_for: ReaderFactory, describe: Describe
) -> None:
    reader = reader_for(images["rgb"])
    info = describe(reader)
    level = jpeg_level(reader, info, 0)
    everything = read_level(reader, info, 0, range(4), range(3))
    stored = [level.byte_counts.get(reader, r * level.tiles_across + c) for c, r, _ in everything]
    assert all(stored)
    k = 5

    # Room for exactly the first k answers: k tiles, whatever follows.
    answer_bytes = sum(len(data) for _c, _r, data in everything[:k])
    capped = read_level(reader, info, 0, range(4), range(3), max_bytes=answer_bytes)
    assert capped == everything[:k]

    # One byte short of the first k stored tiles: only k - 1 fit (whether
    # the cap counts stored or answered bytes), and the answer stays
    # within the cap.
    cap = sum(n for n in stored[:k] if n is not None) - 1
    capped = read_level(reader, info, 0, range(4), range(3), max_bytes=cap)
    assert capped == everything[: k - 1]
    assert sum(len(data) for _c, _r, data in capped) <= cap

    assert read_level(reader, info, 0, range(4), range(3), max_bytes=0) == []


@pytest.mark.parametrize("name", ["deflate", "jp2", "striped"])
def test_no_stored_tiles_without_jpeg_tiles(
    images: dict[str, Path], reader_for: ReaderFactory, describe: Describe, name: str
) -> None:
    reader = reader_for(images[name])
    info = describe(reader)

    assert passthrough.stored_levels(reader, info, KEY) == (False,) * len(info.levels)
    with pytest.raises(NoStoredTiles):
        read_level(reader, info, 0, range(2), range(2))


def test_no_stored_tiles_when_passthrough_is_off(
    images: dict[str, Path], reader_for: ReaderFactory, describe: Describe
) -> None:
    reader = reader_for(images["rgb"])
    info = describe(reader)
    assert passthrough.stored_levels(reader, info, KEY) == tuple(
        bool(whole_tiles(info, level)) for level in range(len(info.levels))
    )
    passthrough.configure(enabled=False)
    try:
        assert passthrough.stored_levels(reader, info, KEY) == (False,) * len(info.levels)
        with pytest.raises(NoStoredTiles):
            read_level(reader, info, 0, range(2), range(2))
    finally:
        passthrough.configure(enabled=True)
    assert len(read_level(reader, info, 0, range(2), range(2))) == 4


@pytest.mark.parametrize("name", ["rgb", "odd", "subifd", "ycbcr"])
def test_stored_levels_per_level(
    images: dict[str, Path], reader_for: ReaderFactory, describe: Describe, name: str
) -> None:
    reader = reader_for(images[name])
    info = describe(reader)

    stored = passthrough.stored_levels(reader, info, KEY)

    assert len(stored) == len(info.levels)
    index = passthrough.parse_tile_index(reader, info)
    assert index is not None
    # A level is marked when its tiles can be sent and it has a whole one
    # (a level smaller than one tile has only a padded tile); each answers.
    for level, flag in enumerate(stored):
        assert flag == (index.levels[level] is not None and bool(whole_tiles(info, level))), level
        if flag:
            assert read_level(reader, info, level, range(1), range(1))


def test_tiles_stored_next_to_each_other_are_read_at_once(
    images: dict[str, Path], reader_for: ReaderFactory, describe: Describe
) -> None:
    # Level 0 of noise: 8 x 2 tiles of ~30 KB, stored row by row.
    reader = RecordingReader(reader_for(images["noise"]))
    info = describe(reader)
    level = jpeg_level(reader, info, 0)
    assert level.tiles_across == 8
    passthrough.stored_levels(reader, info, KEY)  # the index, parsed once

    def tile_reads(columns: range, rows: range) -> tuple[list[tuple[int, int]], int]:
        """(tiles answered, reads of tile data): reads outside the tile
        offset and byte count arrays."""
        arrays = [
            range(a.offset, a.offset + a.count * a.size) for a in (level.offsets, level.byte_counts)
        ]
        reader.calls.clear()
        found = read_level(reader, info, 0, columns, rows)
        data = [(o, n) for o, n in reader.calls if not any(o in a for a in arrays)]
        return [(c, r) for c, r, _ in found], len(data)

    # A row's neighbours: one read, however many tiles.
    assert tile_reads(range(8), range(1)) == ([(c, 0) for c in range(8)], 1)
    assert tile_reads(range(2, 5), range(1, 2)) == ([(2, 1), (3, 1), (4, 1)], 1)
    # Both whole rows, one after the other in the file: still one read.
    assert tile_reads(range(8), range(2)) == ([(c, r) for r in range(2) for c in range(8)], 1)
    # One column: a whole row of tiles lies between the two, too far apart.
    first = level.offsets.get(reader, 0)
    below = level.offsets.get(reader, 8)
    length = level.byte_counts.get(reader, 0)
    assert first is not None
    assert below is not None
    assert length is not None
    assert below - (first + length) > MAX_GAP_BYTES
    assert tile_reads(range(1), range(2)) == ([(0, 0), (0, 1)], 2)
    assert tile_reads(range(6, 8), range(2)) == ([(6, 0), (7, 0), (6, 1), (7, 1)], 2)


# (column, row, offset, length) as _read_tiles locates them; offsets are
# drawn near the previous tile's end, where runs break.
_EDGES = [-1, 0, 1, MAX_GAP_BYTES - 1, MAX_GAP_BYTES, MAX_GAP_BYTES + 1]


@st.composite
def located_tiles(draw: st.DrawFn) -> list[tuple[int, int, int, int]]:
    gaps = st.one_of(st.sampled_from(_EDGES), st.integers(-(1 << 20), 4 * MAX_GAP_BYTES))
    steps = draw(st.lists(st.tuples(gaps, st.integers(1, 3 * MAX_GAP_BYTES)), max_size=30))
    tiles: list[tuple[int, int, int, int]] = []
    end = draw(st.integers(0, 1 << 20))
    for n, (gap, length) in enumerate(steps):
        offset = max(1, end + gap)
        tiles.append((n % 7, n // 7, offset, length))
        end = offset + length
    return tiles


@given(located_tiles())
def test_spans_are_runs_of_tiles_close_together_in_the_file(
    located: list[tuple[int, int, int, int]],
) -> None:
    def follows(previous: tuple[int, int, int, int], tile: tuple[int, int, int, int]) -> bool:
        end = previous[2] + previous[3]
        return end <= tile[2] <= end + MAX_GAP_BYTES

    runs = list(_spans(located))

    assert [tile for run in runs for tile in run] == located
    assert all(runs)
    for run in runs:
        assert all(follows(a, b) for a, b in itertools.pairwise(run))
    for run, after in itertools.pairwise(runs):
        assert not follows(run[-1], after[0])
