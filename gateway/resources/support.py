"""What this server implements, as info.json advertises it: one place, both versions."""

from __future__ import annotations

from gateway.iiif.info import FEATURES
from gateway.iiif.types import ApiVersion, Limits

FORMATS: tuple[str, ...] = ("jpg", "png", "webp", "tif", "gif", "jp2")

MEDIA_TYPES: dict[str, str] = {
    "jpg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "tif": "image/tiff",
    "gif": "image/gif",
    "jp2": "image/jp2",
}

QUALITIES: dict[ApiVersion, tuple[str, ...]] = {
    ApiVersion.V3: ("default", "color", "gray", "bitonal"),
    ApiVersion.V2: ("default", "color", "gray", "bitonal"),
}


def advertised_features(version: ApiVersion, limits: Limits) -> tuple[str, ...]:
    """The features to list in info.json.

    3.0 section 5.7: a server claiming sizeUpscaling MUST declare maxWidth or
    maxArea, so without them the claim is dropped (the `^` forms still parse).
    """
    if limits.max_width is None and limits.max_area is None:
        return tuple(f for f in FEATURES[version] if f != "sizeUpscaling")
    return FEATURES[version]
