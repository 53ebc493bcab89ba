"""Admission control: run at most N renders at once, queue a bounded number, refuse the rest.

Refusing early (RESOURCE_EXHAUSTED, turned into 503 + Retry-After by the gateway)
keeps latency and memory bounded when bots ask for more than we can decode.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Overloaded(Exception):
    """No decode slot became free in time, or the queue is full."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Admission:
    """`slots` concurrent holders; at most `max_queued` waiting, each for `timeout_s`."""

    def __init__(self, slots: int, max_queued: int, timeout_s: float) -> None:
        self._slots = asyncio.Semaphore(slots)
        self._max_queued = max_queued
        self._timeout_s = timeout_s
        self._waiting = 0

    @property
    def waiting(self) -> int:
        return self._waiting

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the body; raises Overloaded when none comes in time."""
        if self._slots.locked():
            if self._waiting >= self._max_queued:
                raise Overloaded("decoder busy: render queue is full", self._timeout_s)
            self._waiting += 1
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._slots.acquire()
            except TimeoutError:
                raise Overloaded("decoder busy: no decode slot in time", self._timeout_s) from None
            finally:
                self._waiting -= 1
        else:
            await self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()
