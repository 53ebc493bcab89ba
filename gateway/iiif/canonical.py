"""Canonical image request URIs (3.0 section 4.8, 2.1 section 4.7) and request serialisation."""

from __future__ import annotations

from decimal import Decimal
from urllib.parse import quote

from gateway.iiif.resolve import resolve_size
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

_NO_LIMITS = Limits()


def canonical_path(
    plan: RenderPlan, req: ImageRequest, image: ImageDims, *, limits: Limits | None = None
) -> str:
    """The canonical ``{region}/{size}/{rotation}/{quality}.{format}`` for a resolved request.

    ``plan`` must be ``resolve(req, image, limits)``. Pass the same ``limits`` to recognise a
    limit-shrunk ``max`` (and ``^max``) as such; without them those sizes come out as ``w,h``,
    which still resolves to the same plan. The result never includes the identifier.

    Region: ``full`` when the crop is the whole image (2.1: "including a square region of a
    square image"), else ``x,y,w,h`` of the clipped crop. Size, 3.0: ``max`` if the output is
    the unupscaled maximum, ``^max`` if it is the upscaled maximum, else ``w,h``, prefixed
    with ``^`` when larger than the region. Size, 2.1: ``full`` for the unscaled region, ``w,``
    when that reproduces the height (aspect kept), else ``w,h``. Rotation: ``!`` if mirrored,
    then an integer if possible, else a decimal without trailing zeros. Quality: as requested;
    the spec's ``default`` applies only when the server's default is what was asked for, and a
    request for ``color`` is not that for gray or bitonal images, so it is not rewritten.
    """
    crop = plan.crop
    region = _canonical_region(crop, image)
    if req.version == ApiVersion.V3:
        size = _canonical_size_v3(plan, limits or _NO_LIMITS)
    else:
        size = _canonical_size_v2(plan)
    rotation = format_rotation(plan.rotation, plan.mirror)
    return f"{region}/{size}/{rotation}/{plan.quality}.{plan.format}"


def _canonical_region(crop: PixelBox, image: ImageDims) -> str:
    if (crop.x, crop.y, crop.w, crop.h) == (0, 0, image.width, image.height):
        return "full"
    return f"{crop.x},{crop.y},{crop.w},{crop.h}"


def _canonical_size_v3(plan: RenderPlan, limits: Limits) -> str:
    region_w, region_h = plan.crop.w, plan.crop.h
    dims = (plan.width, plan.height)
    if dims == resolve_size(Size("max"), region_w, region_h, limits, ApiVersion.V3):
        return "max"
    upscaled = plan.width > region_w or plan.height > region_h
    if upscaled and dims == resolve_size(
        Size("max", upscale=True), region_w, region_h, limits, ApiVersion.V3
    ):
        return "^max"
    return f"{'^' if upscaled else ''}{plan.width},{plan.height}"


def _canonical_size_v2(plan: RenderPlan) -> str:
    region_w, region_h = plan.crop.w, plan.crop.h
    if (plan.width, plan.height) == (region_w, region_h):
        return "full"
    # The height resolve() derives for "w," (round half up, at least 1).
    derived_h = max(1, (2 * plan.width * region_h + region_w) // (2 * region_w))
    if derived_h == plan.height:
        return f"{plan.width},"
    return f"{plan.width},{plan.height}"


def format_number(value: float) -> str:
    """A non-negative number as the spec writes it: an integer if possible, else a decimal with
    a leading 0 below 1, no trailing zeros and no exponent (3.0 section 4.7)."""
    if value.is_integer():
        return str(int(value))
    # repr() is the shortest text that reads back as the same float; Decimal drops its exponent.
    return format(Decimal(repr(value)), "f")


def format_rotation(degrees: float, mirror: bool) -> str:
    """The rotation parameter: ``!`` when mirrored, then the degrees."""
    return ("!" if mirror else "") + format_number(degrees)


# Characters left as they are in identifiers: RFC 3986 sub-delims and ":". The spec's to-encode
# set is "/", "?", "#", "[", "]", "@", "%" plus anything outside US-ASCII (3.0 and 2.1 section 9);
# quote() also encodes spaces, controls and the other characters URIs do not allow.
_IDENTIFIER_SAFE = "!$&'()*+,;=:"


def encode_identifier(identifier: str) -> str:
    """Percent-encode an identifier for use as one path segment, as the spec's URI encoding
    table does (``ark:/12025/654xz321`` becomes ``ark:%2F12025%2F654xz321``)."""
    return quote(identifier, safe=_IDENTIFIER_SAFE)


def serialize(req: ImageRequest) -> str:
    """The path (identifier percent-encoded, no leading slash) that parse_path() reads as ``req``.

    Raises ValueError for a size the request's version cannot express (``^`` in 2.1, ``full``
    in 3.0).
    """
    identifier = encode_identifier(req.identifier)
    region = _serialize_region(req.region)
    size = _serialize_size(req.size, req.version)
    rotation = format_rotation(req.rotation, req.mirror)
    return f"{identifier}/{region}/{size}/{rotation}/{req.quality}.{req.format}"


def _serialize_region(region: Region) -> str:
    match region:
        case FullRegion():
            return "full"
        case SquareRegion():
            return "square"
        case PixelRegion(x, y, w, h):
            return f"{x},{y},{w},{h}"
        case PercentRegion(x, y, w, h):
            return "pct:" + ",".join(format_number(v) for v in (x, y, w, h))
    raise AssertionError(f"unknown region {region!r}")  # pragma: no cover


def _serialize_size(size: Size, version: ApiVersion) -> str:
    if size.upscale and version == ApiVersion.V2:
        raise ValueError("Image API 2.1 has no ^ upscaling prefix")
    if size.full and version == ApiVersion.V3:
        raise ValueError("Image API 3.0 has no 'full' size")
    prefix = "^" if size.upscale else ""
    width = "" if size.width is None else str(size.width)
    height = "" if size.height is None else str(size.height)
    match size.mode:
        case "max":
            return "full" if size.full else prefix + "max"
        case "pct":
            return f"{prefix}pct:{format_number(size.percent or 0.0)}"
        case "confined":
            return f"{prefix}!{width},{height}"
        case _:
            return f"{prefix}{width},{height}"
