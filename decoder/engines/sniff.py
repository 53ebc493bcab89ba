"""Identify an encoded image by its first bytes, never by its file name."""

from __future__ import annotations

from decoder.engines.base import SourceFormat, UnsupportedSource

# How many leading bytes sniff() wants (it copes with fewer).
SNIFF_BYTES = 16

_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
_TIFF_MAGICS = (
    b"II*\x00",  # classic TIFF, little-endian
    b"MM\x00*",  # classic TIFF, big-endian
    b"II+\x00",  # BigTIFF, little-endian
    b"MM\x00+",  # BigTIFF, big-endian
)
_JPEG_SOI = b"\xff\xd8\xff"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sniff(head: bytes) -> SourceFormat:
    """Return the format of an image whose first bytes are `head`.

    Recognises the JP2/JPX signature box and raw JPEG 2000 codestreams
    (SOC followed by SIZ), TIFF and BigTIFF in both byte orders, JPEG (SOI
    followed by a marker) and PNG. Needs at most SNIFF_BYTES bytes.
    Raises UnsupportedSource for anything else, including empty input.
    """
    if head.startswith(_JP2_SIGNATURE) or head.startswith(_J2K_SOC_SIZ):
        return SourceFormat.JPEG2000
    if head[:4] in _TIFF_MAGICS:
        return SourceFormat.TIFF
    if head.startswith(_JPEG_SOI):
        return SourceFormat.JPEG
    if head.startswith(_PNG_SIGNATURE):
        return SourceFormat.PNG
    raise UnsupportedSource("not a JPEG 2000, TIFF, JPEG or PNG image")
