"""A decoder process configured with IIIF_DECODER_JP2_ENGINE=grok, over real
gRPC, against the session's decoder (OpenJPEG, the default) on the same
files: the same pixels within 1 per sample (lossless PNG out, sizes that
need no resampling), the same answer for a truncated file."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import grpc
import pytest
import pyvips
from iiif_decoder.v1 import decoder_pb2 as pb
from iiif_decoder.v1 import decoder_pb2_grpc

from decoder.engines.grok import grok
from tests import processes
from tests.conftest import Stack, start_decoder


def _grok_loads() -> bool:
    try:
        grok()
    except OSError:
        return False
    return True


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not _grok_loads(), reason="needs libgrokj2k.so.1 (apt-get install libgrokj2k1)"
    ),
]


@pytest.fixture(scope="module")
def grok_target(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("grok-logs")
    started: list[subprocess.Popen[bytes]] = []
    try:
        decoder, target = start_decoder(
            stack.image_root, logs, "decoder-grok", {"IIIF_DECODER_JP2_ENGINE": "grok"}
        )
        started.append(decoder)
        yield target
    finally:
        for proc in started:
            processes.stop(proc)


def _stub(target: str) -> Iterator[decoder_pb2_grpc.DecoderStub]:
    with grpc.insecure_channel(target) as channel:
        yield decoder_pb2_grpc.DecoderStub(channel)


@pytest.fixture(scope="module")
def grok_stub(grok_target: str) -> Iterator[decoder_pb2_grpc.DecoderStub]:
    yield from _stub(grok_target)


@pytest.fixture(scope="module")
def openjpeg_stub(stack: Stack) -> Iterator[decoder_pb2_grpc.DecoderStub]:
    yield from _stub(stack.decoder_target)


def _png(stub: decoder_pb2_grpc.DecoderStub, **fields: object) -> pyvips.Image:
    request = pb.RenderRequest(
        identifier="sample-tiled",
        format=pb.OUTPUT_FORMAT_PNG,
        **fields,  # type: ignore[arg-type]
    )
    data = b"".join(c.data for c in stub.Render(request, timeout=60) if c.HasField("data"))
    return pyvips.Image.new_from_buffer(data, "")


@pytest.mark.parametrize(
    "fields",
    [
        # Full resolution, across the 256 px codestream tiles, odd edges.
        {"region": pb.Region(x=200, y=130, width=301, height=257), "width": 301, "height": 257},
        # Level 1 (half size): a box of it, and the whole level.
        {"region": pb.Region(x=512, y=256, width=512, height=512), "width": 256, "height": 256},
        {"width": 600, "height": 450},
        # The bottom-right corner tile.
        {"region": pb.Region(x=1024, y=768, width=176, height=132), "width": 176, "height": 132},
    ],
)
def test_grok_renders_the_pixels_openjpeg_does(
    fields: dict[str, object],
    grok_stub: decoder_pb2_grpc.DecoderStub,
    openjpeg_stub: decoder_pb2_grpc.DecoderStub,
) -> None:
    got, want = _png(grok_stub, **fields), _png(openjpeg_stub, **fields)
    assert (got.width, got.height, got.bands) == (want.width, want.height, want.bands)
    assert (got.cast("int") - want.cast("int")).abs().max() <= 1


def test_a_truncated_file_is_refused_alike(
    grok_stub: decoder_pb2_grpc.DecoderStub, openjpeg_stub: decoder_pb2_grpc.DecoderStub
) -> None:
    codes = []
    for stub in (grok_stub, openjpeg_stub):
        request = pb.RenderRequest(identifier="corrupt-truncated", width=10, height=10)
        with pytest.raises(grpc.RpcError) as caught:
            list(stub.Render(request, timeout=30))
        codes.append(caught.value.code())
    assert codes[0] == codes[1]
