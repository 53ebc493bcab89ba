"""What to render, in full-resolution pixels: the decoder's own request type.

Built from the gRPC request by the servicer; engines and the pipeline see only
this, never protobuf messages.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class OutputFormat(StrEnum):
    JPEG = "jpeg"
    PNG = "png"
    WEBP = "webp"
    TIFF = "tiff"
    GIF = "gif"
    JP2 = "jp2"


class Quality(StrEnum):
    COLOR = "color"
    GRAY = "gray"
    BITONAL = "bitonal"


CONTENT_TYPES: dict[OutputFormat, str] = {
    OutputFormat.JPEG: "image/jpeg",
    OutputFormat.PNG: "image/png",
    OutputFormat.WEBP: "image/webp",
    OutputFormat.TIFF: "image/tiff",
    OutputFormat.GIF: "image/gif",
    OutputFormat.JP2: "image/jp2",
}

# Formats that can carry transparency: arbitrary rotations fill their corners
# with transparent pixels instead of white.
ALPHA_FORMATS: frozenset[OutputFormat] = frozenset(
    {OutputFormat.PNG, OutputFormat.WEBP, OutputFormat.TIFF, OutputFormat.GIF}
)


@dataclass(frozen=True, slots=True)
class Box:
    """A rectangle in pixels: left, top, width, height."""

    x: int
    y: int
    width: int
    height: int

    @property
    def right(self) -> int:
        return self.x + self.width

    @property
    def bottom(self) -> int:
        return self.y + self.height


@dataclass(frozen=True, slots=True)
class Plan:
    """One render: crop `region` (full-resolution pixels), scale to
    `width` x `height`, mirror, rotate clockwise by `rotation` degrees,
    apply `quality`, encode as `format` (`encode_quality` 1-100 for lossy
    formats)."""

    region: Box
    width: int
    height: int
    rotation: float = 0.0
    mirror: bool = False
    quality: Quality = Quality.COLOR
    format: OutputFormat = OutputFormat.JPEG
    encode_quality: int = 80
    progressive: bool = False

    @property
    def content_type(self) -> str:
        return CONTENT_TYPES[self.format]


class InvalidPlan(ValueError):
    """A render request that cannot be carried out as asked (names the field)."""
