"""Turn the raw URL path after a version prefix into an info, base or image request."""

from __future__ import annotations

from typing import Final
from urllib.parse import unquote

from gateway.iiif import parse_v2, parse_v3
from gateway.iiif.errors import IIIFError
from gateway.iiif.types import (
    SUPPORTED_FORMATS,
    ApiVersion,
    BaseRequest,
    ImageRequest,
    InfoRequest,
)

# Decoded identifier length cap: long enough for any sane ARK, URN or path, short enough to keep
# keys and log lines small ("Early sanity checking of URIs (lengths ...)", 3.0 section 10).
MAX_IDENTIFIER_CHARS: Final = 1024
# Raw path cap: a maximal identifier fully percent-encoded as UTF-8, plus all parameters.
MAX_RAW_PATH_CHARS: Final = 4 * 3 * MAX_IDENTIFIER_CHARS


def parse_path(version: ApiVersion, raw_path: str) -> InfoRequest | BaseRequest | ImageRequest:
    """Parse the still percent-encoded path after the version prefix.

    ``{id}/{region}/{size}/{rotation}/{quality}.{format}`` gives an ImageRequest,
    ``{id}/info.json`` an InfoRequest and a lone ``{id}`` a BaseRequest (which servers redirect
    to its info.json, 3.0 section 2). The path must not start with "/". It is split on "/"
    before anything is decoded, so an encoded "%2F" stays inside the identifier (3.0 section 9).
    Viewers also send identifiers with literal slashes: for info and image requests the
    parameters are taken from the right (as 2.1 appendix A suggests) and the remaining segments
    are joined back into the identifier. A bare multi-segment path is therefore ambiguous and
    refused.

    Raises IIIFError: 400 for a malformed path, a bad identifier (empty, over
    ``MAX_IDENTIFIER_CHARS`` characters, control characters, invalid UTF-8 escapes) or any bad
    parameter; 501 for a known format this server does not render. All 400 checks come first, so
    501 means the request was otherwise valid ("a valid IIIF request that is not implemented").
    """
    if len(raw_path) > MAX_RAW_PATH_CHARS:
        raise IIIFError(400, None, "request path too long")
    segments = raw_path.split("/")
    # An empty first segment is an empty identifier (or a stray leading slash), never part of a
    # name; empty segments further on can be, as in unencoded "http://..." identifiers.
    if not segments[0]:
        raise IIIFError(400, "identifier", "the identifier is empty")
    if len(segments) == 1:
        return BaseRequest(_identifier(segments), version)
    last = _decode(segments[-1], "format")
    if last == "info.json":
        return InfoRequest(_identifier(segments[:-1]), version)
    if len(segments) < 5:
        raise IIIFError(
            400,
            None,
            "expected {identifier}/info.json or "
            "{identifier}/{region}/{size}/{rotation}/{quality}.{format}",
        )
    identifier = _identifier(segments[:-4])
    if version == ApiVersion.V3:
        region = parse_v3.parse_region(_decode(segments[-4], "region"))
        size = parse_v3.parse_size(_decode(segments[-3], "size"))
        rotation, mirror = parse_v3.parse_rotation(_decode(segments[-2], "rotation"))
        quality, fmt = parse_v3.parse_quality_format(last)
    else:
        region = parse_v2.parse_region(_decode(segments[-4], "region"))
        size = parse_v2.parse_size(_decode(segments[-3], "size"))
        rotation, mirror = parse_v2.parse_rotation(_decode(segments[-2], "rotation"))
        quality, fmt = parse_v2.parse_quality_format(last)
    if fmt not in SUPPORTED_FORMATS:
        raise IIIFError(501, "format", f"{fmt!r} is not served here")
    return ImageRequest(identifier, region, size, rotation, mirror, quality, fmt, version)


def _decode(segment: str, parameter: str) -> str:
    # Invalid UTF-8 escapes are the client's error, not a reason to guess with U+FFFD.
    try:
        return unquote(segment, errors="strict")
    except UnicodeDecodeError:
        raise IIIFError(400, parameter, "percent-escapes are not valid UTF-8") from None


def _identifier(segments: list[str]) -> str:
    identifier = "/".join(_decode(s, "identifier") for s in segments)
    if not identifier:
        raise IIIFError(400, "identifier", "the identifier is empty")
    if len(identifier) > MAX_IDENTIFIER_CHARS:
        raise IIIFError(400, "identifier", f"longer than {MAX_IDENTIFIER_CHARS} characters")
    for char in identifier:
        code = ord(char)
        # C0 and C1 controls and DEL have no place in a name; lone surrogates cannot be encoded
        # as UTF-8 and would fail further down (in logs, gRPC, file systems).
        if code < 0x20 or 0x7F <= code <= 0x9F or 0xD800 <= code <= 0xDFFF:
            raise IIIFError(400, "identifier", "contains control or unencodable characters")
    return identifier
