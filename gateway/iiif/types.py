"""Value types for IIIF Image API requests, from parsed URI to a render plan in pixels.

Everything here is immutable and compares by value, so parsed requests can be used as cache keys
and round-trip tests can compare them with ``==``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal, TypeAlias, get_args


class ApiVersion(StrEnum):
    """The major version of the Image API a request was made under."""

    V2 = "2"
    V3 = "3"


Quality = Literal["default", "color", "gray", "bitonal"]
Format = Literal["jpg", "png", "webp", "tif", "gif", "jp2", "pdf"]
SizeMode = Literal["max", "w", "h", "wh", "confined", "pct"]

QUALITIES: Final[tuple[Quality, ...]] = get_args(Quality)
# Every extension the spec's format table names (3.0 section 4.5, 2.1 section 4.5); these parse.
KNOWN_FORMATS: Final[tuple[Format, ...]] = get_args(Format)
# The formats this server renders; a known format outside this set is a 501, not a 400.
SUPPORTED_FORMATS: Final[frozenset[Format]] = frozenset(("jpg", "png", "webp", "tif", "gif", "jp2"))


@dataclass(frozen=True, slots=True)
class FullRegion:
    """Region ``full``: the whole image."""


@dataclass(frozen=True, slots=True)
class SquareRegion:
    """Region ``square``: the largest centred square."""


@dataclass(frozen=True, slots=True)
class PixelRegion:
    """Region ``x,y,w,h`` in full-resolution pixels (w and h are at least 1)."""

    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True, slots=True)
class PercentRegion:
    """Region ``pct:x,y,w,h`` in percent of the full image's width and height."""

    x: float
    y: float
    w: float
    h: float


Region: TypeAlias = FullRegion | SquareRegion | PixelRegion | PercentRegion


@dataclass(frozen=True, slots=True)
class Size:
    """A parsed size parameter.

    ``mode`` and the fields it uses:
    ``max`` (none), ``w`` (width), ``h`` (height), ``wh`` (width, height),
    ``confined`` for ``!w,h`` (width, height), ``pct`` (percent).
    ``upscale`` is the 3.0 ``^`` prefix; always False for 2.1, where sizes above the region
    need no prefix. ``full`` marks the 2.1 keyword ``full`` (mode ``max``): the region unscaled,
    which unlike ``max`` is refused rather than shrunk when it exceeds the size limits.
    """

    mode: SizeMode
    width: int | None = None
    height: int | None = None
    percent: float | None = None
    upscale: bool = False
    full: bool = False


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """A syntactically valid image request; ``rotation`` is in degrees, within [0, 360)."""

    identifier: str
    region: Region
    size: Size
    rotation: float
    mirror: bool
    quality: Quality
    format: Format
    version: ApiVersion


@dataclass(frozen=True, slots=True)
class InfoRequest:
    """``{identifier}/info.json``."""

    identifier: str
    version: ApiVersion


@dataclass(frozen=True, slots=True)
class BaseRequest:
    """The bare base URI ``{identifier}``, which servers redirect (303) to its info.json."""

    identifier: str
    version: ApiVersion


@dataclass(frozen=True, slots=True)
class ImageDims:
    """Pixel dimensions of the full image."""

    width: int
    height: int

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"image dimensions must be positive, got {self.width}x{self.height}")


@dataclass(frozen=True, slots=True)
class Limits:
    """Server-imposed output limits in pixels (``maxWidth``, ``maxHeight``, ``maxArea``).

    As the spec says clients must (3.0 section 5.2, 2.1 section 5.3), a missing ``max_height``
    with a ``max_width`` set means ``max_height == max_width``; see ``effective_max_height``.
    Raises ValueError for a ``max_height`` without a ``max_width`` (info.json could not express
    it: "maxWidth MUST be specified if maxHeight is specified") or a limit below 1.
    """

    max_width: int | None = None
    max_height: int | None = None
    max_area: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_width", "max_height", "max_area"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.max_height is not None and self.max_width is None:
            raise ValueError("max_height requires max_width (IIIF: maxWidth MUST accompany it)")

    @property
    def effective_max_height(self) -> int | None:
        """The height limit clients infer: ``max_height``, else ``max_width``."""
        return self.max_height if self.max_height is not None else self.max_width


@dataclass(frozen=True, slots=True)
class PixelBox:
    """A rectangle of full-resolution pixels, inside the image, with w and h at least 1."""

    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True, slots=True)
class RenderPlan:
    """What to render, with no IIIF syntax left.

    Crop ``crop`` from the full-resolution image, scale it to ``width`` x ``height`` pixels,
    mirror it if ``mirror``, rotate it clockwise by ``rotation`` degrees (in [0, 360)), then
    apply ``quality`` and encode as ``format``.
    """

    crop: PixelBox
    width: int
    height: int
    rotation: float
    mirror: bool
    quality: Quality
    format: Format
