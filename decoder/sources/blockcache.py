"""A process-wide LRU cache of byte ranges of remote objects, bounded in bytes.

A viewer asks for many tiles of one image; each render opens the object anew,
and without this cache every render would fetch the same header blocks again.
Keys name an object version exactly (location and ETag), so a changed object
is never served from stale blocks: its new ETag makes new keys, and the old
ones age out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import NamedTuple


class RangeKey(NamedTuple):
    """One cached range: `[start, end)` bytes of object `location` at `version`."""

    location: str
    version: str
    start: int
    end: int


class BlockCache:
    """LRU of byte ranges holding at most `capacity_bytes` bytes of data.

    Thread-safe. A range larger than the capacity is not cached. Counters
    (`hits`, `misses`) are for tests and metrics.
    """

    def __init__(self, capacity_bytes: int) -> None:
        if capacity_bytes < 0:
            raise ValueError("capacity_bytes must be >= 0")
        self._capacity = capacity_bytes
        self._size = 0
        self._entries: OrderedDict[RangeKey, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def capacity_bytes(self) -> int:
        """The bound on cached data, in bytes."""
        return self._capacity

    @property
    def size_bytes(self) -> int:
        """Bytes of data cached right now."""
        return self._size

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: RangeKey) -> bytes | None:
        """The cached bytes for `key` (marking them recently used), or None."""
        with self._lock:
            data = self._entries.get(key)
            if data is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return data

    def put(self, key: RangeKey, data: bytes) -> None:
        """Cache `data` under `key`, evicting least recently used ranges."""
        if len(data) > self._capacity:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._entries[key] = data
            self._size += len(data)
            while self._size > self._capacity:
                _key, evicted = self._entries.popitem(last=False)
                self._size -= len(evicted)

    def peek_span(
        self, location: str, version: str, start: int, end: int, block_size: int, size: int
    ) -> bytes | None:
        """Bytes `[start, end)` of an object of `size` bytes if the aligned
        `block_size` blocks holding them are all cached, else None. For index
        builders, whose small reads blocks fetched earlier often hold; does
        not count as a hit or miss."""
        if end <= start:
            return None
        first, last = start // block_size, (end - 1) // block_size
        blocks: list[bytes] = []
        with self._lock:
            for i in range(first, last + 1):
                block_start = i * block_size
                key = RangeKey(location, version, block_start, min(block_start + block_size, size))
                data = self._entries.get(key)
                if data is None:
                    return None
                blocks.append(data)
        joined = blocks[0] if len(blocks) == 1 else b"".join(blocks)
        offset = first * block_size
        return joined[start - offset : end - offset]

    def clear(self) -> None:
        """Drop everything (tests use it to start cold)."""
        with self._lock:
            self._entries.clear()
            self._size = 0
