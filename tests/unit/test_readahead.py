"""BlockReader: blocking reads from worker threads bridged to the event loop,
aligned blocks, read-ahead, whole small objects, short reads, shared
fetches and the byte budget, over an in-memory fetcher that counts GETs."""

from __future__ import annotations

import asyncio
import random

import pytest

from decoder.budget import ByteBudget, SourceOverloaded
from decoder.sources.base import SourceUnavailable
from decoder.sources.blockcache import BlockCache
from decoder.sources.object_index import ObjectIndex
from decoder.sources.readahead import (
    BlockReader,
    InflightTable,
    ReadPolicy,
    RemoteObject,
    expected_cost,
)

JP2_HEAD = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
KIB = 1024


class MemoryFetcher:
    """Serves ranges of `data`; records them; optionally holds ranges until released."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.ranges: list[tuple[int, int]] = []
        self.gates: dict[int, asyncio.Event] = {}
        self.fail_next = 0

    async def fetch(self, start: int, end: int) -> bytes:
        self.ranges.append((start, end))
        if self.fail_next:
            self.fail_next -= 1
            raise SourceUnavailable("injected")
        gate = self.gates.get(start)
        if gate is not None:
            await gate.wait()
        await asyncio.sleep(0)
        return self.data[start:end]


def payload(size: int, head: bytes = b"") -> bytes:
    rng = random.Random(size)
    return head + bytes(rng.getrandbits(8) for _ in range(size - len(head)))


class Env:
    def __init__(self, data: bytes, policy: ReadPolicy, budget: int = 1 << 30) -> None:
        self.data = data
        self.policy = policy
        self.fetcher = MemoryFetcher(data)
        self.cache = BlockCache(1 << 30)
        self.inflight = InflightTable()
        self.budget = ByteBudget(budget, wait_timeout_s=0.5)

    async def open(self, index: ObjectIndex | None = None) -> BlockReader:
        obj = RemoteObject("mem://x", "v1", len(self.data))
        cost = expected_cost(obj.size, self.policy, index)
        await self.budget.acquire(cost)
        return BlockReader(
            obj=obj,
            fetcher=self.fetcher,
            policy=self.policy,
            cache=self.cache,
            inflight=self.inflight,
            budget=self.budget,
            reserved=cost,
            index=index,
        )


SMALL_BLOCKS = ReadPolicy(block_size=64 * KIB, readahead=2, whole_object_bytes=0)


async def test_random_reads_from_threads_return_exact_bytes() -> None:
    env = Env(payload(700 * KIB), SMALL_BLOCKS)
    reader = await env.open()
    rng = random.Random(1)
    spans = [(rng.randrange(0, 720 * KIB), rng.randrange(0, 200 * KIB)) for _ in range(60)]
    results = await asyncio.gather(*(asyncio.to_thread(reader.read_at, off, n) for off, n in spans))
    for (off, n), got in zip(spans, results, strict=True):
        assert got == env.data[off : off + n]
    # Every fetch is one aligned block, each fetched once.
    assert len(set(env.fetcher.ranges)) == len(env.fetcher.ranges)
    assert all(start % (64 * KIB) == 0 for start, _ in env.fetcher.ranges)
    reader.close()
    await asyncio.sleep(0)
    assert env.budget.in_use == 0


async def test_reading_on_the_loop_thread_is_refused() -> None:
    env = Env(payload(10 * KIB), SMALL_BLOCKS)
    reader = await env.open()
    with pytest.raises(ValueError, match="deadlock"):
        reader.read_at(0, 10)
    reader.close()


async def test_small_object_is_fetched_whole_at_open_in_parallel_blocks() -> None:
    env = Env(payload(3 * 64 * KIB + 5), ReadPolicy(block_size=64 * KIB))
    reader = await env.open()
    assert len(env.fetcher.ranges) == 0  # tasks start on the next loop turn
    assert await asyncio.to_thread(reader.read_at, 0, 16) == env.data[:16]
    assert sorted(env.fetcher.ranges) == [
        (i * 65536, min((i + 1) * 65536, len(env.data))) for i in range(4)
    ]
    assert (
        await asyncio.to_thread(reader.read_at, 100, 250 * KIB) == env.data[100 : 100 + 250 * KIB]
    )
    assert len(env.fetcher.ranges) == 4
    reader.close()


async def test_sequential_large_reads_trigger_read_ahead() -> None:
    env = Env(payload(640 * KIB), SMALL_BLOCKS)
    reader = await env.open()
    await asyncio.to_thread(reader.read_at, 0, 64 * KIB)
    await asyncio.sleep(0.01)
    fetched = sorted(env.fetcher.ranges)
    assert fetched[:3] == [(0, 65536), (65536, 131072), (131072, 196608)]  # block + 2 ahead
    pos = 64 * KIB
    while pos < len(env.data):
        assert (
            await asyncio.to_thread(reader.read_at, pos, 64 * KIB) == env.data[pos : pos + 64 * KIB]
        )
        pos += 64 * KIB
    assert len(env.fetcher.ranges) == 10  # nothing fetched twice
    reader.close()


async def test_tiny_scattered_reads_do_not_read_ahead() -> None:
    env = Env(payload(640 * KIB), SMALL_BLOCKS)
    reader = await env.open()
    for off in (5, 200 * KIB, 90 * KIB, 500 * KIB):
        await asyncio.to_thread(reader.read_at, off, 8)
    assert len(env.fetcher.ranges) == 4
    reader.close()


async def test_short_reads_return_what_has_arrived_for_jpeg2000_only() -> None:
    env = Env(payload(256 * KIB, JP2_HEAD), SMALL_BLOCKS)
    env.fetcher.gates[65536] = asyncio.Event()  # block 1 is slow
    reader = await env.open()
    got = await asyncio.to_thread(reader.read_some, 0, 128 * KIB)
    assert got == env.data[: 64 * KIB]
    env.fetcher.gates[65536].set()
    assert (
        await asyncio.to_thread(reader.read_some, 64 * KIB, 64 * KIB)
        == env.data[64 * KIB : 128 * KIB]
    )
    reader.close()

    other = Env(payload(256 * KIB, b"II*\x00"), SMALL_BLOCKS)
    other.fetcher.gates[65536] = asyncio.Event()
    tiff = await other.open()
    waiting = asyncio.create_task(asyncio.to_thread(tiff.read_some, 0, 128 * KIB))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # a TIFF read waits for all it asked for
    other.fetcher.gates[65536].set()
    assert await waiting == other.data[: 128 * KIB]
    tiff.close()


async def test_concurrent_readers_share_fetches_and_cache() -> None:
    env = Env(payload(512 * KIB), SMALL_BLOCKS)
    readers = [await env.open() for _ in range(4)]
    await asyncio.gather(*(asyncio.to_thread(r.read_at, 0, 512 * KIB) for r in readers))
    assert sorted(env.fetcher.ranges) == sorted(set(env.fetcher.ranges))
    assert len(env.fetcher.ranges) == 8
    for r in readers:
        r.close()
    await asyncio.sleep(0)
    assert env.budget.in_use == 0


async def test_failed_fetch_raises_then_a_later_read_retries() -> None:
    env = Env(payload(128 * KIB), SMALL_BLOCKS)
    reader = await env.open()
    env.fetcher.fail_next = 1
    with pytest.raises(SourceUnavailable):
        await asyncio.to_thread(reader.read_at, 0, 10)
    assert await asyncio.to_thread(reader.read_at, 0, 10) == env.data[:10]
    reader.close()


async def test_budget_bounds_what_a_reader_holds() -> None:
    policy = ReadPolicy(block_size=64 * KIB, readahead=0, whole_object_bytes=0)
    data = payload(2 * 1024 * KIB)
    reserve = expected_cost(len(data), policy, None)
    env = Env(data, policy, budget=reserve + 64 * KIB)
    reader = await env.open()
    # Reading everything at once needs far more than the budget: refused in time.
    with pytest.raises(SourceOverloaded):
        await asyncio.to_thread(reader.read_at, 0, len(data))
    assert env.budget.peak <= env.budget.capacity
    reader.close()
    await asyncio.sleep(0)
    assert env.budget.in_use == 0


async def test_closed_reader_refuses_reads() -> None:
    env = Env(payload(10 * KIB), SMALL_BLOCKS)
    reader = await env.open()
    reader.close()
    reader.close()
    with pytest.raises(ValueError, match="closed"):
        await asyncio.to_thread(reader.read_at, 0, 1)


def segment_index(data: bytes, segments: list[tuple[int, int]]) -> ObjectIndex:
    """An index whose structure is the JP2 signature and whose data is `segments`."""
    return ObjectIndex("jp2", ((0, data[:12]),), tuple(segments), tiled=True)


async def test_announced_ranges_are_fetched_coalesced_before_reads() -> None:
    data = payload(1024 * KIB, JP2_HEAD)
    # Six 10 KiB tiles 2 KiB apart (their headers), then one far away.
    near = [(100 * KIB + i * 12 * KIB, 110 * KIB + i * 12 * KIB) for i in range(6)]
    far = (900 * KIB, 910 * KIB)
    policy = ReadPolicy(block_size=256 * KIB, whole_object_bytes=0, coalesce_gap=4 * KIB)
    env = Env(data, policy)
    reader = await env.open(segment_index(data, [*near, far]))
    reader.will_need([*near, far])
    await asyncio.sleep(0.05)
    # Two GETs: the six neighbours in one, the far one alone; nothing else yet.
    assert sorted(env.fetcher.ranges) == [(near[0][0], near[-1][1]), far]
    for start, end in [*near, far]:
        assert await asyncio.to_thread(reader.read_at, start, end - start) == data[start:end]
    assert len(env.fetcher.ranges) == 2
    reader.close()
    await asyncio.sleep(0)
    assert env.budget.in_use == 0


async def test_announced_ranges_are_split_to_keep_several_gets_busy() -> None:
    data = payload(4096 * KIB, JP2_HEAD)
    segments = [(s, s + 64 * KIB) for s in range(64 * KIB, 4096 * KIB, 64 * KIB)]
    policy = ReadPolicy(block_size=256 * KIB, whole_object_bytes=0, max_concurrent=4)
    env = Env(data, policy)
    reader = await env.open(segment_index(data, segments))
    reader.will_need(segments)
    await asyncio.sleep(0.05)
    # ~4 MiB over 4 GETs' worth: runs of about 1 MiB, covering each byte once.
    assert 4 <= len(env.fetcher.ranges) <= 5
    assert sum(end - start for start, end in env.fetcher.ranges) == 4096 * KIB - 64 * KIB
    start, end = segments[17]
    assert await asyncio.to_thread(reader.read_at, start, end - start) == data[start:end]
    reader.close()


async def test_announcements_beyond_the_budget_are_dropped_not_waited_for() -> None:
    data = payload(2048 * KIB, JP2_HEAD)
    segments = [(s, s + 128 * KIB) for s in range(128 * KIB, 2048 * KIB, 128 * KIB)]
    policy = ReadPolicy(block_size=64 * KIB, whole_object_bytes=0, coalesce_gap=0)
    index = segment_index(data, segments)
    reserved = expected_cost(len(data), policy, index)
    env = Env(data, policy, budget=reserved)
    reader = await env.open(index)
    reader.will_need(segments)
    await asyncio.sleep(0.05)
    # What the reservation holds is fetched, the rest is left to reads
    # (which wait for room in the budget); the budget is never exceeded.
    fetched = sum(end - start for start, end in env.fetcher.ranges)
    assert 0 < fetched <= reserved < 15 * 128 * KIB
    assert env.budget.peak <= env.budget.capacity
    start = segments[0][0]
    assert await asyncio.to_thread(reader.read_at, start, 1000) == data[start : start + 1000]
    reader.close()
    await asyncio.sleep(0)
    assert env.budget.in_use == 0


async def test_a_failed_read_is_kept_as_the_readers_failure() -> None:
    env = Env(payload(128 * KIB), SMALL_BLOCKS)
    reader = await env.open()
    assert reader.failure is None
    env.fetcher.fail_next = 1
    with pytest.raises(SourceUnavailable) as raised:
        await asyncio.to_thread(reader.read_at, 0, 10)
    assert reader.failure is raised.value
    reader.close()
