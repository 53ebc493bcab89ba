"""Stored tiles fetched in batches: a real gateway fetching the square of a
pyramid's stored JPEG tiles around a missed one in one StoredTiles call, in
front of a real decoder, compared with a gateway that fetches tile by tile
(IIIF_GATEWAY_STORED_TILE_BATCH=1) in front of the same decoder."""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pyvips

from gateway.decoder_client import DecoderClient
from gateway.errors import SourceUnreadable
from gateway.tile_grid import TileBatch
from tests import processes
from tests.conftest import start_decoder, start_gateway
from tests.images import make_pyramid_tiff, make_tiled_jp2, pattern
from tests.reliability_tools import metric_in as metric

pytestmark = pytest.mark.integration

# The pyramid every test asks for (under its own identifier, so that each
# test starts with nothing cached): 1100 x 900 in 128 px tiles, levels of
# 550 x 450, 275 x 225, 137 x 112 and 68 x 56 (libvips floors). Level 0 has
# 8 x 7 whole tiles, so the batch at (0, 0) is a whole 4 x 4 square, the one
# at (4, 4) 4 x 3; a partial column and row lie past them. (The shared
# sample-pyramid, 1200 x 900 in 256 px tiles, has no 4 x 4 square.)
WIDTH, HEIGHT, TILE = 1100, 900, 128
PYRAMID_IDS = (
    "batch-v3",
    "batch-v2",
    "batch-concurrent",
    "batch-edges",
    "batch-others",
    "batch-swapped",
    "batch-burst",
    "batch-gathered",
)
# The same geometry with other pixels: what batch-swapped becomes.
REPLACEMENT_ID = "batch-replacement"
JP2_ID = "batch-jp2"

CACHE_ENV = {"IIIF_GATEWAY_RENDER_CACHE_MB": "64"}


@dataclass(frozen=True)
class Stacks:
    root: Path
    batched: str  # gateway with batches of 4 x 4 (the default) and the render cache
    single: str  # gateway fetching one tile per request, render cache too
    decoder_metrics: str
    decoder_target: str
    # One client for every request: making one costs ~0.1 s.
    http: httpx.Client


@pytest.fixture(scope="module")
def stacks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stacks]:
    root = tmp_path_factory.mktemp("batch-images")
    master = tmp_path_factory.mktemp("batch-master") / "master.tif"
    make_pyramid_tiff(master, WIDTH, HEIGHT, tile=TILE)
    for identifier in PYRAMID_IDS:
        shutil.copy(master, root / f"{identifier}.tif")
    inverted = (255 - pattern(WIDTH, HEIGHT)).cast("uchar").copy(interpretation="srgb")
    make_pyramid_tiff(root / f"{REPLACEMENT_ID}.tif", WIDTH, HEIGHT, tile=TILE, image=inverted)
    make_tiled_jp2(root / f"{JP2_ID}.jp2", 600, 400, tile=256)
    logs = tmp_path_factory.mktemp("batch-logs")
    metrics_port = processes.free_port()
    started: list[subprocess.Popen[bytes]] = []
    try:
        decoder, target = start_decoder(
            root, logs, "decoder-batches", {"IIIF_DECODER_METRICS_PORT": str(metrics_port)}
        )
        started.append(decoder)
        batched, batched_port = start_gateway(
            target,
            logs,
            "gateway-batched",
            {**CACHE_ENV, "IIIF_GATEWAY_STORED_TILE_BATCH": "4"},
        )
        started.append(batched)
        single, single_port = start_gateway(
            target,
            logs,
            "gateway-single",
            {**CACHE_ENV, "IIIF_GATEWAY_STORED_TILE_BATCH": "1"},
        )
        started.append(single)
        with httpx.Client(timeout=30) as http:
            yield Stacks(
                root,
                f"http://127.0.0.1:{batched_port}",
                f"http://127.0.0.1:{single_port}",
                f"http://127.0.0.1:{metrics_port}/metrics",
                target,
                http,
            )
    finally:
        for proc in reversed(started):
            processes.stop(proc)


# -- requests as a viewer derives them from info.json ---------------------------


def tile_path(
    version: str, identifier: str, scale: int, column: int, row: int, quality: str = "default"
) -> str:
    """The request for tile (column, row) at scale factor `scale` (an
    OpenSeadragon-style client): region = the tile's box times the scale,
    clipped to the image; size `w,h` in 3.0, `w,` in 2.1."""
    span = TILE * scale
    x, y = column * span, row * span
    w, h = min(span, WIDTH - x), min(span, HEIGHT - y)
    out_w, out_h = math.ceil(w / scale), math.ceil(h / scale)
    size = f"{out_w},{out_h}" if version == "3" else f"{out_w},"
    return f"/iiif/{version}/{identifier}/{x},{y},{w},{h}/{size}/0/{quality}.jpg"


def get(http: httpx.Client, base: str, path: str, media_type: str = "image/jpeg") -> bytes:
    resp = http.get(base + path)
    assert resp.status_code == 200, (path, resp.status_code, resp.text[:200])
    assert resp.headers["content-type"] == media_type, path
    return resp.content


def references(stacks: Stacks, paths: list[str]) -> dict[str, bytes]:
    """What the gateway fetching tile by tile answers for each of `paths`."""
    return {path: get(stacks.http, stacks.single, path) for path in paths}


def decoded_size(data: bytes) -> tuple[int, int]:
    image = pyvips.Image.new_from_buffer(data, "")
    return int(image.width), int(image.height)


# -- counters -------------------------------------------------------------------

_COUNTERS: dict[str, tuple[str, str, dict[str, str]]] = {
    "batches_ok": ("gateway", "iiif_gateway_stored_tile_batches_total", {"outcome": "ok"}),
    "batches_error": ("gateway", "iiif_gateway_stored_tile_batches_total", {"outcome": "error"}),
    "cache_hits": ("gateway", "iiif_gateway_render_cache_total", {"outcome": "hit"}),
    "cache_misses": ("gateway", "iiif_gateway_render_cache_total", {"outcome": "miss"}),
    # The gateway asks for stored tiles with the unary StoredTilesAtOnce.
    "stored_tiles_rpcs": ("decoder", "iiif_decoder_rpcs_total", {"rpc": "StoredTilesAtOnce"}),
    "stored_tiles_aborted": (
        "decoder",
        "iiif_decoder_rpcs_total",
        {"rpc": "StoredTilesAtOnce", "code": "ABORTED"},
    ),
    "render_rpcs": ("decoder", "iiif_decoder_rpcs_total", {"rpc": "Render"}),
}


def counters(stacks: Stacks) -> dict[str, float]:
    """The batched gateway's and the decoder's counters, once they are steady: a
    decoder counts a call when its stream ends, just after the caller got it."""
    urls = {"gateway": f"{stacks.batched}/metrics", "decoder": stacks.decoder_metrics}

    def read() -> dict[str, float]:
        texts = {where: stacks.http.get(url).text for where, url in urls.items()}
        return {
            name: metric(texts[where], metric_name, labels)
            for name, (where, metric_name, labels) in _COUNTERS.items()
        }

    last = read()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = read()
        if now == last:
            return now
        last = now
    return last


def deltas(stacks: Stacks, before: dict[str, float]) -> dict[str, float]:
    now = counters(stacks)
    return {name: now[name] - before[name] for name in now}


# -- tests ------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["3", "2"])
def test_a_missed_tile_brings_its_batch_into_the_cache(stacks: Stacks, version: str) -> None:
    identifier = f"batch-v{version}"
    # Tiles as a viewer derives them from info.json.
    info = stacks.http.get(f"{stacks.batched}/iiif/{version}/{identifier}/info.json").json()
    assert (info["width"], info["height"]) == (WIDTH, HEIGHT)
    assert info["tiles"][0]["width"] == TILE
    assert info["tiles"][0]["scaleFactors"][:2] == [1, 2]
    # Both qualities a stored tile is sent for.
    quality = "default" if version == "3" else "color"
    square = [(c, r) for r in range(4) for c in range(4)]
    level0 = {cr: tile_path(version, identifier, 1, *cr, quality=quality) for cr in square}
    # Level 1 (scale factor 2) has 4 x 3 whole tiles: one batch of 12.
    level1 = {
        (c, r): tile_path(version, identifier, 2, c, r, quality=quality)
        for r in range(3)
        for c in range(4)
    }
    expected = references(stacks, [*level0.values(), *level1.values()])

    before = counters(stacks)
    # Not the square's corner: the batch is aligned to the grid, not to the tile.
    first = level0[(1, 2)]
    assert get(stacks.http, stacks.batched, first) == expected[first]
    assert deltas(stacks, before) == {
        **dict.fromkeys(_COUNTERS, 0),
        "batches_ok": 1,
        "cache_misses": 1,
        "stored_tiles_rpcs": 1,
    }

    for path in level0.values():
        if path != first:
            assert get(stacks.http, stacks.batched, path) == expected[path], path
    assert deltas(stacks, before) == {
        **dict.fromkeys(_COUNTERS, 0),
        "batches_ok": 1,
        "cache_misses": 1,
        "cache_hits": 15,
        "stored_tiles_rpcs": 1,
    }, "the neighbours come from the cache, as the tile-by-tile gateway renders them"

    before = counters(stacks)
    for cr in [(3, 2), *level1]:
        path = level1[cr]
        assert get(stacks.http, stacks.batched, path) == expected[path], path
    assert deltas(stacks, before) == {
        **dict.fromkeys(_COUNTERS, 0),
        "batches_ok": 1,
        "cache_misses": 1,
        # (3, 2) twice: once missed, once more from the cache.
        "cache_hits": 12,
        "stored_tiles_rpcs": 1,
    }


def test_the_batch_side_and_the_size_limits_are_the_gateways(
    stacks: Stacks, tmp_path: Path
) -> None:
    """IIIF_GATEWAY_STORED_TILE_BATCH=2 fetches 2 x 2 squares; with maxWidth the
    tile size, a reduced level's tiles are canonically `max`, and the batch
    caches them under that key too."""
    gateway, port = start_gateway(
        stacks.decoder_target,
        tmp_path,
        "gateway-batch-of-2",
        {**CACHE_ENV, "IIIF_GATEWAY_STORED_TILE_BATCH": "2", "IIIF_GATEWAY_MAX_WIDTH": str(TILE)},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        identifier = "batch-v3"  # the cache of this gateway is empty
        level1 = {(c, r): tile_path("3", identifier, 2, c, r) for r in range(3) for c in range(4)}
        expected = references(stacks, list(level1.values()))
        link = stacks.http.head(base + level1[(1, 1)])  # HEAD: neither cached nor batched
        assert link.status_code == 200
        canonical = f"/{2 * TILE},{2 * TILE},{2 * TILE},{2 * TILE}/max/0/default.jpg>"
        assert canonical in link.headers["link"], "the key the batch must cache this tile under"

        def count(outcome: str, name: str = "iiif_gateway_stored_tile_batches_total") -> float:
            return metric(stacks.http.get(f"{base}/metrics").text, name, {"outcome": outcome})

        before_hits = count("hit", "iiif_gateway_render_cache_total")
        order = [(1, 1), (0, 0), (1, 0), (0, 1), (2, 0), (3, 1), (2, 1), (3, 0)]
        for cr in order:
            assert get(stacks.http, base, level1[cr]) == expected[level1[cr]], cr
        assert count("ok") == 2, "squares (0, 0) and (2, 0), 2 x 2 each"
        assert count("hit", "iiif_gateway_render_cache_total") - before_hits == 6
    finally:
        processes.stop(gateway)


def test_concurrent_requests_for_a_batch_share_one_call(stacks: Stacks) -> None:
    identifier = "batch-concurrent"
    # The second square of row 0: columns 4 to 7, rows 0 to 3.
    paths = [tile_path("3", identifier, 1, c, r) for r in range(4) for c in range(4, 8)]
    expected = references(stacks, paths)
    before = counters(stacks)

    async def fetch_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=stacks.batched, timeout=30) as client:
            return await asyncio.gather(*(client.get(path) for path in paths))

    responses = asyncio.run(fetch_all())
    assert [r.status_code for r in responses] == [200] * 16
    for path, resp in zip(paths, responses, strict=True):
        assert resp.content == expected[path], path
    changed = deltas(stacks, before)
    assert changed["stored_tiles_rpcs"] == 1
    assert changed["render_rpcs"] == 0, "no whole tile of the batch is rendered on its own"
    assert changed["batches_ok"] == 1
    assert changed["batches_error"] == 0
    assert changed["cache_hits"] + changed["cache_misses"] == 16


def test_a_burst_for_a_new_image_describes_it_once(stacks: Stacks) -> None:
    """A viewer's first tiles of an image arrive together: they share one
    Describe (and, being tiles of one square, one batch)."""
    identifier = "batch-burst"
    paths = [tile_path("3", identifier, 1, c, r) for r in range(4) for c in range(4)]
    describes = {"rpc": "Describe", "code": "OK"}

    def described() -> float:
        return metric(
            stacks.http.get(stacks.decoder_metrics).text, "iiif_decoder_rpcs_total", describes
        )

    before = described()

    async def fetch_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=stacks.batched, timeout=30) as client:
            return await asyncio.gather(*(client.get(path) for path in paths))

    responses = asyncio.run(fetch_all())
    assert [r.status_code for r in responses] == [200] * len(paths)
    assert described() - before == 1


def group_path(identifier: str, scale: int, column: int, row: int, side: int) -> str:
    """A viewer's request (Image API 3) for its tile (column, row) of `side`
    px at scale factor `scale`, as tile_path does for the stored size."""
    span = side * scale
    x, y = column * span, row * span
    w, h = min(span, WIDTH - x), min(span, HEIGHT - y)
    out_w, out_h = math.ceil(w / scale), math.ceil(h / scale)
    return f"/iiif/3/{identifier}/{x},{y},{w},{h}/{out_w},{out_h}/0/default.jpg"


def test_edge_tiles_and_larger_tiles_are_fetched_alone(stacks: Stacks) -> None:
    """Edge tiles and groups of stored tiles cost the decoder a mosaic each,
    so they are never fetched on speculation: asked for one by one, they
    come one a call, through StoredTiles (not rendered)."""
    identifier = "batch-edges"
    # Partial tiles of level 0 as a viewer asks for them: the right column
    # (76 px wide) and the corner (76 x 4); stored padded past the image,
    # the decoder joins and crops them.
    edges = [
        tile_path("3", identifier, 1, 8, 0),
        tile_path("3", identifier, 1, 8, 3),
        tile_path("3", identifier, 1, 0, 7),
        tile_path("3", identifier, 1, 8, 7),
    ]
    # Not stored tiles: level 3 (137 x 112, smaller than one tile), an edge
    # at the full tile size (the padding is not the image), an upscale.
    rendered = [
        tile_path("3", identifier, 8, 0, 0),
        f"/iiif/2/{identifier}/1024,0,76,128/128,128/0/default.jpg",
        f"/iiif/3/{identifier}/0,896,128,4/^128,128/0/default.jpg",
    ]
    # 256 px tiles over the 128 px stored ones: groups of 2 x 2 stored
    # tiles, 5 x 4 of them at level 0 (edges included), and level 1's 3 x 2.
    groups = [group_path(identifier, 1, c, r, 2 * TILE) for r in range(4) for c in range(5)]
    level1 = [group_path(identifier, 2, c, r, 2 * TILE) for r in range(2) for c in range(3)]
    # The last square of whole tiles (columns 4-7, rows 4-6) is still one batch.
    square = [tile_path("3", identifier, 1, c, r) for r in range(4, 7) for c in range(4, 8)]
    expected = references(stacks, [*edges, *rendered, *groups, *level1, *square])
    assert decoded_size(expected[edges[0]]) == (WIDTH - 8 * TILE, TILE)
    assert decoded_size(expected[edges[-1]]) == (WIDTH - 8 * TILE, HEIGHT - 7 * TILE)
    assert decoded_size(expected[groups[0]]) == (2 * TILE, 2 * TILE)
    assert decoded_size(expected[groups[-1]]) == (WIDTH - 8 * TILE, HEIGHT - 6 * TILE)

    before = counters(stacks)
    for path in [*edges, *groups, *level1]:
        assert get(stacks.http, stacks.batched, path) == expected[path], path
    alone = len(edges) + len(groups) + len(level1)
    assert deltas(stacks, before) == {
        **dict.fromkeys(_COUNTERS, 0),
        "batches_ok": alone,
        "stored_tiles_rpcs": alone,
        "cache_misses": alone,
    }

    before = counters(stacks)
    for path in [*rendered, *square]:
        assert get(stacks.http, stacks.batched, path) == expected[path], path
    assert deltas(stacks, before) == {
        **dict.fromkeys(_COUNTERS, 0),
        "batches_ok": 1,
        "stored_tiles_rpcs": 1,
        "cache_misses": len(rendered) + 1,
        "cache_hits": len(square) - 1,
        "render_rpcs": len(rendered),
    }


def test_larger_tiles_asked_for_together_are_answered_right(stacks: Stacks) -> None:
    """A viewer's burst of tiles larger than the stored ones: those that
    reach the gateway together share StoredTiles calls (gathered by cell);
    each answer is still exactly its own group's, and none is rendered."""
    identifier = "batch-gathered"
    groups = [group_path(identifier, 1, c, r, 2 * TILE) for r in range(4) for c in range(5)]
    expected = references(stacks, groups)
    # Describe it first, so the burst does not wait on one Describe together.
    assert stacks.http.get(f"{stacks.batched}/iiif/3/{identifier}/info.json").status_code == 200
    before = counters(stacks)

    async def fetch_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=stacks.batched, timeout=30) as client:
            return await asyncio.gather(*(client.get(path) for path in groups))

    responses = asyncio.run(fetch_all())
    assert [r.status_code for r in responses] == [200] * len(groups)
    for path, resp in zip(groups, responses, strict=True):
        assert resp.content == expected[path], path
    changed = deltas(stacks, before)
    assert changed["render_rpcs"] == 0
    assert changed["batches_error"] == 0
    # How many calls depends on how the requests fell into the gateway's
    # turns (2 to 5 calls for these 20 in trials); never more than one each.
    assert 1 <= changed["stored_tiles_rpcs"] <= len(groups)
    assert changed["batches_ok"] == changed["stored_tiles_rpcs"]

    async def ask_for_cells() -> dict[tuple[int, int], bytes]:
        client = DecoderClient(stacks.decoder_target, 30.0, 1, 16, 60.0, channels=1)
        await client.start()
        try:
            stored = await client.stored_cells(identifier, 0, 2, [(4, 3), (0, 0), (2, 1)], "")
        finally:
            await client.close()
        return {cell: data for cell, (_type, data) in stored.tiles.items()}

    # The call the gathering makes, made directly: the groups asked for.
    assert asyncio.run(ask_for_cells()) == {
        (4, 3): expected[group_path(identifier, 1, 4, 3, 2 * TILE)],
        (0, 0): expected[group_path(identifier, 1, 0, 0, 2 * TILE)],
        (2, 1): expected[group_path(identifier, 1, 2, 1, 2 * TILE)],
    }


def test_requests_that_are_not_stored_tiles_fetch_no_batch(stacks: Stacks) -> None:
    identifier = "batch-others"
    base = f"/iiif/3/{identifier}"
    paths = [
        f"{base}/0,0,128,128/128,128/0/default.png",
        f"{base}/0,0,128,128/128,128/0/gray.jpg",
        f"{base}/0,0,128,128/128,128/0/bitonal.jpg",
        f"{base}/0,0,128,128/128,128/90/default.jpg",
        f"{base}/0,0,128,128/128,128/!0/default.jpg",
        f"/iiif/2/{identifier}/0,0,256,256/128,/180/default.jpg",
        # Near misses: shifted, scaled, not the tile's size.
        f"{base}/64,0,128,128/128,128/0/default.jpg",
        f"{base}/0,0,128,128/64,64/0/default.jpg",
        f"{base}/128,0,256,256/256,256/0/default.jpg",
        f"{base}/full/max/0/default.jpg",
        # A tile of a JPEG 2000 image: nothing stored to send.
        f"/iiif/3/{JP2_ID}/0,0,256,256/256,256/0/default.jpg",
    ]
    expected = {}
    for path in paths:
        resp = stacks.http.get(stacks.single + path)
        assert resp.status_code == 200, path
        expected[path] = resp.content
    before = counters(stacks)
    for path in paths:
        resp = stacks.http.get(stacks.batched + path)
        assert resp.status_code == 200, path
        assert resp.content == expected[path], path
    changed = deltas(stacks, before)
    assert changed["batches_ok"] == changed["batches_error"] == 0
    assert changed["stored_tiles_rpcs"] == 0
    assert changed["render_rpcs"] == len(paths)


def test_a_failed_batch_falls_back_to_render(stacks: Stacks) -> None:
    """The batch call fails for real: the file is replaced after the gateway
    described it (its description is cached for minutes), so StoredTiles,
    asked for the described version, is ABORTED. The request is then
    rendered, which notices the change too, describes the image again and
    answers with the new image. (A decoder with passthrough off cannot make
    a batch fail: it marks no level as stored, so no batch is asked for;
    see the next test.)"""
    identifier = "batch-swapped"
    old_first = tile_path("3", identifier, 1, 0, 0)
    old = references(stacks, [old_first])[old_first]
    assert get(stacks.http, stacks.batched, old_first) == old

    # The same requests of the replacement, under its own name.
    cols = (4, 5, 6)
    new = {
        c: get(stacks.http, stacks.single, tile_path("3", REPLACEMENT_ID, 1, c, 0)) for c in cols
    }
    assert new[4] != get(stacks.http, stacks.single, tile_path("3", identifier, 1, 4, 0))
    target = stacks.root / f"{identifier}.tif"
    staged = stacks.root / "staged.tif.part"
    shutil.copy(stacks.root / f"{REPLACEMENT_ID}.tif", staged)
    os.replace(staged, target)

    before = counters(stacks)
    # Another square than the one fetched before the change.
    got = get(stacks.http, stacks.batched, tile_path("3", identifier, 1, 4, 0))
    assert got == new[4]
    assert deltas(stacks, before) == {
        **dict.fromkeys(_COUNTERS, 0),
        "batches_error": 1,
        "stored_tiles_rpcs": 1,
        "stored_tiles_aborted": 1,
        "cache_misses": 1,
        # Once against the old version (ABORTED), once against the new.
        "render_rpcs": 2,
    }

    # Described again: the next miss fetches the new version's batch.
    before = counters(stacks)
    assert get(stacks.http, stacks.batched, tile_path("3", identifier, 1, 5, 0)) == new[5]
    assert get(stacks.http, stacks.batched, tile_path("3", identifier, 1, 6, 0)) == new[6]
    assert deltas(stacks, before) == {
        **dict.fromkeys(_COUNTERS, 0),
        "batches_ok": 1,
        "stored_tiles_rpcs": 1,
        "cache_misses": 1,
        "cache_hits": 1,
    }


def test_without_passthrough_no_level_is_stored_and_nothing_is_batched(
    stacks: Stacks, tmp_path: Path
) -> None:
    decoder, target = start_decoder(
        stacks.root, tmp_path, "decoder-no-passthrough", {"IIIF_DECODER_TILE_PASSTHROUGH": "false"}
    )
    try:
        gateway, port = start_gateway(target, tmp_path, "gateway-no-passthrough", CACHE_ENV)
        try:

            async def ask_the_decoder() -> None:
                client = DecoderClient(target, 30.0, 1, 16, 60.0, channels=1)
                await client.start()
                try:
                    desc = await client.describe("batch-v3")
                    assert len(desc.levels) == 5
                    assert not any(level.stored_tiles for level in desc.levels)
                    with pytest.raises(SourceUnreadable):
                        await client.stored_tiles("batch-v3", TileBatch(0, 0, 0, 4, 4), "")
                finally:
                    await client.close()

            asyncio.run(ask_the_decoder())

            base = f"http://127.0.0.1:{port}"
            path = tile_path("3", "batch-v3", 1, 2, 1)
            decoded = get(stacks.http, base, path)
            assert decoded_size(decoded) == (TILE, TILE)
            stored = get(stacks.http, stacks.single, path)
            assert decoded != stored, "decoded and encoded again, not sent as stored"
            neighbour = tile_path("3", "batch-v3", 1, 3, 1)
            assert decoded_size(get(stacks.http, base, neighbour)) == (TILE, TILE)
            text = stacks.http.get(f"{base}/metrics").text
            assert metric(text, "iiif_gateway_stored_tile_batches_total") == 0
            assert metric(text, "iiif_gateway_render_cache_total", {"outcome": "miss"}) == 2
            assert metric(text, "iiif_gateway_render_cache_total", {"outcome": "hit"}) == 0
        finally:
            processes.stop(gateway)
    finally:
        processes.stop(decoder)
