"""StoredTileBatcher's sharing and error rules, with a decoder client whose
answers the test releases: the orderings the integration tests cannot force
(who joins a batch in flight, a first waiter that goes away)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from gateway.decoder_client import (
    DecoderClient,
    ImageDescription,
    Level,
    StaleDescription,
    StoredTiles,
)
from gateway.errors import Overloaded, SourceUnreadable
from gateway.iiif.canonical import canonical_path
from gateway.iiif.parse import parse_path
from gateway.iiif.resolve import resolve
from gateway.iiif.types import ApiVersion, ImageDims, ImageRequest, Limits, RenderPlan
from gateway.render_cache import RenderCache
from gateway.tile_batches import StoredTileBatcher
from gateway.tile_grid import TileBatch

# 1024 x 1024 in 256 px tiles, then 512 x 512: one 4 x 4 batch at level 0.
DESC = ImageDescription(
    width=1024,
    height=1024,
    levels=(Level(1024, 1024, 1, 256, 256, True), Level(512, 512, 2, 256, 256, True)),
    tile_width=256,
    tile_height=256,
    version="v1",
    last_modified=datetime(2026, 1, 1, tzinfo=UTC),
    source_format="tiff",
)
LIMITS = Limits()


class GatedClient:
    """Answers StoredTiles once the test opens the gate, or raises `error`."""

    def __init__(self, error: Exception | None = None) -> None:
        self.gate = asyncio.Event()
        self.calls: list[TileBatch] = []
        self.cell_calls: list[tuple[int, int, tuple[tuple[int, int], ...]]] = []
        self.error = error

    async def stored_cells(
        self,
        identifier: str,
        level: int,
        span: int,
        cells: Sequence[tuple[int, int]],
        expected_version: str,
    ) -> StoredTiles:
        self.cell_calls.append((level, span, tuple(cells)))
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        answers = {(c, r): ("image/jpeg", f"{level}:{span}:{c},{r}".encode()) for c, r in cells}
        return StoredTiles(expected_version, answers)

    async def stored_tiles(
        self, identifier: str, batch: TileBatch, expected_version: str
    ) -> StoredTiles:
        self.calls.append(batch)
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return StoredTiles(
            expected_version,
            {
                (t.column, t.row): ("image/jpeg", f"{t.column},{t.row}".encode())
                for t in batch.tiles()
            },
        )


def request(path: str, version: ApiVersion) -> tuple[ImageRequest, RenderPlan]:
    parsed = parse_path(version, path)
    assert isinstance(parsed, ImageRequest)
    return parsed, resolve(parsed, ImageDims(DESC.width, DESC.height), LIMITS)


def tile(version: ApiVersion, column: int, row: int) -> tuple[ImageRequest, RenderPlan]:
    region = f"{column * 256},{row * 256},256,256"
    if version == ApiVersion.V3:
        return request(f"img/{region}/256,256/0/default.jpg", version)
    return request(f"img/{region}/256,/0/color.jpg", version)


def key(parsed: ImageRequest, plan: RenderPlan) -> tuple[str, str, str]:
    dims = ImageDims(DESC.width, DESC.height)
    return ("img", "v1", canonical_path(plan, parsed, dims, limits=LIMITS))


@pytest.fixture
def cache() -> RenderCache:
    return RenderCache(1 << 20, 1 << 16)


def batcher(client: GatedClient, cache: RenderCache) -> StoredTileBatcher:
    return StoredTileBatcher(
        client,  # type: ignore[arg-type]  # only stored_tiles and stored_cells are called
        cache,
        4,
        LIMITS,
    )


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_request_of_another_form_joining_a_batch_caches_its_tiles_in_its_form(
    cache: RenderCache,
) -> None:
    async def scenario() -> None:
        client = GatedClient()
        tiles = batcher(client, cache)
        v3 = tile(ApiVersion.V3, 0, 0)
        v2 = tile(ApiVersion.V2, 1, 0)
        first = asyncio.create_task(tiles.fetch(v3[0], DESC, v3[1]))
        await settle()
        second = asyncio.create_task(tiles.fetch(v2[0], DESC, v2[1]))
        await settle()
        client.gate.set()
        got3, got2 = await first, await second
        assert client.calls == [TileBatch(0, 0, 0, 4, 4)], "one call for both"
        assert got3 is not None
        assert got3.data == b"0,0"
        assert got2 is not None
        assert got2.data == b"1,0"
        # Every tile of the square is kept in both forms.
        for column in range(4):
            for row in range(4):
                for version in (ApiVersion.V3, ApiVersion.V2):
                    cached = cache.get(key(*tile(version, column, row)))
                    assert cached is not None, (version, column, row)
                    assert cached.data == f"{column},{row}".encode()

    asyncio.run(scenario())


def test_a_waiter_that_goes_away_does_not_cancel_the_batch(cache: RenderCache) -> None:
    async def scenario() -> None:
        client = GatedClient()
        tiles = batcher(client, cache)
        a, b = tile(ApiVersion.V3, 2, 2), tile(ApiVersion.V3, 3, 3)
        first = asyncio.create_task(tiles.fetch(a[0], DESC, a[1]))
        await settle()
        second = asyncio.create_task(tiles.fetch(b[0], DESC, b[1]))
        await settle()
        first.cancel()  # its client disconnected
        await settle()
        client.gate.set()
        got = await second
        assert got is not None
        assert got.data == b"3,3"
        assert len(client.calls) == 1
        assert cache.get(key(*a)) is not None

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("error", "raises"),
    [
        (SourceUnreadable("corrupt"), None),
        (StaleDescription("changed", retry_after_s=1), None),
        (Overloaded("busy", retry_after_s=1), Overloaded),
    ],
)
def test_a_failed_batch(
    cache: RenderCache, error: Exception, raises: type[Exception] | None
) -> None:
    """Render the tiles one by one after a failure, except when the decoders
    refused for load: one by one would only add to it, so every waiter gets
    the refusal (a 503 with Retry-After)."""

    async def scenario() -> None:
        client = GatedClient(error)
        tiles = batcher(client, cache)
        waiters = [
            asyncio.create_task(tiles.fetch(parsed, DESC, plan))
            for parsed, plan in (tile(ApiVersion.V3, 0, 1), tile(ApiVersion.V2, 1, 1))
        ]
        await settle()
        client.gate.set()
        results = await asyncio.gather(*waiters, return_exceptions=True)
        assert len(client.calls) == 1
        for result in results:
            if raises is None:
                assert result is None
            else:
                assert isinstance(result, raises)
        assert cache.size_bytes == 0

    asyncio.run(scenario())


def test_plans_that_are_not_stored_tiles_make_no_call(cache: RenderCache) -> None:
    async def scenario() -> None:
        client = GatedClient()
        tiles = batcher(client, cache)
        for path in (
            "img/0,0,256,256/256,256/0/default.png",
            "img/0,0,256,256/256,256/90/default.jpg",
            "img/0,0,256,256/128,128/0/default.jpg",
            "img/full/1000,/0/default.jpg",
            "img/0,0,512,512/512,512/0/gray.jpg",
        ):
            assert (
                await tiles.fetch(
                    *request(path, ApiVersion.V3)[:1], DESC, request(path, ApiVersion.V3)[1]
                )
                is None
            )
        assert client.calls == []

    asyncio.run(scenario())


def test_the_client_type_is_the_real_one() -> None:
    # The fake above stands in for DecoderClient.stored_tiles: same signature.
    import inspect

    real = inspect.signature(DecoderClient.stored_tiles)
    fake = inspect.signature(GatedClient.stored_tiles)
    assert list(real.parameters) == list(fake.parameters)


def test_larger_tiles_asked_for_together_share_one_call_and_keep_only_their_own(
    cache: RenderCache,
) -> None:
    """Groups of 2 x 2 stored tiles (a viewer's 512 px tiles) are never
    fetched on speculation, but those asked for in one turn of the loop go
    in one call; each request gets its group, and nothing else is cached."""

    async def scenario() -> None:
        client = GatedClient()
        client.gate.set()
        tiles = batcher(client, cache)
        asked = [
            request(f"img/{x},{y},512,512/512,512/0/default.jpg", ApiVersion.V3)
            for x, y in ((512, 0), (0, 0), (0, 512))
        ]
        got = await asyncio.gather(*(tiles.fetch(parsed, DESC, plan) for parsed, plan in asked))
        assert client.calls == []
        assert client.cell_calls == [(0, 2, ((0, 0), (1, 0), (0, 1)))]
        assert [g.data if g is not None else None for g in got] == [
            b"0:2:1,0",
            b"0:2:0,0",
            b"0:2:0,1",
        ]
        # Each group is kept under its request's key, and nothing more.
        for parsed, plan in asked:
            assert cache.get(key(parsed, plan)) is not None
        assert cache.size_bytes == sum(len(g.data) for g in got if g is not None)
        later = request("img/512,512,512,512/512,512/0/default.jpg", ApiVersion.V3)
        assert (await tiles.fetch(later[0], DESC, later[1])) is not None
        assert client.cell_calls[1:] == [(0, 2, ((1, 1),))], "a later turn, a call of its own"

    asyncio.run(scenario())
