"""Test doubles for the ByteReader protocol."""

from __future__ import annotations

from pathlib import Path


class BytesReader:
    """An in-memory ByteReader without a local path; counts its reads."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.reads = 0

    @property
    def size(self) -> int:
        return len(self._data)

    @property
    def path(self) -> Path | None:
        return None

    def read_at(self, offset: int, length: int) -> bytes:
        self.reads += 1
        return self._data[offset : offset + length]

    def close(self) -> None:
        pass
