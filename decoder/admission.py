"""Admission control: bounded CPU slots and a memory budget with two lanes.

Each render is weighed by its estimated memory (decoder/cost.py) before it
starts. Small renders (viewer tiles, thumbnails) and large ones (full-size
images) queue in separate lanes: large renders may only use the budget minus
a share reserved for small ones, so a few huge requests never starve tiles.
A render that cannot fit waits in a bounded queue for a bounded time, then is
refused (RESOURCE_EXHAUSTED upstream, 503 + Retry-After at the gateway); one
that could never fit is refused at once. Refusing early keeps latency and
memory bounded when bots ask for more than we can decode.

Single event loop only (not thread-safe), like the rest of the service layer.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


class Overloaded(Exception):
    """No room became free in time, or the queue is full."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class TooLarge(Overloaded):
    """The request alone needs more than its lane's whole budget: never admissible."""


@dataclass(slots=True)
class _Waiter:
    cost: int
    small: bool
    future: asyncio.Future[None] = field(repr=False)


class Admission:
    """`slots` renders at once, within `budget_bytes` of estimated memory.

    Renders estimated at most `small_bytes` use the small lane, which may use
    the whole budget; larger ones may use at most `budget_bytes -
    reserved_small_bytes`. At most `max_queued` renders of each lane wait,
    each at most `timeout_s` seconds.
    """

    def __init__(
        self,
        slots: int,
        budget_bytes: int,
        small_bytes: int,
        reserved_small_bytes: int,
        max_queued: int,
        timeout_s: float,
    ) -> None:
        if not 0 <= reserved_small_bytes < budget_bytes:
            raise ValueError("reserved_small_bytes must be below budget_bytes")
        self._slots = slots
        self._budget = budget_bytes
        self._small_bytes = small_bytes
        self._large_cap = budget_bytes - reserved_small_bytes
        self._max_queued = max_queued
        self._timeout_s = timeout_s
        self._running = 0
        self._in_use = 0
        self._large_in_use = 0
        self._peak = 0
        self._rejected = 0
        self._queue: deque[_Waiter] = deque()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def in_use(self) -> int:
        """Estimated bytes of the renders running now."""
        return self._in_use

    @property
    def peak(self) -> int:
        """The most estimated bytes ever admitted at once."""
        return self._peak

    @property
    def rejected(self) -> int:
        return self._rejected

    @asynccontextmanager
    async def slot(self, cost: int = 0) -> AsyncIterator[None]:
        """Hold a slot and `cost` bytes for the body; raises Overloaded/TooLarge."""
        small = cost <= self._small_bytes
        limit = self._budget if small else self._large_cap
        if cost > limit:
            self._rejected += 1
            raise TooLarge(
                f"render needs about {cost >> 20} MiB, more than this decoder's "
                f"{limit >> 20} MiB budget for such requests; ask for a smaller size",
                self._timeout_s,
            )
        if self._queue or not self._fits(cost, small):
            await self._wait(cost, small)
        else:
            self._take(cost, small)
        try:
            yield
        finally:
            self._release(cost, small)

    def _fits(self, cost: int, small: bool) -> bool:
        if self._running >= self._slots or self._in_use + cost > self._budget:
            return False
        return small or self._large_in_use + cost <= self._large_cap

    def _take(self, cost: int, small: bool) -> None:
        self._running += 1
        self._in_use += cost
        if not small:
            self._large_in_use += cost
        self._peak = max(self._peak, self._in_use)

    def _release(self, cost: int, small: bool) -> None:
        self._running -= 1
        self._in_use -= cost
        if not small:
            self._large_in_use -= cost
        self._wake()

    def _wake(self) -> None:
        # FIFO within what fits: a large request at the head that cannot fit
        # does not block small ones behind it (they have their own share).
        for waiter in list(self._queue):
            if waiter.future.done():
                self._queue.remove(waiter)
            elif self._fits(waiter.cost, waiter.small):
                self._queue.remove(waiter)
                self._take(waiter.cost, waiter.small)
                waiter.future.set_result(None)
            elif self._running >= self._slots:
                break

    async def _wait(self, cost: int, small: bool) -> None:
        # Each lane has its own bound, so a flood of large renders cannot take
        # every queue place from tiles.
        if sum(1 for w in self._queue if w.small == small) >= self._max_queued:
            self._rejected += 1
            raise Overloaded("decoder busy: render queue is full", self._timeout_s)
        waiter = _Waiter(cost, small, asyncio.get_running_loop().create_future())
        self._queue.append(waiter)
        self._wake()  # it may fit at once past a large request that does not
        try:
            async with asyncio.timeout(self._timeout_s):
                await asyncio.shield(waiter.future)
        except (TimeoutError, asyncio.CancelledError) as exc:
            if waiter.future.done() and not waiter.future.cancelled():
                # Admitted in the same instant we gave up: hand the room back.
                self._release(cost, small)
            else:
                waiter.future.cancel()
                if waiter in self._queue:
                    self._queue.remove(waiter)
            if isinstance(exc, TimeoutError):
                self._rejected += 1
                raise Overloaded(
                    "decoder busy: no room for this render in time", self._timeout_s
                ) from None
            raise
