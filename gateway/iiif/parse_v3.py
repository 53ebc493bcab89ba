"""Image API 3.0 parameter grammar (https://iiif.io/api/image/3.0/#4-image-requests).

Each function takes one already percent-decoded path segment and returns its value, or raises
IIIFError(400) naming the parameter. The number, region, rotation and quality/format productions
are identical in 2.1, whose module reuses them; only the size grammar differs.
"""

from __future__ import annotations

import re
from typing import Final

from gateway.iiif.errors import IIIFError
from gateway.iiif.types import (
    KNOWN_FORMATS,
    QUALITIES,
    Format,
    FullRegion,
    PercentRegion,
    PixelRegion,
    Quality,
    Region,
    Size,
    SquareRegion,
)

# Pixel values are "non-negative integers" (3.0 section 4); anything that does not fit a signed
# 32-bit int is refused rather than carried on into arithmetic and the decoder.
MAX_INT: Final = 2**31 - 1
# Floating point values "MUST consist only of decimal digits and '.'" (3.0 section 4.7), so no
# sign, exponent, nan or inf. ASCII digits only: Python's \d and int() accept other scripts.
_INT_RE: Final = re.compile(r"[0-9]+")
_DECIMAL_RE: Final = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
# No meaningful number needs more characters; the cap keeps float() and int() cheap.
_MAX_NUMBER_CHARS: Final = 64


def parse_int(text: str, parameter: str) -> int:
    """Parse a non-negative decimal integer of at most ``MAX_INT``; raise IIIFError(400)."""
    if not _INT_RE.fullmatch(text):
        raise IIIFError(400, parameter, f"{text!r} is not a non-negative integer")
    digits = text.lstrip("0")
    if len(digits) > len(str(MAX_INT)) or (digits and int(digits) > MAX_INT):
        raise IIIFError(400, parameter, f"{text!r} is too large")
    return int(text)


def parse_decimal(text: str, parameter: str) -> float:
    """Parse a non-negative decimal number such as ``0.5`` or ``50``; raise IIIFError(400).

    Values above ``MAX_INT`` are refused so that percentages and degrees stay far from overflow.
    """
    if len(text) > _MAX_NUMBER_CHARS or not _DECIMAL_RE.fullmatch(text):
        raise IIIFError(400, parameter, f"{text!r} is not a non-negative decimal number")
    whole = text.partition(".")[0].lstrip("0")
    if len(whole) > len(str(MAX_INT)) or (whole and int(whole) > MAX_INT):
        raise IIIFError(400, parameter, f"{text!r} is too large")
    return float(text)


def parse_region(text: str) -> Region:
    """Parse ``full``, ``square``, ``x,y,w,h`` (pixels) or ``pct:x,y,w,h`` (percent).

    Raises IIIFError(400, "region") for bad syntax or a zero width or height (section 4.1).
    Regions partly or wholly outside the image are valid syntax; resolve() deals with them.
    """
    if text == "full":
        return FullRegion()
    if text == "square":
        return SquareRegion()
    if text.startswith("pct:"):
        parts = text[4:].split(",")
        if len(parts) != 4:
            raise IIIFError(400, "region", f"{text!r} is not pct:x,y,w,h")
        px, py, pw, ph = (parse_decimal(p, "region") for p in parts)
        if pw == 0 or ph == 0:
            raise IIIFError(400, "region", "width and height must be greater than zero")
        return PercentRegion(px, py, pw, ph)
    parts = text.split(",")
    if len(parts) != 4:
        raise IIIFError(400, "region", f"{text!r} is not full, square, x,y,w,h or pct:x,y,w,h")
    x, y, w, h = (parse_int(p, "region") for p in parts)
    if w == 0 or h == 0:
        raise IIIFError(400, "region", "width and height must be greater than zero")
    return PixelRegion(x, y, w, h)


def parse_dimensions(text: str, *, confined: bool) -> tuple[int | None, int | None]:
    """Parse the ``w,``, ``,h`` or ``w,h`` part of a size; both are required when ``confined``.

    Raises IIIFError(400, "size"); a zero dimension is refused here because the scaled region
    "MUST NOT be less than 1 pixel" (3.0 section 4.2, 2.1 section 4.2).
    """
    parts = text.split(",")
    if len(parts) != 2:
        raise IIIFError(400, "size", f"{text!r} is not w,h")
    w_text, h_text = parts
    if confined and (not w_text or not h_text):
        raise IIIFError(400, "size", "!w,h needs both a width and a height")
    if not w_text and not h_text:
        raise IIIFError(400, "size", "a width or a height is required")
    width = parse_int(w_text, "size") if w_text else None
    height = parse_int(h_text, "size") if h_text else None
    if width == 0 or height == 0:
        raise IIIFError(400, "size", "width and height must be at least 1")
    return width, height


def dimensions_size(text: str, *, upscale: bool) -> Size:
    """Build the Size for ``w,``, ``,h``, ``w,h`` or ``!w,h`` (after any ``^``)."""
    confined = text.startswith("!")
    width, height = parse_dimensions(text[1:] if confined else text, confined=confined)
    if confined:
        return Size("confined", width, height, upscale=upscale)
    if width is not None and height is not None:
        return Size("wh", width, height, upscale=upscale)
    if width is not None:
        return Size("w", width, None, upscale=upscale)
    return Size("h", None, height, upscale=upscale)


def parse_size(text: str) -> Size:
    """Parse a 3.0 size: ``max``, ``w,``, ``,h``, ``pct:n``, ``w,h``, ``!w,h``, each optionally
    prefixed with ``^`` to allow upscaling (3.0 section 4.2).

    Raises IIIFError(400, "size") for bad syntax, a zero dimension or percentage, ``pct:n`` above
    100 without ``^`` ("The value of n MUST NOT be greater than 100"), and ``full``, which 3.0
    replaced with ``max``.
    """
    upscale = text.startswith("^")
    body = text[1:] if upscale else text
    if body == "max":
        return Size("max", upscale=upscale)
    if body == "full":
        raise IIIFError(400, "size", "'full' is not a 3.0 size; use 'max'")
    if body.startswith("pct:"):
        percent = parse_decimal(body[4:], "size")
        if percent == 0:
            raise IIIFError(400, "size", "pct:n must be greater than zero")
        if percent > 100 and not upscale:
            raise IIIFError(400, "size", "pct:n above 100 needs the ^ prefix to upscale")
        return Size("pct", percent=percent, upscale=upscale)
    return dimensions_size(body, upscale=upscale)


def parse_rotation(text: str) -> tuple[float, bool]:
    """Parse ``n`` or ``!n`` (mirror, then rotate n degrees clockwise), 0 <= n <= 360.

    Returns (degrees normalised to [0, 360), mirror). Raises IIIFError(400, "rotation") for bad
    syntax or a value out of range (3.0 section 4.3, 2.1 section 4.3).
    """
    mirror = text.startswith("!")
    degrees = parse_decimal(text[1:] if mirror else text, "rotation")
    if degrees > 360:
        raise IIIFError(400, "rotation", f"{degrees:g} is outside 0 to 360")
    # 360 is allowed and means the same image as 0.
    return degrees % 360.0, mirror


_QUALITY_SET: Final[frozenset[str]] = frozenset(QUALITIES)
_FORMAT_SET: Final[frozenset[str]] = frozenset(KNOWN_FORMATS)


def parse_quality_format(text: str) -> tuple[Quality, Format]:
    """Parse ``{quality}.{format}``.

    Raises IIIFError(400, "quality") for a quality other than default, color, gray or bitonal,
    and IIIFError(400, "format") for a missing format or one outside the spec's table. Formats in
    the table this server does not render (pdf) parse; parse_path() answers them with 501.
    """
    quality, dot, fmt = text.partition(".")
    if quality not in _QUALITY_SET:
        raise IIIFError(400, "quality", f"{quality!r} is not default, color, gray or bitonal")
    if not dot:
        raise IIIFError(400, "format", "the format extension is missing")
    if fmt not in _FORMAT_SET:
        raise IIIFError(400, "format", f"{fmt!r} is not an image format")
    return _as_quality(quality), _as_format(fmt)


def _as_quality(text: str) -> Quality:
    for quality in QUALITIES:
        if quality == text:
            return quality
    raise AssertionError(text)  # pragma: no cover - guarded by the caller


def _as_format(text: str) -> Format:
    for fmt in KNOWN_FORMATS:
        if fmt == text:
            return fmt
    raise AssertionError(text)  # pragma: no cover - guarded by the caller
