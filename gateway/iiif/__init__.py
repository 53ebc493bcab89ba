"""IIIF Image API 2.1 and 3.0: parsing, geometry, canonical URIs and info.json.

Pure functions over the standard library only: no I/O, no logging, no server policy (limits and
supported features arrive as arguments).
"""

from gateway.iiif.canonical import canonical_path, encode_identifier, serialize
from gateway.iiif.errors import IIIFError
from gateway.iiif.info import (
    CONTEXT,
    FEATURES,
    FEATURES_V2,
    FEATURES_V3,
    PROFILE_URI,
    PROTOCOL,
    TileSpec,
    build_info,
)
from gateway.iiif.parse import parse_path
from gateway.iiif.resolve import resolve
from gateway.iiif.types import (
    SUPPORTED_FORMATS,
    ApiVersion,
    BaseRequest,
    Format,
    FullRegion,
    ImageDims,
    ImageRequest,
    InfoRequest,
    Limits,
    PercentRegion,
    PixelBox,
    PixelRegion,
    Quality,
    Region,
    RenderPlan,
    Size,
    SquareRegion,
)

__all__ = [
    "CONTEXT",
    "FEATURES",
    "FEATURES_V2",
    "FEATURES_V3",
    "PROFILE_URI",
    "PROTOCOL",
    "SUPPORTED_FORMATS",
    "ApiVersion",
    "BaseRequest",
    "Format",
    "FullRegion",
    "IIIFError",
    "ImageDims",
    "ImageRequest",
    "InfoRequest",
    "Limits",
    "PercentRegion",
    "PixelBox",
    "PixelRegion",
    "Quality",
    "Region",
    "RenderPlan",
    "Size",
    "SquareRegion",
    "TileSpec",
    "build_info",
    "canonical_path",
    "encode_identifier",
    "parse_path",
    "resolve",
    "serialize",
]
