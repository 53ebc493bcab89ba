"""While the decoder drains, a streamed Render keeps its call open after its
last message (so the caller reads the tail before the server closes its
connections); otherwise it ends at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import pytest
from iiif_decoder.v1 import decoder_pb2 as pb

from decoder.engines.base import ImageInfo
from decoder.plan import Plan
from decoder.service import Rendered
from decoder.servicer import DecoderServicer
from decoder.sources.base import ObjectStat

DATA = bytes(range(256)) * 40  # 10 KiB: three chunks of 4 KiB
STAT = ObjectStat("img", len(DATA), "v1", datetime(2026, 1, 1, tzinfo=UTC))


class RenderedAtOnce:
    """Stands in for ImageService.render: the bytes are ready."""

    async def render(
        self, identifier: str, make_plan: Callable[[ImageInfo], Plan], expected_version: str = ""
    ) -> Rendered:
        return Rendered(STAT, "image/jpeg", DATA)


class Context:
    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


def servicer(draining: asyncio.Event) -> DecoderServicer:
    return DecoderServicer(
        RenderedAtOnce(),  # type: ignore[arg-type]  # only render is called
        chunk_bytes=4096,
        jpeg_quality=85,
        max_output_pixels=1 << 20,
        draining=draining,
        drain_linger_s=30.0,
    )


async def all_messages(stream: AsyncIterator[pb.RenderChunk]) -> list[pb.RenderChunk]:
    """Every message of the stream, without waiting for its end."""
    return [await anext(stream) for _ in range(4)]  # header and three chunks


@pytest.mark.parametrize("draining", [False, True])
async def test_a_render_lingers_after_its_last_message_only_while_draining(
    draining: bool,
) -> None:
    event = asyncio.Event()
    if draining:
        event.set()
    request = pb.RenderRequest(identifier="img")
    stream = servicer(event).Render(request, Context())

    messages = await all_messages(stream)
    assert b"".join(m.data for m in messages[1:]) == DATA
    end = asyncio.ensure_future(anext(stream))
    done, _ = await asyncio.wait([end], timeout=0.5 if draining else 10)

    if draining:
        assert not done, "the call stays open after the last message"
        end.cancel()
        with pytest.raises(asyncio.CancelledError):
            await end
    else:
        assert done
        with pytest.raises(StopAsyncIteration):
            end.result()
