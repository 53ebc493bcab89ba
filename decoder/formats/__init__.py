"""Container structure parsers: TIFF/BigTIFF directories (:mod:`.tiff`) and
JPEG 2000 boxes and markers (:mod:`.jp2`), the one place that knows these
layouts. The engines (describe), the pipeline (JPEG tile passthrough) and the
sources (the S3 per-object index) all call them.

Pure parsing over bytes: nothing here knows pyvips, IIIF, gRPC or storage.
Parsers yield the byte ranges they need (see :mod:`.base`), so the same code
runs over a blocking reader and over async reads. Malformed input raises
:class:`FormatError` (:class:`NotThisFormat` for a wrong signature); each
caller maps it to its own error type.
"""

from decoder.formats.base import (
    BLOCK_SIZE,
    MAX_PARSE_BYTES,
    BlockReads,
    FormatError,
    NotThisFormat,
    Parser,
    Request,
    parse,
    run,
    run_async,
)

__all__ = [
    "BLOCK_SIZE",
    "MAX_PARSE_BYTES",
    "BlockReads",
    "FormatError",
    "NotThisFormat",
    "Parser",
    "Request",
    "parse",
    "run",
    "run_async",
]
