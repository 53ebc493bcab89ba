"""OpenJpegEngine.load_block: codecs of untiled images kept between blocks.

A kept codec decodes the next block of its image and level without reading
the codestream again, so a reused codec makes no reads at all; its pixels
must equal a new codec's exactly (the same library, the same decode).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from decoder.engines import DecodeError, ImageInfo
from decoder.engines.base import SourceFormat
from decoder.engines.openjpeg import OpenJpegEngine, OpenJpegOptions, kept_codec_bytes
from decoder.engines.vips import VipsEngine
from decoder.plan import Box
from decoder.sources.base import SourceUnavailable
from tests.images import have_opj_compress, make_tiled_jp2, opj_compress, pattern
from tests.readers import BytesReader

pytestmark = pytest.mark.skipif(not have_opj_compress(), reason="needs opj_compress")

PLENTY = 1 << 30


@pytest.fixture(scope="module")
def untiled(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    root = tmp_path_factory.mktemp("kept")
    path = opj_compress(
        pattern(1100, 900),
        root / "untiled.jp2",
        *("-c", "[128,128]", "-n", "4", "-p", "RPCL", "-PLT", "-TLM", "-I", "-r", "8"),
    )
    return path.read_bytes()


@pytest.fixture(scope="module")
def tiled(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = make_tiled_jp2(tmp_path_factory.mktemp("kept") / "tiled.jp2", 1100, 900, tile=256)
    return Path(path).read_bytes()


def describe(data: bytes) -> ImageInfo:
    return VipsEngine().describe(BytesReader(data), SourceFormat.JPEG2000)


def same(a: object, b: object) -> bool:
    return bool((a - b).abs().max() == 0)  # type: ignore[operator]


def test_the_next_block_of_a_level_reuses_the_codec_without_reading(untiled: bytes) -> None:
    info = describe(untiled)
    engine = OpenJpegEngine(OpenJpegOptions(kept_codec_bytes=PLENTY))
    fresh = OpenJpegEngine()
    first, second = BytesReader(untiled), BytesReader(untiled)
    a = engine.load_block(first, info, 0, Box(0, 0, 512, 512), ("img", "v1"))
    assert first.reads > 0
    assert engine.kept_codecs == 1
    b = engine.load_block(second, info, 0, Box(512, 512, 512, 388), ("img", "v1"))
    assert second.reads == 0, "a kept codec does not read the codestream again"
    assert engine.kept_codecs == 1
    assert same(a, fresh.load_region(BytesReader(untiled), info, 0, Box(0, 0, 512, 512)))
    assert same(b, fresh.load_region(BytesReader(untiled), info, 0, Box(512, 512, 512, 388)))


def test_levels_and_images_have_codecs_of_their_own(untiled: bytes) -> None:
    info = describe(untiled)
    engine = OpenJpegEngine(OpenJpegOptions(kept_codec_bytes=PLENTY))
    engine.load_block(BytesReader(untiled), info, 0, Box(0, 0, 512, 512), ("img", "v1"))
    for level, key in ((1, ("img", "v1")), (0, ("img", "v2")), (0, ("other", "v1"))):
        reader = BytesReader(untiled)
        image = engine.load_block(reader, info, level, Box(0, 0, 256, 256), key)
        assert reader.reads > 0, (level, key)
        assert same(
            image,
            OpenJpegEngine().load_region(BytesReader(untiled), info, level, Box(0, 0, 256, 256)),
        )
    assert engine.kept_codecs == 4
    engine.close()
    assert engine.kept_codecs == 0


@pytest.mark.parametrize("budget", ["off", "under one codec"])
def test_no_codec_is_kept_when_off_or_over_the_budget(untiled: bytes, budget: str) -> None:
    info = describe(untiled)
    nbytes = 0 if budget == "off" else kept_codec_bytes(len(untiled)) - 1
    engine = OpenJpegEngine(OpenJpegOptions(kept_codec_bytes=nbytes))
    for box in (Box(0, 0, 512, 512), Box(512, 0, 512, 512)):
        reader = BytesReader(untiled)
        engine.load_block(reader, info, 0, box, ("img", "v1"))
        assert reader.reads > 0
    assert engine.kept_codecs == 0


def test_a_tiled_image_keeps_no_codec(tiled: bytes) -> None:
    info = describe(tiled)
    engine = OpenJpegEngine(OpenJpegOptions(kept_codec_bytes=PLENTY))
    image = engine.load_block(BytesReader(tiled), info, 0, Box(256, 256, 256, 256), ("t", "v"))
    assert engine.kept_codecs == 0
    assert same(
        image, OpenJpegEngine().load_region(BytesReader(tiled), info, 0, Box(256, 256, 256, 256))
    )


def test_blocks_decoded_at_once_by_threads_are_all_right(untiled: bytes) -> None:
    info = describe(untiled)
    engine = OpenJpegEngine(OpenJpegOptions(kept_codec_bytes=PLENTY))
    fresh = OpenJpegEngine()
    boxes = [Box(x, y, 256, 256) for x in range(0, 768, 256) for y in range(0, 768, 256)] * 2
    failures: list[str] = []

    def decode(box: Box) -> None:
        image = engine.load_block(BytesReader(untiled), info, 0, box, ("img", "v1"))
        if not same(image, fresh.load_region(BytesReader(untiled), info, 0, box)):
            failures.append(str(box))

    threads = [threading.Thread(target=decode, args=(box,)) for box in boxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert 1 <= engine.kept_codecs <= len(boxes)


class FailingReader(BytesReader):
    """Fails every read past the header: the store went away mid-decode."""

    def read_at(self, offset: int, length: int) -> bytes:
        if offset > 4096:
            raise SourceUnavailable("store went away")
        return super().read_at(offset, length)


def test_a_failed_decode_keeps_nothing_and_says_why(untiled: bytes) -> None:
    info = describe(untiled)
    engine = OpenJpegEngine(OpenJpegOptions(kept_codec_bytes=PLENTY))
    with pytest.raises(SourceUnavailable):
        engine.load_block(FailingReader(untiled), info, 0, Box(0, 0, 512, 512), ("img", "v1"))
    assert engine.kept_codecs == 0
    truncated = untiled[: len(untiled) // 2]
    with pytest.raises(DecodeError):
        engine.load_block(BytesReader(truncated), info, 0, Box(0, 0, 512, 512), ("cut", "v1"))
    assert engine.kept_codecs == 0
