"""Object indexes of JPEG 2000 and TIFF files: structure bytes are the file's
bytes, data segments cover tiles, hostile input gives no index."""

from __future__ import annotations

from pathlib import Path

import pytest
import pyvips

from decoder.sources.layout import Jp2Layout, TiffLayout, jp2_ranges, tiff_ranges
from decoder.sources.object_index import ObjectIndex, accepts_short_reads, build_index


def reader_over(data: bytes, reads: list[tuple[int, int]] | None = None):  # type: ignore[no-untyped-def]
    async def read(offset: int, length: int) -> bytes:
        if reads is not None:
            reads.append((offset, length))
        return data[offset : offset + length]

    return read


def image(width: int, height: int) -> pyvips.Image:
    return (pyvips.Image.gaussnoise(width, height) + 0).cast("uchar").bandjoin([128, 64])


def check_consistent(index: ObjectIndex, data: bytes) -> None:
    prev_end = 0
    for start, chunk in index.known:
        assert start >= prev_end
        assert data[start : start + len(chunk)] == chunk
        prev_end = start + len(chunk)
    prev_end = 0
    for start, end in index.segments:
        assert prev_end <= start < end <= len(data)
        prev_end = end


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root: Path = tmp_path_factory.mktemp("index")
    img = image(600, 400)
    img.jp2ksave(str(root / "t.jp2"), tile_width=128, tile_height=128, Q=50)
    img.jp2ksave(str(root / "u.jp2"), tile_width=1024, tile_height=1024, Q=50)
    img.tiffsave(str(root / "p.tif"), tile=True, tile_width=128, tile_height=128, pyramid=True)
    img.tiffsave(str(root / "s.tif"), tile=False, bigtiff=True)
    img.pngsave(str(root / "i.png"))
    return {p.name: p.read_bytes() for p in root.iterdir()}


async def test_tiled_jp2(files: dict[str, bytes]) -> None:
    data = files["t.jp2"]
    index = await build_index(reader_over(data), len(data))
    assert index is not None
    assert index.kind == "jp2"
    assert index.tiled
    check_consistent(index, data)
    assert len(index.segments) == 5 * 4  # one tile-part per 128 px tile
    assert index.known_bytes + index.data_bytes == len(data)  # every byte accounted for
    assert index.known_at(0) is not None
    assert index.segment_at(0) is None
    assert index.segment_at(index.segments[3][0] + 1) == index.segments[3]


async def test_untiled_jp2_is_one_segment(files: dict[str, bytes]) -> None:
    data = files["u.jp2"]
    index = await build_index(reader_over(data), len(data))
    assert index is not None
    assert not index.tiled
    assert len(index.segments) == 1


async def test_pyramid_and_big_tiff(files: dict[str, bytes]) -> None:
    for name, tiled in (("p.tif", True), ("s.tif", True)):
        data = files[name]
        index = await build_index(reader_over(data), len(data))
        assert index is not None
        assert index.kind == "tiff"
        assert index.tiled is tiled
        check_consistent(index, data)
        assert index.data_bytes > len(data) // 2


async def test_other_formats_and_garbage_give_no_index(files: dict[str, bytes]) -> None:
    for data in (files["i.png"], b"", b"II*\x00" + b"\xff" * 100, files["t.jp2"][:3000]):
        assert await build_index(reader_over(data), len(data)) is None
    reads: list[tuple[int, int]] = []
    loop = b"II*\x00\x08\x00\x00\x00" + b"\x01\x00" + b"\x00" * 12 + b"\x08\x00\x00\x00"
    # A directory chain pointing at itself ends: the walk is bounded.
    index = await build_index(reader_over(loop, reads), len(loop))
    assert index is None or not index.segments
    assert len(reads) < 10


def test_short_reads_only_for_jpeg2000(files: dict[str, bytes]) -> None:
    assert accepts_short_reads(files["t.jp2"][:16])
    assert not accepts_short_reads(files["p.tif"][:16])
    assert not accepts_short_reads(files["i.png"][:16])


async def test_jp2_layout_maps_every_tile_to_its_tile_parts(files: dict[str, bytes]) -> None:
    data = files["t.jp2"]
    index = await build_index(reader_over(data), len(data))
    assert index is not None
    layout = index.layout
    assert isinstance(layout, Jp2Layout)
    assert (layout.header.width, layout.header.height) == (600, 400)
    assert (layout.header.tile_width, layout.header.tile_height) == (128, 128)
    assert sorted(layout.tiles) == list(range(5 * 4))
    assert sorted(r for parts in layout.tiles.values() for r in parts) == list(index.segments)
    # Whole image, reference grid: every tile-part; one tile's corner: its parts only.
    assert sorted(jp2_ranges(layout, 0, 0, 600, 400)) == list(index.segments)
    assert jp2_ranges(layout, 130, 260, 140, 270) == list(layout.tiles[2 * 5 + 1])


async def test_tiff_layout_lists_pages_with_their_tiles(files: dict[str, bytes]) -> None:
    data = files["p.tif"]
    index = await build_index(reader_over(data), len(data))
    assert index is not None
    layout = index.layout
    assert isinstance(layout, TiffLayout)
    # libvips writes the pyramid as pages of the main chain, halving each time.
    assert [(p.width, p.height) for p in layout.pages] == [
        (600, 400), (300, 200), (150, 100), (75, 50), (37, 25), (18, 12), (9, 6), (4, 3),
        (2, 1), (1, 1),
    ][: len(layout.pages)]  # fmt: skip
    first = layout.pages[0]
    assert (first.tile_width, first.tile_height) == (128, 128)
    assert len(first.pieces) == 5 * 4
    assert set(tiff_ranges(first, 0, 0, 600, 400)) <= set(index.segments)
    strips = await build_index(reader_over(files["s.tif"]), len(files["s.tif"]))
    assert strips is not None
    assert isinstance(strips.layout, TiffLayout)
    assert strips.layout.pages[0].tile_width == 600  # strips: tiles as wide as the image
