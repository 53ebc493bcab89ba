"""Identify an encoded image by its first bytes, never by its file name."""

from __future__ import annotations

from decoder.engines.base import SourceFormat, UnsupportedSource
from decoder.formats import jp2, tiff

# How many leading bytes sniff() wants (it copes with fewer).
SNIFF_BYTES = 16

_JPEG_SOI = b"\xff\xd8\xff"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def sniff(head: bytes) -> SourceFormat:
    """Return the format of an image whose first bytes are `head`.

    Recognises the JP2/JPX signature box and raw JPEG 2000 codestreams
    (SOC followed by SIZ), TIFF and BigTIFF in both byte orders, JPEG (SOI
    followed by a marker) and PNG. Needs at most SNIFF_BYTES bytes.
    Raises UnsupportedSource for anything else, including empty input.
    """
    if head.startswith(jp2.JP2_SIGNATURE) or head.startswith(jp2.SOC_SIZ):
        return SourceFormat.JPEG2000
    if head[:4] in tiff.SIGNATURES:
        return SourceFormat.TIFF
    if head.startswith(_JPEG_SOI):
        return SourceFormat.JPEG
    if head.startswith(_PNG_SIGNATURE):
        return SourceFormat.PNG
    raise UnsupportedSource("not a JPEG 2000, TIFF, JPEG or PNG image")
