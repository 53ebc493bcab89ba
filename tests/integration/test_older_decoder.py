"""A gateway in a rolling upgrade: a decoder that predates StoredTilesAtOnce
(it answers UNIMPLEMENTED) still serves the gateway's stored tiles, through
the StoredTiles stream, and the gateway stops asking it for the unary call.

The older decoder is ours with that one method hidden by a server
interceptor: the real servicer and service over real gRPC on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from iiif_decoder.v1 import decoder_pb2_grpc

from decoder.servicer import DecoderServicer
from decoder.sources.filesystem import FilesystemSource
from gateway.decoder_client import DecoderClient
from gateway.tile_grid import TileBatch
from tests.integration.s3support import image_service

pytestmark = pytest.mark.integration


class MethodLog(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # untyped in grpc
    """Records the method of every Decoder call the server receives, served
    or not (not the health Checks the client sends to learn where its
    channels lead); with `hidden`, serves that method as a decoder that
    predates it would: not at all (no handler, so UNIMPLEMENTED)."""

    def __init__(self, hidden: str = "") -> None:
        self.methods: list[str] = []
        self._hidden = hidden

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        service, _, method = handler_call_details.method.rpartition("/")
        if service == "/iiif.decoder.v1.Decoder":
            self.methods.append(method)
        if method == self._hidden:
            return None
        return await continuation(handler_call_details)


@contextlib.asynccontextmanager
async def _client_of(
    image_root: Path, log: MethodLog, decoder_id: str
) -> AsyncIterator[DecoderClient]:
    """A gateway's DecoderClient on our decoder servicer over loopback."""
    with ThreadPoolExecutor(2) as pool:
        servicer = DecoderServicer(
            image_service(FilesystemSource(image_root), pool),
            chunk_bytes=1 << 18,
            jpeg_quality=85,
            max_output_pixels=1 << 24,
            decoder_id=decoder_id,
        )
        server = grpc.aio.server(interceptors=[log])
        decoder_pb2_grpc.add_DecoderServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        client = DecoderClient(f"127.0.0.1:{port}", 30.0, 1, 16, 60.0, channels=1)
        await client.start()
        try:
            yield client
        finally:
            await client.close()
            await server.stop(None)


async def test_stored_tiles_from_a_decoder_without_the_unary_call(image_root: Path) -> None:
    log = MethodLog(hidden="StoredTilesAtOnce")
    async with _client_of(image_root, log, "older") as client:
        desc = await client.describe("sample-pyramid")
        first = await client.stored_tiles("sample-pyramid", TileBatch(0, 0, 0, 2, 2), "")
        second = await client.stored_cells("sample-pyramid", 0, 2, [(1, 1), (0, 0)], "")

    assert sorted(first.tiles) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert all(data[:2] == b"\xff\xd8" for _type, data in first.tiles.values())
    assert list(second.tiles) == [(1, 1), (0, 0)]
    assert first.version == second.version == desc.version
    assert first.decoder_id == second.decoder_id == "older"
    # Asked once, refused; the stream from then on.
    assert log.methods == ["Describe", "StoredTilesAtOnce", "StoredTiles", "StoredTiles"]


async def test_current_decoders_are_asked_for_tiles_at_once(image_root: Path) -> None:
    log = MethodLog()
    async with _client_of(image_root, log, "current") as client:
        found = await client.stored_tiles("sample-pyramid", TileBatch(0, 0, 0, 2, 2), "")

    assert sorted(found.tiles) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert found.decoder_id == "current"
    assert log.methods == ["StoredTilesAtOnce"]
