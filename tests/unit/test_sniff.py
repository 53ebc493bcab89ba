"""sniff(): formats by content, never by name."""

from __future__ import annotations

import pytest

from decoder.engines import SNIFF_BYTES, SourceFormat, UnsupportedSource, sniff
from tests.images import SourceSet


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\x00\x00\x00\x0cjP  \r\n\x87\n\x00\x00\x00\x14ftypjp2 ", SourceFormat.JPEG2000),
        (b"\xff\x4f\xff\x51\x00\x2f\x00\x00", SourceFormat.JPEG2000),
        (b"II*\x00\x08\x00\x00\x00", SourceFormat.TIFF),
        (b"MM\x00*\x00\x00\x00\x08", SourceFormat.TIFF),
        (b"II+\x00\x08\x00\x00\x00\x10\x00\x00\x00\x00\x00\x00\x00", SourceFormat.TIFF),
        (b"MM\x00+\x00\x08\x00\x00", SourceFormat.TIFF),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", SourceFormat.JPEG),
        (b"\xff\xd8\xff\xdb", SourceFormat.JPEG),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", SourceFormat.PNG),
    ],
)
def test_known_signatures(head: bytes, expected: SourceFormat) -> None:
    assert sniff(head) is expected
    assert sniff(head[:SNIFF_BYTES]) is expected


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"\xff",
        b"\xff\xd8",  # SOI without a following marker
        b"\xff\x4f\xff\x90",  # SOC not followed by SIZ
        b"\x00\x00\x00\x0cjP  \r\n",  # truncated JP2 signature
        b"II*",
        b"MM\x00\x2a"[:3],
        b"II\x2a\x01",
        b"GIF89a\x01\x00",
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
        b"BM\x00\x00",
        b"%PDF-1.7\n",
        b"<svg xmlns=",
        b"\x89PNG\r\n\x1a",  # one byte short
        b"this is not an image\n",
    ],
)
def test_everything_else_is_unsupported(head: bytes) -> None:
    with pytest.raises(UnsupportedSource):
        sniff(head)


def test_real_files(sources: SourceSet) -> None:
    expected = {
        sources.jp2: SourceFormat.JPEG2000,
        sources.j2k: SourceFormat.JPEG2000,
        sources.pyramid_tiff: SourceFormat.TIFF,
        sources.bigtiff: SourceFormat.TIFF,
        sources.jpeg: SourceFormat.JPEG,
        sources.png: SourceFormat.PNG,
    }
    for path, fmt in expected.items():
        assert sniff(path.read_bytes()[:SNIFF_BYTES]) is fmt, path.name
