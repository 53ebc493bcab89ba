"""gRPC adapter: protobuf in, ImageService call, protobuf out, errors to status codes.

Nothing here decides anything about images; it only translates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from iiif_decoder.v1 import decoder_pb2 as pb
from iiif_decoder.v1 import decoder_pb2_grpc

from decoder import metrics
from decoder.admission import Overloaded
from decoder.engines.base import DecodeError, RenderError, SourceFormat, UnsupportedSource
from decoder.pipeline import Cancelled
from decoder.pipeline.load import cache_block
from decoder.plan import Box, InvalidPlan, OutputFormat, Plan, Quality
from decoder.service import (
    Description,
    ImageService,
    SourceTooLarge,
    StoredTiles,
    TileCells,
    TileRect,
    TileSelection,
    VersionMismatch,
)
from decoder.sources.base import InvalidIdentifier, ObjectNotFound, SourceUnavailable
from decoder.sources.s3 import SourceAccessDenied

log = structlog.get_logger("decoder")

# The service's answer, under a name the servicer's StoredTiles method does
# not hide.
FoundTiles = StoredTiles

_FORMATS: dict[int, OutputFormat] = {
    pb.OUTPUT_FORMAT_UNSPECIFIED: OutputFormat.JPEG,
    pb.OUTPUT_FORMAT_JPEG: OutputFormat.JPEG,
    pb.OUTPUT_FORMAT_PNG: OutputFormat.PNG,
    pb.OUTPUT_FORMAT_WEBP: OutputFormat.WEBP,
    pb.OUTPUT_FORMAT_TIFF: OutputFormat.TIFF,
    pb.OUTPUT_FORMAT_GIF: OutputFormat.GIF,
    pb.OUTPUT_FORMAT_JP2: OutputFormat.JP2,
}
_QUALITIES: dict[int, Quality] = {
    pb.QUALITY_UNSPECIFIED: Quality.COLOR,
    pb.QUALITY_COLOR: Quality.COLOR,
    pb.QUALITY_GRAY: Quality.GRAY,
    pb.QUALITY_BITONAL: Quality.BITONAL,
}
_SOURCE_FORMATS: dict[SourceFormat, pb.SourceFormat.ValueType] = {
    SourceFormat.JPEG2000: pb.SOURCE_FORMAT_JPEG2000,
    SourceFormat.TIFF: pb.SOURCE_FORMAT_TIFF,
    SourceFormat.JPEG: pb.SOURCE_FORMAT_JPEG,
    SourceFormat.PNG: pb.SOURCE_FORMAT_PNG,
}

# One table for every error the layers below raise; the first matching class wins.
_STATUS: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (ObjectNotFound, grpc.StatusCode.NOT_FOUND),
    (InvalidIdentifier, grpc.StatusCode.INVALID_ARGUMENT),
    (InvalidPlan, grpc.StatusCode.INVALID_ARGUMENT),
    (RenderError, grpc.StatusCode.INVALID_ARGUMENT),
    (UnsupportedSource, grpc.StatusCode.FAILED_PRECONDITION),
    (DecodeError, grpc.StatusCode.FAILED_PRECONDITION),
    (SourceTooLarge, grpc.StatusCode.FAILED_PRECONDITION),
    (VersionMismatch, grpc.StatusCode.ABORTED),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (SourceAccessDenied, grpc.StatusCode.PERMISSION_DENIED),
    (SourceUnavailable, grpc.StatusCode.UNAVAILABLE),
    (TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (Cancelled, grpc.StatusCode.CANCELLED),
)
MAX_OUTPUT_SIDE = 65_500  # libvips' and JPEG's own limit on one side


def status_for(exc: BaseException) -> grpc.StatusCode:
    """The gRPC status code for an error raised below the servicer."""
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def plan_from_proto(
    request: pb.RenderRequest,
    info_width: int,
    info_height: int,
    jpeg_quality: int,
    max_output_pixels: int,
) -> Plan:
    """A Plan from a RenderRequest; raises InvalidPlan naming the bad field."""
    if request.HasField("region"):
        r = request.region
        region = Box(r.x, r.y, r.width, r.height)
    else:
        region = Box(0, 0, info_width, info_height)
    if region.width < 1 or region.height < 1:
        raise InvalidPlan("region: width and height must be at least 1")
    if region.right > info_width or region.bottom > info_height:
        raise InvalidPlan(
            f"region: {region.x},{region.y},{region.width},{region.height} lies outside "
            f"the {info_width}x{info_height} image"
        )
    if not (1 <= request.width <= MAX_OUTPUT_SIDE and 1 <= request.height <= MAX_OUTPUT_SIDE):
        raise InvalidPlan(f"width, height: must be within 1..{MAX_OUTPUT_SIDE}")
    if request.width * request.height > max_output_pixels:
        raise InvalidPlan(
            f"width, height: {request.width}x{request.height} exceeds this decoder's "
            f"limit of {max_output_pixels} output pixels"
        )
    rotation = request.rotation
    if not (0.0 <= rotation < 360.0):  # also rejects NaN
        raise InvalidPlan("rotation: must be in [0, 360)")
    try:
        fmt = _FORMATS[request.format]
        quality = _QUALITIES[request.quality]
    except KeyError as exc:
        raise InvalidPlan(f"format or quality: unknown enum value {exc}") from None
    encode_quality = request.encode.quality or jpeg_quality
    if not 1 <= encode_quality <= 100:
        raise InvalidPlan("encode.quality: must be within 1..100")
    return Plan(
        region=region,
        width=request.width,
        height=request.height,
        rotation=rotation,
        mirror=request.mirror,
        quality=quality,
        format=fmt,
        encode_quality=encode_quality,
        progressive=request.encode.progressive,
    )


def describe_to_proto(
    identifier: str, desc: Description, decoder_id: str = ""
) -> pb.DescribeResponse:
    info, stat = desc.info, desc.stat
    modified = Timestamp()
    modified.FromDatetime(stat.last_modified)
    return pb.DescribeResponse(
        identifier=identifier,
        width=info.width,
        height=info.height,
        levels=[
            pb.ResolutionLevel(
                width=lv.width,
                height=lv.height,
                downscale=lv.downscale,
                tile_width=lv.tile_width,
                tile_height=lv.tile_height,
                stored_tiles=stored,
            )
            for lv, stored in zip(
                info.levels, desc.stored_tiles or (False,) * len(info.levels), strict=True
            )
        ],
        tile_width=info.tile_width,
        tile_height=info.tile_height,
        bands=info.bands,
        bits_per_sample=info.bits_per_sample,
        format=_SOURCE_FORMATS[info.format],
        has_icc=info.has_icc,
        version=stat.version,
        last_modified=modified,
        size_bytes=stat.size,
        cache_block=cache_block(info),
        decoder_id=decoder_id,
    )


class DecoderServicer(decoder_pb2_grpc.DecoderServicer):
    def __init__(
        self,
        service: ImageService,
        chunk_bytes: int,
        jpeg_quality: int,
        max_output_pixels: int,
        decoder_id: str = "",
        draining: asyncio.Event | None = None,
        drain_linger_s: float = 0.0,
    ) -> None:
        self._service = service
        self._decoder_id = decoder_id
        self._chunk_bytes = chunk_bytes
        self._jpeg_quality = jpeg_quality
        self._max_output_pixels = max_output_pixels
        self._draining = draining
        self._drain_linger_s = drain_linger_s

    async def _linger_if_draining(self) -> None:
        """While the server drains, a streamed answer's call stays open a
        moment after its last message: the server closes its connections as
        soon as the last call ends, and a caller that had not read the tail
        yet (seen under load: a 1 MB render cut after its header) would lose
        it to the reset."""
        if self._draining is not None and self._draining.is_set() and self._drain_linger_s > 0:
            await asyncio.sleep(self._drain_linger_s)

    async def Describe(
        self, request: pb.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeResponse:
        with _observed("Describe", context, request.identifier) as outcome:
            try:
                desc = await self._service.describe(request.identifier)
            except Exception as exc:
                await _abort(context, exc, "Describe", request.identifier, outcome)
                raise  # unreachable: abort raises
            return describe_to_proto(request.identifier, desc, self._decoder_id)

    async def Render(
        self, request: pb.RenderRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RenderChunk]:
        with _observed("Render", context, request.identifier) as outcome:
            async for chunk in self._render(request, context, outcome):
                yield chunk

    async def _render(
        self,
        request: pb.RenderRequest,
        context: grpc.aio.ServicerContext,
        outcome: _Outcome,
    ) -> AsyncIterator[pb.RenderChunk]:
        try:
            rendered = await self._service.render(
                request.identifier,
                lambda info: plan_from_proto(
                    request, info.width, info.height, self._jpeg_quality, self._max_output_pixels
                ),
                request.expected_version,
            )
        except Exception as exc:
            await _abort(context, exc, "Render", request.identifier, outcome)
            raise
        yield pb.RenderChunk(
            header=pb.RenderHeader(
                content_type=rendered.content_type,
                version=rendered.stat.version,
                content_length=len(rendered.data),
                decoder_id=self._decoder_id,
            )
        )
        data = memoryview(rendered.data)
        for start in range(0, len(data), self._chunk_bytes):
            yield pb.RenderChunk(data=bytes(data[start : start + self._chunk_bytes]))
        await self._linger_if_draining()

    async def StoredTiles(
        self, request: pb.StoredTilesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StoredTile]:
        with _observed("StoredTiles", context, request.identifier) as outcome:
            found = await self._stored_tiles(request, context, "StoredTiles", outcome)
            messages = (
                packed_messages(found.tiles, PACKED_MESSAGE_BYTES)
                if request.packed
                else [[tile] for tile in found.tiles]
            )
            for tiles in messages:
                (column, row, data), *more = tiles
                yield pb.StoredTile(
                    column=column,
                    row=row,
                    content_type=found.content_type,
                    data=data,
                    version=found.stat.version,
                    decoder_id=self._decoder_id,
                    more=[
                        pb.StoredTile(column=c, row=r, content_type=found.content_type, data=group)
                        for c, r, group in more
                    ],
                )
            await self._linger_if_draining()

    async def StoredTilesAtOnce(
        self, request: pb.StoredTilesRequest, context: grpc.aio.ServicerContext
    ) -> pb.StoredTilesReply:
        with _observed("StoredTilesAtOnce", context, request.identifier) as outcome:
            found = await self._stored_tiles(request, context, "StoredTilesAtOnce", outcome)
            reply = pb.StoredTilesReply(
                tiles=[
                    pb.StoredTile(column=c, row=r, content_type=found.content_type, data=data)
                    for c, r, data in found.tiles
                ],
                version=found.stat.version,
                decoder_id=self._decoder_id,
            )
            # Up to 3 MiB, more than the flow-control window: like a stream's
            # tail, it must not be cut by a draining server's reset.
            await self._linger_if_draining()
            return reply

    async def _stored_tiles(
        self,
        request: pb.StoredTilesRequest,
        context: grpc.aio.ServicerContext,
        rpc: str,
        outcome: _Outcome,
    ) -> FoundTiles:
        selection: TileSelection
        if request.cells:
            selection = TileCells(
                request.level,
                tuple((cell.column, cell.row) for cell in request.cells),
                request.span,
            )
        else:
            selection = TileRect(
                request.level,
                request.column,
                request.row,
                request.columns,
                request.rows,
                request.span,
            )
        try:
            return await self._service.stored_tiles(
                request.identifier, selection, request.expected_version
            )
        except Exception as exc:
            await _abort(context, exc, rpc, request.identifier, outcome)
            raise  # unreachable: abort raises


# A packed StoredTiles message holds groups up to this many bytes (at least
# one, whatever its size): far below the 4 MiB a message may carry.
PACKED_MESSAGE_BYTES: Final = 1 << 20


def packed_messages(
    tiles: Sequence[tuple[int, int, bytes]], max_bytes: int
) -> list[list[tuple[int, int, bytes]]]:
    """`tiles` in order, cut into runs of at most `max_bytes` of data (a
    tile larger than that alone): one run per packed message. Pure."""
    messages: list[list[tuple[int, int, bytes]]] = []
    size = 0
    for tile in tiles:
        if messages and size + len(tile[2]) <= max_bytes:
            messages[-1].append(tile)
            size += len(tile[2])
        else:
            messages.append([tile])
            size = len(tile[2])
    return messages


@dataclass(slots=True)
class _Outcome:
    code: grpc.StatusCode = grpc.StatusCode.OK


@contextmanager
def _observed(rpc: str, context: grpc.aio.ServicerContext, identifier: str) -> Iterator[_Outcome]:
    """Count, time and log one call (one line per call, with the caller's
    request id); a call cut short (cancelled) counts as CANCELLED."""
    request_id = dict(context.invocation_metadata() or ()).get("x-request-id", "")
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=str(request_id)[:128], rpc=rpc)
    outcome = _Outcome()
    started = time.perf_counter()
    try:
        yield outcome
    except (asyncio.CancelledError, GeneratorExit):
        outcome.code = grpc.StatusCode.CANCELLED
        raise
    finally:
        elapsed = time.perf_counter() - started
        metrics.RPCS.labels(rpc, outcome.code.name).inc()
        metrics.RPC_SECONDS.labels(rpc).observe(elapsed)
        log.info("rpc", identifier=identifier, code=outcome.code.name, ms=round(elapsed * 1000, 2))


async def _abort(
    context: grpc.aio.ServicerContext,
    exc: Exception,
    rpc: str,
    identifier: str,
    outcome: _Outcome,
) -> None:
    """End the call with `exc`'s status (recorded in `outcome` for the log
    and metrics); raises, as context.abort does."""
    code = outcome.code = status_for(exc)
    if code is grpc.StatusCode.INTERNAL:
        log.exception("unexpected error", rpc=rpc, identifier=identifier)
        message = "internal error"
    else:
        message = str(exc) or type(exc).__name__
    trailers: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, Overloaded):
        trailers = (("retry-after", str(max(1, round(exc.retry_after_s)))),)
    await context.abort(code, message, trailing_metadata=trailers)
