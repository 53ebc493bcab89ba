"""Resolve a parsed image request against an image's dimensions and the server's size limits.

The result is a RenderPlan in full-resolution pixels. Rounding choices (the spec leaves them to
the implementation, 3.0 section 4.7 "the rounding method is implementation specific"):

* Percent regions are converted edge by edge: ``x0 = round(x% * width)`` and
  ``x1 = round((x% + w%) * width)``, rounding halves up, then clipped to the image. Rounding both
  edges (rather than the origin and the extent separately) makes adjacent percent regions meet
  without gaps or overlaps, and reproduces the spec's examples (``pct:41.6,7.5,40,70`` of a
  300x200 image is ``125,15,120,140``). A region that starts inside the image is at least one
  pixel wide and high even if its extent rounds to zero.
* A dimension derived from the aspect ratio (``w,``, ``,h``, ``pct:n``, ``!w,h``, ``max``)
  is rounded to the nearest pixel, halves up, and is never below 1.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Final

from gateway.iiif.errors import IIIFError
from gateway.iiif.parse_v3 import MAX_INT
from gateway.iiif.types import (
    ApiVersion,
    FullRegion,
    ImageDims,
    ImageRequest,
    Limits,
    PercentRegion,
    PixelBox,
    PixelRegion,
    Region,
    RenderPlan,
    Size,
    SquareRegion,
)

# Output dimensions beyond a signed 32-bit int are refused even when no limits are configured.
MAX_DIMENSION: Final = MAX_INT


def resolve(req: ImageRequest, image: ImageDims, limits: Limits) -> RenderPlan:
    """Compute the crop (pixels of the full image) and output size (pixels) for ``req``.

    Rotation is carried over normalised to [0, 360) degrees. Raises IIIFError: 400 for a region
    outside the image, an upscaled size without ``^`` in 3.0, or (3.0) a size beyond ``limits``;
    404 for a size beyond ``limits`` in 2.1, whose error table gives 404 for "the requested size
    is greater than the limits specified" (2.1 section 7.2), where 3.0 section 4.2 says 400.
    """
    crop = resolve_region(req.region, image)
    width, height = resolve_size(req.size, crop.w, crop.h, limits, req.version)
    return RenderPlan(
        crop=crop,
        width=width,
        height=height,
        rotation=req.rotation % 360.0,
        mirror=req.mirror,
        quality=req.quality,
        format=req.format,
    )


def resolve_region(region: Region, image: ImageDims) -> PixelBox:
    """Turn a region into a box of full-image pixels, clipped to the image.

    "If the request specifies a region which extends beyond the dimensions ... the service SHOULD
    return an image cropped at the image's edge"; a region entirely outside the image, or with a
    zero width or height, is a 400 (3.0 section 4.1, 2.1 section 4.1). ``square`` is the largest
    square, centred in the longer dimension ("centered is often a reasonable default").
    """
    full_w, full_h = image.width, image.height
    match region:
        case FullRegion():
            return PixelBox(0, 0, full_w, full_h)
        case SquareRegion():
            side = min(full_w, full_h)
            return PixelBox((full_w - side) // 2, (full_h - side) // 2, side, side)
        case PixelRegion(x, y, w, h):
            if x < 0 or y < 0:
                raise IIIFError(400, "region", "x and y must not be negative")
            if w < 1 or h < 1:
                raise IIIFError(400, "region", "width and height must be greater than zero")
            if x >= full_w or y >= full_h:
                raise IIIFError(400, "region", "the region is entirely outside the image")
            return PixelBox(x, y, min(w, full_w - x), min(h, full_h - y))
        case PercentRegion(px, py, pw, ph):
            # Parsed requests cannot hold these; hand-built ones might.
            if not all(math.isfinite(v) and v >= 0 for v in (px, py, pw, ph)):
                raise IIIFError(400, "region", "percentages must be finite and not negative")
            if pw <= 0 or ph <= 0:
                raise IIIFError(400, "region", "width and height must be greater than zero")
            x, w = _percent_span(px, pw, full_w)
            y, h = _percent_span(py, ph, full_h)
            return PixelBox(x, y, w, h)
    raise AssertionError(f"unknown region {region!r}")  # pragma: no cover


def _percent_span(start: float, extent: float, full: int) -> tuple[int, int]:
    exact_start = start * full / 100
    if exact_start >= full:
        raise IIIFError(400, "region", "the region is entirely outside the image")
    low = min(_round_half_up(exact_start), full - 1)
    high = _round_half_up((start + extent) * full / 100)
    high = min(max(high, low + 1), full)
    return low, high - low


def resolve_size(
    size: Size, region_w: int, region_h: int, limits: Limits, version: ApiVersion
) -> tuple[int, int]:
    """Output (width, height) in pixels for scaling a region_w x region_h region to ``size``.

    3.0 (section 4.2): forms without ``^`` must not exceed the region (400); ``max`` is the
    region shrunk, aspect kept, to fit the limits; ``^max`` is the largest size within the
    limits, the region itself when there are none; ``!w,h`` and ``^!w,h`` give the largest
    size within the box and the limits (for ``!w,h``, a box that would need upscaling is a 400,
    as the IIIF validator's size_noup test expects); the other forms are refused with 400 when
    beyond the limits.
    2.1 (section 4.2): ``full`` is the region unscaled, refused (404) beyond the limits; ``max``
    is as in 3.0; every other form may exceed the region (sizeAboveFull) but not the limits
    (404), except ``!w,h``, which is shrunk into them.
    Results are always at least 1 x 1 pixel.
    """
    max_w = limits.max_width
    max_h = limits.effective_max_height
    max_area = limits.max_area
    may_upscale = size.upscale or version == ApiVersion.V2
    if size.mode == "max":
        if size.full:
            _check_limits(region_w, region_h, limits, version)
            return region_w, region_h
        if size.upscale:
            if max_w is None and max_h is None and max_area is None:
                return region_w, region_h
            return _fit(
                region_w,
                region_h,
                MAX_DIMENSION if max_w is None else max_w,
                MAX_DIMENSION if max_h is None else max_h,
                max_area,
            )
        return _fit(region_w, region_h, _cap(region_w, max_w), _cap(region_h, max_h), max_area)
    if size.mode == "confined":
        box_w, box_h = _required(size.width), _required(size.height)
        if not may_upscale:
            fit_w, fit_h = _fit(region_w, region_h, box_w, box_h, None)
            if fit_w > region_w or fit_h > region_h:
                raise IIIFError(400, "size", "!w,h larger than the region needs ^ to upscale")
        return _fit(region_w, region_h, _cap(box_w, max_w), _cap(box_h, max_h), max_area)
    if size.mode == "w":
        width = _required(size.width)
        height = max(1, _round_div(width * region_h, region_w))
    elif size.mode == "h":
        height = _required(size.height)
        width = max(1, _round_div(height * region_w, region_h))
    elif size.mode == "wh":
        width, height = _required(size.width), _required(size.height)
    else:
        percent = size.percent
        if percent is None or not math.isfinite(percent) or percent <= 0:
            raise IIIFError(400, "size", "pct:n must be greater than zero")
        width = max(1, _round_half_up(region_w * percent / 100))
        height = max(1, _round_half_up(region_h * percent / 100))
    if not may_upscale and (width > region_w or height > region_h):
        raise IIIFError(
            400, "size", f"{width}x{height} is larger than the {region_w}x{region_h} region; use ^"
        )
    _check_limits(width, height, limits, version)
    return width, height


def _check_limits(width: int, height: int, limits: Limits, version: ApiVersion) -> None:
    if width > MAX_DIMENSION or height > MAX_DIMENSION:
        raise IIIFError(400, "size", f"{width}x{height} is too large")
    max_h = limits.effective_max_height
    too_wide = limits.max_width is not None and width > limits.max_width
    too_high = max_h is not None and height > max_h
    too_big = limits.max_area is not None and width * height > limits.max_area
    if too_wide or too_high or too_big:
        status = 400 if version == ApiVersion.V3 else 404
        raise IIIFError(status, "size", f"{width}x{height} exceeds this server's size limits")


def _fit(
    region_w: int, region_h: int, box_w: int | None, box_h: int | None, area: int | None
) -> tuple[int, int]:
    """The largest size keeping region_w:region_h with w <= box_w, h <= box_h, w*h <= area."""
    scales: list[tuple[Fraction, str]] = []
    if box_w is not None:
        scales.append((Fraction(box_w, region_w), "w"))
    if box_h is not None:
        scales.append((Fraction(box_h, region_h), "h"))
    if area is not None:
        scales.append((Fraction(math.sqrt(area / (region_w * region_h))), "area"))
    if not scales:
        return region_w, region_h
    scale, binding = min(scales, key=lambda item: item[0])
    if binding == "w" and box_w is not None:
        width, height = box_w, max(1, _round_div(region_h * box_w, region_w))
    elif binding == "h" and box_h is not None:
        width, height = max(1, _round_div(region_w * box_h, region_h)), box_h
    else:
        # Floor, so float error in the square root cannot push the area over the limit.
        width = max(1, math.floor(region_w * scale))
        height = max(1, math.floor(region_h * scale))
    # Rounding the derived side can overshoot a neighbouring limit by a pixel; pull it back.
    if box_w is not None:
        width = min(width, box_w)
    if box_h is not None:
        height = min(height, box_h)
    if area is not None:
        while width * height > area and (width > 1 or height > 1):
            # Shrink whichever side is relatively larger, to stay close to the aspect ratio.
            if height == 1 or (width > 1 and width * region_h >= height * region_w):
                width -= 1
            else:
                height -= 1
    return width, height


def _cap(value: int, limit: int | None) -> int:
    return value if limit is None else min(value, limit)


def _required(value: int | None) -> int:
    if value is None or value < 1:
        raise IIIFError(400, "size", "width and height must be at least 1")
    return value


def _round_div(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded to the nearest integer, halves up (non-negative ints)."""
    return (2 * numerator + denominator) // (2 * denominator)


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)
