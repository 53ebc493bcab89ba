"""The S3 source end to end, in process: moto over real HTTP behind the fault
proxy, aioboto3 as in production, the production ImageService and libvips.

Assertions are about work (GETs, bytes, budget), never about time.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from decoder import levelcache
from decoder.budget import SourceOverloaded
from decoder.engines.base import ImageInfo
from decoder.engines.registry import EngineRegistry, registry_for
from decoder.pipeline import passthrough
from decoder.plan import Box, OutputFormat, Plan
from decoder.service import ImageService, TileRect
from decoder.sources.base import InvalidIdentifier, ObjectNotFound, SourceUnavailable
from decoder.sources.filesystem import FileReader, FilesystemSource
from decoder.sources.object_index import ObjectIndex
from decoder.sources.readahead import ReadPolicy, expected_cost
from decoder.sources.s3 import S3Source, SourceAccessDenied
from tests.integration import s3support
from tests.integration.s3support import S3Images, image_service, s3_source
from tests.s3proxy import Fault, ProxyThread, Record

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# Fixtures shared by the S3 test modules.
moto_endpoint = s3support.moto_endpoint
s3_images = s3support.s3_images
proxy = s3support.proxy
fresh_proxy = s3support.fresh_proxy
decode_pool = s3support.decode_pool


@pytest.fixture(autouse=True)
def no_level_cache() -> Iterator[None]:
    # Decoded small levels would answer from memory and hide the reads
    # these tests count: every render here decodes from the source.
    levelcache.configure(max_bytes=0)
    yield
    levelcache.configure()


def tile_plan(x: int, y: int, size: int = 256) -> object:
    """make_plan for a full-resolution `size` tile at tile column x, row y, as PNG."""

    def make(info: ImageInfo) -> Plan:
        box = Box(
            x * size, y * size, min(size, info.width - x * size), min(size, info.height - y * size)
        )
        return Plan(region=box, width=box.width, height=box.height, format=OutputFormat.PNG)

    return make


def full_plan(width: int) -> object:
    def make(info: ImageInfo) -> Plan:
        height = max(1, round(info.height * width / info.width))
        return Plan(
            region=Box(0, 0, info.width, info.height),
            width=width,
            height=height,
            format=OutputFormat.PNG,
        )

    return make


async def render(service: ImageService, identifier: str, make: object) -> bytes:
    return (await service.render(identifier, make)).data  # type: ignore[arg-type]


async def local(images: S3Images, pool: ThreadPoolExecutor, identifier: str, make: object) -> bytes:
    return await render(image_service(FilesystemSource(images.root), pool), identifier, make)


# -- correctness ------------------------------------------------------------------


_CASES = {
    "tiled-tile": ("tiled", tile_plan(1, 2)),
    "tiled-full": ("tiled", full_plan(300)),
    "untiled-tile": ("untiled", tile_plan(1, 1)),
    "pyramid-tile": ("pyramid", tile_plan(3, 0)),
    "pyramid-full": ("pyramid", full_plan(200)),
    "jpeg": ("photo", full_plan(400)),
    "png": ("png", full_plan(150)),
}
# Small blocks and no whole-object fetch exercise block reads, read-ahead and
# short reads on these small files; one case per reading pattern is enough.
_SMALL_BLOCKS = ("tiled-tile", "untiled-tile", "pyramid-tile", "png")
_PARAMS = [(blocks, *_CASES[name]) for name in _CASES for blocks in ("default",)] + [
    ("small-blocks", *_CASES[name]) for name in _SMALL_BLOCKS
]
_IDS = [f"default-{n}" for n in _CASES] + [f"small-blocks-{n}" for n in _SMALL_BLOCKS]


@pytest.mark.parametrize(("blocks", "identifier", "make"), _PARAMS, ids=_IDS)
async def test_pixels_equal_local_copy(
    fresh_proxy: ProxyThread,
    s3_images: S3Images,
    decode_pool: ThreadPoolExecutor,
    identifier: str,
    make: object,
    blocks: str,
) -> None:
    overrides = (
        {"block_size": 64 * 1024, "whole_object_bytes": 0, "max_segment_bytes": 128 * 1024}
        if blocks == "small-blocks"
        else {}
    )
    source = s3_source(fresh_proxy.url, **overrides)
    try:
        service = image_service(source, decode_pool)
        expected = await local(s3_images, decode_pool, identifier, make)
        assert await render(service, identifier, make) == expected
        await source.wait_for_indexes()
        # Again with the index (and cache) warm, and once more fully cold
        # but for the index: same pixels.
        assert await render(service, identifier, make) == expected
        source.cache.clear()
        assert await render(service, identifier, make) == expected
        assert source.budget.in_use == 0
    finally:
        await source.aclose()


async def test_identifier_with_or_without_extension(
    fresh_proxy: ProxyThread, s3_images: S3Images
) -> None:
    source = s3_source(fresh_proxy.url)
    try:
        with_ext = await source.stat("tiled.jp2")
        without = await source.stat("tiled")
        assert with_ext == without
        assert with_ext.key == "s3://images/tiled.jp2"
        fresh_proxy.reset()
        await source.stat("tiled")  # resolution and HEAD cached
        assert fresh_proxy.count() == 0
        with pytest.raises(ObjectNotFound):
            await source.stat("no-such-image")
        with pytest.raises(InvalidIdentifier):
            await source.stat("../etc/passwd")
        with pytest.raises(InvalidIdentifier):
            await source.stat("s3://other-bucket/tiled.jp2")
    finally:
        await source.aclose()


async def test_allow_listed_bucket_identifiers(
    fresh_proxy: ProxyThread, s3_images: S3Images
) -> None:
    source = s3_source(fresh_proxy.url, allowed_buckets=frozenset({"images"}))
    try:
        assert (await source.stat("s3://images/photo")).key == "s3://images/photo.jpg"
        with pytest.raises(InvalidIdentifier):
            await source.stat("s3://secrets/photo.jpg")
    finally:
        await source.aclose()


# -- round trips and bytes ----------------------------------------------------------


async def _warm(source: S3Source, service: ImageService, identifier: str) -> None:
    await render(service, identifier, tile_plan(0, 0))
    await source.wait_for_indexes()
    source.cache.clear()  # only the index stays warm


async def gets_with_warm_index(
    proxy: ProxyThread,
    images: S3Images,
    pool: ThreadPoolExecutor,
    identifier: str,
    make: object,
    engines: EngineRegistry | None = None,
) -> tuple[list[Record], ObjectIndex | None]:
    """The GETs of one render of `identifier` once its index is warm and the
    block cache empty, and that index; the pixels are checked against a
    render of the local copy with the same engines."""
    # A generous request timeout: on a starved machine a GET that timed out
    # and was sent again would count its bytes twice.
    source = s3_source(proxy.url, request_timeout_s=60.0)
    try:
        service = image_service(source, pool, engines=engines)
        await _warm(source, service, identifier)
        proxy.reset()
        data = await render(service, identifier, make)
        local_service = image_service(FilesystemSource(images.root), pool, engines=engines)
        assert data == await render(local_service, identifier, make)
        stat = await source.stat(identifier)
        gets = [r for r in proxy.records() if r.method == "GET"]
        return gets, source.index_of(stat.key, stat.version)
    finally:
        await source.aclose()


async def test_tiled_jp2_tile_with_warm_index(
    fresh_proxy: ProxyThread, s3_images: S3Images, decode_pool: ThreadPoolExecutor
) -> None:
    gets, index = await gets_with_warm_index(
        fresh_proxy, s3_images, decode_pool, "tiled", tile_plan(2, 1)
    )
    assert index is not None
    assert index.tiled
    assert index.kind == "jp2"
    got, size = sum(r.body_bytes for r in gets), s3_images.size("tiled")
    print(f"tiled JP2 tile, warm index: {len(gets)} GETs, {got} of {size} bytes")
    assert len(gets) <= 2
    assert got < size / 10


async def test_pyramid_tiff_tile_with_warm_index(
    fresh_proxy: ProxyThread, s3_images: S3Images, decode_pool: ThreadPoolExecutor
) -> None:
    gets, _index = await gets_with_warm_index(
        fresh_proxy, s3_images, decode_pool, "pyramid", tile_plan(1, 3)
    )
    got, size = sum(r.body_bytes for r in gets), s3_images.size("pyramid")
    print(f"pyramid TIFF tile, warm index: {len(gets)} GETs, {got} of {size} bytes")
    assert len(gets) <= 2
    assert got < size / 10


async def test_whole_tiled_jp2_with_warm_index_is_a_few_parallel_gets(
    fresh_proxy: ProxyThread, s3_images: S3Images, decode_pool: ThreadPoolExecutor
) -> None:
    # The production engine (OpenJPEG direct): the render announces every
    # tile-part it will read, fetched as a few coalesced GETs, not one each.
    gets, index = await gets_with_warm_index(
        fresh_proxy, s3_images, decode_pool, "tiled", full_plan(1024), registry_for()
    )
    size = s3_images.size("tiled")
    print(f"tiled JP2 whole image, warm index: {len(gets)} GETs, of {size} bytes")
    assert index is not None
    assert len(index.segments) == 16  # one tile-part per 256 px tile
    assert len(gets) <= ReadPolicy().max_concurrent
    assert sum(r.body_bytes for r in gets) <= size  # no byte twice


async def test_whole_tiff_level_with_warm_index_is_one_round_trip(
    fresh_proxy: ProxyThread, s3_images: S3Images, decode_pool: ThreadPoolExecutor
) -> None:
    gets, _index = await gets_with_warm_index(
        fresh_proxy, s3_images, decode_pool, "pyramid", full_plan(1024)
    )
    print(f"pyramid TIFF level 0 whole, warm index: {len(gets)} GETs")
    # 16 tiles stored one after the other: coalesced, not 16 GETs.
    assert len(gets) <= 2


def stored_tile_span(images: S3Images, info: ImageInfo, rect: TileRect) -> tuple[int, int]:
    """(first byte, end) of the bytes holding the stored tiles of `rect` in
    the local copy of "pyramid"."""
    path = images.path("pyramid")
    fd = os.open(path, os.O_RDONLY)
    reader = FileReader(fd, os.fstat(fd).st_size, path)
    try:
        index = passthrough.parse_tile_index(reader, info)
        assert index is not None
        level = index.levels[rect.level]
        assert level is not None
        ranges = []
        for row in range(rect.row, rect.row + rect.rows):
            for column in range(rect.column, rect.column + rect.columns):
                n = row * level.tiles_across + column
                offset, length = level.offsets.get(reader, n), level.byte_counts.get(reader, n)
                assert offset is not None
                assert length is not None
                ranges.append((offset, offset + length))
    finally:
        reader.close()
    return min(start for start, _ in ranges), max(end for _, end in ranges)


async def test_stored_tiles_rectangle_with_warm_index(
    fresh_proxy: ProxyThread, s3_images: S3Images, decode_pool: ThreadPoolExecutor
) -> None:
    # Level 0 of "pyramid": 1024 x 1024 in 256 px JPEG tiles, all 4 x 4 whole.
    rect = TileRect(level=0, column=0, row=0, columns=4, rows=4)
    local_service = image_service(FilesystemSource(s3_images.root), decode_pool)
    expected = (await local_service.stored_tiles("pyramid", rect)).tiles
    assert [(c, r) for c, r, _ in expected] == [(c, r) for r in range(4) for c in range(4)]
    info = (await local_service.describe("pyramid")).info
    first, end = stored_tile_span(s3_images, info, rect)
    source = s3_source(fresh_proxy.url)
    try:
        service = image_service(source, decode_pool)
        # Cold: the same bytes as from the local folder.
        assert (await service.stored_tiles("pyramid", rect)).tiles == expected
        # Warm the object index (and the passthrough tile index), then
        # start from an empty block cache.
        await _warm(source, service, "pyramid")
        assert (await service.stored_tiles("pyramid", rect)).tiles == expected
        source.cache.clear()
        fresh_proxy.reset()

        answer = await service.stored_tiles("pyramid", rect)

        assert answer.tiles == expected
        gets = [r for r in fresh_proxy.records() if r.method == "GET"]
        got = sum(r.body_bytes for r in gets)
        print(f"pyramid TIFF 4 x 4 stored tiles, warm index: {len(gets)} GETs, {got} bytes")
        # The tile offsets, byte counts and JPEGTables are structure, served
        # from the object index without a request. The 16 tiles are stored
        # one after the other and announced to the reader (will_need) before
        # the read, which coalesces them into a few parallel GETs (1
        # measured); without the announcement the reader fetches segment by
        # segment, one GET per tile (16 measured before it was added).
        assert 0 < len(gets) <= 4
        for r in gets:
            start, last = map(int, r.range.removeprefix("bytes=").split("-"))
            assert first <= start <= last < end, r.range
        assert got <= end - first
        assert source.budget.in_use == 0
    finally:
        await source.aclose()


@pytest.mark.parametrize("identifier", ["tiled", "pyramid"])
async def test_storage_failing_mid_decode_is_unavailable_not_a_corrupt_image(
    fresh_proxy: ProxyThread, s3_images: S3Images, decode_pool: ThreadPoolExecutor,
    identifier: str,
) -> None:  # fmt: skip
    # libvips (TIFF) and OpenJPEG (JP2) both take a failed read for a bad
    # file; the reader's own error must come out instead.
    source = s3_source(fresh_proxy.url, max_attempts=2)
    try:
        service = image_service(source, decode_pool, engines=registry_for())
        await _warm(source, service, identifier)
        fresh_proxy.inject(Fault.ERROR_500, times=1000)
        with pytest.raises(SourceUnavailable):
            await render(service, identifier, tile_plan(1, 1))
        assert fresh_proxy.count("GET") >= 2
    finally:
        fresh_proxy.reset()
        await source.aclose()


async def test_small_object_is_one_round_trip_and_then_cached(
    fresh_proxy: ProxyThread, s3_images: S3Images, decode_pool: ThreadPoolExecutor
) -> None:
    source = s3_source(fresh_proxy.url)
    try:
        service = image_service(source, decode_pool)
        await render(service, "photo", full_plan(100))
        size = s3_images.size("photo")
        gets = [r for r in fresh_proxy.records() if r.method == "GET"]
        # Whole object as parallel 1 MiB blocks, each byte once.
        assert len(gets) == -(-size // (1 << 20))
        assert sum(r.body_bytes for r in gets) == size
        fresh_proxy.reset()
        for width in (50, 120, 200):
            await render(service, "photo", full_plan(width))
        assert fresh_proxy.count("GET") == 0  # the block cache serves the rest
    finally:
        await source.aclose()


# -- memory budget ------------------------------------------------------------------


async def test_budget_is_never_exceeded_under_load(
    fresh_proxy: ProxyThread, s3_images: S3Images, decode_pool: ThreadPoolExecutor
) -> None:
    import asyncio

    budget = 3 * s3_images.size("untiled")  # room for one untiled JP2 (x2), not two
    source = s3_source(
        fresh_proxy.url, memory_budget_bytes=budget, block_cache_bytes=0, budget_wait_s=20.0
    )
    try:
        service = image_service(source, decode_pool, slots=4)
        names = ["untiled", "tiled", "pyramid", "photo", "png"] * 2
        results = await asyncio.gather(
            *(render(service, n, full_plan(64)) for n in names), return_exceptions=True
        )
        await source.wait_for_indexes()
        failures = [r for r in results if isinstance(r, BaseException)]
        assert all(isinstance(f, SourceOverloaded) for f in failures), failures
        assert len(failures) < len(names)
        assert 0 < source.budget.peak <= budget
        assert source.budget.in_use == 0
    finally:
        await source.aclose()


async def test_opened_readers_hold_no_budget_until_they_read(
    fresh_proxy: ProxyThread, s3_images: S3Images, decode_pool: ThreadPoolExecutor
) -> None:
    """Requests queued for a decode slot (or answered by a cache) hold no
    source memory: the reservation is made at a reader's first read."""
    policy = ReadPolicy(block_size=64 << 10, readahead=2, whole_object_bytes=0)
    expected = expected_cost(s3_images.size("untiled"), policy, None)
    source = s3_source(
        fresh_proxy.url,
        memory_budget_bytes=3 * expected,
        block_cache_bytes=0,
        block_size=policy.block_size,
        readahead=policy.readahead,
        whole_object_bytes=0,
    )
    try:
        # Ten requests' reservations would not fit together, and need not.
        opened = [await source.open("untiled") for _ in range(10)]
        assert source.budget.in_use == 0
        assert fresh_proxy.count("GET") == 0
        await asyncio.to_thread(opened[0].reader.read_at, 0, 16)
        assert expected <= source.budget.in_use <= 3 * expected
        for obj in opened:
            obj.reader.close()
        await source.wait_for_indexes()  # the first close builds the index
        assert source.budget.in_use == 0
    finally:
        await source.aclose()


async def test_request_larger_than_budget_fails_fast_and_retryable(
    fresh_proxy: ProxyThread, s3_images: S3Images, decode_pool: ThreadPoolExecutor
) -> None:
    source = s3_source(fresh_proxy.url, memory_budget_bytes=s3_images.size("untiled"))
    try:
        service = image_service(source, decode_pool)
        with pytest.raises(SourceOverloaded) as info:
            await render(service, "untiled", full_plan(64))
        assert info.value.retry_after_s > 0
        assert fresh_proxy.count("GET") == 0
        assert source.budget.in_use == 0
    finally:
        await source.aclose()


# -- faults ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault", [Fault.ERROR_500, Fault.SLOW_DOWN_503, Fault.DROP_CONNECTION, Fault.SLOW_BODY]
)
async def test_transient_faults_are_retried(
    fresh_proxy: ProxyThread,
    s3_images: S3Images,
    decode_pool: ThreadPoolExecutor,
    fault: Fault,
) -> None:
    # SLOW_BODY trickles 4 KiB per 50 ms: longer than the per-GET timeout.
    source = s3_source(fresh_proxy.url, request_timeout_s=0.5)
    try:
        service = image_service(source, decode_pool)
        await source.stat("png")
        fresh_proxy.reset()
        fresh_proxy.inject(fault, times=2)
        data = await render(service, "png", full_plan(100))
        assert data == await local(s3_images, decode_pool, "png", full_plan(100))
        gets = [r for r in fresh_proxy.records() if r.method == "GET"]
        assert [r.fault for r in gets] == [fault, fault, None]
    finally:
        await source.aclose()


async def test_persistent_failure_gives_up_with_unavailable(
    fresh_proxy: ProxyThread, s3_images: S3Images
) -> None:
    source = s3_source(fresh_proxy.url, max_attempts=3)
    try:
        await source.stat("png")
        fresh_proxy.reset()
        fresh_proxy.inject(Fault.ERROR_500, times=100)
        with pytest.raises(SourceUnavailable):
            await source.get_range(source._stats.get(("images", "png.png")), 0, 100)  # type: ignore[arg-type]
        assert fresh_proxy.count("GET") == 3
    finally:
        await source.aclose()


async def test_access_denied_is_clear_and_not_retried(
    fresh_proxy: ProxyThread, s3_images: S3Images
) -> None:
    source = s3_source(fresh_proxy.url)
    try:
        fresh_proxy.inject(Fault.FORBIDDEN_403, times=10, method="HEAD")
        with pytest.raises(SourceAccessDenied, match="access denied"):
            await source.stat("photo.jpg")
        assert fresh_proxy.count("HEAD") == 1
    finally:
        await source.aclose()


async def test_missing_object_is_not_found_without_retries(
    fresh_proxy: ProxyThread, s3_images: S3Images
) -> None:
    source = s3_source(fresh_proxy.url, try_extensions=False)
    try:
        with pytest.raises(ObjectNotFound):
            await source.open("missing.jp2")
        assert fresh_proxy.count() == 1
    finally:
        await source.aclose()
