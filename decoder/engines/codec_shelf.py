"""A bounded shelf of idle codecs, kept for the next decode of the same key.

OpenJPEG decodes further windows of a single-tile codestream (an untiled
JPEG 2000) with the codec that decoded the first one, without reading and
parsing the codestream again: over the benchmark's untiled master, the
512 px blocks of one level cost 0.55 (level 0) to 0.75 (level 2) of the CPU
of a new codec per block, with the same pixels (docs/jpeg2000.md). A codec
keeps its resolution reduction, so the key includes the level.

A codec is used by one thread at a time: `take` hands an idle one over
and removes it from the shelf, `give` puts it back when the decode is done.
Two decodes of the same key at once use two codecs, and both may come back.
What is kept is bounded by an estimate of each codec's memory; the least
recently given back goes first. The shelf knows nothing of OpenJPEG: it
calls `destroy` on what it drops, outside its lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Kept(Generic[T]):
    codec: T
    nbytes: int


class CodecShelf(Generic[T]):
    """Idle codecs by key, at most `max_bytes` of them by their estimates."""

    def __init__(self, max_bytes: int, destroy: Callable[[T], None]) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self._max_bytes = max_bytes
        self._destroy = destroy
        self._lock = threading.Lock()
        # (key, serial) -> codec: several idle codecs may share a key.
        self._idle: OrderedDict[tuple[Hashable, int], _Kept[T]] = OrderedDict()
        self._serial = 0
        self._bytes = 0

    @property
    def max_bytes(self) -> int:
        """The bound on the estimated memory of the codecs kept."""
        return self._max_bytes

    @property
    def nbytes(self) -> int:
        """The estimated memory of the codecs kept now."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._idle)

    def take(self, key: Hashable) -> T | None:
        """An idle codec kept under `key`, now the caller's, or None."""
        with self._lock:
            # The most recently given back: its memory is the likeliest warm.
            for entry in reversed(self._idle):
                if entry[0] == key:
                    kept = self._idle.pop(entry)
                    self._bytes -= kept.nbytes
                    return kept.codec
        return None

    def give(self, key: Hashable, codec: T, nbytes: int) -> None:
        """Keep `codec` (estimated at `nbytes`) for the next `take(key)`,
        dropping the least recently given back to stay within the bound; a
        codec larger than the bound is destroyed at once."""
        dropped: list[T] = []
        with self._lock:
            if nbytes > self._max_bytes:
                dropped.append(codec)
            else:
                self._serial += 1
                self._idle[(key, self._serial)] = _Kept(codec, nbytes)
                self._bytes += nbytes
                while self._bytes > self._max_bytes:
                    _, old = self._idle.popitem(last=False)
                    self._bytes -= old.nbytes
                    dropped.append(old.codec)
        for old_codec in dropped:
            self._destroy(old_codec)

    def clear(self) -> None:
        """Destroy every idle codec."""
        with self._lock:
            dropped = [kept.codec for kept in self._idle.values()]
            self._idle.clear()
            self._bytes = 0
        for codec in dropped:
            self._destroy(codec)
