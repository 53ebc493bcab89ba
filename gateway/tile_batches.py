"""Stored tiles fetched in batches: one decoder call for a viewer's neighbourhood.

Serving a stored TIFF tile costs the decoder a few reads, but every request
still pays a gRPC round trip and both services' per-call work, several times
the tile's own cost (and one S3 round trip per tile on S3). Viewers ask for
the tiles around the one they just got, so on a miss for a stored tile the
gateway asks the decoder for the aligned square of tiles around it (see
gateway/tile_grid.py), answers with its tile and puts the others in the
render cache under the keys the viewer's next requests will look for.
Requests for a tile of a batch in flight wait for that batch rather than
asking again. Edge tiles and groups of stored tiles (a viewer's larger
tiles), which the decoder joins, are fetched one by one, never on
speculation; those asked for together share a call (gateway/group_gathering.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

from gateway import metrics
from gateway.decoder_client import (
    DecoderClient,
    ImageDescription,
    StaleDescription,
    StoredTiles,
)
from gateway.errors import GatewayError, Overloaded
from gateway.group_gathering import Cell, GroupGathering
from gateway.iiif.canonical import canonical_path
from gateway.iiif.types import (
    ApiVersion,
    Format,
    ImageDims,
    ImageRequest,
    Limits,
    Quality,
    RenderPlan,
)
from gateway.render_cache import CachedRender, RenderCache
from gateway.single_flight import SingleFlight
from gateway.tile_grid import TileBatch, batch_around, stored_tile, tile_plan

_BatchKey = tuple[str, str, TileBatch]  # identifier, version, batch
# The decoder's limit on the stored tiles under one call's groups
# (MAX_STORED_TILES in decoder/service.py).
MAX_STORED_TILES = 256
# What a request's cache keys depend on besides the tile: its API version
# (canonical forms differ), quality name and format.
_Form = tuple[ApiVersion, Quality, Format]


@dataclass(frozen=True, slots=True)
class _Fetched:
    """A finished batch: the source version, the tiles by (column, row), and
    the request form they were cached under."""

    version: str
    tiles: dict[tuple[int, int], CachedRender]
    form: _Form


def _form(parsed: ImageRequest, plan: RenderPlan) -> _Form:
    return parsed.version, plan.quality, plan.format


class StoredTileBatcher:
    """Fetches stored tiles `side` x `side` at a time into `cache`."""

    def __init__(
        self, client: DecoderClient, cache: RenderCache, side: int, limits: Limits
    ) -> None:
        self._client = client
        self._cache = cache
        self._side = side
        self._limits = limits
        self._inflight: SingleFlight[_BatchKey, _Fetched] = SingleFlight()
        self._gathering = GroupGathering(self._fetch_cells, MAX_STORED_TILES)

    async def _fetch_cells(
        self, identifier: str, level: int, span: int, cells: Sequence[Cell], version: str
    ) -> StoredTiles:
        return await self._counted(
            self._client.stored_cells(identifier, level, span, cells, version)
        )

    @staticmethod
    async def _counted(call: Awaitable[StoredTiles]) -> StoredTiles:
        try:
            stored = await call
        except GatewayError:
            metrics.STORED_TILE_BATCHES.labels("error").inc()
            raise
        metrics.STORED_TILE_BATCHES.labels("ok").inc()
        return stored

    async def fetch(
        self, parsed: ImageRequest, desc: ImageDescription, plan: RenderPlan
    ) -> CachedRender | None:
        """The stored tile `plan` is exactly, fetched with its batch, or None
        when the plan is not such a tile or the batch failed (then render it:
        that reports the error). Raises Overloaded when the decoders refused
        the batch for load: rendering its tiles one by one would only add to
        that load."""
        tile = stored_tile(desc.levels, desc.width, desc.height, plan)
        if tile is None:
            return None
        batch = batch_around(desc.levels, tile, self._side)
        key = (parsed.identifier, desc.version, batch)
        try:
            fetched = await self._inflight.run(key, lambda: self._fetch(parsed, desc, plan, batch))
        except StaleDescription:
            return None  # the image changed: the render describes it again
        except Overloaded:
            raise
        except GatewayError:
            return None
        if fetched.form != _form(parsed, plan):
            # A request in another form (API version, quality name) joined a
            # batch: keep the tiles under the keys its neighbours will use too.
            self._keep(parsed, desc, plan, batch, fetched)
        return fetched.tiles.get((tile.column, tile.row))

    async def _fetch(
        self, parsed: ImageRequest, desc: ImageDescription, like: RenderPlan, batch: TileBatch
    ) -> _Fetched:
        if (batch.columns, batch.rows) == (1, 1):
            cell = (batch.column, batch.row)
            gathered = await self._gathering.fetch(
                parsed.identifier, desc.version, batch.level, batch.span, cell
            )
            # The others' groups are theirs to keep.
            mine = {cell: gathered.tiles[cell]} if cell in gathered.tiles else {}
            stored = StoredTiles(gathered.version, mine)
        else:
            stored = await self._counted(
                self._client.stored_tiles(parsed.identifier, batch, desc.version)
            )
        fetched = _Fetched(
            stored.version,
            {place: CachedRender(*got) for place, got in stored.tiles.items()},
            _form(parsed, like),
        )
        self._keep(parsed, desc, like, batch, fetched)
        return fetched

    def _keep(
        self,
        parsed: ImageRequest,
        desc: ImageDescription,
        like: RenderPlan,
        batch: TileBatch,
        fetched: _Fetched,
    ) -> None:
        """Put the batch's tiles in the cache under the keys requests of the
        form of `parsed` and `like` look for."""
        dims = ImageDims(desc.width, desc.height)
        for tile in batch.tiles():
            render = fetched.tiles.get((tile.column, tile.row))
            if render is None:
                continue  # the decoder could not send it as stored: render it
            plan = tile_plan(desc.levels, desc.width, desc.height, tile, like)
            if stored_tile(desc.levels, desc.width, desc.height, plan) != tile:
                # No viewer request maps onto this box exactly (a level not
                # exactly the image over its downscale, at its edge): a
                # render of this plan would not be these bytes.
                continue
            canonical = canonical_path(plan, parsed, dims, limits=self._limits)
            self._cache.put((parsed.identifier, fetched.version, canonical), render)
