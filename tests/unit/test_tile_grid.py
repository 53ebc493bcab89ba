"""The gateway's stored-tile grid: the same tile as the decoder's passthrough, aligned batches."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from decoder.engines.base import ImageInfo, SourceFormat
from decoder.engines.base import Level as DecoderLevel
from decoder.pipeline.mosaic import mosaic_box, tile_span
from decoder.pipeline.passthrough import tile_for
from decoder.pipeline.stored_tiles import MAX_SPAN, group_box
from decoder.plan import Box, OutputFormat, Plan, Quality
from gateway import tile_grid
from gateway.decoder_client import Level
from gateway.iiif.types import PixelBox, RenderPlan
from gateway.iiif.types import Quality as IIIFQuality
from gateway.tile_grid import (
    TileBatch,
    TileRef,
    batch_around,
    group_grid,
    sends_stored_bytes,
    stored_tile,
    tile_plan,
)

# What the gateway's DecoderClient sends for each (decoder/servicer.py reads it back).
_FORMATS = {
    "jpg": OutputFormat.JPEG,
    "png": OutputFormat.PNG,
    "webp": OutputFormat.WEBP,
    "tif": OutputFormat.TIFF,
    "gif": OutputFormat.GIF,
    "jp2": OutputFormat.JP2,
}
_QUALITIES = {
    "default": Quality.COLOR,
    "color": Quality.COLOR,
    "gray": Quality.GRAY,
    "bitonal": Quality.BITONAL,
}

TILE_SIDES = (128, 256, 512)
JPEG_TILE = RenderPlan(PixelBox(0, 0, 1, 1), 1, 1, 0.0, False, "default", "jpg")


@dataclass(frozen=True)
class Pyramid:
    """One geometry, as the decoder sees it and as the gateway's Describe gives it."""

    info: ImageInfo
    levels: tuple[Level, ...]

    @property
    def width(self) -> int:
        return self.info.width

    @property
    def height(self) -> int:
        return self.info.height


def decoder_plan(plan: RenderPlan) -> Plan:
    """The decoder's Plan for the gateway's `plan`, as the client and servicer build it."""
    crop = plan.crop
    return Plan(
        region=Box(crop.x, crop.y, crop.w, crop.h),
        width=plan.width,
        height=plan.height,
        rotation=plan.rotation,
        mirror=plan.mirror,
        quality=_QUALITIES[plan.quality],
        format=_FORMATS[plan.format],
    )


def whole_tiles(level: Level) -> tuple[int, int]:
    return level.width // level.tile_width, level.height // level.tile_height


@st.composite
def pyramids(draw: st.DrawFn, max_side: int = 20_000) -> Pyramid:
    # Mostly big enough for whole tiles; sometimes smaller than one.
    side = st.one_of(st.integers(1, max_side), *[st.integers(512, max_side)] * 3)
    width, height = draw(side), draw(side)
    count = draw(st.integers(1, 8))
    same_tiles = draw(st.booleans())
    first_tile = (draw(st.sampled_from(TILE_SIDES)), draw(st.sampled_from(TILE_SIDES)))
    decoder_levels: list[DecoderLevel] = []
    levels: list[Level] = []
    for k in range(count):
        d = 2**k
        if k == 0:
            w, h = width, height
        else:
            # ceil(W / d) as most writers do; libvips floors, others are off by one.
            w = max(1, math.ceil(width / d) + draw(st.integers(-1, 1)))
            h = max(1, math.ceil(height / d) + draw(st.integers(-1, 1)))
        if same_tiles:
            tw, th = first_tile
        else:
            tw, th = draw(st.sampled_from(TILE_SIDES)), draw(st.sampled_from(TILE_SIDES))
        untiled = k > 0 and draw(st.integers(0, 9)) == 0
        if untiled:
            tw = th = 0
        # The decoder marks only tiled levels, and only those with a whole
        # tile (passthrough.stored_levels); marking some smaller ones too
        # holds the gateway to its own whole-tile check.
        stored = not untiled and draw(st.integers(0, 4)) > 0
        decoder_levels.append(DecoderLevel(w, h, d, tw, th))
        levels.append(Level(w, h, d, tw, th, stored))
    info = ImageInfo(width, height, tuple(decoder_levels), 3, 8, SourceFormat.TIFF, False)
    return Pyramid(info, tuple(levels))


def _like(draw: st.DrawFn) -> RenderPlan:
    """Format, quality, rotation and mirror of a request: mostly a plain JPEG tile."""
    if draw(st.integers(0, 3)):
        return replace(JPEG_TILE, quality=draw(st.sampled_from(("default", "color"))))
    return replace(
        JPEG_TILE,
        format=draw(st.sampled_from(tuple(_FORMATS))),
        quality=draw(st.sampled_from(tuple(_QUALITIES))),
        rotation=draw(st.sampled_from((0.0, 90.0, 180.0, 270.0, 45.5))),
        mirror=draw(st.booleans()),
    )


def _clipped(pyramid: Pyramid, x: int, y: int, w: int, h: int) -> PixelBox:
    x = min(max(0, x), pyramid.width - 1)
    y = min(max(0, y), pyramid.height - 1)
    return PixelBox(x, y, min(max(1, w), pyramid.width - x), min(max(1, h), pyramid.height - y))


@st.composite
def requests(draw: st.DrawFn) -> tuple[Pyramid, RenderPlan]:
    """A pyramid and a render: exactly a tile as a viewer asks for it (whole or at
    the edge), a near miss of one, or anything of a tile's output size."""
    pyramid = draw(pyramids())
    like = _like(draw)
    # Mostly a level with whole stored tiles, where there is one.
    useful = [
        i
        for i, lv in enumerate(pyramid.levels)
        if lv.stored_tiles and lv.width >= lv.tile_width and lv.height >= lv.tile_height
    ]
    if useful and draw(st.integers(0, 4)) > 0:
        index = draw(st.sampled_from(useful))
    else:
        index = draw(st.integers(0, len(pyramid.levels) - 1))
    level = pyramid.levels[index]
    kind = draw(st.sampled_from(("tile", "tile", "tile", "near", "near", "random")))
    if kind == "random" or level.tile_width == 0:
        x = draw(st.integers(0, pyramid.width - 1))
        y = draw(st.integers(0, pyramid.height - 1))
        crop = PixelBox(
            x, y, draw(st.integers(1, pyramid.width - x)), draw(st.integers(1, pyramid.height - y))
        )
        side = st.sampled_from((*TILE_SIDES, 1, 100))
        return pyramid, replace(like, crop=crop, width=draw(side), height=draw(side))
    d = level.downscale
    # Mostly a whole tile of the level, else any tile of the viewer's grid
    # (edge tiles included: their box is clipped to the image).
    across, down = whole_tiles(level)
    if across == 0 or down == 0 or draw(st.integers(0, 4)) == 0:
        across = math.ceil(pyramid.width / (level.tile_width * d))
        down = math.ceil(pyramid.height / (level.tile_height * d))
    # Or a group of stored tiles (a viewer's tile of twice the size, ...).
    span = draw(st.sampled_from((1, 1, 1, 2, 2, 3, 4)))
    if span > 1:
        across, down = group_grid(level, span)
    tile = TileRef(index, draw(st.integers(0, across - 1)), draw(st.integers(0, down - 1)), span)
    plan = tile_plan(pyramid.levels, pyramid.width, pyramid.height, tile, like)
    if kind == "near":
        c = plan.crop
        dx, dy, dw, dh, ow, oh = (draw(st.integers(-1, 1)) for _ in range(6))
        plan = replace(
            plan,
            crop=_clipped(pyramid, c.x + dx, c.y + dy, c.w + dw, c.h + dh),
            width=max(1, plan.width + ow),
            height=max(1, plan.height + oh),
        )
    return pyramid, plan


def assert_decoder_sends(pyramid: Pyramid, plan: RenderPlan, got: TileRef) -> None:
    """The decoder's Render of `plan` sends what its StoredTiles sends for
    `got`: that stored tile as it is (span 1, a whole tile), else the stored
    tiles under the same box joined (decoder/pipeline/__init__.py tries
    passthrough first, then a mosaic). Levels marked stored are the ones
    whose tiles the decoder can send as stored."""
    level = pyramid.levels[got.level]
    assert level.stored_tiles
    assert 1 <= got.span <= MAX_SPAN
    box = group_box(pyramid.info.levels[got.level], got.span, got.column, got.row)
    assert box is not None, "inside the grid of groups"
    whole = got.span == 1 and (box.width, box.height) == (level.tile_width, level.tile_height)
    target = tile_for(pyramid.info, decoder_plan(plan))
    if whole:
        assert target == (got.level, got.column, got.row)
        return
    # Not a whole stored tile for Render either: it joins the same box.
    assert target is None or not pyramid.levels[target[0]].stored_tiles
    assert mosaic_box(pyramid.info, decoder_plan(plan)) == (got.level, box)
    assert tile_span(level.tile_width, level.tile_height, box) is not None


@settings(max_examples=400, deadline=None)
@given(requests())
def test_the_gateway_names_the_stored_tile_the_decoder_sends(
    request: tuple[Pyramid, RenderPlan],
) -> None:
    pyramid, plan = request
    got = stored_tile(pyramid.levels, pyramid.width, pyramid.height, plan)
    event("not a stored tile" if got is None else f"span {got.span}")
    if got is None:
        return
    assert_decoder_sends(pyramid, plan, got)


def test_the_gateway_asks_for_groups_the_decoder_joins() -> None:
    assert tile_grid.MAX_SPAN == MAX_SPAN


def pyramid_of(width: int, height: int, sizes: list[tuple[int, int]], tile: int) -> Pyramid:
    """Every level stored, in `tile` px tiles; level k has downscale 2**k."""
    levels = tuple(Level(w, h, 2**k, tile, tile, True) for k, (w, h) in enumerate(sizes))
    decoder_levels = tuple(DecoderLevel(w, h, 2**k, tile, tile) for k, (w, h) in enumerate(sizes))
    info = ImageInfo(width, height, decoder_levels, 3, 8, SourceFormat.TIFF, False)
    return Pyramid(info, levels)


@settings(max_examples=150, deadline=None)
@given(pyramids(max_side=4000), st.sampled_from(("default", "color")))
# Levels of ceil(W / d) pixels: the last whole tile of level 1 reaches one
# full-resolution pixel past the image, so its region is clipped (511 wide).
@example(pyramid_of(1023, 1023, [(1023, 1023), (512, 512), (256, 256)], 256), "default")
# Levels one pixel larger than ceil(W / d), as some writers make them.
@example(pyramid_of(1533, 1022, [(1533, 1022), (768, 512), (384, 256)], 128), "color")
def test_every_whole_stored_tile_is_found_from_its_viewer_request(
    pyramid: Pyramid, quality: IIIFQuality
) -> None:
    like = replace(JPEG_TILE, quality=quality)
    for index, level in enumerate(pyramid.levels):
        if not level.stored_tiles:
            continue
        across, down = whole_tiles(level)
        for row in range(down):
            for column in range(across):
                tile = TileRef(index, column, row)
                plan = tile_plan(pyramid.levels, pyramid.width, pyramid.height, tile, like)
                assert (plan.width, plan.height) == (level.tile_width, level.tile_height)
                assert stored_tile(pyramid.levels, pyramid.width, pyramid.height, plan) == tile
                assert tile_for(pyramid.info, decoder_plan(plan)) == (index, column, row)


@settings(max_examples=150, deadline=None)
@given(pyramids(max_side=3000), st.integers(1, MAX_SPAN))
@example(pyramid_of(1023, 1023, [(1023, 1023), (512, 512), (256, 256)], 256), 2)
def test_groups_found_from_their_viewer_request_are_what_render_sends(
    pyramid: Pyramid, span: int
) -> None:
    # Every group of the grid, edge groups included: where the viewer's
    # request for it maps back to it, Render sends the same box.
    found = 0
    for index, level in enumerate(pyramid.levels):
        across, down = group_grid(level, span)
        if not level.stored_tiles or across * down > 400:
            continue
        for row in range(down):
            for column in range(across):
                tile = TileRef(index, column, row, span)
                plan = tile_plan(pyramid.levels, pyramid.width, pyramid.height, tile, JPEG_TILE)
                got = stored_tile(pyramid.levels, pyramid.width, pyramid.height, plan)
                if got is None:
                    continue
                # Whatever the request is named as (the same box at another
                # level of the same size, an edge group as span 1), the
                # decoder sends the same for it; the batcher keeps only
                # tiles named as themselves.
                assert_decoder_sends(pyramid, plan, got)
                found += got == tile
    event(f"groups found: {min(found, 10)}")


def test_groups_of_a_libvips_pyramid_map_back() -> None:
    # 6000 x 8000 as libvips writes it (levels floored), 256 px tiles: every
    # 512 px viewer tile, edges included, is a group of the level it is at.
    sizes = [(6000, 8000), (3000, 4000), (1500, 2000), (750, 1000), (375, 500)]
    pyramid = pyramid_of(6000, 8000, sizes, 256)
    for index, level in enumerate(pyramid.levels):
        across, down = group_grid(level, 2)
        for row in range(down):
            for column in range(across):
                tile = TileRef(index, column, row, 2)
                plan = tile_plan(pyramid.levels, 6000, 8000, tile, JPEG_TILE)
                got = stored_tile(pyramid.levels, 6000, 8000, plan)
                assert got is not None, tile
                assert_decoder_sends(pyramid, plan, got)
                if (plan.width, plan.height) != (level.tile_width, level.tile_height):
                    assert got == tile


def test_viewer_tile_requests_of_a_real_pyramid() -> None:
    # 1100 x 900 in 128 px tiles, levels as libvips writes them (floored).
    sizes = [(1100, 900), (550, 450), (275, 225), (137, 112)]
    levels = tuple(Level(w, h, 2**k, 128, 128, True) for k, (w, h) in enumerate(sizes))

    def plan(x: int, y: int, w: int, h: int, out_w: int, out_h: int) -> RenderPlan:
        return replace(JPEG_TILE, crop=PixelBox(x, y, w, h), width=out_w, height=out_h)

    assert stored_tile(levels, 1100, 900, plan(384, 256, 128, 128, 128, 128)) == TileRef(0, 3, 2)
    assert stored_tile(levels, 1100, 900, plan(256, 512, 256, 256, 128, 128)) == TileRef(1, 1, 2)
    assert stored_tile(levels, 1100, 900, plan(512, 0, 512, 512, 128, 128)) == TileRef(2, 1, 0)
    # Edge tiles (stored padded) at the size they have in the level: joined
    # and cropped; at the full tile size they are not the image.
    assert stored_tile(levels, 1100, 900, plan(1024, 0, 76, 128, 76, 128)) == TileRef(0, 8, 0)
    assert stored_tile(levels, 1100, 900, plan(1024, 0, 76, 128, 128, 128)) is None
    assert stored_tile(levels, 1100, 900, plan(0, 896, 128, 4, 128, 4)) == TileRef(0, 0, 7)
    # 256 px viewer tiles: groups of 2 x 2 stored tiles, edges included.
    assert stored_tile(levels, 1100, 900, plan(0, 0, 256, 256, 256, 256)) == TileRef(0, 0, 0, 2)
    assert stored_tile(levels, 1100, 900, plan(512, 0, 512, 512, 256, 256)) == TileRef(1, 1, 0, 2)
    assert stored_tile(levels, 1100, 900, plan(1024, 0, 76, 512, 38, 256)) == TileRef(1, 2, 0, 2)
    assert stored_tile(levels, 1100, 900, plan(1024, 768, 76, 132, 76, 132)) == TileRef(0, 4, 3, 2)
    # Near misses: shifted, another size, another output, off the group grid.
    assert stored_tile(levels, 1100, 900, plan(64, 0, 128, 128, 128, 128)) is None
    assert stored_tile(levels, 1100, 900, plan(0, 0, 128, 127, 128, 128)) is None
    assert stored_tile(levels, 1100, 900, plan(0, 0, 128, 128, 64, 64)) is None
    assert stored_tile(levels, 1100, 900, plan(128, 0, 256, 256, 256, 256)) is None
    assert stored_tile(levels, 1100, 900, plan(0, 0, 256, 128, 256, 128)) is None
    # More than 4 x 4 stored tiles: rendered.
    assert stored_tile(levels, 1100, 900, plan(0, 0, 640, 640, 640, 640)) is None
    # A level without stored tiles is never named.
    unstored = (levels[0], replace(levels[1], stored_tiles=False), *levels[2:])
    assert stored_tile(unstored, 1100, 900, plan(256, 512, 256, 256, 128, 128)) is None
    assert stored_tile(unstored, 1100, 900, plan(512, 0, 512, 512, 256, 256)) is None


# -- batches --------------------------------------------------------------------


@st.composite
def batch_cases(draw: st.DrawFn) -> tuple[tuple[Level, ...], TileRef, int]:
    """A level (among others), one of its groups of a span, a side."""
    tw, th = draw(st.sampled_from(TILE_SIDES)), draw(st.sampled_from(TILE_SIDES))
    width = draw(st.integers(1, 40 * tw))
    height = draw(st.integers(1, 40 * th))
    index = draw(st.integers(0, 3))
    d = 2**index
    others = [Level(width * d // 2**k, height * d // 2**k, 2**k, tw, th, True) for k in range(4)]
    levels = (*others[:index], Level(width, height, d, tw, th, True), *others[index + 1 :])
    span = draw(st.integers(1, MAX_SPAN))
    across, down = group_grid(levels[index], span)
    tile = TileRef(index, draw(st.integers(0, across - 1)), draw(st.integers(0, down - 1)), span)
    return levels, tile, draw(st.integers(1, 16))


@settings(max_examples=500, deadline=None)
@given(batch_cases())
def test_batch_around_is_the_aligned_square_holding_the_tile(
    case: tuple[tuple[Level, ...], TileRef, int],
) -> None:
    levels, tile, side = case
    batch = batch_around(levels, tile, side)
    across, down = whole_tiles(levels[tile.level])
    if tile.span > 1 or tile.column >= across or tile.row >= down:
        # A group or an edge tile: a mosaic each, so only the one asked for.
        assert batch == TileBatch(tile.level, tile.column, tile.row, 1, 1, tile.span)
        return
    assert (batch.level, batch.span) == (tile.level, 1)
    # Aligned: every tile of a square names the same batch.
    assert batch.column % side == 0
    assert batch.row % side == 0
    assert batch.column <= tile.column < batch.column + batch.columns
    assert batch.row <= tile.row < batch.row + batch.rows
    # Within the grid of whole tiles, never more than side x side, and only
    # smaller where the grid ends.
    assert 1 <= batch.columns <= side
    assert 1 <= batch.rows <= side
    assert batch.column + batch.columns <= across
    assert batch.row + batch.rows <= down
    assert batch.columns == side or batch.column + batch.columns == across
    assert batch.rows == side or batch.row + batch.rows == down
    tiles = list(batch.tiles())
    assert len(tiles) == batch.columns * batch.rows
    for other in tiles:
        assert batch_around(levels, other, side) == batch


def test_batch_tiles_run_row_by_row() -> None:
    batch = TileBatch(level=2, column=4, row=8, columns=3, rows=2, span=2)
    assert list(batch.tiles()) == [
        TileRef(2, 4, 8, 2),
        TileRef(2, 5, 8, 2),
        TileRef(2, 6, 8, 2),
        TileRef(2, 4, 9, 2),
        TileRef(2, 5, 9, 2),
        TileRef(2, 6, 9, 2),
    ]


def test_batch_around_clips_at_the_grid_edge() -> None:
    # 1100 x 900 in 128 px tiles: 8 x 7 whole tiles, and a partial column
    # and row past them.
    levels = (Level(1100, 900, 1, 128, 128, True),)
    assert batch_around(levels, TileRef(0, 1, 2), 4) == TileBatch(0, 0, 0, 4, 4)
    assert batch_around(levels, TileRef(0, 7, 6), 4) == TileBatch(0, 4, 4, 4, 3)
    assert batch_around(levels, TileRef(0, 5, 3), 3) == TileBatch(0, 3, 3, 3, 3)
    assert batch_around(levels, TileRef(0, 7, 6), 3) == TileBatch(0, 6, 6, 2, 1)
    assert batch_around(levels, TileRef(0, 7, 6), 1) == TileBatch(0, 7, 6, 1, 1)
    # Edge tiles and groups come alone.
    assert batch_around(levels, TileRef(0, 8, 2), 4) == TileBatch(0, 8, 2, 1, 1)
    assert batch_around(levels, TileRef(0, 3, 7), 4) == TileBatch(0, 3, 7, 1, 1)
    assert batch_around(levels, TileRef(0, 1, 1, 2), 4) == TileBatch(0, 1, 1, 1, 1, 2)


# -- what keeps a stored tile's bytes -------------------------------------------


TILE_256 = replace(JPEG_TILE, crop=PixelBox(0, 0, 256, 256), width=256, height=256)


@pytest.mark.parametrize(
    ("plan", "keeps"),
    [
        (TILE_256, True),
        (replace(TILE_256, quality="color"), True),
        (replace(TILE_256, format="png"), False),
        (replace(TILE_256, format="webp"), False),
        (replace(TILE_256, format="tif"), False),
        (replace(TILE_256, quality="gray"), False),
        (replace(TILE_256, quality="bitonal"), False),
        (replace(TILE_256, rotation=90.0), False),
        (replace(TILE_256, rotation=180.0), False),
        (replace(TILE_256, rotation=0.5), False),
        (replace(TILE_256, mirror=True), False),
        (replace(TILE_256, mirror=True, rotation=180.0), False),
    ],
    ids=lambda v: "" if isinstance(v, bool) else f"{v.format}-{v.quality}-{v.rotation}-{v.mirror}",
)
def test_sends_stored_bytes(plan: RenderPlan, keeps: bool) -> None:
    assert sends_stored_bytes(plan) is keeps
    levels = (Level(1024, 1024, 1, 256, 256, True),)
    assert (stored_tile(levels, 1024, 1024, plan) is not None) is keeps
