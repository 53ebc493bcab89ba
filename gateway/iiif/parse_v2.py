"""Image API 2.1 parameter grammar (https://iiif.io/api/image/2.1/#image-request-parameters).

Region, rotation and quality/format are the same productions as 3.0 (2.1 sections 4.1, 4.3,
4.4, 4.5: regions full/square/x,y,w,h/pct:x,y,w,h; qualities default/color/gray/bitonal), so
they are re-exported from parse_v3. The size grammar differs: 2.1 has ``full`` and no ``^``.
"""

from __future__ import annotations

from gateway.iiif.errors import IIIFError
from gateway.iiif.parse_v3 import dimensions_size, parse_decimal
from gateway.iiif.parse_v3 import parse_quality_format as parse_quality_format
from gateway.iiif.parse_v3 import parse_region as parse_region
from gateway.iiif.parse_v3 import parse_rotation as parse_rotation
from gateway.iiif.types import Size

__all__ = ["parse_quality_format", "parse_region", "parse_rotation", "parse_size"]


def parse_size(text: str) -> Size:
    """Parse a 2.1 size: ``full``, ``max``, ``w,``, ``,h``, ``pct:n``, ``w,h`` or ``!w,h``.

    ``full`` becomes ``Size("max", full=True)``. 2.1 lets servers scale above the region without
    any prefix ("The image server MAY support scaling above the full size", section 4.2), so
    ``pct:n`` above 100 parses. Raises IIIFError(400, "size") for bad syntax, a zero dimension or
    percentage, and for the 3.0 ``^`` prefix, which 2.1 does not have.
    """
    if text == "full":
        return Size("max", full=True)
    if text == "max":
        return Size("max")
    if text.startswith("^"):
        raise IIIFError(400, "size", "the ^ upscaling prefix is not part of Image API 2.1")
    if text.startswith("pct:"):
        percent = parse_decimal(text[4:], "size")
        if percent == 0:
            raise IIIFError(400, "size", "pct:n must be greater than zero")
        return Size("pct", percent=percent)
    return dimensions_size(text, upscale=False)
