"""A process-wide byte budget for data fetched from remote sources.

Every byte a remote reader holds for a request (fetched blocks, and the copy
the codec keeps of what it read) is reserved here first. The sum of
reservations never exceeds the capacity: a reservation that does not fit
waits, FIFO, at most `wait_timeout_s`, then fails with SourceOverloaded
(RESOURCE_EXHAUSTED, retryable). A reservation larger than the whole budget
fails at once, since waiting could never help.

Not thread-safe: use it from one event loop only (remote readers do all their
accounting on the loop; worker threads only wait for results).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass

from decoder.admission import Overloaded
from decoder.sources.base import SourceError


class SourceOverloaded(SourceError, Overloaded):
    """The byte budget (or another source limit) had no room in time.

    Both a SourceError (sources raise it) and an admission.Overloaded, so the
    servicer maps it to RESOURCE_EXHAUSTED with a retry-after hint.
    """


@dataclass(slots=True)
class _Waiter:
    nbytes: int
    future: asyncio.Future[None]


class ByteBudget:
    """At most `capacity` bytes reserved at once, process-wide.

    `capacity` is in bytes (>= 1); `wait_timeout_s` is how long one
    reservation may wait for room (seconds). `peak` records the highest
    amount ever reserved, for tests and metrics.
    """

    def __init__(self, capacity: int, wait_timeout_s: float) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1 byte")
        self._capacity = capacity
        self._timeout_s = wait_timeout_s
        self._in_use = 0
        self._peak = 0
        self._waiters: deque[_Waiter] = deque()

    @property
    def capacity(self) -> int:
        """The budget in bytes."""
        return self._capacity

    @property
    def in_use(self) -> int:
        """Bytes reserved right now."""
        return self._in_use

    @property
    def peak(self) -> int:
        """The most bytes ever reserved at once."""
        return self._peak

    def check_fits(self, nbytes: int) -> None:
        """Raise SourceOverloaded if `nbytes` could never be reserved (more
        than the whole capacity); reserves nothing."""
        if nbytes > self._capacity:
            raise SourceOverloaded(
                f"request needs {nbytes} bytes of source buffers, more than the "
                f"whole budget of {self._capacity}",
                self._timeout_s,
            )

    def try_acquire(self, nbytes: int) -> bool:
        """Reserve `nbytes` if they fit now and nobody is queued; never waits."""
        if nbytes < 0:
            raise ValueError("nbytes must be >= 0")
        # Queued reservations go first: opportunistic ones (read-ahead) must
        # not starve requests that are waiting.
        if self._waiters or self._in_use + nbytes > self._capacity:
            return False
        self._take(nbytes)
        return True

    async def acquire(self, nbytes: int) -> None:
        """Reserve `nbytes`, waiting up to the budget's timeout for room.

        Raises SourceOverloaded if `nbytes` exceeds the capacity or no room
        came in time; nothing is reserved then.
        """
        self.check_fits(nbytes)
        if self.try_acquire(nbytes):
            return
        waiter = _Waiter(nbytes, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self._timeout_s):
                await waiter.future
        except TimeoutError:
            self._abandon(waiter)
            raise SourceOverloaded(
                f"source memory budget full: no room for {nbytes} bytes within "
                f"{self._timeout_s:g}s",
                self._timeout_s,
            ) from None
        except BaseException:
            self._abandon(waiter)
            raise

    def release(self, nbytes: int) -> None:
        """Return `nbytes` reserved earlier and wake waiters that now fit."""
        if nbytes < 0 or nbytes > self._in_use:
            raise ValueError(f"cannot release {nbytes} of {self._in_use} reserved bytes")
        self._in_use -= nbytes
        self._wake()

    # -- internals ----------------------------------------------------------

    def _take(self, nbytes: int) -> None:
        self._in_use += nbytes
        self._peak = max(self._peak, self._in_use)

    def _abandon(self, waiter: _Waiter) -> None:
        """Forget a waiter that gave up; give back room granted meanwhile."""
        if waiter.future.done() and not waiter.future.cancelled():
            self.release(waiter.nbytes)  # granted just as it timed out
            return
        waiter.future.cancel()
        with contextlib.suppress(ValueError):
            self._waiters.remove(waiter)
        self._wake()  # the head may have changed: whoever is next may fit

    def _wake(self) -> None:
        # Strict FIFO: a big reservation at the head is not overtaken by small
        # ones, so it cannot starve.
        while self._waiters:
            head = self._waiters[0]
            if head.future.done():
                self._waiters.popleft()
                continue
            if self._in_use + head.nbytes > self._capacity:
                return
            self._waiters.popleft()
            self._take(head.nbytes)
            head.future.set_result(None)
