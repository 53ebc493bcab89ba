"""Blocking random-access reads of a remote object, fed ahead of the decoder.

Codecs read from worker threads (and libvips' own threads) with blocking
calls, while the HTTP client lives on the event loop. A :class:`BlockReader`
bridges the two: every read runs as a coroutine on the loop
(``run_coroutine_threadsafe(...).result(timeout)``), so a read must never be
made *on* the loop thread (it would wait for itself: deadlock; we raise
instead).

What it fetches, measured to matter with 20 ms per GET:

* aligned blocks (1 MiB by default), never tiny ranges: codecs make many
  small reads and one round trip each is what makes naive reads slow;
* read-ahead of the next blocks (4 by default) once reads are large or
  sequential, fetched concurrently (at most `max_concurrent` GETs per reader,
  plus the process-wide cap in the fetcher);
* small objects whole, as parallel block GETs issued at open: one round trip;
* with an :class:`~decoder.sources.object_index.ObjectIndex`, structure bytes
  come from the index without a request and a read inside a data segment
  fetches exactly that segment;
* "short" reads (:meth:`BlockReader.read_some`) return only what has already
  arrived, so the decoder works while later blocks are still downloading;
* announced ranges (:meth:`BlockReader.will_need`, from the render plan and
  the index's layout): fetched before the codec asks, coalesced into few
  GETs run in parallel, instead of one round trip per tile as it reads.

Blocks go through the shared :class:`BlockCache` and a table of in-flight
fetches, so concurrent requests for one image, and an index build's preload,
do not fetch a block twice. When a reader's close starts an index build
(`on_close`), its read-ahead under way is not cancelled: the GETs are
already sent, and the build, which preloads every block of objects up to
`index_preload_bytes`, would fetch them again; the bytes land in the cache,
counted against the budget until then.

Memory: a reader holds a reservation in the process :class:`ByteBudget`
(made at its first read, so requests that wait for a decode slot, or that
caches answer, hold nothing) and counts against it every byte it holds (blocks and
segments until dropped) plus the bytes it returned, which the codec may keep
(OpenJPEG copies every tile-part, so an untiled JPEG 2000 costs its size
twice). Needing more than reserved waits for budget (bounded), read-ahead
only takes room that is free now.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import threading
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from decoder.budget import ByteBudget
from decoder.sources.base import SourceError, SourceUnavailable
from decoder.sources.blockcache import BlockCache, RangeKey
from decoder.sources.layout import coalesce
from decoder.sources.object_index import ObjectIndex, accepts_short_reads

T = TypeVar("T")


class RangeFetcher(Protocol):
    """Fetches byte ranges of one object version."""

    async def fetch(self, start: int, end: int) -> bytes:
        """Exactly bytes `[start, end)` (the range lies inside the object).

        Retries transient failures itself. Raises SourceError subclasses:
        ObjectNotFound, SourceUnavailable (including "the object changed").
        """
        ...


@dataclass(frozen=True, slots=True)
class ReadPolicy:
    """How a BlockReader fetches. Sizes in bytes, times in seconds."""

    block_size: int = 1 << 20
    readahead: int = 4
    max_concurrent: int = 8
    whole_object_bytes: int = 8 << 20
    # Indexed data segments up to this size are fetched exactly; bigger ones
    # (an untiled JPEG 2000's single tile-part) in blocks with read-ahead.
    max_segment_bytes: int = 4 << 20
    # How long a worker thread waits for one read before giving up.
    read_timeout_s: float = 60.0
    # Announced ranges this close together are fetched with one GET (the
    # bytes between cost less than another request); a GET spans at most
    # max_run_bytes, and less when that keeps max_concurrent GETs busy.
    coalesce_gap: int = 128 << 10
    max_run_bytes: int = 8 << 20
    # Objects up to this size are fetched whole (in parallel blocks) to build
    # their index: one round trip instead of one per structure read.
    index_preload_bytes: int = 32 << 20


@dataclass(frozen=True, slots=True)
class RemoteObject:
    """One object version: where it is (`location`), its `version` (ETag)
    and `size` in bytes. Together they key the shared caches."""

    location: str
    version: str
    size: int


class InflightTable:
    """Fetches in progress, process-wide, so concurrent readers share one GET.

    Used on the event loop only.
    """

    def __init__(self) -> None:
        self._futures: dict[RangeKey, asyncio.Future[bytes]] = {}
        # Fetches of closed readers still landing in the cache (asyncio
        # itself keeps only weak references to tasks).
        self._landing: set[asyncio.Task[bytes]] = set()

    def get(self, key: RangeKey) -> asyncio.Future[bytes] | None:
        return self._futures.get(key)

    def start(self, key: RangeKey) -> asyncio.Future[bytes]:
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._futures[key] = future
        return future

    def finish(self, key: RangeKey) -> None:
        self._futures.pop(key, None)

    def __len__(self) -> int:
        return len(self._futures)

    def hold(self, task: asyncio.Task[bytes]) -> None:
        """Keep `task`, a closed reader's fetch, running until it is done."""
        self._landing.add(task)
        task.add_done_callback(self._landing.discard)

    def cancel_held(self) -> None:
        """Cancel every fetch :meth:`hold` keeps (the source is closing)."""
        for task in list(self._landing):
            task.cancel()

    async def wait_held(self) -> None:
        """Wait until every fetch :meth:`hold` keeps is done (tests)."""
        while self._landing:
            await asyncio.gather(*self._landing, return_exceptions=True)


class _Abandoned(SourceUnavailable):
    """A shared fetch was cancelled by the reader that started it."""


def expected_cost(size: int, policy: ReadPolicy, index: ObjectIndex | None) -> int:
    """Bytes to reserve when opening an object of `size` bytes.

    Small objects are fetched whole and the codec may copy all of them:
    twice the size. An untiled indexed object is read whole by codecs too.
    Otherwise the read-ahead window plus the blocks of one read, twice
    (ours and the codec's copy); more is reserved on demand.
    """
    window = (policy.readahead + 2) * policy.block_size
    if size <= policy.whole_object_bytes or (index is not None and not index.tiled):
        return 2 * size
    return min(2 * size, 2 * window)


class BlockReader:
    """A ByteReader over a remote object (see the module docstring).

    Create it on the event loop thread (``loop``), with `reserved` bytes
    already reserved in `budget` and `deferred` more to reserve at its first
    read; it releases what it holds on close. Thread-safe for reads from any
    thread but the loop's; all state lives on the loop.
    """

    def __init__(
        self,
        *,
        obj: RemoteObject,
        fetcher: RangeFetcher,
        policy: ReadPolicy,
        cache: BlockCache,
        inflight: InflightTable,
        budget: ByteBudget,
        reserved: int,
        index: ObjectIndex | None = None,
        deferred: int = 0,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._obj = obj
        self._fetcher = fetcher
        self._policy = policy
        self._cache = cache
        self._inflight = inflight
        self._budget = budget
        self._reserved = reserved
        self._deferred = deferred
        self._used = 0  # bytes held + bytes handed to the codec (capped at size)
        self._returned = 0
        self._index = index
        self._held: dict[tuple[int, int], asyncio.Task[bytes]] = {}
        self._ahead: set[asyncio.Task[bytes]] = set()  # speculative loads not done yet
        self._runs: set[asyncio.Task[None]] = set()
        self._limit = asyncio.Semaphore(policy.max_concurrent)
        self._short_ok: bool | None = None  # decided from the first bytes
        self._last_end = -1
        self._sequential = 0
        self._closed = False
        self._close_lock = threading.Lock()
        self._failure: SourceError | None = None
        # Called on the loop once the reader is closed (the source uses it
        # to build the object index from the blocks this request fetched,
        # read-ahead still arriving included).
        self.on_close: Callable[[], None] | None = None
        # Per-reader counters, for logs and tests.
        self.gets = 0
        self.bytes_fetched = 0
        if obj.size <= policy.whole_object_bytes and not (index is not None and index.tiled):
            # One round trip for the whole object, as parallel block GETs.
            for start in range(0, obj.size, policy.block_size):
                self._ensure(self._block(start), speculative=True)

    # -- ByteReader ---------------------------------------------------------

    @property
    def size(self) -> int:
        """The object's length in bytes."""
        return self._obj.size

    @property
    def path(self) -> Path | None:
        """Always None: the bytes are remote."""
        return None

    @property
    def index(self) -> ObjectIndex | None:
        """The object index this reader uses, if any."""
        return self._index

    @property
    def failure(self) -> SourceError | None:
        """The first source error a read raised. Codec libraries that call
        reads through C (libvips' custom sources) swallow it and report a
        corrupt file; the pipeline raises this instead, so an overloaded
        or unavailable store is not mistaken for a bad image."""
        return self._failure

    def read_at(self, offset: int, length: int) -> bytes:
        """Exactly `length` bytes at `offset` (fewer only at the end). Blocks.

        Raises ValueError for negative arguments, a closed reader or a call
        on the event loop thread (it would deadlock); SourceUnavailable on
        fetch failures or when no data came within the read timeout;
        SourceOverloaded when the memory budget had no room in time.
        """
        return self._call(lambda: self._read(offset, length, short=False))

    def read_some(self, offset: int, length: int) -> bytes:
        """Between 1 and `length` bytes at `offset` (empty only at the end):
        whatever is available without waiting once the first byte is there,
        as ``read(2)`` does. Only JPEG 2000 files get short reads (their
        codec loops; libtiff does not): for others this is :meth:`read_at`.
        Raises as :meth:`read_at`."""
        return self._call(lambda: self._read(offset, length, short=True))

    def will_need(self, ranges: Sequence[tuple[int, int]]) -> None:
        """Hint that the codec will read these `(start, end)` ranges soon:
        fetch them now, coalesced into few parallel GETs, as far as the
        memory budget has room. Returns at once; callable from any thread.
        Ranges must be data segments of the index (bigger ones are left to
        block reads)."""
        if self._closed or not ranges:
            return
        wanted = list(ranges)
        if threading.get_ident() == self._loop_thread:
            self._prefetch(wanted)
        else:
            # Queued before any read this thread makes next, so that read
            # finds the fetch already started.
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._prefetch, wanted)

    def close(self) -> None:
        """Cancel outstanding fetches and release the reservation; when
        `on_close` is set, read-ahead under way lands in the shared cache
        instead, its part of the reservation released then. Idempotent,
        callable from any thread."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if threading.get_ident() == self._loop_thread:
            self._close_on_loop()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is already closed
                self._loop.call_soon_threadsafe(self._close_on_loop)

    # -- internals: the bridge ------------------------------------------------

    def _call(self, make: Any) -> bytes:
        if threading.get_ident() == self._loop_thread:
            raise ValueError("BlockReader read on the event loop thread would deadlock")
        if self._closed:
            raise ValueError("reader is closed")
        coro: Coroutine[Any, Any, bytes] = make()
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            try:
                return future.result(self._policy.read_timeout_s)
            except concurrent.futures.TimeoutError:
                future.cancel()
                raise SourceUnavailable(
                    f"no data from storage within {self._policy.read_timeout_s:g}s"
                ) from None
            except concurrent.futures.CancelledError:
                raise SourceUnavailable("read cancelled (reader closed)") from None
        except SourceError as exc:
            if self._failure is None:
                self._failure = exc
            raise

    def _close_on_loop(self) -> None:
        for run in self._runs:
            run.cancel()
        landing = 0
        hand_over = self.on_close is not None
        for (start, end), task in self._held.items():
            if hand_over and task in self._ahead and landing + end - start <= self._reserved:
                # Its GET is sent (or about to be): cancelling saves little
                # transfer, and the index build on_close starts would fetch
                # the block again.
                landing += end - start
                self._inflight.hold(task)
                task.add_done_callback(functools.partial(self._landed, end - start))
            else:
                task.cancel()
        self._held.clear()
        self._runs.clear()
        self._budget.release(self._reserved - landing)
        self._reserved = 0
        self._used = 0
        if self.on_close is not None:
            self.on_close()

    def _landed(self, nbytes: int, _task: asyncio.Task[bytes]) -> None:
        self._budget.release(nbytes)

    # -- internals: reading, on the loop --------------------------------------

    def _block(self, pos: int) -> tuple[int, int]:
        start = pos - pos % self._policy.block_size
        return start, min(start + self._policy.block_size, self._obj.size)

    def _range_for(self, pos: int) -> tuple[tuple[int, int], bool]:
        """The range to fetch for byte `pos` and whether it is an index segment."""
        if self._index is not None:
            segment = self._index.segment_at(pos)
            if segment is not None and segment[1] - segment[0] <= self._policy.max_segment_bytes:
                return segment, True
        return self._block(pos), False

    async def _read(self, offset: int, length: int, short: bool) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must be >= 0")
        if self._closed:
            raise ValueError("reader is closed")
        if self._deferred:
            nbytes, self._deferred = self._deferred, 0
            await self._reserve(nbytes)
        if short and self._short_ok is None:
            # Only some codecs take short reads; the file's signature says.
            self._short_ok = accepts_short_reads(await self._read(0, 16, short=False))
        short = short and bool(self._short_ok)
        end = min(offset + length, self._obj.size)
        if offset >= end:
            return b""
        # Plan: a list of (bytes | task, start within piece, stop within piece).
        plan: list[tuple[bytes | asyncio.Task[bytes], int, int]] = []
        pos, last_block = offset, -1
        while pos < end:
            known = self._index.known_at(pos) if self._index is not None else None
            if known is not None:
                kstart, data = known
                stop = min(end, kstart + len(data))
                plan.append((data, pos - kstart, stop - kstart))
                pos = stop
                continue
            if short and plan and self._index is not None:
                # Do not fetch data the codec may skip (JPEG 2000 tile walks
                # read 1 MiB at every tile-part header, then seek past it).
                break
            (rstart, rend), is_segment = self._range_for(pos)
            stop = min(end, rend, self._next_known(pos))
            task = self._ensure((rstart, rend), speculative=False)
            assert task is not None
            plan.append((task, pos - rstart, stop - rstart))
            last_block = -1 if is_segment else rstart
            pos = stop
        self._maybe_read_ahead(offset, end, last_block)
        pieces: list[bytes] = []
        for i, (source, lo, hi) in enumerate(plan):
            if isinstance(source, bytes):
                pieces.append(source[lo:hi])
                continue
            if short and i > 0 and not _ready(source):
                break  # return what is there; the codec will ask again
            data = await asyncio.shield(source)
            pieces.append(data[lo:hi])
        result = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        await self._charge_returned(len(result))
        self._drop_behind(offset + len(result))
        return result

    def _next_known(self, pos: int) -> int:
        """Where the next known (indexed) range after `pos` starts."""
        start = self._index.next_known_start(pos) if self._index is not None else None
        return self._obj.size if start is None else start

    def _maybe_read_ahead(self, offset: int, end: int, last_block: int) -> None:
        self._sequential = self._sequential + (end - offset) if offset == self._last_end else 0
        self._last_end = end
        big = end - offset >= self._policy.block_size // 2
        streak = self._sequential >= self._policy.block_size // 4
        if last_block < 0 or not (big or streak):
            return
        step = self._policy.block_size
        for i in range(1, self._policy.readahead + 1):
            start = last_block + i * step
            if start >= self._obj.size:
                break
            if self._index is not None and self._index.known_at(start) is not None:
                break  # structure ahead: served from the index, nothing to prefetch
            if self._ensure(self._block(start), speculative=True) is None:
                break  # no free budget now: read-ahead is optional

    def _prefetch(self, ranges: list[tuple[int, int]]) -> None:
        if self._closed:
            return
        policy, obj = self._policy, self._obj
        todo: list[tuple[int, int]] = []
        for start, end in ranges:
            if not 0 <= start < end <= obj.size or end - start > policy.max_segment_bytes:
                continue
            key = RangeKey(obj.location, obj.version, start, end)
            if (start, end) in self._held or self._inflight.get(key) is not None:
                continue
            if self._cached(key) is None:
                todo.append((start, end))
        if not todo:
            return
        total = sum(end - start for start, end in todo)
        max_run = max(
            policy.block_size, min(policy.max_run_bytes, -(-total // policy.max_concurrent))
        )
        for run in coalesce(todo, policy.coalesce_gap, max_run):
            span = (run[0][0], max(end for _, end in run))
            # Room for the bytes and for the codec's copy of them, so that
            # announcing never leaves the decode itself without room.
            if not self._try_charge(2 * (span[1] - span[0])):
                break  # no room now: the rest is read on demand
            self._uncharge(span[1] - span[0])
            futures = {
                rng: self._inflight.start(RangeKey(obj.location, obj.version, *rng)) for rng in run
            }
            task = self._loop.create_task(self._fetch_run(span, futures))
            self._runs.add(task)
            task.add_done_callback(self._runs.discard)
            for rng in futures:
                # Readers of these ranges join the run's fetch (via the
                # in-flight table); their bytes are charged with the run.
                self._held[rng] = self._loop.create_task(self._load(rng, charged=True))
                self._held[rng].add_done_callback(self._loaded)

    def _cached(self, key: RangeKey) -> bytes | None:
        """`key`'s bytes from the cache: cached as this range, or within
        cached aligned blocks (an index build or a block read fetched them)."""
        data = self._cache.get(key)
        if data is None:
            data = self._cache.peek_span(
                key.location,
                key.version,
                key.start,
                key.end,
                self._policy.block_size,
                self._obj.size,
            )
        return data

    async def _fetch_run(
        self, span: tuple[int, int], futures: dict[tuple[int, int], asyncio.Future[bytes]]
    ) -> None:
        obj = self._obj
        try:
            async with self._limit:
                data = await self._fetcher.fetch(*span)
            self.gets += 1
            self.bytes_fetched += len(data)
            for (start, end), future in futures.items():
                piece = data[start - span[0] : end - span[0]]
                self._cache.put(RangeKey(obj.location, obj.version, start, end), piece)
                future.set_result(piece)
        except asyncio.CancelledError:
            for future in futures.values():
                if not future.done():
                    future.set_exception(_Abandoned("fetch abandoned"))
            raise
        except Exception as exc:  # handed to every reader of the run, not raised
            for future in futures.values():
                if not future.done():
                    future.set_exception(exc)
        finally:
            for rng, future in futures.items():
                self._inflight.finish(RangeKey(obj.location, obj.version, *rng))
                if future.done() and not future.cancelled():
                    future.exception()  # mark retrieved: nobody may be waiting

    def _ensure(self, rng: tuple[int, int], speculative: bool) -> asyncio.Task[bytes] | None:
        """The task loading `rng`, started if needed. Speculative loads only
        start if their bytes fit in the budget right now."""
        task = self._held.get(rng)
        if task is not None:
            return task
        nbytes = rng[1] - rng[0]
        if speculative and not self._try_charge(nbytes):
            return None
        task = self._loop.create_task(self._load(rng, charged=speculative))
        task.add_done_callback(self._loaded)
        if speculative:
            self._ahead.add(task)
            task.add_done_callback(self._ahead.discard)
        self._held[rng] = task
        return task

    def _loaded(self, task: asyncio.Task[bytes]) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:
            # Forget failed loads (a later read retries) and their charge.
            for rng, held in list(self._held.items()):
                if held is task:
                    del self._held[rng]
                    self._uncharge(rng[1] - rng[0])

    async def _load(self, rng: tuple[int, int], charged: bool) -> bytes:
        start, end = rng
        if not charged:
            await self._charge(end - start)
        key = RangeKey(self._obj.location, self._obj.version, start, end)

        async def fetch() -> bytes:
            async with self._limit:
                data = await self._fetcher.fetch(key.start, key.end)
            self.gets += 1
            self.bytes_fetched += len(data)
            return data

        return await _shared_load(key, self._cached(key), fetch, self._cache, self._inflight)

    def _drop_behind(self, consumed_to: int) -> None:
        """Stop holding blocks that end at or before `consumed_to` (the codec
        has its copy; a seek back finds them in the cache or fetches again)."""
        if self._index is not None:
            return  # indexed readers hold few, exact ranges: keep them
        for rng, task in list(self._held.items()):
            if rng[1] <= consumed_to and rng[1] - rng[0] == self._policy.block_size and task.done():
                del self._held[rng]
                self._uncharge(rng[1] - rng[0])

    # -- internals: accounting ---------------------------------------------------

    async def _reserve(self, nbytes: int) -> None:
        await self._budget.acquire(nbytes)
        if self._closed:  # closed while waiting: give it straight back
            self._budget.release(nbytes)
            raise SourceUnavailable("reader closed")
        self._reserved += nbytes

    def _try_charge(self, nbytes: int) -> bool:
        need = self._used + nbytes - self._reserved
        if need > 0:
            if not self._budget.try_acquire(need):
                return False
            self._reserved += need
        self._used += nbytes
        return True

    async def _charge(self, nbytes: int) -> None:
        need = self._used + nbytes - self._reserved
        if need > 0:
            await self._reserve(need)
        self._used += nbytes

    def _uncharge(self, nbytes: int) -> None:
        self._used = max(0, self._used - nbytes)

    async def _charge_returned(self, nbytes: int) -> None:
        size = self._obj.size
        before = min(self._returned, size)
        self._returned += nbytes
        delta = min(self._returned, size) - before
        if delta:
            await self._charge(delta)


def _ready(task: asyncio.Task[bytes]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


async def _shared_load(
    key: RangeKey,
    cached: bytes | None,
    fetch: Callable[[], Awaitable[bytes]],
    cache: BlockCache,
    inflight: InflightTable,
) -> bytes:
    """`key`'s bytes: `cached` (what the cache holds of it) if any, else those
    of a fetch in flight, else `fetch()`'s (see :func:`_fetch_into_cache`).
    A fetch in flight that its owner abandons is made again here."""
    if cached is not None:
        return cached
    shared = inflight.get(key)
    if shared is not None:
        with contextlib.suppress(_Abandoned):
            return await asyncio.shield(shared)
    return await _fetch_into_cache(key, fetch, cache, inflight)


async def _fetch_into_cache(
    key: RangeKey,
    fetch: Callable[[], Awaitable[bytes]],
    cache: BlockCache,
    inflight: InflightTable,
) -> bytes:
    """`fetch()` of `key`'s bytes, announced in `inflight` while it runs so
    that others wanting the same range join it, and cached. Raises what
    `fetch` raises; those who joined get it too (_Abandoned if cancelled)."""
    future = inflight.start(key)
    try:
        data = await fetch()
        cache.put(key, data)
        future.set_result(data)
        return data
    except asyncio.CancelledError:
        future.set_exception(_Abandoned("fetch abandoned"))
        raise
    except BaseException as exc:
        future.set_exception(exc)
        raise
    finally:
        inflight.finish(key)
        if future.done() and not future.cancelled():
            future.exception()  # mark retrieved: nobody may be waiting


class IndexReads:
    """The read function index builders use: small ranges, preferring bytes
    that cached blocks already hold, else exact GETs of aligned `chunk`-byte
    pieces (fetched once per build), all counted against `budget` until
    :meth:`release`. Block fetches (:meth:`preload`) go through `inflight`,
    shared with readers. Use on the event loop only."""

    def __init__(
        self,
        obj: RemoteObject,
        fetcher: RangeFetcher,
        cache: BlockCache,
        budget: ByteBudget,
        block_size: int,
        chunk: int = 16 * 1024,
        *,
        inflight: InflightTable,
    ) -> None:
        self._obj = obj
        self._fetcher = fetcher
        self._cache = cache
        self._inflight = inflight
        self._budget = budget
        self._block_size = block_size
        self._chunk = chunk
        self._chunks: dict[int, asyncio.Future[bytes]] = {}
        self._reserved = 0
        self.gets = 0

    async def read(self, offset: int, length: int) -> bytes:
        """Bytes `[offset, offset + length)`, short only at the end of the object."""
        end = min(offset + length, self._obj.size)
        if offset >= end:
            return b""
        cached = self._cache.peek_span(
            self._obj.location, self._obj.version, offset, end, self._block_size, self._obj.size
        )
        if cached is not None:
            return cached
        first = offset - offset % self._chunk
        parts = [await self._piece(s) for s in range(first, end, self._chunk)]
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        return data[offset - first : end - first]

    async def _piece(self, start: int) -> bytes:
        future = self._chunks.get(start)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._chunks[start] = future
            end = min(start + self._chunk, self._obj.size)
            try:
                await self._budget.acquire(end - start)
                self._reserved += end - start
                data = await self._fetcher.fetch(start, end)
                self.gets += 1
            except BaseException as exc:
                del self._chunks[start]
                future.set_exception(exc)
                future.exception()
                raise
            future.set_result(data)
        return await future

    async def preload(self, concurrency: int) -> None:
        """Fetch the whole object into the block cache, as parallel aligned
        blocks (one round trip), so the build reads from memory. Worth it for
        objects small enough: a chain of structure reads otherwise costs a
        round trip each (a JPEG 2000 file has a tile-part header every few
        dozen KiB). The bytes count against the budget until :meth:`release`.
        Blocks readers are fetching are joined, not fetched again (the build
        starts when a first request closes, while others may still read)."""
        size, step = self._obj.size, self._block_size
        missing = [
            start
            for start in range(0, size, step)
            if self._cache.get(self._key(start, min(start + step, size))) is None
        ]
        if not missing:
            return
        total = sum(min(start + step, size) - start for start in missing)
        await self._budget.acquire(total)
        self._reserved += total
        limit = asyncio.Semaphore(max(1, concurrency))

        async def one(start: int) -> None:
            key = self._key(start, min(start + step, size))

            async def fetch() -> bytes:
                async with limit:
                    data = await self._fetcher.fetch(key.start, key.end)
                self.gets += 1
                return data

            # A reader's fetch may have landed since `missing` was listed.
            cached = self._cache.peek_span(*key, step, size)
            await _shared_load(key, cached, fetch, self._cache, self._inflight)

        await asyncio.gather(*(one(start) for start in missing))

    def _key(self, start: int, end: int) -> RangeKey:
        return RangeKey(self._obj.location, self._obj.version, start, end)

    def release(self) -> None:
        """Give back every byte this build reserved."""
        self._chunks.clear()
        self._budget.release(self._reserved)
        self._reserved = 0


async def run_bounded(coro: Coroutine[Any, Any, T], timeout_s: float) -> T:
    """`coro` with a time limit; TimeoutError becomes SourceUnavailable."""
    try:
        async with asyncio.timeout(timeout_s):
            return await coro
    except TimeoutError:
        raise SourceUnavailable(f"storage did not answer within {timeout_s:g}s") from None


__all__ = [
    "BlockReader",
    "IndexReads",
    "InflightTable",
    "RangeFetcher",
    "ReadPolicy",
    "RemoteObject",
    "expected_cost",
    "run_bounded",
]
