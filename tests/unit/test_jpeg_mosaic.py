"""The native JPEG mosaic helper (decoder/native/jpeg_mosaic.c): a grid of
baseline JPEG tiles joined and cropped by copying DCT coefficients.

Copying coefficients is lossless only if every block lands where it belongs,
so the reference is always the tiles decoded one by one, joined and cropped:
the mosaic must decode to exactly those pixels (grey and 4:4:4), or differ
only where chroma upsampling looks across a seam (4:2:0). The source image is
noise on gradients and a zone plate, so that any two blocks differ and a
block copied from the wrong place shows.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import pytest
import pyvips
from hypothesis import given, settings
from hypothesis import strategies as st

from decoder.native import jpeg_mosaic
from decoder.native.jpeg_mosaic import MosaicError
from decoder.pipeline.passthrough import _segments
from tests.pixels import abs_diff, load_strict

Mode = Literal["grey", "444", "420"]
# MCU side in pixels: chroma is sampled 2 x 2 in 4:2:0.
MCU: dict[Mode, int] = {"grey": 8, "444": 8, "420": 16}
# Large enough for a 3 x 3 grid of 64 px tiles.
SOURCE_SIDE = 192
Q = 75

# 4:2:0 mosaics against the tiles decoded separately, over the boxes of
# test_420_mosaic_differs_only_at_seams: measured mean 0.10 to 0.17, max 15,
# all of it in pixels next to a seam or the box's edge, where libjpeg-turbo's
# triangular chroma upsampling reads the neighbouring tile's chroma in the
# mosaic but replicates its own tile's edge when the tile is decoded alone.
# Bounds with some margin.
SEAM_MEAN_TOLERANCE = 0.25
SEAM_MAX_TOLERANCE = 20


@cache
def source(bands: int) -> Any:
    """A SOURCE_SIDE square of texture, `bands` 1 (grey) or 3 (sRGB):
    deterministic (seeded noise), held in memory."""
    side = SOURCE_SIDE
    xy = pyvips.Image.xyz(side, side)
    base = (xy[0] + xy[1]) * (128.0 / (2 * side)) + pyvips.Image.zone(side, side) * 32 + 64
    planes = [
        (base + pyvips.Image.gaussnoise(side, side, mean=0, sigma=32, seed=band + 1)).cast("uchar")
        for band in range(bands)
    ]
    image = planes[0].bandjoin(planes[1:]) if bands > 1 else planes[0]
    return image.copy(interpretation="srgb" if bands == 3 else "b-w").copy_memory()


def encode_tiles(
    mode: Mode, columns: int, rows: int, tile_width: int, tile_height: int, q: int = Q
) -> list[bytes]:
    """The source cut into `columns` x `rows` tiles, row by row, each encoded
    on its own at quality `q`: same tables and sampling, as a TIFF's tiles."""
    image = source(1 if mode == "grey" else 3)
    subsample = "on" if mode == "420" else "off"
    return [
        bytes(
            image.crop(
                column * tile_width, row * tile_height, tile_width, tile_height
            ).jpegsave_buffer(Q=q, subsample_mode=subsample, strip=True)
        )
        for row in range(rows)
        for column in range(columns)
    ]


def joined(tiles: list[bytes], columns: int, box: tuple[int, int, int, int]) -> Any:
    """The reference: each tile decoded alone, the mosaic of them cropped."""
    return pyvips.Image.arrayjoin([load_strict(tile) for tile in tiles], across=columns).crop(*box)


def frame(data: bytes) -> tuple[int, int, int]:
    """(SOF marker, width, height) of a JPEG's frame header."""
    for marker, start, _end in _segments(data, 2):
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[start + 5 : start + 9])
            return marker, width, height
    raise AssertionError("no SOF before SOS")


def test_the_module_is_built() -> None:
    # Built by `make install` (python -m decoder.native.build); without it
    # the pipeline silently decodes every mosaic, so say so here.
    assert jpeg_mosaic.available(), "run `python -m decoder.native.build`"


# -- exactness --------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    mode: Mode
    columns: int
    rows: int
    tile_width: int
    tile_height: int
    box: tuple[int, int, int, int]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    """A grid of 1..3 x 1..3 tiles of 16..64 px (MCU multiples) and a box
    in it starting on the MCU grid, of any size that fits."""
    mode: Mode = draw(st.sampled_from(["grey", "444"]))
    mcu = MCU[mode]
    columns, rows = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sides = st.sampled_from(range(16, 65, mcu))
    tile_width, tile_height = draw(sides), draw(sides)
    width, height = columns * tile_width, rows * tile_height
    x = draw(st.integers(0, (width - 1) // mcu)) * mcu
    y = draw(st.integers(0, (height - 1) // mcu)) * mcu
    # Hypothesis favours small sizes: reaching the mosaic's far edge, where
    # partial blocks and the last tiles are, is drawn on purpose.
    box_width = draw(st.just(width - x) | st.integers(1, width - x))
    box_height = draw(st.just(height - y) | st.integers(1, height - y))
    box = (x, y, box_width, box_height)
    return Case(mode, columns, rows, tile_width, tile_height, box)


@settings(max_examples=40, deadline=None)
@given(cases())
def test_mosaic_is_exactly_the_joined_tiles(case: Case) -> None:
    tiles = encode_tiles(case.mode, case.columns, case.rows, case.tile_width, case.tile_height)

    image = load_strict(jpeg_mosaic.mosaic(tiles, case.columns, case.rows, case.box))

    assert abs_diff(image, joined(tiles, case.columns, case.box)).max() == 0


@pytest.mark.parametrize("mode", ["grey", "444"])
@pytest.mark.parametrize(
    "box",
    [
        pytest.param((0, 0, 192, 192), id="everything"),
        pytest.param((56, 8, 100, 177), id="inner-odd-size"),
        pytest.param((128, 128, 64, 64), id="last-tile"),
        pytest.param((64, 0, 1, 1), id="one-pixel"),
    ],
)
def test_mosaic_of_a_3x3_grid_is_exact(mode: Mode, box: tuple[int, int, int, int]) -> None:
    # Hypothesis' cases, pinned: the whole grid, seams crossed both ways
    # from inside a tile, a corner tile and a single pixel.
    tiles = encode_tiles(mode, 3, 3, 64, 64)

    image = load_strict(jpeg_mosaic.mosaic(tiles, 3, 3, box))

    assert image.bands == (1 if mode == "grey" else 3)
    assert abs_diff(image, joined(tiles, 3, box)).max() == 0


def near_seams(box: tuple[int, int, int, int], tile_width: int, tile_height: int) -> Any:
    """A mask (255 = set) of the box's pixels next to a tile seam or to the
    box's own edge: the only pixels whose chroma upsampling can see past
    their tile."""
    x, y, width, height = box
    xy = pyvips.Image.xyz(width, height)
    i, j = xy[0], xy[1]
    across, down = (i + x) % tile_width, (j + y) % tile_height
    return (
        (across == 0)
        | (across == tile_width - 1)
        | (down == 0)
        | (down == tile_height - 1)
        | (i == 0)
        | (i == width - 1)
        | (j == 0)
        | (j == height - 1)
    )


@pytest.mark.parametrize(
    "box",
    [
        pytest.param((0, 0, 144, 96), id="everything"),
        pytest.param((16, 16, 97, 61), id="inner-odd-size"),
        pytest.param((32, 0, 112, 80), id="to-the-right-edge"),
    ],
)
def test_420_mosaic_differs_only_at_seams(box: tuple[int, int, int, int]) -> None:
    tiles = encode_tiles("420", 3, 3, 48, 32)
    assert load_strict(tiles[0]).get("jpeg-chroma-subsample") == "4:2:0"

    image = load_strict(jpeg_mosaic.mosaic(tiles, 3, 3, box))

    assert (image.width, image.height) == box[2:]
    diff = abs_diff(image, joined(tiles, 3, box))
    assert diff.avg() <= SEAM_MEAN_TOLERANCE
    assert diff.max() <= SEAM_MAX_TOLERANCE
    # libjpeg-turbo upsamples chroma with a triangle filter reaching one
    # pixel: away from seams and box edges every pixel is exact, so a
    # misplaced block cannot hide under the mean.
    assert near_seams(box, 48, 32).ifthenelse(0, diff).max() == 0


@pytest.mark.parametrize("mode", ["grey", "444", "420"])
def test_output_is_baseline_with_the_box_size(mode: Mode) -> None:
    tiles = encode_tiles(mode, 2, 2, 32, 32)

    data = jpeg_mosaic.mosaic(tiles, 2, 2, (16, 0, 45, 63))

    assert data[:2] == b"\xff\xd8"
    assert data[-2:] == b"\xff\xd9"
    assert frame(data) == (0xC0, 45, 63)  # SOF0: baseline Huffman


@pytest.mark.parametrize("mode", ["grey", "444", "420"])
def test_one_whole_tile_keeps_its_pixels(mode: Mode) -> None:
    (tile,) = encode_tiles(mode, 1, 1, 48, 32)

    data = jpeg_mosaic.mosaic([tile], 1, 1, (0, 0, 48, 32))

    assert frame(data) == (0xC0, 48, 32)
    assert abs_diff(load_strict(data), load_strict(tile)).max() == 0


def test_optimized_huffman_tables_keep_the_pixels() -> None:
    tiles = encode_tiles("444", 2, 2, 64, 64)
    box = (8, 8, 100, 100)

    plain = jpeg_mosaic.mosaic(tiles, 2, 2, box)
    optimized = jpeg_mosaic.mosaic(tiles, 2, 2, box, optimize=True)

    assert len(optimized) < len(plain)
    assert abs_diff(load_strict(optimized), load_strict(plain)).max() == 0


# -- errors -----------------------------------------------------------------


ErrorCase = tuple[Sequence[bytes], int, int, tuple[int, int, int, int]]


@cache
def _grid(mode: Mode = "444", side: int = 32) -> tuple[bytes, ...]:
    return tuple(encode_tiles(mode, 2, 2, side, side))


def _first_replaced(tile: bytes) -> list[bytes]:
    """The 2 x 2 grid of 32 px 4:4:4 tiles, its first tile replaced."""
    return [tile, *_grid()[1:]]


def _truncated(fraction: float) -> bytes:
    tile = _grid()[0]
    return tile[: int(len(tile) * fraction)]


def test_only_an_origin_off_the_mcu_grid_is_told_apart() -> None:
    # The pipeline decodes such a box without counting a failure: the tiles
    # are fine, the request just does not start on their MCUs.
    with pytest.raises(jpeg_mosaic.OffMcuGrid):
        jpeg_mosaic.mosaic(_grid("420"), 2, 2, (8, 0, 16, 16))
    with pytest.raises(jpeg_mosaic.MosaicError) as outside:
        jpeg_mosaic.mosaic(_grid("420"), 2, 2, (0, 0, 65, 16))
    assert not isinstance(outside.value, jpeg_mosaic.OffMcuGrid)


def _claiming(width: int, height: int) -> bytes:
    """A 32 px 4:4:4 tile whose SOF0 claims `width` x `height` pixels: a
    hostile header, with far too little data behind it."""
    tile = bytearray(_grid()[0])
    sof = tile.index(b"\xff\xc0")
    struct.pack_into(">HH", tile, sof + 5, height, width)
    return bytes(tile)


def naming_table(tile: bytes, table: int) -> bytes:
    """`tile` with its frame header naming quantisation table `table` for
    the first component (a byte libjpeg checks only when the scan starts)."""
    damaged = bytearray(tile)
    sof = damaged.index(b"\xff\xc0")
    damaged[sof + 12] = table  # marker, length, precision, size, count, id, sampling
    return bytes(damaged)


def _progressive() -> bytes:
    tile = source(3).crop(0, 0, 32, 32)
    return bytes(tile.jpegsave_buffer(Q=Q, subsample_mode="off", interlace=True))


# What must be refused: (tiles, columns, rows, box), made when the test
# runs, and a fragment of the reason, so that each case fails for its own.
BAD_INPUT: dict[str, tuple[Callable[[], ErrorCase], str]] = {
    "origin-off-the-mcu-grid": (lambda: (_grid(), 2, 2, (4, 0, 16, 16)), "MCU boundary"),
    "origin-off-the-420-mcu-grid": (lambda: (_grid("420"), 2, 2, (8, 0, 16, 16)), "MCU boundary"),
    "box-too-wide": (lambda: (_grid(), 2, 2, (32, 0, 33, 16)), "outside"),
    "box-too-high": (lambda: (_grid(), 2, 2, (0, 56, 16, 9)), "outside"),
    "box-starts-outside": (lambda: (_grid(), 2, 2, (64, 0, 1, 1)), "outside"),
    "empty-box": (lambda: (_grid(), 2, 2, (0, 0, 0, 16)), "empty"),
    "negative-origin": (lambda: (_grid(), 2, 2, (-8, 0, 16, 16)), "negative"),
    "too-few-tiles": (lambda: (_grid()[:3], 2, 2, (0, 0, 16, 16)), "3 tiles for a 2x2"),
    "too-many-tiles": (lambda: (_grid(), 1, 3, (0, 0, 16, 16)), "4 tiles for a 1x3"),
    "no-tiles": (lambda: ((), 0, 0, (0, 0, 16, 16)), "columns and rows"),
    "other-quality": (
        lambda: (
            _first_replaced(encode_tiles("444", 1, 1, 32, 32, q=90)[0]),
            2,
            2,
            (0, 0, 16, 16),
        ),
        "tables",
    ),
    "other-size": (lambda: (_first_replaced(_grid(side=16)[0]), 2, 2, (0, 0, 16, 16)), "size"),
    "other-sampling": (
        lambda: (_first_replaced(_grid("420")[0]), 2, 2, (0, 0, 16, 16)),
        "components",
    ),
    "grey-among-colour": (
        lambda: (_first_replaced(_grid("grey")[0]), 2, 2, (0, 0, 16, 16)),
        "components",
    ),
    "garbage": (
        lambda: (_first_replaced(b"this is not a JPEG" * 20), 2, 2, (0, 0, 16, 16)),
        "Not a JPEG",
    ),
    "empty-tile": (lambda: (_first_replaced(b""), 2, 2, (0, 0, 16, 16)), "Empty input"),
    "truncated-scan": (
        lambda: (_first_replaced(_truncated(2 / 3)), 2, 2, (0, 0, 16, 16)),
        "Premature end",
    ),
    "truncated-header": (
        lambda: (_first_replaced(_grid()[0][:40]), 2, 2, (0, 0, 16, 16)),
        "Premature end",
    ),
    "truncated-last-tile": (
        lambda: ([*_grid()[:3], _truncated(1 / 2)], 2, 2, (0, 0, 16, 16)),
        "Premature end",
    ),
    "progressive": (
        lambda: (_first_replaced(_progressive()), 2, 2, (0, 0, 16, 16)),
        "baseline",
    ),
    # 60000 x 60000 would need ~20 GB of coefficients: libjpeg's memory
    # bound refuses it (no backing store) before allocating anything.
    "hostile-dimensions": (
        lambda: ([_claiming(60000, 60000)], 1, 1, (0, 0, 16, 16)),
        "[Bb]acking store",
    ),
    "table-number-out-of-range": (
        lambda: ([*_grid()[:3], naming_table(_grid()[3], 255)], 2, 2, (0, 0, 16, 16)),
        "table",
    ),
    "420-tiles-not-a-multiple-of-16": (
        lambda: (encode_tiles("420", 2, 2, 24, 24), 2, 2, (0, 0, 16, 16)),
        "multiple of the MCU",
    ),
}


@pytest.mark.parametrize("name", list(BAD_INPUT))
def test_bad_input_raises_mosaic_error(name: str) -> None:
    make, reason = BAD_INPUT[name]
    tiles, columns, rows, box = make()

    with pytest.raises(MosaicError, match=reason):
        jpeg_mosaic.mosaic(tiles, columns, rows, box)

    # The helper longjmps out of libjpeg: it must have cleaned up and
    # still work.
    assert frame(jpeg_mosaic.mosaic(_grid(), 2, 2, (0, 0, 64, 64)))[1:] == (64, 64)


@settings(max_examples=300, deadline=None)
@given(
    mode=st.sampled_from(["grey", "444", "420"]),
    which=st.integers(0, 3),
    flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 7)), min_size=1, max_size=8),
    cut=st.one_of(st.none(), st.integers(0, 10**6)),
)
def test_damaged_tiles_never_crash(
    mode: Mode, which: int, flips: list[tuple[int, int]], cut: int | None
) -> None:
    # Stored tiles come from files we do not control: flipped bits anywhere
    # (headers, tables, scan) and cut streams must end in an answer or a
    # MosaicError, never in a crash, a hang or libjpeg calling exit().
    tiles = list(_grid(mode))
    damaged = bytearray(tiles[which])
    for position, bit in flips:
        damaged[position % len(damaged)] ^= 1 << bit
    if cut is not None:
        damaged = damaged[: cut % len(damaged)]
    tiles[which] = bytes(damaged)
    try:
        data = jpeg_mosaic.mosaic(tiles, 2, 2, (0, 0, 64, 64))
    except MosaicError:
        return
    assert frame(data)[1:] == (64, 64)


def test_threads_share_the_helper() -> None:
    # It runs without the GIL from the decoder's threads: no shared state.
    tiles = _grid("420")
    expected = jpeg_mosaic.mosaic(tiles, 2, 2, (16, 16, 48, 32))
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(
            pool.map(lambda _: jpeg_mosaic.mosaic(tiles, 2, 2, (16, 16, 48, 32)), range(64))
        )
    assert all(result == expected for result in results)
