"""Admission control: memory-weighted, two lanes, bounded queue and wait."""

from __future__ import annotations

import asyncio

import pytest

from decoder.admission import Admission, Overloaded, TooLarge

MiB = 1 << 20


def make(slots: int = 4, max_queued: int = 8, timeout_s: float = 5.0) -> Admission:
    # 100 MiB budget, renders up to 10 MiB are "small", 25 MiB reserved for them.
    return Admission(
        slots=slots,
        budget_bytes=100 * MiB,
        small_bytes=10 * MiB,
        reserved_small_bytes=25 * MiB,
        max_queued=max_queued,
        timeout_s=timeout_s,
    )


async def test_refuses_at_once_what_could_never_fit() -> None:
    admission = make()
    with pytest.raises(TooLarge, match="budget"):
        async with admission.slot(76 * MiB):
            pass
    assert admission.in_use == 0
    assert admission.rejected == 1


async def test_large_renders_leave_the_small_lane_free() -> None:
    admission = make()
    release = asyncio.Event()
    started: list[str] = []

    async def hold(name: str, cost: int) -> None:
        async with admission.slot(cost):
            started.append(name)
            await release.wait()

    big = asyncio.create_task(hold("big", 70 * MiB))
    await asyncio.sleep(0)
    second_big = asyncio.create_task(hold("big2", 20 * MiB))  # 90 > 75 MiB large cap
    tiles = [asyncio.create_task(hold(f"tile{i}", 8 * MiB)) for i in range(3)]
    await asyncio.sleep(0.01)
    assert started == ["big", "tile0", "tile1", "tile2"], "small renders pass a waiting large one"
    assert admission.in_use <= 100 * MiB
    release.set()
    await asyncio.gather(big, second_big, *tiles)
    assert admission.peak <= 100 * MiB
    assert admission.in_use == 0


async def test_queue_is_bounded_and_waits_are_bounded() -> None:
    admission = make(slots=1, max_queued=1, timeout_s=0.05)
    release = asyncio.Event()

    async def hold() -> None:
        async with admission.slot(1 * MiB):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    with pytest.raises(Overloaded, match="queue is full"):
        async with admission.slot(1 * MiB):
            pass
    with pytest.raises(Overloaded, match="in time"):
        await waiter
    release.set()
    await holder
    assert admission.in_use == 0
    assert admission.waiting == 0


async def test_cancelled_waiter_leaves_no_trace() -> None:
    admission = make(slots=1)
    release = asyncio.Event()

    async def hold() -> None:
        async with admission.slot(1 * MiB):
            await release.wait()

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(hold())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder
    assert (admission.in_use, admission.waiting) == (0, 0)
    async with admission.slot(1 * MiB):
        assert admission.in_use == 1 * MiB


async def test_many_concurrent_renders_never_exceed_the_budget() -> None:
    admission = make(slots=3, max_queued=100, timeout_s=5)
    costs = [(i * 7919) % (30 * MiB) + 1 for i in range(60)]

    async def one(cost: int) -> None:
        async with admission.slot(cost):
            assert admission.in_use <= 100 * MiB
            await asyncio.sleep(0.001)

    await asyncio.gather(*(one(c) for c in costs))
    assert admission.peak <= 100 * MiB
    assert admission.in_use == 0


async def test_large_renders_cannot_fill_the_small_lanes_queue() -> None:
    admission = make(slots=1, max_queued=2, timeout_s=1)
    release = asyncio.Event()

    async def hold(cost: int) -> None:
        async with admission.slot(cost):
            await release.wait()

    holder = asyncio.create_task(hold(1 * MiB))
    await asyncio.sleep(0)
    large = [asyncio.create_task(hold(20 * MiB)) for _ in range(2)]
    await asyncio.sleep(0)
    with pytest.raises(Overloaded, match="queue is full"):
        async with admission.slot(20 * MiB):
            pass
    tile = asyncio.create_task(hold(1 * MiB))  # still finds a place in its own lane
    await asyncio.sleep(0)
    assert admission.waiting == 3
    release.set()
    await asyncio.gather(holder, tile, *large)
