"""The decoder's use cases, free of gRPC: describe an image, render a plan.

Blocking work (sniffing, libvips) runs on a bounded thread pool so the event
loop only schedules. Every render is weighed by its estimated memory and
admitted against the budget first; identical renders in flight at the same
moment are done once and shared; a render nobody waits for any more is
cancelled, down to libvips' evaluation.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Final, TypeVar

from cachetools import LRUCache

from decoder import metrics
from decoder.admission import Admission
from decoder.cost import estimate_render_bytes
from decoder.engines.base import ImageInfo, SourceFormat
from decoder.engines.registry import EngineRegistry
from decoder.engines.sniff import SNIFF_BYTES, sniff
from decoder.pipeline import passthrough, run_pipeline, stored_tiles
from decoder.plan import InvalidPlan, Plan
from decoder.sources.base import ByteReader, ObjectStat, Source, SourceObject

T = TypeVar("T")


class VersionMismatch(Exception):
    """The source changed since the caller described it."""


class SourceTooLarge(Exception):
    """The source exceeds the configured pixel or byte limit."""


@dataclass(frozen=True, slots=True)
class SourceLimits:
    """Largest source accepted: pixels (width x height) and bytes; 0 = no limit."""

    max_pixels: int = 0
    max_bytes: int = 0


@dataclass(frozen=True, slots=True)
class Description:
    stat: ObjectStat
    info: ImageInfo
    # Per level of `info`: whether its whole tiles can be sent as stored.
    stored_tiles: tuple[bool, ...] = ()


@dataclass(frozen=True, slots=True)
class StoredTiles:
    stat: ObjectStat
    content_type: str
    # (column, row, bytes), row by row.
    tiles: list[tuple[int, int, bytes]]


@dataclass(frozen=True, slots=True)
class TileRect:
    """A rectangle of one level's grid of `span` x `span` groups of stored
    tiles (span 1: the stored tiles themselves)."""

    level: int
    column: int
    row: int
    columns: int
    rows: int
    span: int = 1

    @property
    def stored_tiles(self) -> int:
        """How many stored tiles lie under the rectangle (before clipping)."""
        return self.columns * self.rows * (self.span or 1) ** 2


@dataclass(frozen=True, slots=True)
class TileCells:
    """Chosen groups of one level's grid of `span` x `span` groups of stored
    tiles, by (column, row): what a caller gathering scattered requests asks
    for (see TileRect)."""

    level: int
    cells: tuple[tuple[int, int], ...]
    span: int = 1

    @property
    def stored_tiles(self) -> int:
        """How many stored tiles lie under the groups (each counted once)."""
        return len(set(self.cells)) * (self.span or 1) ** 2


TileSelection = TileRect | TileCells


# One StoredTiles call covers at most this many stored tiles and answers at
# most this many bytes: a bound on the memory it holds, and on the caller's
# wait for its first tile. Below gRPC's 4 MiB message limit, so a single
# answer always fits one message.
MAX_STORED_TILES: Final = 256
MAX_STORED_TILE_BYTES: Final = 3 * 1024 * 1024
# Decode threads one StoredTiles call of groups of a local file may join on
# at once. Measured on TIFF first passes (2 cores, 10 alternating rounds):
# calls of up to 7 groups joined by up to 4 threads instead of one cut the
# p99 at c=16 from 62 to 51 ms at the same rate; one thread a group (7 at
# once) cost 13% of the rate at c=4.
JOIN_TASKS: Final = 4
# A call of a local file whose groups hold at most this many stored tiles is
# joined on the event loop, as whole tiles are read there: a few ms of C (the
# loop waits, about 1.5 ms a 2 x 2 group) instead of two thread wake-ups,
# which on our 2-core machines cost more than the join at low concurrency.
# Measured on TIFF first passes, alternating with joins on threads: in two
# slow hours (8 rounds each) 1.07-1.14 of the rate at c=4 with p99 20-23 ->
# 18-19 ms, and 1.00-1.04 at c=16; in a fast hour (10 rounds) the same rate
# at both, p99 45 -> 40 ms at c=16 and 15 -> 14 ms at c=4. Up to 4 groups
# inline gave 1.10 at c=4 but 0.96 at c=16.
INLINE_JOIN_TILES: Final = 8
# What a call may hold at once: the tiles as read (with the gaps between
# tiles read together), their spliced copies and the answer; the working
# memory of a group being joined is added per call.
_STORED_TILES_COST: Final = (
    2 * stored_tiles.READ_FACTOR + 1
) * MAX_STORED_TILE_BYTES + MAX_STORED_TILES * passthrough.MAX_GAP_BYTES


@dataclass(frozen=True, slots=True)
class Rendered:
    stat: ObjectStat
    content_type: str
    data: bytes


_RenderKey = tuple[str, str, Plan]


@dataclass(slots=True)
class _Shared:
    """One render in flight and how many callers wait for it."""

    task: asyncio.Task[bytes]
    waiters: int = 0


class ImageService:
    """Describe and render images from one source with a registry of engines."""

    def __init__(
        self,
        source: Source,
        engines: EngineRegistry,
        executor: Executor,
        admission: Admission,
        describe_cache_entries: int,
        limits: SourceLimits = SourceLimits(),
    ) -> None:
        self._source = source
        self._limits = limits
        self._engines = engines
        self._executor = executor
        self._admission = admission
        # Keyed by version too, so a changed file is never described from stale data.
        self._infos: LRUCache[tuple[str, str], ImageInfo] = LRUCache(
            maxsize=max(1, describe_cache_entries)
        )
        self._infos_lock = threading.Lock()
        self._inflight: dict[_RenderKey, _Shared] = {}

    @property
    def admission(self) -> Admission:
        return self._admission

    async def describe(self, identifier: str) -> Description:
        """Geometry and levels of `identifier`; raises the source's and engines' errors."""
        obj = await self._source.open(identifier)
        try:
            info = await self._info(obj)
            stored: tuple[bool, ...] = (False,) * len(info.levels)
            if info.format is SourceFormat.TIFF:
                stored = await self._run(
                    passthrough.stored_levels, obj.reader, info, (obj.stat.key, obj.stat.version)
                )
        finally:
            obj.reader.close()
        return Description(obj.stat, info, stored)

    async def stored_tiles(
        self, identifier: str, selection: TileSelection, expected_version: str = ""
    ) -> StoredTiles:
        """The groups of stored tiles of `selection` that can be answered
        without decoding (see pipeline/stored_tiles.py), at most
        MAX_STORED_TILE_BYTES: a rectangle's row by row, chosen cells in the
        order given.

        Raises InvalidPlan for a level, span, rectangle or set of cells that
        does not exist or is too large, passthrough.NoStoredTiles for a level
        without stored tiles, and as render() does.
        """
        span = selection.span or 1
        if not 1 <= span <= stored_tiles.MAX_SPAN:
            raise InvalidPlan(f"span: from 1 to {stored_tiles.MAX_SPAN} stored tiles a side")
        if isinstance(selection, TileRect):
            if selection.columns < 1 or selection.rows < 1:
                raise InvalidPlan("columns, rows: at least 1x1 groups")
        elif not selection.cells:
            raise InvalidPlan("cells: at least one group")
        if selection.stored_tiles > MAX_STORED_TILES:
            raise InvalidPlan(
                f"at most {MAX_STORED_TILES} stored tiles in all "
                "(columns x rows, or cells, x span x span)"
            )
        obj = await self._source.open(identifier)
        try:
            stat = obj.stat
            _check_version(identifier, stat, expected_version)
            info = await self._info(obj)
            if selection.level >= len(info.levels):
                raise InvalidPlan(f"level: the image has {len(info.levels)} levels")
            level = info.levels[selection.level]
            if isinstance(selection, TileRect):
                cells = stored_tiles.rectangle_cells(
                    level,
                    span,
                    range(selection.column, selection.column + selection.columns),
                    range(selection.row, selection.row + selection.rows),
                )
            else:
                cells = list(dict.fromkeys(selection.cells))  # each once, across parts too
            local = obj.reader.path is not None
            # Single tiles of a local file are a few reads from the page cache
            # and some Python, which holds the GIL in a thread too (an edge
            # tile adds a one-tile crop): done on the loop, they spare two
            # thread wake-ups per call, much of what the cheapest calls cost
            # (bench/wakeups.py). So are a few groups (INLINE_JOIN_TILES).
            inline = local and (span == 1 or len(cells) * span * span <= INLINE_JOIN_TILES)
            # More groups of a local file are joined by several decode threads
            # at once (in C, without the GIL): a viewer's first 512 px tiles
            # come in calls of several groups, and joined one after the other
            # they set its slowest waits. A remote file's groups stay one
            # task, so that their reads are planned together.
            parts = stored_tiles.split_cells(
                cells, JOIN_TASKS if local and span > 1 and not inline else 1
            )
            cost = _STORED_TILES_COST + len(parts) * stored_tiles.working_bytes(
                level.tile_width, level.tile_height, span
            )
            read = functools.partial(
                stored_tiles.read_stored_groups,
                obj.reader,
                info,
                (stat.key, stat.version),
                selection.level,
                span,
            )
            async with self._admission.slot(cost):
                if inline:
                    tiles = read(cells, MAX_STORED_TILE_BYTES)
                else:
                    # The parts share the byte cap, so the call holds no more.
                    cap = MAX_STORED_TILE_BYTES // len(parts)
                    found = await asyncio.gather(*(self._run(read, part, cap) for part in parts))
                    tiles = [tile for part in found for tile in part]
        finally:
            obj.reader.close()
        return StoredTiles(stat, "image/jpeg", tiles)

    async def render(
        self,
        identifier: str,
        make_plan: Callable[[ImageInfo], Plan],
        expected_version: str = "",
    ) -> Rendered:
        """Encoded bytes of the plan `make_plan` builds for `identifier`'s geometry.

        Raises VersionMismatch when `expected_version` is set and differs,
        decoder.admission.Overloaded when the render does not fit the memory
        budget in time, and the source's, engines' and pipeline's errors.
        """
        obj: SourceObject | None = await self._source.open(identifier)
        assert obj is not None
        stat = obj.stat
        try:
            _check_version(identifier, stat, expected_version)
            info = await self._info(obj)
            plan = make_plan(info)
            key = (stat.key, stat.version, plan)
            shared = self._inflight.get(key)
            if shared is not None:
                metrics.SHARED_RENDERS.inc()
            else:
                task = asyncio.create_task(self._render(obj, info, plan))
                shared = _Shared(task)
                self._inflight[key] = shared
                task.add_done_callback(functools.partial(self._forget, key, shared))
                obj = None  # the task owns the reader now
            shared.waiters += 1
            try:
                data = await asyncio.shield(shared.task)
            finally:
                shared.waiters -= 1
                if shared.waiters == 0 and not shared.task.done():
                    # Nobody wants it any more (deadline, client gone): stop the work.
                    shared.task.cancel()
        finally:
            if obj is not None:
                obj.reader.close()
        return Rendered(stat, plan.content_type, data)

    def _forget(self, key: _RenderKey, shared: _Shared, _task: object) -> None:
        if self._inflight.get(key) is shared:
            del self._inflight[key]

    async def _render(self, obj: SourceObject, info: ImageInfo, plan: Plan) -> bytes:
        cancel = threading.Event()
        try:
            cost = estimate_render_bytes(info, plan, obj.stat.size)
            async with self._admission.slot(cost):
                engine = self._engines.for_format(info.format)
                started = time.perf_counter()
                # (key, version) lets the pipeline reuse per-source caches
                # (tile passthrough index, decoded small levels).
                cache_key = (obj.stat.key, obj.stat.version)
                future = asyncio.get_running_loop().run_in_executor(
                    self._executor, run_pipeline, engine, obj.reader, info, plan, cancel, cache_key
                )
                try:
                    data = await asyncio.shield(future)
                    metrics.DECODE_SECONDS.labels(info.format.value).observe(
                        time.perf_counter() - started
                    )
                    return data
                except asyncio.CancelledError:
                    # Keep the admission slot until the worker really stops, so the
                    # budget still covers the memory it holds.
                    cancel.set()
                    await asyncio.wait([future])
                    if not future.cancelled():
                        future.exception()  # retrieved: it is the expected Cancelled
                    raise
        finally:
            obj.reader.close()

    async def _info(self, obj: SourceObject) -> ImageInfo:
        limits = self._limits
        if limits.max_bytes and obj.stat.size > limits.max_bytes:
            raise SourceTooLarge(
                f"source is {obj.stat.size} bytes, over this decoder's limit of {limits.max_bytes}"
            )
        key = (obj.stat.key, obj.stat.version)
        with self._infos_lock:
            cached = self._infos.get(key)
        if cached is not None:
            return cached
        info = await self._run(self._describe_blocking, obj.reader)
        if limits.max_pixels and info.width * info.height > limits.max_pixels:
            # Headers can lie (or be huge for real): refuse before any decode.
            raise SourceTooLarge(
                f"source claims {info.width}x{info.height} pixels, over this decoder's "
                f"limit of {limits.max_pixels}"
            )
        with self._infos_lock:
            self._infos[key] = info
        return info

    def _describe_blocking(self, reader: ByteReader) -> ImageInfo:
        fmt = sniff(reader.read_at(0, SNIFF_BYTES))
        return self._engines.for_format(fmt).describe(reader, fmt)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)


def _check_version(identifier: str, stat: ObjectStat, expected_version: str) -> None:
    """Raise VersionMismatch when the caller planned against another version."""
    if expected_version and stat.version != expected_version:
        raise VersionMismatch(
            f"{identifier!r} changed: version {stat.version}, expected {expected_version}"
        )
