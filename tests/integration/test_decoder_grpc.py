"""The decoder on its own, over real gRPC: how an internal service would use it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import pyvips
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from iiif_decoder.v1 import decoder_pb2 as pb
from iiif_decoder.v1 import decoder_pb2_grpc

from tests import processes
from tests.conftest import Stack, start_decoder

pytestmark = pytest.mark.integration

SOURCES: dict[str, int] = {
    "sample-tiled": pb.SOURCE_FORMAT_JPEG2000,
    "sample-pyramid": pb.SOURCE_FORMAT_TIFF,
    "sample-photo": pb.SOURCE_FORMAT_JPEG,
    "sample-png": pb.SOURCE_FORMAT_PNG,
}
OUTPUTS: dict[int, tuple[str, str]] = {
    pb.OUTPUT_FORMAT_JPEG: ("image/jpeg", "jpegload"),
    pb.OUTPUT_FORMAT_PNG: ("image/png", "pngload"),
    pb.OUTPUT_FORMAT_WEBP: ("image/webp", "webpload"),
    pb.OUTPUT_FORMAT_TIFF: ("image/tiff", "tiffload"),
    pb.OUTPUT_FORMAT_GIF: ("image/gif", "gifload"),
    pb.OUTPUT_FORMAT_JP2: ("image/jp2", "jp2kload"),
}


@pytest.fixture(scope="module")
def channel(stack: Stack) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(stack.decoder_target) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> decoder_pb2_grpc.DecoderStub:
    return decoder_pb2_grpc.DecoderStub(channel)


def render(
    stub: decoder_pb2_grpc.DecoderStub, **fields: object
) -> tuple[pb.RenderHeader, bytes, list[int]]:
    chunks = list(stub.Render(pb.RenderRequest(**fields), timeout=60))  # type: ignore[arg-type]
    assert chunks, "no messages"
    assert chunks[0].HasField("header"), "the first message must be the header"
    sizes = [len(c.data) for c in chunks[1:]]
    assert all(c.HasField("data") for c in chunks[1:])
    return chunks[0].header, b"".join(c.data for c in chunks[1:]), sizes


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    """The error a unary call raises, or a streaming call raises while read."""
    try:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    except grpc.RpcError as exc:
        return exc
    pytest.fail("the call succeeded; an error was expected")


@pytest.mark.parametrize(("identifier", "fmt"), SOURCES.items())
def test_describe(stub: decoder_pb2_grpc.DecoderStub, identifier: str, fmt: int) -> None:
    desc = stub.Describe(pb.DescribeRequest(identifier=identifier), timeout=30)
    assert desc.format == fmt
    assert (desc.width, desc.height) == (desc.levels[0].width, desc.levels[0].height)
    assert desc.levels[0].downscale == 1
    assert [lv.downscale for lv in desc.levels] == sorted(lv.downscale for lv in desc.levels)
    assert desc.bands in (1, 3, 4)
    assert desc.bits_per_sample == 8
    assert desc.version
    assert desc.size_bytes > 0
    assert desc.last_modified.seconds > 0


def test_describe_reports_real_levels_and_tiles(stub: decoder_pb2_grpc.DecoderStub) -> None:
    jp2 = stub.Describe(pb.DescribeRequest(identifier="sample-tiled"), timeout=30)
    tif = stub.Describe(pb.DescribeRequest(identifier="sample-pyramid"), timeout=30)
    for desc in (jp2, tif):
        assert len(desc.levels) >= 3
        assert (desc.tile_width, desc.tile_height) == (256, 256)
        for lv in desc.levels:
            assert lv.width == -(-desc.width // lv.downscale)
    # Small JPEG 2000 regions are decoded and cached as 1024 px blocks; TIFF
    # tiles are not, so callers have nothing to route by for them.
    assert (jp2.cache_block, tif.cache_block) == (1024, 0)
    assert jp2.decoder_id
    assert jp2.decoder_id == tif.decoder_id, "one decoder process answered both"


@pytest.mark.parametrize("identifier", SOURCES)
@pytest.mark.parametrize("fmt", OUTPUTS)
def test_every_format_in_and_out(
    stub: decoder_pb2_grpc.DecoderStub, identifier: str, fmt: int
) -> None:
    header, data, _ = render(
        stub,
        identifier=identifier,
        region=pb.Region(x=10, y=20, width=300, height=200),
        width=150,
        height=100,
        format=fmt,
    )
    content_type, loader = OUTPUTS[fmt]
    assert header.content_type == content_type
    assert header.content_length == len(data)
    image = pyvips.Image.new_from_buffer(data, "")
    assert image.get("vips-loader").startswith(loader)
    assert (image.width, image.height) == (150, 100)


@pytest.mark.parametrize(
    ("rotation", "mirror", "size"),
    [(0, False, (120, 80)), (90, False, (80, 120)), (180, True, (120, 80)), (270, True, (80, 120))],
)
def test_right_angle_rotations(
    stub: decoder_pb2_grpc.DecoderStub, rotation: float, mirror: bool, size: tuple[int, int]
) -> None:
    _, data, _ = render(
        stub,
        identifier="sample-photo",
        width=120,
        height=80,
        rotation=rotation,
        mirror=mirror,
        format=pb.OUTPUT_FORMAT_PNG,
    )
    image = pyvips.Image.new_from_buffer(data, "")
    assert (image.width, image.height) == size


def test_arbitrary_rotation_has_transparent_corners_in_png(
    stub: decoder_pb2_grpc.DecoderStub,
) -> None:
    _, data, _ = render(
        stub,
        identifier="sample-photo",
        width=120,
        height=80,
        rotation=30,
        format=pb.OUTPUT_FORMAT_PNG,
    )
    image = pyvips.Image.new_from_buffer(data, "")
    assert image.hasalpha()
    assert image.width > 120
    assert image.height > 80
    assert image.getpoint(0, 0)[-1] == 0


def test_arbitrary_rotation_has_white_corners_in_jpeg(stub: decoder_pb2_grpc.DecoderStub) -> None:
    _, data, _ = render(
        stub,
        identifier="sample-photo",
        width=120,
        height=80,
        rotation=30,
        format=pb.OUTPUT_FORMAT_JPEG,
    )
    image = pyvips.Image.new_from_buffer(data, "")
    assert min(image.getpoint(0, 0)) > 240


@pytest.mark.parametrize("identifier", SOURCES)
def test_qualities(stub: decoder_pb2_grpc.DecoderStub, identifier: str) -> None:
    def load(quality: int) -> pyvips.Image:
        _, data, _ = render(
            stub,
            identifier=identifier,
            width=100,
            height=75,
            quality=quality,
            format=pb.OUTPUT_FORMAT_PNG,
        )
        return pyvips.Image.new_from_buffer(data, "")

    assert load(pb.QUALITY_COLOR).bands == 3
    assert load(pb.QUALITY_GRAY).bands == 1
    bitonal = load(pb.QUALITY_BITONAL)
    assert bitonal.bands == 1
    histogram = bitonal.hist_find().tolist()[0]
    assert all(count == 0 for value, count in enumerate(histogram) if value not in (0, 255))


def test_large_output_streams_in_bounded_chunks(stub: decoder_pb2_grpc.DecoderStub) -> None:
    header, data, sizes = render(
        stub,
        identifier="sample-photo",
        width=1200,
        height=900,
        format=pb.OUTPUT_FORMAT_PNG,
    )
    assert len(sizes) > 1, "a large PNG must arrive in several chunks"
    assert max(sizes) <= 256 * 1024
    assert header.content_length == len(data)


def test_not_found(stub: decoder_pb2_grpc.DecoderStub) -> None:
    err = rpc_error(lambda: stub.Describe(pb.DescribeRequest(identifier="nope"), timeout=10))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    err = rpc_error(
        lambda: stub.Render(pb.RenderRequest(identifier="nope", width=1, height=1), timeout=10)
    )
    assert err.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("identifier", ["../etc/passwd", "/etc/passwd", "a\x00b", ""])
def test_unsafe_identifiers(stub: decoder_pb2_grpc.DecoderStub, identifier: str) -> None:
    err = rpc_error(lambda: stub.Describe(pb.DescribeRequest(identifier=identifier), timeout=10))
    assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)


@pytest.mark.parametrize("identifier", ["corrupt-truncated", "corrupt-empty", "corrupt-text"])
def test_corrupt_sources(stub: decoder_pb2_grpc.DecoderStub, identifier: str) -> None:
    err = rpc_error(
        lambda: stub.Render(
            pb.RenderRequest(identifier=identifier, width=10, height=10), timeout=30
        )
    )
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details()
    # ... and the decoder keeps serving others.
    assert stub.Describe(pb.DescribeRequest(identifier="sample-photo"), timeout=10).width > 0


@pytest.mark.parametrize(
    "fields",
    [
        {"region": pb.Region(x=0, y=0, width=5000, height=10), "width": 10, "height": 10},
        {"region": pb.Region(x=0, y=0, width=0, height=10), "width": 10, "height": 10},
        {"width": 0, "height": 10},
        {"width": 10, "height": 10, "rotation": 360.0},
        {"width": 10, "height": 10, "rotation": float("nan")},
        {"width": 100_000, "height": 10},
        {"width": 10, "height": 10, "format": 99},
    ],
)
def test_invalid_plans(stub: decoder_pb2_grpc.DecoderStub, fields: dict[str, object]) -> None:
    err = rpc_error(
        lambda: stub.Render(pb.RenderRequest(identifier="sample-photo", **fields), timeout=10)  # type: ignore[arg-type]
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details()


def test_expected_version_mismatch_is_aborted(stub: decoder_pb2_grpc.DecoderStub) -> None:
    err = rpc_error(
        lambda: stub.Render(
            pb.RenderRequest(
                identifier="sample-photo", width=10, height=10, expected_version="stale"
            ),
            timeout=10,
        )
    )
    assert err.code() == grpc.StatusCode.ABORTED


def test_health_and_reflection(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = list(
        stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
    )
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"iiif.decoder.v1.Decoder", "grpc.health.v1.Health"} <= names


def test_output_pixel_cap(stub: decoder_pb2_grpc.DecoderStub) -> None:
    """Upscaling must not be a way to allocate gigapixels."""
    err = rpc_error(
        lambda: stub.Render(
            pb.RenderRequest(identifier="sample-photo", width=60_000, height=60_000), timeout=10
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "limit" in (err.details() or "")


# -- StoredTiles --------------------------------------------------------------------


def stored_tiles(stub: decoder_pb2_grpc.DecoderStub, **fields: object) -> list[pb.StoredTile]:
    return list(stub.StoredTiles(pb.StoredTilesRequest(**fields), timeout=30))  # type: ignore[arg-type]


def has_whole_tile(desc: pb.DescribeResponse, level: int) -> bool:
    lv = desc.levels[level]
    return lv.width >= lv.tile_width > 0 and lv.height >= lv.tile_height > 0


def test_describe_marks_levels_with_stored_tiles(stub: decoder_pb2_grpc.DecoderStub) -> None:
    tif = stub.Describe(pb.DescribeRequest(identifier="sample-pyramid"), timeout=30)
    # 1200 x 900 in 256 px JPEG tiles: levels 0 (4 x 3 whole tiles) and 1
    # (600 x 450: 2 x 1) at least.
    with_tiles = [i for i in range(len(tif.levels)) if has_whole_tile(tif, i)]
    assert with_tiles[:2] == [0, 1]
    assert all(tif.levels[i].stored_tiles for i in with_tiles)
    for identifier in ("sample-tiled", "sample-photo", "sample-png"):
        desc = stub.Describe(pb.DescribeRequest(identifier=identifier), timeout=30)
        assert desc.levels
        assert not any(lv.stored_tiles for lv in desc.levels), identifier


@pytest.mark.parametrize(
    ("level", "span", "column", "row", "columns", "rows", "expected"),
    [
        # Columns 1..4 of rows 0..1 at level 0; column 4 is the partial
        # edge (1200 - 4 * 256 = 176 px): joined and cropped.
        (0, 1, 1, 0, 4, 2, [(c, r) for r in range(2) for c in range(1, 5)]),
        # Level 1 is 600 x 450: 3 x 2 tiles, edges included; the rectangle
        # is clipped to the grid.
        (1, 1, 0, 0, 16, 16, [(c, r) for r in range(2) for c in range(3)]),
        # 512 px groups of 2 x 2 tiles: 3 x 2 of them on level 0, 2 x 1 on
        # level 1; span 0 is span 1.
        (0, 2, 0, 0, 8, 8, [(c, r) for r in range(2) for c in range(3)]),
        (1, 2, 0, 0, 8, 8, [(0, 0), (1, 0)]),
        (1, 0, 1, 1, 1, 1, [(1, 1)]),
    ],
)
def test_stored_tiles_are_what_render_returns_for_each_tile(
    stub: decoder_pb2_grpc.DecoderStub,
    level: int,
    span: int,
    column: int,
    row: int,
    columns: int,
    rows: int,
    expected: list[tuple[int, int]],
) -> None:
    desc = stub.Describe(pb.DescribeRequest(identifier="sample-pyramid"), timeout=30)
    lv = desc.levels[level]

    tiles = stored_tiles(
        stub,
        identifier="sample-pyramid",
        level=level,
        span=span,
        column=column,
        row=row,
        columns=columns,
        rows=rows,
    )

    assert [(t.column, t.row) for t in tiles] == expected
    d = lv.downscale
    group_w, group_h = max(1, span) * lv.tile_width, max(1, span) * lv.tile_height
    for tile in tiles:
        assert tile.content_type == "image/jpeg"
        assert tile.version == desc.version
        assert tile.decoder_id
        assert tile.decoder_id == desc.decoder_id
        # The group's box in the level, clipped to it.
        x, y = tile.column * group_w, tile.row * group_h
        w, h = min(group_w, lv.width - x), min(group_h, lv.height - y)
        # A stand-alone JPEG: strict libjpeg decodes its pixels.
        image = pyvips.Image.jpegload_buffer(tile.data, fail=True)
        image.avg()
        assert (image.width, image.height) == (w, h)
        # The IIIF request for exactly this box: times the downscale,
        # clipped to the image, at the box's size.
        header, data, _ = render(
            stub,
            identifier="sample-pyramid",
            region=pb.Region(
                x=x * d,
                y=y * d,
                width=min(group_w * d, desc.width - x * d),
                height=min(group_h * d, desc.height - y * d),
            ),
            width=w,
            height=h,
            format=pb.OUTPUT_FORMAT_JPEG,
        )
        assert header.content_type == tile.content_type
        assert data == tile.data, (tile.column, tile.row)


def test_stored_tiles_with_the_current_version(stub: decoder_pb2_grpc.DecoderStub) -> None:
    desc = stub.Describe(pb.DescribeRequest(identifier="sample-pyramid"), timeout=30)
    # 16 x 16 is the largest rectangle; clipped to level 0's 5 x 4 tiles.
    tiles = stored_tiles(
        stub,
        identifier="sample-pyramid",
        columns=16,
        rows=16,
        expected_version=desc.version,
    )
    assert [(t.column, t.row) for t in tiles] == [(c, r) for r in range(4) for c in range(5)]
    assert len({t.data for t in tiles}) == len(tiles)


def test_stored_tiles_of_chosen_cells(stub: decoder_pb2_grpc.DecoderStub) -> None:
    """Cells instead of a rectangle: those groups, in the order asked, each
    once, cells past the grid skipped; the same bytes as the rectangle's."""
    rectangle = {
        (t.column, t.row): t.data
        for t in stored_tiles(
            stub, identifier="sample-pyramid", span=2, columns=4, rows=4, expected_version=""
        )
    }
    asked = [(2, 1), (0, 0), (9, 9), (2, 1), (1, 1)]

    tiles = stored_tiles(
        stub,
        identifier="sample-pyramid",
        span=2,
        cells=[pb.GridCell(column=c, row=r) for c, r in asked],
    )

    assert [(t.column, t.row) for t in tiles] == [(2, 1), (0, 0), (1, 1)]
    for t in tiles:
        assert t.data == rectangle[(t.column, t.row)]


def test_stored_tiles_packed_come_in_one_message(stub: decoder_pb2_grpc.DecoderStub) -> None:
    """A packed answer: the same groups in the same order, the first in the
    message's own fields and the others in `more`; one message here (well
    under 1 MiB)."""
    fields: dict[str, object] = dict(identifier="sample-pyramid", span=2, columns=4, rows=4)
    one_each = stored_tiles(stub, **fields)

    messages = stored_tiles(stub, packed=True, **fields)

    assert len(one_each) > 1
    assert len(messages) == 1
    message = messages[0]
    assert message.version == one_each[0].version
    assert message.decoder_id == one_each[0].decoder_id
    assert not any(more.more for more in message.more)
    packed = [(message.column, message.row, message.content_type, message.data)] + [
        (more.column, more.row, more.content_type, more.data) for more in message.more
    ]
    assert packed == [(t.column, t.row, t.content_type, t.data) for t in one_each]


@pytest.mark.parametrize(
    "fields",
    [
        {"columns": 16, "rows": 16},
        {"level": 1, "span": 2, "columns": 8, "rows": 8},
        {"span": 2, "cells": [pb.GridCell(column=c, row=r) for c, r in [(2, 1), (9, 9), (0, 0)]]},
        {"level": 1, "column": 9, "row": 9, "columns": 1, "rows": 1},
    ],
    ids=["rectangle", "groups", "cells", "past-the-grid"],
)
def test_stored_tiles_at_once_answers_what_the_stream_does(
    stub: decoder_pb2_grpc.DecoderStub, fields: dict[str, object]
) -> None:
    desc = stub.Describe(pb.DescribeRequest(identifier="sample-pyramid"), timeout=30)
    streamed = stored_tiles(stub, identifier="sample-pyramid", **fields)

    reply = stub.StoredTilesAtOnce(
        pb.StoredTilesRequest(identifier="sample-pyramid", **fields),  # type: ignore[arg-type]
        timeout=30,
    )

    assert [(t.column, t.row, t.content_type, t.data) for t in reply.tiles] == [
        (t.column, t.row, t.content_type, t.data) for t in streamed
    ]
    assert reply.version == desc.version
    assert reply.decoder_id == desc.decoder_id
    assert not any(t.version or t.decoder_id or t.more for t in reply.tiles)


def test_stored_tiles_level_just_past_the_last(stub: decoder_pb2_grpc.DecoderStub) -> None:
    desc = stub.Describe(pb.DescribeRequest(identifier="sample-pyramid"), timeout=30)
    last = len(desc.levels) - 1
    # The smallest level exists (its one tile, cropped); the one after it does not.
    (smallest,) = stored_tiles(stub, identifier="sample-pyramid", level=last, columns=1, rows=1)
    image = pyvips.Image.jpegload_buffer(smallest.data, fail=True)
    assert (image.width, image.height) == (desc.levels[last].width, desc.levels[last].height)
    err = rpc_error(
        lambda: stored_tiles(stub, identifier="sample-pyramid", level=last + 1, columns=1, rows=1)
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"identifier": "nope"}, grpc.StatusCode.NOT_FOUND),
        ({"identifier": "sample-pyramid", "level": 99}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"identifier": "sample-pyramid", "columns": 0}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"identifier": "sample-pyramid", "rows": 0}, grpc.StatusCode.INVALID_ARGUMENT),
        (
            {"identifier": "sample-pyramid", "columns": 16, "rows": 17},
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            {"identifier": "sample-pyramid", "columns": 257, "rows": 1},
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        (
            {"identifier": "sample-pyramid", "columns": 8, "rows": 9, "span": 2},
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        ({"identifier": "sample-pyramid", "span": 5}, grpc.StatusCode.INVALID_ARGUMENT),
        (
            {
                "identifier": "sample-pyramid",
                "span": 2,
                "cells": [pb.GridCell(column=c, row=r) for c in range(5) for r in range(13)],
            },
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
        ({"identifier": "sample-tiled"}, grpc.StatusCode.FAILED_PRECONDITION),
        ({"identifier": "sample-photo"}, grpc.StatusCode.FAILED_PRECONDITION),
        (
            {"identifier": "sample-pyramid", "expected_version": "stale"},
            grpc.StatusCode.ABORTED,
        ),
    ],
    ids=[
        "unknown",
        "level-out-of-range",
        "no-columns",
        "no-rows",
        "272-tiles",
        "257-tiles",
        "288-tiles-in-groups",
        "span-5",
        "260-tiles-in-cells",
        "jp2",
        "jpeg",
        "stale-version",
    ],
)
def test_stored_tiles_errors(
    stub: decoder_pb2_grpc.DecoderStub, fields: dict[str, object], code: grpc.StatusCode
) -> None:
    request: dict[str, object] = {"columns": 2, "rows": 2, **fields}
    err = rpc_error(lambda: stored_tiles(stub, **request))
    assert err.code() == code
    assert err.details()
    at_once = rpc_error(
        lambda: stub.StoredTilesAtOnce(pb.StoredTilesRequest(**request), timeout=30)  # type: ignore[arg-type]
    )
    assert (at_once.code(), at_once.details()) == (code, err.details())


@pytest.mark.parametrize(("setting", "module"), [("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_the_decoder_serves_on_either_event_loop(
    image_root: Path, tmp_path: Path, setting: str, module: str
) -> None:
    proc, target = start_decoder(
        image_root, tmp_path, f"decoder-{setting}", {"IIIF_DECODER_EVENT_LOOP": setting}
    )
    try:
        with grpc.insecure_channel(target) as ch:
            stub = decoder_pb2_grpc.DecoderStub(ch)
            desc = stub.Describe(pb.DescribeRequest(identifier="sample-pyramid"), timeout=30)
            assert desc.width > 0
            tiles = list(
                stub.StoredTiles(
                    pb.StoredTilesRequest(identifier="sample-pyramid", level=0, columns=2, rows=1),
                    timeout=30,
                )
            )
            assert len(tiles) == 2
            assert all(t.data[:2] == b"\xff\xd8" for t in tiles)
    finally:
        processes.stop(proc)
    listening = [
        json.loads(line)
        for line in (tmp_path / f"decoder-{setting}.log").read_text().splitlines()
        if '"decoder listening"' in line
    ]
    assert [entry["event_loop"].split(".")[0] for entry in listening] == [module]
