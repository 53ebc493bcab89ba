"""A bounded in-memory cache of rendered images, in front of the decoders.

Viewers ask for the same tiles and thumbnails again and again (every visit
starts with the same overview tiles). Keyed by the source's version token and
the canonical request, so a changed image is never served stale, and bounded
in bytes (least recently used dropped first) with a cap per entry, so one
large render cannot push out thousands of tiles.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CachedRender:
    content_type: str
    data: bytes


CacheKey = tuple[str, str, str]  # identifier, source version, canonical path


class RenderCache:
    """At most `max_bytes` of renders, none larger than `max_item_bytes`.

    Single event loop only (the gateway's), so no locking.
    """

    def __init__(self, max_bytes: int, max_item_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._max_item = min(max_item_bytes, max_bytes)
        self._entries: OrderedDict[CacheKey, CachedRender] = OrderedDict()
        self._size = 0
        self.hits = 0
        self.misses = 0

    @property
    def size_bytes(self) -> int:
        return self._size

    def get(self, key: CacheKey) -> CachedRender | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: CacheKey, render: CachedRender) -> None:
        size = len(render.data)
        if size > self._max_item or key in self._entries:
            return
        self._entries[key] = render
        self._size += size
        while self._size > self._max_bytes:
            _, dropped = self._entries.popitem(last=False)
            self._size -= len(dropped.data)

    async def tee(
        self, key: CacheKey, content_type: str, chunks: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        """Pass `chunks` through, keeping a copy to store if the stream
        completes and stays within the per-entry cap."""
        kept: list[bytes] | None = []
        total = 0
        async for chunk in chunks:
            if kept is not None:
                total += len(chunk)
                if total > self._max_item:
                    kept = None  # too large to keep: stop copying
                else:
                    kept.append(chunk)
            yield chunk
        if kept is not None:
            self.put(key, CachedRender(content_type, b"".join(kept)))
