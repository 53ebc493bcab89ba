"""Image engines: describe an encoded image and decode a region at a level.

Importing this package does not import pyvips; `default_registry()` and
`decoder.engines.vips` do.
"""

from decoder.engines.base import (
    DecodeError,
    Engine,
    ImageInfo,
    Level,
    RenderError,
    SourceFormat,
    UnsupportedSource,
    VipsImage,
)
from decoder.engines.registry import EngineRegistry, default_registry
from decoder.engines.sniff import SNIFF_BYTES, sniff

__all__ = [
    "SNIFF_BYTES",
    "DecodeError",
    "Engine",
    "EngineRegistry",
    "ImageInfo",
    "Level",
    "RenderError",
    "SourceFormat",
    "UnsupportedSource",
    "VipsImage",
    "default_registry",
    "sniff",
]
