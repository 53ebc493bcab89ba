"""Which byte ranges a region needs (decoder.sources.layout): checked
against brute force over every tile, and the coalescing of ranges into GETs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from decoder.formats.jp2 import J2kHeader
from decoder.sources.layout import (
    Jp2Layout,
    Range,
    TiffDirectory,
    coalesce,
    jp2_ranges,
    tiff_ranges,
)


def overlaps(a0: int, a1: int, b0: int, b1: int) -> bool:
    return a0 < b1 and b0 < a1


@st.composite
def tiff_case(draw: st.DrawFn) -> tuple[TiffDirectory, tuple[int, int, int, int], int]:
    width, height = draw(st.integers(1, 900)), draw(st.integers(1, 900))
    tw, th = draw(st.integers(1, 300)), draw(st.integers(1, 300))
    planes = draw(st.integers(1, 3))
    count = -(-width // tw) * -(-height // th) * planes
    pieces = tuple((i * 100, i * 100 + 50) for i in range(count))
    x0, y0 = draw(st.integers(0, width - 1)), draw(st.integers(0, height - 1))
    x1, y1 = draw(st.integers(x0 + 1, width)), draw(st.integers(y0 + 1, height))
    margin = draw(st.integers(0, 8))
    return TiffDirectory(width, height, tw, th, pieces), (x0, y0, x1, y1), margin


@given(tiff_case())
def test_tiff_ranges_are_exactly_the_tiles_the_region_touches(
    case: tuple[TiffDirectory, tuple[int, int, int, int], int],
) -> None:
    d, (x0, y0, x1, y1), margin = case
    across, down = -(-d.width // d.tile_width), -(-d.height // d.tile_height)
    wx0, wy0 = max(0, x0 - margin), max(0, y0 - margin)
    wx1, wy1 = min(d.width, x1 + margin), min(d.height, y1 + margin)
    expected = {
        d.pieces[plane * across * down + row * across + col]
        for plane in range(len(d.pieces) // (across * down))
        for row in range(down)
        for col in range(across)
        if overlaps(col * d.tile_width, (col + 1) * d.tile_width, wx0, wx1)
        and overlaps(row * d.tile_height, (row + 1) * d.tile_height, wy0, wy1)
    }
    got = tiff_ranges(d, x0, y0, x1, y1, margin)
    assert set(got) == expected
    assert len(got) == len(expected)


def test_tiff_ranges_give_up_on_an_unexpected_piece_count() -> None:
    d = TiffDirectory(512, 512, 256, 256, ((0, 10), (10, 20), (20, 30)))
    assert tiff_ranges(d, 0, 0, 10, 10) == []


@st.composite
def jp2_case(draw: st.DrawFn) -> tuple[Jp2Layout, tuple[int, int, int, int]]:
    tx0, ty0 = draw(st.integers(0, 50)), draw(st.integers(0, 50))
    x0, y0 = tx0 + draw(st.integers(0, 50)), ty0 + draw(st.integers(0, 50))
    x1, y1 = x0 + draw(st.integers(1, 1500)), y0 + draw(st.integers(1, 1500))
    tw, th = draw(st.integers(64, 700)), draw(st.integers(64, 700))
    header = J2kHeader(
        width=x1 - x0, height=y1 - y0, x0=x0, y0=y0, x1=x1, y1=y1,
        tile_width=tw, tile_height=th, tiled=True, components=3, resolutions=5,
        tile_x0=tx0, tile_y0=ty0,
    )  # fmt: skip
    across, down = -(-(x1 - tx0) // tw), -(-(y1 - ty0) // th)
    parts = draw(st.integers(1, 3))
    tiles = {
        t: tuple((t * 1000 + p * 100, t * 1000 + p * 100 + 90) for p in range(parts))
        for t in range(across * down)
    }
    gx0, gy0 = draw(st.integers(0, x1 + 10)), draw(st.integers(0, y1 + 10))
    gx1, gy1 = draw(st.integers(gx0, x1 + 20)), draw(st.integers(gy0, y1 + 20))
    return Jp2Layout(header, tiles), (gx0, gy0, gx1, gy1)


@given(jp2_case())
def test_jp2_ranges_are_every_part_of_the_tiles_the_window_touches(
    case: tuple[Jp2Layout, tuple[int, int, int, int]],
) -> None:
    layout, (gx0, gy0, gx1, gy1) = case
    h = layout.header
    across = -(-(h.x1 - h.tile_x0) // h.tile_width)
    # A tile covers its grid cell clipped to the image area.
    wx0, wy0, wx1, wy1 = max(gx0, h.x0), max(gy0, h.y0), min(gx1, h.x1), min(gy1, h.y1)
    expected: set[Range] = set()
    for t, parts in layout.tiles.items():
        col, row = t % across, t // across
        cx0 = max(h.x0, h.tile_x0 + col * h.tile_width)
        cy0 = max(h.y0, h.tile_y0 + row * h.tile_height)
        cx1 = min(h.x1, h.tile_x0 + (col + 1) * h.tile_width)
        cy1 = min(h.y1, h.tile_y0 + (row + 1) * h.tile_height)
        nonempty = wx0 < wx1 and wy0 < wy1
        if nonempty and overlaps(cx0, cx1, wx0, wx1) and overlaps(cy0, cy1, wy0, wy1):
            expected.update(parts)
    got = jp2_ranges(layout, gx0, gy0, gx1, gy1)
    assert set(got) == expected
    assert len(got) == len(expected)


ranges_st = st.lists(
    st.tuples(st.integers(0, 10_000), st.integers(1, 3_000)).map(lambda t: (t[0], t[0] + t[1])),
    max_size=40,
)


@given(ranges_st, st.integers(0, 2_000), st.integers(1, 20_000))
def test_coalesce_covers_every_range_once_within_bounds(
    ranges: list[Range], gap: int, max_run: int
) -> None:
    runs = coalesce(ranges, gap, max_run)
    flat = [r for run in runs for r in run]
    assert sorted(flat) == sorted(set(ranges))
    spans = [(run[0][0], max(end for _, end in run)) for run in runs]
    assert spans == sorted(spans)
    for run, (start, end) in zip(runs, spans, strict=True):
        assert len(run) == 1 or end - start <= max_run
        reach = run[0][1]
        for a, b in run[1:]:
            assert a - reach <= gap  # no hole wider than `gap` inside a run
            reach = max(reach, b)


def test_coalesce_joins_neighbours_and_splits_far_ones() -> None:
    assert coalesce([(0, 10), (12, 20), (1000, 1010)], gap=5, max_run=100) == [
        [(0, 10), (12, 20)],
        [(1000, 1010)],
    ]
    assert coalesce([(0, 60), (60, 120)], gap=5, max_run=100) == [[(0, 60)], [(60, 120)]]
