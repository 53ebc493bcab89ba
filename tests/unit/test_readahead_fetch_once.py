"""Each block of a remote object fetched once per process on a first pass:
read-ahead a reader has under way when its close starts an index build
lands in the shared cache instead of being cancelled, and the build's
preload shares block fetches with readers (both ways) through the in-flight
table.

Found on the benchmark's first pass over a tiled JPEG 2000 in S3: the
Describe's reader closed with its read-ahead in flight, and the index build
it starts then fetched those blocks again, as did renders reading blocks
while the build's preload was fetching them.
"""

from __future__ import annotations

import asyncio

from decoder.sources.readahead import IndexReads, RemoteObject
from tests.unit.test_readahead import KIB, SMALL_BLOCKS, Env, payload

BLOCK = 64 * KIB


async def test_read_ahead_under_way_when_an_index_build_follows_lands_in_the_cache() -> None:
    env = Env(payload(10 * BLOCK), SMALL_BLOCKS)  # read-ahead: 2 blocks
    for start in (BLOCK, 2 * BLOCK):
        env.fetcher.gates[start] = asyncio.Event()
    reader = await env.open()
    builds: list[str] = []
    reader.on_close = lambda: builds.append("index")  # what S3Source sets
    await asyncio.to_thread(reader.read_at, 0, BLOCK)  # large: reads 2 blocks ahead
    await asyncio.sleep(0.01)
    assert sorted(env.fetcher.ranges) == [(0, BLOCK), (BLOCK, 2 * BLOCK), (2 * BLOCK, 3 * BLOCK)]
    reader.close()
    await asyncio.sleep(0)
    assert builds == ["index"]
    # The bytes still arriving stay counted against the budget...
    assert env.budget.in_use == 2 * BLOCK
    for gate in env.fetcher.gates.values():
        gate.set()
    await env.inflight.wait_held()
    # ...until they land, in the shared cache, for the next reader.
    assert env.budget.in_use == 0
    other = await env.open()
    got = await asyncio.to_thread(other.read_at, BLOCK + 5, 100)
    assert got == env.data[BLOCK + 5 : BLOCK + 105]
    assert len(env.fetcher.ranges) == 3  # nothing fetched twice
    other.close()


async def test_demand_fetches_are_still_cancelled_at_close() -> None:
    env = Env(payload(10 * BLOCK), SMALL_BLOCKS)
    env.fetcher.gates[3 * BLOCK] = asyncio.Event()
    reader = await env.open()
    reader.on_close = lambda: None
    waiting = asyncio.create_task(asyncio.to_thread(reader.read_at, 3 * BLOCK, 10))
    await asyncio.sleep(0.01)
    reader.close()
    await asyncio.sleep(0.01)
    assert env.budget.in_use == 0
    env.fetcher.gates[3 * BLOCK].set()
    await asyncio.gather(waiting, return_exceptions=True)
    assert env.cache.size_bytes == 0  # the cancelled GET's bytes were not kept


async def test_read_ahead_is_cancelled_at_close_when_no_index_build_follows() -> None:
    env = Env(payload(10 * BLOCK), SMALL_BLOCKS)
    for start in (BLOCK, 2 * BLOCK):
        env.fetcher.gates[start] = asyncio.Event()
    reader = await env.open()
    await asyncio.to_thread(reader.read_at, 0, BLOCK)
    await asyncio.sleep(0.01)
    reader.close()
    await asyncio.sleep(0)
    assert env.budget.in_use == 0  # released at once, as before
    for gate in env.fetcher.gates.values():
        gate.set()
    await asyncio.sleep(0.01)
    assert env.cache.size_bytes == BLOCK  # block 0 only


def preload_reads(env: Env) -> IndexReads:
    obj = RemoteObject("mem://x", "v1", len(env.data))
    return IndexReads(
        obj, env.fetcher, env.cache, env.budget, SMALL_BLOCKS.block_size, inflight=env.inflight
    )


async def test_index_preload_and_readers_share_block_fetches() -> None:
    env = Env(payload(6 * BLOCK), SMALL_BLOCKS)
    for start in (BLOCK, 3 * BLOCK):
        env.fetcher.gates[start] = asyncio.Event()
    reader = await env.open()
    # A reader's block is in flight when the preload starts: the preload joins it.
    first = asyncio.create_task(asyncio.to_thread(reader.read_at, BLOCK + 1, 10))
    await asyncio.sleep(0.01)
    reads = preload_reads(env)
    preload = asyncio.create_task(reads.preload(concurrency=8))
    await asyncio.sleep(0.01)
    # The preload's block is in flight when a reader wants it: the reader joins it.
    second = asyncio.create_task(asyncio.to_thread(reader.read_at, 3 * BLOCK + 1, 10))
    await asyncio.sleep(0.01)
    for gate in env.fetcher.gates.values():
        gate.set()
    await preload
    assert await first == env.data[BLOCK + 1 : BLOCK + 11]
    assert await second == env.data[3 * BLOCK + 1 : 3 * BLOCK + 11]
    assert sorted(env.fetcher.ranges) == [(i * BLOCK, (i + 1) * BLOCK) for i in range(6)]
    assert reads.gets == 5  # the joined block is the reader's GET
    reads.release()
    reader.close()
    await asyncio.sleep(0.01)
    assert env.budget.in_use == 0


async def test_index_preload_fetches_itself_when_the_reader_abandons_its_fetch() -> None:
    env = Env(payload(2 * BLOCK), SMALL_BLOCKS)
    env.fetcher.gates[BLOCK] = asyncio.Event()
    reader = await env.open()
    waiting = asyncio.create_task(asyncio.to_thread(reader.read_at, BLOCK, 10))
    await asyncio.sleep(0.01)
    reads = preload_reads(env)
    preload = asyncio.create_task(reads.preload(concurrency=8))
    await asyncio.sleep(0.01)
    reader.close()  # a demand fetch: cancelled, and the preload was waiting for it
    await asyncio.sleep(0.01)
    env.fetcher.gates[BLOCK].set()
    await preload
    await asyncio.gather(waiting, return_exceptions=True)
    assert env.cache.peek_span("mem://x", "v1", 0, 2 * BLOCK, BLOCK, 2 * BLOCK) == env.data
    reads.release()
    assert env.budget.in_use == 0
