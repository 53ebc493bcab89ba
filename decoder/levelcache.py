"""A process-wide cache of decoded pixels: small levels whole, and blocks of
big JPEG 2000 levels.

Every viewer opens an image by asking for its smallest levels (thumbnails,
the overview, the first zoom steps), so the same few small levels are
decoded again and again. Such a level (at most `max_pixels`, 2 Mpx by
default) is decoded once, whole, into memory, and later requests crop it.
Deeper in, viewers ask for the neighbouring tiles of a level one after the
other; a JPEG 2000 decode has a large fixed cost per call (an untiled file's
packet headers, a tile's), so the decoder decodes an aligned block around the
tile asked for (see decoder/pipeline/load.py) and keeps it here for the
neighbours.

Bounded in bytes (decoded pixels), least recently used first out. Keyed by
(source key, version, level index) for whole levels and (source key,
version, level index, block column, block row) for blocks: a changed object
gets a new version, so stale pixels are never served, only aged out. Thread-safe; concurrent
misses for one key decode once (the others wait for it on a per-key lock).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from cachetools import LRUCache

from decoder.engines.base import Level, VipsImage

LevelKey = tuple[str, str, int] | tuple[str, str, int, int, int]

DEFAULT_MAX_BYTES: Final = 256 * 1024 * 1024
DEFAULT_MAX_PIXELS: Final = 2_000_000

# Bytes per band of each libvips band format.
_BAND_BYTES: Final[dict[str, int]] = {
    "uchar": 1,
    "char": 1,
    "ushort": 2,
    "short": 2,
    "uint": 4,
    "int": 4,
    "float": 4,
    "double": 8,
    "complex": 8,
    "dpcomplex": 16,
}


def image_bytes(image: VipsImage) -> int:
    """Bytes the pixels of `image` take in memory."""
    band = _BAND_BYTES.get(str(image.format), 8)
    return int(image.width) * int(image.height) * int(image.bands) * band


@dataclass(frozen=True, slots=True)
class _Entry:
    image: VipsImage
    nbytes: int


@dataclass(slots=True)
class _KeyLock:
    lock: threading.Lock
    users: int = 0


class LevelCache:
    """Decoded levels of at most `max_pixels` pixels, `max_bytes` in all
    (0 turns the cache off). `hits`, `misses` (decodes done for the cache)
    and `size_bytes` (held now) are for metrics and tests."""

    def __init__(
        self, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
    ) -> None:
        self._max_bytes = max(0, max_bytes)
        self._max_pixels = max(0, max_pixels)
        self._lock = threading.Lock()
        self._entries: LRUCache[LevelKey, _Entry] = LRUCache(
            maxsize=max(1, self._max_bytes), getsizeof=lambda entry: entry.nbytes
        )
        self._key_locks: dict[LevelKey, _KeyLock] = {}
        self.hits = 0
        self.misses = 0

    @property
    def max_bytes(self) -> int:
        return self._max_bytes

    @property
    def max_pixels(self) -> int:
        return self._max_pixels

    @property
    def size_bytes(self) -> int:
        """Decoded bytes held now."""
        with self._lock:
            return int(self._entries.currsize)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def accepts(self, level: Level, bands: int, bytes_per_sample: int) -> bool:
        """Whether a level of this size is cached: at most `max_pixels`, and
        its decoded size (`bands` x `bytes_per_sample` per pixel) fits in the
        cache at all."""
        pixels = level.width * level.height
        return (
            self._max_bytes > 0
            and pixels <= self._max_pixels
            and pixels * max(1, bands) * max(1, bytes_per_sample) <= self._max_bytes
        )

    def get(self, key: LevelKey) -> VipsImage | None:
        """The cached level, or None."""
        with self._lock:
            entry = self._entries.get(key)
        return None if entry is None else entry.image

    def get_or_load(self, key: LevelKey, load: Callable[[], VipsImage]) -> VipsImage:
        """The level cached under `key`, decoding it with `load` (the whole
        level, possibly lazy) on a miss and keeping it if it fits.

        The result is a memory image shared between threads: callers must
        derive new images from it (crop, copy) and never set anything on it.
        Only one thread at a time decodes a given key; the others wait and
        then find it cached. Raises what `load` raises (and pyvips.Error when
        the lazy decode fails); failures are not cached, so a waiting thread
        then tries itself.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self.hits += 1
                return entry.image
            key_lock = self._key_locks.get(key)
            if key_lock is None:
                key_lock = self._key_locks[key] = _KeyLock(threading.Lock())
            key_lock.users += 1
        try:
            with key_lock.lock:
                with self._lock:
                    entry = self._entries.get(key)
                    if entry is not None:
                        self.hits += 1
                        return entry.image
                    self.misses += 1
                image = _materialise(load())
                nbytes = image_bytes(image)
                with self._lock:
                    if nbytes <= self._max_bytes:
                        self._entries[key] = _Entry(image, nbytes)
                return image
        finally:
            with self._lock:
                key_lock.users -= 1
                if key_lock.users == 0:
                    del self._key_locks[key]

    def clear(self) -> None:
        """Drop every entry (counters are kept)."""
        with self._lock:
            self._entries.clear()


def _materialise(image: VipsImage) -> VipsImage:
    """`image` computed into memory libvips owns, cut loose from its source.

    copy_memory() renders into a new memory image that keeps no reference to
    the loader (no open file, no read callback into a reader that is closed
    after the request). An image already in memory comes back as itself
    (same libvips object); the original Python wrapper is then kept, since
    it holds the references (e.g. a Python buffer) that memory depends on.
    """
    copied = image.copy_memory()
    return image if copied.pointer == image.pointer else copied


_shared_lock = threading.Lock()
_shared = LevelCache()


def shared() -> LevelCache:
    """The process-wide cache used by the render pipeline."""
    return _shared


def configure(
    max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> LevelCache:
    """Replace the process-wide cache with an empty one of these limits
    (`max_bytes` 0 turns it off); returns it. Call at start-up."""
    global _shared
    with _shared_lock:
        _shared = LevelCache(max_bytes, max_pixels)
        return _shared
