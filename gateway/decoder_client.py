"""The gateway's only gRPC user: Describe (cached) and Render (streamed) on the decoders.

Translates plans to protobuf and gRPC status codes to gateway errors, so the
HTTP resources never see gRPC.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Hashable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import grpc.aio
import structlog
from cachetools import TTLCache
from grpc_health.v1 import health_pb2, health_pb2_grpc
from iiif_decoder.v1 import decoder_pb2 as pb
from iiif_decoder.v1 import decoder_pb2_grpc

from gateway import routing
from gateway.errors import (
    BadRequest,
    GatewayError,
    ImageNotFound,
    Overloaded,
    SourceUnreadable,
    UpstreamFailure,
    UpstreamTimeout,
)
from gateway.iiif.types import RenderPlan
from gateway.single_flight import SingleFlight
from gateway.tile_grid import TileBatch

_FORMATS: dict[str, pb.OutputFormat.ValueType] = {
    "jpg": pb.OUTPUT_FORMAT_JPEG,
    "png": pb.OUTPUT_FORMAT_PNG,
    "webp": pb.OUTPUT_FORMAT_WEBP,
    "tif": pb.OUTPUT_FORMAT_TIFF,
    "gif": pb.OUTPUT_FORMAT_GIF,
    "jp2": pb.OUTPUT_FORMAT_JP2,
}
_QUALITIES: dict[str, pb.Quality.ValueType] = {
    "default": pb.QUALITY_COLOR,
    "color": pb.QUALITY_COLOR,
    "gray": pb.QUALITY_GRAY,
    "bitonal": pb.QUALITY_BITONAL,
}

_SOURCE_FORMATS: dict[int, str] = {
    pb.SOURCE_FORMAT_JPEG2000: "jpeg2000",
    pb.SOURCE_FORMAT_TIFF: "tiff",
    pb.SOURCE_FORMAT_JPEG: "jpeg",
    pb.SOURCE_FORMAT_PNG: "png",
}

# Each channel holds one connection to one decoder address, picked at random
# among those the target resolves to (pick_first with a shuffled list, gRFC
# A62): the gateway balances calls over its channels itself and knows which
# decoder process each one reaches (see DecoderClient._pick). Retry only what
# is safe and cheap to retry: a decoder that went away (UNAVAILABLE) before
# answering. gRPC never retries past the call's deadline.
_SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"pick_first": {"shuffleAddressList": True}}],
        "methodConfig": [
            {
                "name": [{"service": "iiif.decoder.v1.Decoder"}],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
        "retryThrottling": {"maxTokens": 20, "tokenRatio": 0.2},
    }
)

# The initial metadata of the decoder's health Check that names the decoder
# process answering (see DescribeResponse.decoder_id in the proto).
DECODER_ID_HEADER = "iiif-decoder-id"
_HEALTH_SERVICE = pb.DESCRIPTOR.services_by_name["Decoder"].full_name
# Channels whose decoder process is unknown are asked (health Check) this
# often at first, backing off while none answers, so a gateway routes keyed
# calls by owner from its first image on, and again soon after a decoder
# restarts. A scan every LEARN_IDLE_S finds channels lost meanwhile.
LEARN_FIRST_S = 0.05
LEARN_MAX_S = 5.0
LEARN_IDLE_S = 1.0


@dataclass(frozen=True, slots=True)
class Level:
    width: int
    height: int
    downscale: int
    tile_width: int
    tile_height: int
    # Whole tiles can be fetched as stored, undecoded (StoredTiles).
    stored_tiles: bool = False


@dataclass(frozen=True, slots=True)
class ImageDescription:
    """What the gateway needs to know of an image to plan and describe it."""

    width: int
    height: int
    levels: tuple[Level, ...]
    tile_width: int
    tile_height: int
    version: str
    last_modified: datetime
    source_format: str = "unknown"
    # Side of the aligned blocks the decoder caches decoded regions by (0: none).
    cache_block: int = 0


@dataclass(slots=True)
class RenderStream:
    """A started render: its header, then its bytes as they arrive."""

    content_type: str
    version: str
    content_length: int | None
    chunks: AsyncIterator[bytes]
    decoder_id: str = ""


@dataclass(slots=True)
class StoredTiles:
    """Stored tiles of one batch: (column, row) -> (content type, bytes)."""

    version: str
    tiles: dict[tuple[int, int], tuple[str, bytes]]
    decoder_id: str = ""  # the decoder process that answered


class DecoderClient:
    """Describe and Render against `target` with a deadline of `timeout_s` per call."""

    def __init__(
        self,
        target: str,
        timeout_s: float,
        retry_after_s: int,
        cache_entries: int,
        cache_ttl_s: float,
        channels: int = 1,
    ) -> None:
        self._target = target
        self._channel_count = max(1, channels)
        self._timeout_s = timeout_s
        self._retry_after_s = retry_after_s
        self._describes: TTLCache[str, ImageDescription] = TTLCache(
            maxsize=cache_entries, ttl=max(cache_ttl_s, 1e-9)
        )
        self._cache_enabled = cache_ttl_s > 0
        self._describing: SingleFlight[str, ImageDescription] = SingleFlight()
        self._learner: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the channels; call from the event loop that will use them."""
        # Each channel keeps its own connections (a local subchannel pool), so
        # a decoder running several worker processes on one port (SO_REUSEPORT
        # spreads connections, not calls) gets work on all of them.
        self._channels = [
            grpc.aio.insecure_channel(
                self._target,
                options=[
                    ("grpc.service_config", _SERVICE_CONFIG),
                    ("grpc.enable_retries", 1),
                    ("grpc.max_receive_message_length", 4 * 1024 * 1024),
                    ("grpc.keepalive_time_ms", 30_000),
                    ("grpc.use_local_subchannel_pool", 1),
                    # Decoders that start (or restart) after us are found within
                    # about a second, not after gRPC's default backoff of up to 2 min.
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                ],
            )
            for _ in range(self._channel_count)
        ]
        self._stubs = [decoder_pb2_grpc.DecoderStub(c) for c in self._channels]
        # False once a channel reached a decoder without StoredTilesAtOnce (an
        # older one, in a rolling upgrade): that channel streams StoredTiles.
        self._at_once = [True] * len(self._stubs)
        # The decoder process last seen answering on each channel ("" unknown).
        self._members = [""] * len(self._stubs)
        self._turn = itertools.count()  # over decoder processes
        self._spread = itertools.count()  # over one process's channels
        self._health_stubs = [health_pb2_grpc.HealthStub(c) for c in self._channels]
        self._learner = asyncio.create_task(self._learn_channels())

    async def close(self) -> None:
        if self._learner is not None:
            self._learner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._learner
        for channel in self._channels:
            await channel.close()

    def _pick(self, affinity: Hashable | None = None) -> int:
        """A channel index for a call (see routing.choose_channel)."""
        return routing.choose_channel(
            self._members, affinity, self._turn.__next__, self._spread.__next__
        )

    def _seen(self, index: int, decoder_id: str) -> None:
        # Connections move between decoder processes (restarts, max connection
        # age), so the latest answer on a channel says where it leads now.
        if decoder_id:
            self._members[index] = decoder_id

    def _lost(self, index: int, exc: grpc.aio.AioRpcError) -> None:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            self._members[index] = ""

    async def _learn_channels(self) -> None:
        """Keep asking the channels whose decoder process is unknown (see
        routing.choose_channel: keyed calls follow their owner only once
        every channel is known). Runs until close()."""
        delay = LEARN_FIRST_S
        while True:
            unknown = [i for i, member in enumerate(self._members) if not member]
            if not unknown:
                delay = LEARN_FIRST_S
                await asyncio.sleep(LEARN_IDLE_S)
                continue
            await asyncio.gather(*(self._probe(i) for i in unknown))
            # A decoder that is not up yet, or an older one that does not
            # name itself, is asked less and less often.
            delay = min(LEARN_MAX_S, delay * 2)
            await asyncio.sleep(delay)

    async def _probe(self, index: int) -> None:
        """Learn which decoder process channel `index` reaches, if it says."""
        call = self._health_stubs[index].Check(
            health_pb2.HealthCheckRequest(service=_HEALTH_SERVICE), timeout=2.0
        )
        try:
            metadata = await call.initial_metadata()
            await call
        except grpc.aio.AioRpcError:
            return
        for key, value in metadata or ():
            if key == DECODER_ID_HEADER and isinstance(value, str):
                self._seen(index, value)

    def decoders(self) -> list[str]:
        """The decoder processes each channel last reached ("" unknown)."""
        return list(self._members)

    async def describe(self, identifier: str) -> ImageDescription:
        """The image's description, from the cache when fresh; raises GatewayError.

        Concurrent calls for one identifier share one Describe: a viewer's
        first burst of tile requests for a new image would otherwise make
        each its own (on S3, each waiting for the object's index)."""
        cached = self._describes.get(identifier)
        if cached is not None:
            return cached
        return await self._describing.run(identifier, lambda: self._describe(identifier))

    async def _describe(self, identifier: str) -> ImageDescription:
        index = self._pick(routing.image_key(identifier))
        try:
            resp = await self._stubs[index].Describe(
                pb.DescribeRequest(identifier=identifier),
                timeout=self._timeout_s,
                metadata=_metadata(),
            )
        except grpc.aio.AioRpcError as exc:
            self._lost(index, exc)
            raise self._error(exc) from None
        self._seen(index, resp.decoder_id)
        desc = ImageDescription(
            width=resp.width,
            height=resp.height,
            levels=tuple(
                Level(
                    lv.width,
                    lv.height,
                    lv.downscale,
                    lv.tile_width,
                    lv.tile_height,
                    lv.stored_tiles,
                )
                for lv in resp.levels
            ),
            tile_width=resp.tile_width,
            tile_height=resp.tile_height,
            version=resp.version,
            last_modified=resp.last_modified.ToDatetime(tzinfo=UTC),
            source_format=_SOURCE_FORMATS.get(resp.format, "unknown"),
            cache_block=resp.cache_block,
        )
        if self._cache_enabled:
            self._describes[identifier] = desc
        return desc

    def forget(self, identifier: str) -> None:
        """Drop a cached description (the image changed)."""
        self._describes.pop(identifier, None)

    async def render(
        self,
        identifier: str,
        plan: RenderPlan,
        expected_version: str,
        affinity: Hashable | None = None,
    ) -> RenderStream:
        """Start a render and wait for its header; raises GatewayError.

        Renders with the same `affinity` key go to the same decoder process
        while it answers (see gateway/routing.py). A source that changed
        since it was described raises StaleDescription. Cancelling or closing
        the returned chunks cancels the gRPC call.
        """
        request = pb.RenderRequest(
            identifier=identifier,
            region=pb.Region(x=plan.crop.x, y=plan.crop.y, width=plan.crop.w, height=plan.crop.h),
            width=plan.width,
            height=plan.height,
            rotation=plan.rotation,
            mirror=plan.mirror,
            quality=_QUALITIES[plan.quality],
            format=_FORMATS[plan.format],
            expected_version=expected_version,
        )
        deadline = time.monotonic() + self._timeout_s
        index = self._pick(affinity)
        call = self._stubs[index].Render(request, timeout=self._timeout_s, metadata=_metadata())
        try:
            first = await call.read()
        except grpc.aio.AioRpcError as exc:
            self._lost(index, exc)
            raise self._error(exc) from None
        except asyncio.CancelledError:
            call.cancel()  # the client went away: the decoder stops too
            raise
        if first is grpc.aio.EOF or not first.HasField("header"):
            call.cancel()
            raise UpstreamFailure("decoder sent no header")
        header = first.header
        self._seen(index, header.decoder_id)
        return RenderStream(
            content_type=header.content_type,
            version=header.version,
            content_length=header.content_length or None,
            chunks=self._chunks(call, deadline),
            decoder_id=header.decoder_id,
        )

    async def stored_tiles(
        self, identifier: str, batch: TileBatch, expected_version: str
    ) -> StoredTiles:
        """The stored tiles, or groups of them, of `batch` the decoder can
        send without decoding (others are left out: render them); raises
        GatewayError."""
        request = pb.StoredTilesRequest(
            identifier=identifier,
            level=batch.level,
            column=batch.column,
            row=batch.row,
            columns=batch.columns,
            rows=batch.rows,
            expected_version=expected_version,
            span=batch.span,
            packed=True,
        )
        return await self._stored_tiles(request, expected_version)

    async def stored_cells(
        self,
        identifier: str,
        level: int,
        span: int,
        cells: Sequence[tuple[int, int]],
        expected_version: str,
    ) -> StoredTiles:
        """As stored_tiles, for chosen groups (column, row) of the level's
        grid of `span` x `span` groups rather than a rectangle of them."""
        request = pb.StoredTilesRequest(
            identifier=identifier,
            level=level,
            span=span,
            cells=[pb.GridCell(column=column, row=row) for column, row in cells],
            expected_version=expected_version,
            packed=True,
        )
        return await self._stored_tiles(request, expected_version)

    async def _stored_tiles(
        self, request: pb.StoredTilesRequest, expected_version: str
    ) -> StoredTiles:
        index = self._pick(routing.image_key(request.identifier))
        try:
            if self._at_once[index]:
                try:
                    return self._found(
                        index,
                        await self._stubs[index].StoredTilesAtOnce(
                            request, timeout=self._timeout_s, metadata=_metadata()
                        ),
                    )
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                        raise
                    self._at_once[index] = False
            return await self._streamed_tiles(index, request, expected_version)
        except grpc.aio.AioRpcError as exc:
            self._lost(index, exc)
            raise self._error(exc) from None

    def _found(self, index: int, reply: pb.StoredTilesReply) -> StoredTiles:
        self._seen(index, reply.decoder_id)
        return StoredTiles(
            reply.version,
            {(tile.column, tile.row): (tile.content_type, tile.data) for tile in reply.tiles},
            reply.decoder_id,
        )

    async def _streamed_tiles(
        self, index: int, request: pb.StoredTilesRequest, expected_version: str
    ) -> StoredTiles:
        """As StoredTilesAtOnce, from the StoredTiles stream (packed)."""
        found = StoredTiles(expected_version, {})
        async for tile in self._stubs[index].StoredTiles(
            request, timeout=self._timeout_s, metadata=_metadata()
        ):
            found.version = tile.version
            found.tiles[(tile.column, tile.row)] = (tile.content_type, tile.data)
            for more in tile.more:
                found.tiles[(more.column, more.row)] = (more.content_type, more.data)
            found.decoder_id = tile.decoder_id
            self._seen(index, tile.decoder_id)
        return found

    async def _chunks(
        self, call: grpc.aio.UnaryStreamCall[pb.RenderRequest, pb.RenderChunk], deadline: float
    ) -> AsyncIterator[bytes]:
        try:
            while True:
                try:
                    message = await call.read()
                except grpc.aio.AioRpcError as exc:
                    raise self._error(exc) from None
                if message is grpc.aio.EOF:
                    return
                yield message.data
        finally:
            # The client went away (or we failed): stop the decoder's work too.
            if not call.done():
                call.cancel()

    async def healthy(self) -> bool:
        """Whether a decoder answers SERVING to the standard health check."""
        try:
            resp = await self._health_stubs[0].Check(
                health_pb2.HealthCheckRequest(service=_HEALTH_SERVICE), timeout=2.0
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)

    def _error(self, exc: grpc.aio.AioRpcError) -> GatewayError:
        code, details = exc.code(), exc.details() or code_name(exc.code())
        if code == grpc.StatusCode.NOT_FOUND:
            return ImageNotFound(details)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return BadRequest(details)
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            return SourceUnreadable(details)
        if code == grpc.StatusCode.ABORTED:
            return StaleDescription(details, retry_after_s=self._retry_after_s)
        if code in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE):
            return Overloaded(details, retry_after_s=_retry_after(exc, self._retry_after_s))
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return UpstreamTimeout(details)
        return UpstreamFailure(details)


class StaleDescription(Overloaded):
    """The image changed between Describe and Render; describe it again."""


def _metadata() -> tuple[tuple[str, str], ...]:
    """The request id bound for this HTTP request, so decoder logs line up with ours."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    return (("x-request-id", str(request_id)),) if request_id else ()


def code_name(code: grpc.StatusCode) -> str:
    return str(code.name)


def _retry_after(exc: grpc.aio.AioRpcError, default: int) -> int:
    for key, value in exc.trailing_metadata() or ():
        if key == "retry-after" and isinstance(value, str) and value.isdigit():
            return max(1, int(value))
    return default
