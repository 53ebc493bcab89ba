"""Where image bytes come from: storage back-ends behind one small interface.

Sources know nothing of IIIF, gRPC or image codecs; they turn an identifier
into an :class:`ObjectStat` and a blocking, thread-safe :class:`ByteReader`.
"""

from decoder.sources.base import (
    ByteReader,
    InvalidIdentifier,
    ObjectNotFound,
    ObjectStat,
    Source,
    SourceError,
    SourceObject,
    SourceUnavailable,
)
from decoder.sources.filesystem import FilesystemSource

__all__ = [
    "ByteReader",
    "FilesystemSource",
    "InvalidIdentifier",
    "ObjectNotFound",
    "ObjectStat",
    "Source",
    "SourceError",
    "SourceObject",
    "SourceUnavailable",
]
