"""Cheap structure facts of JPEG 2000 and TIFF files, in the engines' terms.

libvips does not report JPEG 2000 resolution levels or tile sizes, nor TIFF
tile sizes, so we read them from the file ourselves. The parsing is
:mod:`decoder.formats`' (shared with passthrough and the S3 index); here it
runs over a ByteReader in 64 KiB blocks (one or two reads for typical files,
which keeps this cheap for remote objects too) and its errors become the
engines' UnsupportedSource and DecodeError.
"""

from __future__ import annotations

from typing import TypeVar

from decoder.engines.base import DecodeError, UnsupportedSource
from decoder.formats import FormatError, NotThisFormat, Parser, parse
from decoder.formats.jp2 import J2kHeader, read_codestream_header
from decoder.formats.tiff import TiffPage, TiffStructure, read_structure
from decoder.sources.base import ByteReader

T = TypeVar("T")


def _parse(parser: Parser[T], reader: ByteReader) -> T:
    try:
        return parse(parser, reader)
    except NotThisFormat as exc:
        raise UnsupportedSource(str(exc)) from exc
    except FormatError as exc:
        raise DecodeError(str(exc)) from exc


def parse_j2k_header(reader: ByteReader) -> J2kHeader:
    """Parse SIZ, COD and COC from a raw J2K codestream or a JP2/JPX file.

    Raises UnsupportedSource if the bytes are not JPEG 2000 and DecodeError
    if the header is truncated or inconsistent.
    """
    return _parse(read_codestream_header(reader.size), reader)


def parse_tiff_structure(reader: ByteReader) -> TiffStructure:
    """Walk the IFD chain of a TIFF or BigTIFF (either byte order) and page
    0's SubIFDs, reading only directories and small values.

    Raises UnsupportedSource if the bytes are not TIFF and DecodeError for
    truncated or corrupt structures.
    """
    return _parse(read_structure(), reader)


def reduction_factor(full: tuple[int, int], reduced: tuple[int, int]) -> int | None:
    """The integer downscale d >= 2 such that `reduced` is `full` divided by
    d (rounded down or up on each axis), or None if there is none."""
    (fw, fh), (rw, rh) = full, reduced
    if rw <= 0 or rh <= 0 or rw >= fw or rh >= fh:
        return None
    # The longer axis gives the most precise ratio; the other is then checked.
    d = round(fw / rw) if fw >= fh else round(fh / rh)
    if d < 2:
        return None
    for f, r in ((fw, rw), (fh, rh)):
        if r not in (f // d, -(-f // d)):
            return None
    return d


__all__ = [
    "J2kHeader",
    "TiffPage",
    "TiffStructure",
    "parse_j2k_header",
    "parse_tiff_structure",
    "reduction_factor",
]
