"""The source interface: stat an object, open it for random-access reads."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ObjectStat:
    """What a source knows about one stored object.

    `size` is in bytes; `version` is an opaque token that changes whenever the
    object's bytes may have changed (safe as a cache key together with `key`);
    `last_modified` is an aware UTC datetime.
    """

    key: str
    size: int
    version: str
    last_modified: datetime


class SourceError(Exception):
    """Base class of every error a source raises."""


class ObjectNotFound(SourceError):
    """No readable object exists for this identifier."""


class InvalidIdentifier(SourceError):
    """The identifier is malformed or unsafe (it could escape the store)."""


class SourceUnavailable(SourceError):
    """The storage itself failed (I/O error, timeout); retrying may succeed."""


class ByteReader(Protocol):
    """Random-access, blocking reads of one object's bytes.

    Implementations must be safe to call from several worker threads at once.
    """

    @property
    def size(self) -> int:
        """The object's length in bytes."""
        ...

    @property
    def path(self) -> Path | None:
        """A local file holding exactly these bytes, which a codec may open
        itself (much faster than read callbacks); None for remote objects."""
        ...

    def read_at(self, offset: int, length: int) -> bytes:
        """Read up to `length` bytes starting at byte `offset`.

        Blocks. Returns fewer bytes only at the end of the object (an empty
        result at or past the end). Raises SourceUnavailable on I/O errors.
        """
        ...

    def close(self) -> None:
        """Release the underlying handle; further reads are an error."""
        ...


@dataclass(slots=True)
class SourceObject:
    """An opened object: its stat (taken from the opened handle) and a reader.

    The caller owns the reader and must close it.
    """

    stat: ObjectStat
    reader: ByteReader


class Source(Protocol):
    """A store of images addressed by identifier."""

    async def stat(self, identifier: str) -> ObjectStat:
        """Describe the object without opening it for reading.

        Raises InvalidIdentifier, ObjectNotFound or SourceUnavailable.
        """
        ...

    async def open(self, identifier: str) -> SourceObject:
        """Open the object for reading.

        Raises InvalidIdentifier, ObjectNotFound or SourceUnavailable.
        """
        ...
