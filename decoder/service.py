"""The decoder's use cases, free of gRPC: describe an image, render a plan.

Blocking work (sniffing, libvips) runs on a bounded thread pool so the event
loop only schedules; admission limits how many renders are in flight.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TypeVar

from cachetools import LRUCache

from decoder.admission import Admission
from decoder.engines.base import ImageInfo
from decoder.engines.registry import EngineRegistry
from decoder.engines.sniff import sniff
from decoder.pipeline import run_pipeline
from decoder.plan import Plan
from decoder.sources.base import ByteReader, ObjectStat, Source, SourceObject

T = TypeVar("T")

# Enough for every signature sniff() knows (the JP2 signature box is 12 bytes,
# a raw J2K codestream is recognised by SOC+SIZ in the first 4).
_SNIFF_BYTES = 16


class VersionMismatch(Exception):
    """The source changed since the caller described it."""


@dataclass(frozen=True, slots=True)
class Description:
    stat: ObjectStat
    info: ImageInfo


@dataclass(frozen=True, slots=True)
class Rendered:
    stat: ObjectStat
    content_type: str
    data: bytes


class ImageService:
    """Describe and render images from one source with a registry of engines."""

    def __init__(
        self,
        source: Source,
        engines: EngineRegistry,
        executor: Executor,
        admission: Admission,
        describe_cache_entries: int,
    ) -> None:
        self._source = source
        self._engines = engines
        self._executor = executor
        self._admission = admission
        # Keyed by version too, so a changed file is never described from stale data.
        self._infos: LRUCache[tuple[str, str], ImageInfo] = LRUCache(
            maxsize=max(1, describe_cache_entries)
        )
        self._infos_lock = threading.Lock()

    async def describe(self, identifier: str) -> Description:
        """Geometry and levels of `identifier`; raises the source's and engines' errors."""
        obj = await self._source.open(identifier)
        try:
            info = await self._info(obj)
        finally:
            obj.reader.close()
        return Description(obj.stat, info)

    async def render(
        self,
        identifier: str,
        make_plan: Callable[[ImageInfo], Plan],
        expected_version: str = "",
    ) -> Rendered:
        """Encoded bytes of the plan `make_plan` builds for `identifier`'s geometry.

        Raises VersionMismatch when `expected_version` is set and differs,
        decoder.admission.Overloaded when no decode slot is free in time, and the
        source's, engines' and pipeline's errors.
        """
        async with self._admission.slot():
            obj = await self._source.open(identifier)
            try:
                if expected_version and obj.stat.version != expected_version:
                    raise VersionMismatch(
                        f"{identifier!r} changed: version {obj.stat.version}, "
                        f"expected {expected_version}"
                    )
                info = await self._info(obj)
                plan = make_plan(info)
                engine = self._engines.for_format(info.format)
                data = await self._run(run_pipeline, engine, obj.reader, info, plan)
            finally:
                obj.reader.close()
        return Rendered(obj.stat, plan.content_type, data)

    async def _info(self, obj: SourceObject) -> ImageInfo:
        key = (obj.stat.key, obj.stat.version)
        with self._infos_lock:
            cached = self._infos.get(key)
        if cached is not None:
            return cached
        info = await self._run(self._describe_blocking, obj.reader)
        with self._infos_lock:
            self._infos[key] = info
        return info

    def _describe_blocking(self, reader: ByteReader) -> ImageInfo:
        fmt = sniff(reader.read_at(0, _SNIFF_BYTES))
        return self._engines.for_format(fmt).describe(reader, fmt)

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)
