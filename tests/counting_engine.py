"""An engine wrapper that records every region it is asked to decode, so
tests can count decodes without mocking the decoder's own parts."""

from __future__ import annotations

import threading
from typing import Any

from decoder.engines.base import Engine, ImageInfo, SourceFormat
from decoder.plan import Box
from decoder.sources.base import ByteReader


class CountingEngine:
    """Delegates to `inner`; `loads` lists every load_region call as (level, box)."""

    def __init__(self, inner: Engine) -> None:
        self._inner = inner
        self.loads: list[tuple[int, Box]] = []
        self._lock = threading.Lock()

    @property
    def formats(self) -> frozenset[SourceFormat]:
        return self._inner.formats

    def describe(self, reader: ByteReader, fmt: SourceFormat) -> ImageInfo:
        return self._inner.describe(reader, fmt)

    def load_region(self, reader: ByteReader, info: ImageInfo, level: int, box: Box) -> Any:
        with self._lock:
            self.loads.append((level, box))
        return self._inner.load_region(reader, info, level, box)
