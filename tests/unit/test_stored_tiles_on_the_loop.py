"""Whole stored tiles and a few groups of a local file are read and joined
on the event loop; more groups and remote reads go to the decode threads, a
local file's groups to several at once (decoder/service.py, stored_tiles)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from decoder.pipeline.stored_tiles import split_cells
from decoder.service import INLINE_JOIN_TILES, JOIN_TASKS, ImageService, TileRect
from decoder.sources.filesystem import FilesystemSource
from tests.integration.s3support import image_service

T = TypeVar("T")


class CountingPool(ThreadPoolExecutor):
    """A real thread pool that counts what it is given."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.submitted = 0

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def pool() -> Iterator[CountingPool]:
    with CountingPool() as counting:
        yield counting


def _service(root: Path, pool: ThreadPoolExecutor) -> ImageService:
    return image_service(FilesystemSource(root), pool)


async def test_whole_tiles_and_a_few_groups_of_a_local_file_need_no_thread_once_described(
    image_root: Path, pool: CountingPool
) -> None:
    service = _service(image_root, pool)
    desc = await service.describe("sample-pyramid")
    level = next(i for i, stored in enumerate(desc.stored_tiles) if stored)
    before = pool.submitted
    found = await service.stored_tiles("sample-pyramid", TileRect(level, 0, 0, 1, 1))
    assert found.tiles
    assert found.tiles[0][2][:2] == b"\xff\xd8"
    assert pool.submitted == before
    # Up to INLINE_JOIN_TILES stored tiles of groups are joined on the loop too.
    assert 2 * 2 * 2 <= INLINE_JOIN_TILES < 4 * 2 * 2
    joined = await service.stored_tiles("sample-pyramid", TileRect(level, 0, 0, 2, 1, span=2))
    assert len(joined.tiles) == 2
    assert all(data[:2] == b"\xff\xd8" for _column, _row, data in joined.tiles)
    assert pool.submitted == before


async def test_a_remembered_file_opens_without_a_thread(
    image_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = FilesystemSource(image_root)
    threads: list[object] = []
    real = asyncio.to_thread

    async def counting(fn: Callable[..., T], /, *args: Any) -> T:
        threads.append(fn)
        return await real(fn, *args)

    monkeypatch.setattr(asyncio, "to_thread", counting)
    for _ in range(3):
        obj = await source.open("sample-pyramid")
        obj.reader.close()
    assert len(threads) == 1  # the first open finds the file in a thread


async def test_groups_of_a_local_file_are_joined_by_several_threads_alike(
    image_root: Path, pool: CountingPool
) -> None:
    """A call of several groups splits them over up to JOIN_TASKS decode
    tasks and answers exactly what joining them one call at a time does."""
    service = _service(image_root, pool)
    desc = await service.describe("sample-pyramid")
    level = next(i for i, stored in enumerate(desc.stored_tiles) if stored)
    grid = TileRect(level, 0, 0, 2, 2, span=2)
    before = pool.submitted
    together = (await service.stored_tiles("sample-pyramid", grid)).tiles
    assert pool.submitted - before == min(JOIN_TASKS, len(together)) > 1
    alone = [
        tile
        for row in range(2)
        for column in range(2)
        for tile in (
            await service.stored_tiles("sample-pyramid", TileRect(level, column, row, 1, 1, span=2))
        ).tiles
    ]
    assert together == alone


@given(st.lists(st.tuples(st.integers(0, 9), st.integers(0, 9)), max_size=40), st.integers(1, 8))
def test_split_cells_keeps_every_cell_in_order_in_at_most_the_parts_asked(
    cells: list[tuple[int, int]], parts: int
) -> None:
    split = split_cells(cells, parts)
    assert [cell for part in split for cell in part] == cells
    assert 1 <= len(split) <= max(1, parts)
    if cells:
        assert all(part for part in split)
        assert len({len(part) for part in split[:-1]}) <= 1
        assert len(split[-1]) <= len(split[0])
