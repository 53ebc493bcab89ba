"""The process-wide byte budget: never exceeded, FIFO, bounded waits."""

from __future__ import annotations

import asyncio

import pytest

from decoder.admission import Overloaded
from decoder.budget import ByteBudget, SourceOverloaded
from decoder.sources.base import SourceError


async def test_reservations_never_exceed_capacity() -> None:
    budget = ByteBudget(100, wait_timeout_s=5)
    await budget.acquire(60)
    waiter = asyncio.create_task(budget.acquire(50))
    await asyncio.sleep(0)
    assert not waiter.done()
    assert budget.in_use == 60
    assert not budget.try_acquire(10)  # someone is queued: no overtaking
    budget.release(60)
    await waiter
    assert budget.in_use == 50
    assert budget.peak == 60


async def test_wait_is_bounded_and_error_is_retryable() -> None:
    budget = ByteBudget(10, wait_timeout_s=0.01)
    await budget.acquire(10)
    with pytest.raises(SourceOverloaded) as info:
        await budget.acquire(1)
    assert isinstance(info.value, SourceError)
    assert isinstance(info.value, Overloaded)
    assert info.value.retry_after_s > 0
    budget.release(10)
    assert budget.in_use == 0
    assert budget.try_acquire(10)


async def test_more_than_capacity_fails_at_once() -> None:
    budget = ByteBudget(10, wait_timeout_s=60)
    with pytest.raises(SourceOverloaded, match="whole budget"):
        await budget.acquire(11)
    assert budget.in_use == 0


async def test_cancelled_waiter_leaves_no_trace() -> None:
    budget = ByteBudget(10, wait_timeout_s=60)
    await budget.acquire(10)
    waiter = asyncio.create_task(budget.acquire(5))
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    budget.release(10)
    assert budget.in_use == 0
    assert budget.try_acquire(10)


def test_release_more_than_reserved_is_a_bug() -> None:
    with pytest.raises(ValueError, match="cannot release"):
        ByteBudget(10, 1).release(1)
