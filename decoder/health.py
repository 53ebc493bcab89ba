"""The standard gRPC health service, naming the decoder process that answers.

A caller that spreads work over several decoder processes (the gateway keeps
several connections to one address, each reaching one worker process) routes
renders of one block, and calls about one tiled image, to the process that
owns them. It learns which process a connection reaches from the
``decoder_id`` of each answer; until it knows every connection, it cannot
tell owners apart and spreads keyed calls, so a fresh gateway's first
images were decoded in several processes (measured: 35 decodes instead of
30 for a new JPEG 2000's first tile session, 25% more CPU). A health Check
costs nothing and needs no image: its initial metadata names the process.
"""

from __future__ import annotations

from typing import Final

import grpc
from grpc_health.v1 import health, health_pb2

# Documented with DescribeResponse.decoder_id in the proto.
DECODER_ID_HEADER: Final = "iiif-decoder-id"


class NamedHealthServicer(health.aio.HealthServicer):  # type: ignore[misc]  # untyped
    """grpc_health's servicer; Check also sends `decoder_id` as initial
    metadata (DECODER_ID_HEADER)."""

    def __init__(self, decoder_id: str) -> None:
        super().__init__()
        self._metadata = ((DECODER_ID_HEADER, decoder_id),)

    async def Check(
        self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext
    ) -> health_pb2.HealthCheckResponse:
        await context.send_initial_metadata(self._metadata)
        return await super().Check(request, context)
