"""GroupGathering: single groups asked for in one turn of the event loop
share one decoder call; later ones, other images, levels or spans do not."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence

import pytest

from gateway.decoder_client import StoredTiles
from gateway.errors import Overloaded
from gateway.group_gathering import Cell, GroupGathering

Call = tuple[str, int, int, tuple[Cell, ...], str]


class RecordingFetch:
    """Answers every cell asked for with its own bytes, once `gate` opens,
    or raises `error`."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[Call] = []
        self.called = asyncio.Event()
        self.gate = asyncio.Event()
        self.gate.set()
        self.error = error

    async def __call__(
        self, identifier: str, level: int, span: int, cells: Sequence[Cell], version: str
    ) -> StoredTiles:
        self.calls.append((identifier, level, span, tuple(cells), version))
        self.called.set()
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        answers = {cell: ("image/jpeg", f"{identifier}/{level}/{cell}".encode()) for cell in cells}
        return StoredTiles(version, answers)


async def test_groups_asked_for_in_one_turn_share_one_call_row_by_row() -> None:
    fetch = RecordingFetch()
    gathering = GroupGathering(fetch, max_stored_tiles=256)

    answers = await asyncio.gather(
        *(gathering.fetch("img", "v1", 0, 2, cell) for cell in [(2, 1), (0, 0), (1, 0), (0, 1)])
    )

    assert fetch.calls == [("img", 0, 2, ((0, 0), (1, 0), (0, 1), (2, 1)), "v1")]
    for cell, answer in zip([(2, 1), (0, 0), (1, 0), (0, 1)], answers, strict=True):
        assert answer.tiles[cell] == ("image/jpeg", f"img/0/{cell}".encode())


async def test_a_cell_asked_for_twice_in_one_turn_is_asked_once() -> None:
    fetch = RecordingFetch()
    gathering = GroupGathering(fetch, max_stored_tiles=256)

    await asyncio.gather(*(gathering.fetch("img", "v1", 0, 2, (3, 3)) for _ in range(3)))

    assert [call[3] for call in fetch.calls] == [((3, 3),)]


async def test_groups_asked_for_in_later_turns_get_calls_of_their_own() -> None:
    fetch = RecordingFetch()
    gathering = GroupGathering(fetch, max_stored_tiles=256)

    await gathering.fetch("img", "v1", 0, 2, (0, 0))
    await gathering.fetch("img", "v1", 0, 2, (1, 0))

    assert [call[3] for call in fetch.calls] == [((0, 0),), ((1, 0),)]


@pytest.mark.parametrize(
    "other",
    [("other", "v1", 0, 2), ("img", "v2", 0, 2), ("img", "v1", 1, 2), ("img", "v1", 0, 1)],
    ids=["image", "version", "level", "span"],
)
async def test_groups_of_another_image_version_level_or_span_are_not_gathered(
    other: tuple[str, str, int, int],
) -> None:
    fetch = RecordingFetch()
    gathering = GroupGathering(fetch, max_stored_tiles=256)

    await asyncio.gather(
        gathering.fetch("img", "v1", 0, 2, (0, 0)), gathering.fetch(*other, (1, 0))
    )

    assert sorted(fetch.calls) == sorted(
        [("img", 0, 2, ((0, 0),), "v1"), (other[0], other[2], other[3], ((1, 0),), other[1])]
    )


async def test_a_call_carries_at_most_the_decoders_limit_of_stored_tiles() -> None:
    fetch = RecordingFetch()
    # Span 2: four stored tiles a group, so two groups a call.
    gathering = GroupGathering(fetch, max_stored_tiles=8)
    cells = [(column, 0) for column in range(5)]

    answers = await asyncio.gather(*(gathering.fetch("img", "v1", 0, 2, cell) for cell in cells))

    assert [call[3] for call in fetch.calls] == [((0, 0), (1, 0)), ((2, 0), (3, 0)), ((4, 0),)]
    assert all(cell in answer.tiles for cell, answer in zip(cells, answers, strict=True))


async def test_what_the_call_raises_reaches_every_waiter() -> None:
    fetch = RecordingFetch(error=Overloaded("busy", retry_after_s=2))
    gathering = GroupGathering(fetch, max_stored_tiles=256)

    results = await asyncio.gather(
        *(gathering.fetch("img", "v1", 0, 2, (c, 0)) for c in range(3)), return_exceptions=True
    )

    assert len(fetch.calls) == 1
    assert all(isinstance(r, Overloaded) for r in results)


async def test_a_waiter_that_goes_away_leaves_the_call_to_the_others() -> None:
    fetch = RecordingFetch()
    fetch.gate.clear()
    gathering = GroupGathering(fetch, max_stored_tiles=256)
    leaving = asyncio.create_task(gathering.fetch("img", "v1", 0, 2, (0, 0)))
    staying = asyncio.create_task(gathering.fetch("img", "v1", 0, 2, (1, 0)))
    await fetch.called.wait()

    leaving.cancel()
    fetch.gate.set()

    answer = await staying
    assert answer.tiles[(1, 0)] == ("image/jpeg", b"img/0/(1, 0)")
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert len(fetch.calls) == 1


async def test_an_error_nobody_waits_for_any_more_is_not_reported_as_unretrieved() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    fetch = RecordingFetch(error=Overloaded("busy", retry_after_s=2))
    fetch.gate.clear()
    gathering = GroupGathering(fetch, max_stored_tiles=256)
    waiter = asyncio.create_task(gathering.fetch("img", "v1", 0, 2, (0, 0)))
    await fetch.called.wait()
    waiter.cancel()
    fetch.gate.set()
    for _ in range(5):
        await asyncio.sleep(0)

    del gathering, waiter
    gc.collect()
    assert reported == []
