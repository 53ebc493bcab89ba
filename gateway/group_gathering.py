"""Groups of stored tiles asked for in one turn of the event loop, fetched in
one decoder call.

A viewer's tiles larger than the stored ones (and a level's edge tiles) cost
the decoder a join each, so they are not fetched on speculation around a
missed one (see gateway/tile_grid.batch_around). But a viewer asks for
several at once, and requests that arrive together reach this point in the
same turn of the loop: gathering them waits for nothing, and saves a round
trip through both services (gRPC and each side's per-call work) for every
group past the first. Groups of one image, level and span go together, as
many as one call may carry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from gateway.decoder_client import StoredTiles

Cell = tuple[int, int]  # column, row in a level's grid of groups
# identifier, level, span, cells, expected version -> the decoder's answer
FetchCells = Callable[[str, int, int, Sequence[Cell], str], Awaitable[StoredTiles]]
_Key = tuple[str, str, int, int]  # identifier, version, level, span


@dataclass(slots=True)
class _Gathering:
    answer: asyncio.Future[StoredTiles]
    cells: dict[Cell, None] = field(default_factory=dict)


class GroupGathering:
    """Fetches single groups through `fetch`, one call for those asked for in
    the same turn of the loop, at most `max_stored_tiles` stored tiles a call."""

    def __init__(self, fetch: FetchCells, max_stored_tiles: int) -> None:
        self._fetch = fetch
        self._max_stored_tiles = max_stored_tiles
        self._open: dict[_Key, _Gathering] = {}
        self._calls: set[asyncio.Task[None]] = set()

    async def fetch(
        self, identifier: str, version: str, level: int, span: int, cell: Cell
    ) -> StoredTiles:
        """The decoder's answer to a call that asked for `cell` (and maybe
        others): the group is in it unless the decoder left it out. Raises
        what the call raised; a caller that goes away leaves the call to the
        others."""
        key = (identifier, version, level, span)
        gathering = self._open.get(key)
        room = max(1, self._max_stored_tiles // max(1, span * span))
        if gathering is None or (cell not in gathering.cells and len(gathering.cells) >= room):
            gathering = _Gathering(asyncio.get_running_loop().create_future())
            self._open[key] = gathering
            # Runs after the callbacks of this turn: the requests that came in
            # with this one have reached here by then.
            asyncio.get_running_loop().call_soon(self._send, key, gathering)
        gathering.cells[cell] = None
        return await asyncio.shield(gathering.answer)

    def _send(self, key: _Key, gathering: _Gathering) -> None:
        if self._open.get(key) is gathering:
            del self._open[key]
        task = asyncio.create_task(self._call(key, gathering))
        # Held until done: the loop keeps only weak references to tasks.
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _call(self, key: _Key, gathering: _Gathering) -> None:
        identifier, version, level, span = key
        # Row by row: tiles near each other in the grid are usually near each
        # other in the file, read at once.
        cells = sorted(gathering.cells, key=lambda cell: (cell[1], cell[0]))
        try:
            answer = await self._fetch(identifier, level, span, cells, version)
        except asyncio.CancelledError:
            gathering.answer.cancel()
            raise
        except Exception as exc:
            # Waiters that went away do not leave it unretrieved: their
            # shield retrieves it.
            gathering.answer.set_exception(exc)
        else:
            gathering.answer.set_result(answer)
