"""Session-scoped source images and reader helpers for the decoder unit tests."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from decoder.engines.base import ImageInfo
from decoder.engines.sniff import SNIFF_BYTES, sniff
from decoder.engines.vips import VipsEngine
from decoder.sources.base import ByteReader
from decoder.sources.filesystem import FileReader
from tests.images import SourceSet, have_opj_compress, make_source_set

ReaderFactory = Callable[[Path], ByteReader]
Describe = Callable[[ByteReader], ImageInfo]


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> SourceSet:
    """Every kind of source image, 600 x 400, made once per session."""
    if not have_opj_compress():
        pytest.skip("opj_compress (libopenjp2-tools) is needed to make JPEG 2000 sources")
    return make_source_set(tmp_path_factory.mktemp("decoder-images"))


class CallbackReader:
    """A reader without a local path, forcing libvips' read-callback code
    path (as a remote object would). Counts reads."""

    def __init__(self, inner: ByteReader) -> None:
        self._inner = inner
        self.reads = 0

    @property
    def size(self) -> int:
        return self._inner.size

    @property
    def path(self) -> Path | None:
        return None

    def read_at(self, offset: int, length: int) -> bytes:
        self.reads += 1
        return self._inner.read_at(offset, length)

    def close(self) -> None:
        self._inner.close()


def _open(path: Path) -> FileReader:
    fd = os.open(path, os.O_RDONLY)
    return FileReader(fd, os.fstat(fd).st_size, path.resolve())


@pytest.fixture
def reader_for() -> Iterator[ReaderFactory]:
    """Open a local-file reader for a path; closed after the test."""
    opened: list[ByteReader] = []

    def make(path: Path) -> ByteReader:
        reader = _open(path)
        opened.append(reader)
        return reader

    yield make
    for reader in opened:
        reader.close()


@pytest.fixture
def callback_reader_for() -> Iterator[ReaderFactory]:
    """Open a path-less reader (read callbacks) for a path; closed after the test."""
    opened: list[ByteReader] = []

    def make(path: Path) -> ByteReader:
        reader = CallbackReader(_open(path))
        opened.append(reader)
        return reader

    yield make
    for reader in opened:
        reader.close()


@pytest.fixture(scope="session")
def engine() -> VipsEngine:
    return VipsEngine()


@pytest.fixture(scope="session")
def describe(engine: VipsEngine) -> Describe:
    """Sniff and describe a reader, as the service does."""

    def run(reader: ByteReader) -> ImageInfo:
        return engine.describe(reader, sniff(reader.read_at(0, SNIFF_BYTES)))

    return run
