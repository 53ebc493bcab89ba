"""info.json documents for Image API 3.0 and 2.1."""

from __future__ import annotations

import json

import pytest

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
from gateway.iiif.types import SUPPORTED_FORMATS, ApiVersion, ImageDims, Limits

V2 = ApiVersion.V2
V3 = ApiVersion.V3
SERVICE_ID = "https://example.org/iiif/3/abcd1234"
IMAGE = ImageDims(6000, 4000)
FORMATS = ["jpg", "png", "webp", "tif", "gif", "jp2"]
QUALITIES = ["default", "color", "gray", "bitonal"]
SIZES = [(3000, 2000), (150, 100), (600, 400), (150, 100), (6000, 4000)]
TILES = [TileSpec(512, None, (1, 2, 4, 8, 16))]


def test_constants() -> None:
    assert CONTEXT[V3] == "http://iiif.io/api/image/3/context.json"
    assert CONTEXT[V2] == "http://iiif.io/api/image/2/context.json"
    assert PROFILE_URI[V3] == "http://iiif.io/api/image/3/level2.json"
    assert PROFILE_URI[V2] == "http://iiif.io/api/image/2/level2.json"
    assert PROTOCOL == "http://iiif.io/api/image"
    assert FEATURES[V3] == FEATURES_V3
    assert FEATURES[V2] == FEATURES_V2
    assert "sizeUpscaling" in FEATURES_V3
    assert "sizeUpscaling" not in FEATURES_V2
    assert "sizeAboveFull" in FEATURES_V2
    assert "sizeAboveFull" not in FEATURES_V3
    assert set(FORMATS) == SUPPORTED_FORMATS


def test_v3_document() -> None:
    info = build_info(
        V3,
        SERVICE_ID,
        IMAGE,
        SIZES,
        TILES,
        Limits(max_width=3000, max_height=2000, max_area=6_000_000),
        FORMATS,
        QUALITIES,
        FEATURES_V3,
    )
    assert info == {
        "@context": "http://iiif.io/api/image/3/context.json",
        "id": SERVICE_ID,
        "type": "ImageService3",
        "protocol": "http://iiif.io/api/image",
        "profile": "level2",
        "width": 6000,
        "height": 4000,
        "maxWidth": 3000,
        "maxHeight": 2000,
        "maxArea": 6_000_000,
        # Ascending, de-duplicated, and 6000x4000 left out as beyond the limits.
        "sizes": [
            {"width": 150, "height": 100},
            {"width": 600, "height": 400},
            {"width": 3000, "height": 2000},
        ],
        "tiles": [{"width": 512, "scaleFactors": [1, 2, 4, 8, 16]}],
        "preferredFormats": ["jpg", "webp"],
        "extraFormats": ["webp", "tif", "gif", "jp2"],
        "extraQualities": ["color", "gray", "bitonal"],
        "extraFeatures": [
            "canonicalLinkHeader",
            "mirroring",
            "profileLinkHeader",
            "rotationArbitrary",
            "sizeUpscaling",
        ],
    }
    assert next(iter(info)) == "@context"  # "SHOULD appear as the very first key-value pair"
    json.dumps(info)


def test_v2_document() -> None:
    info = build_info(
        V2,
        SERVICE_ID.replace("/3/", "/2/"),
        IMAGE,
        SIZES,
        TILES,
        Limits(max_width=3000, max_area=6_000_000),
        FORMATS,
        QUALITIES,
        FEATURES_V2,
    )
    assert info == {
        "@context": "http://iiif.io/api/image/2/context.json",
        "@id": "https://example.org/iiif/2/abcd1234",
        "protocol": "http://iiif.io/api/image",
        "width": 6000,
        "height": 4000,
        "sizes": [
            {"width": 150, "height": 100},
            {"width": 600, "height": 400},
            {"width": 3000, "height": 2000},
        ],
        "tiles": [{"width": 512, "scaleFactors": [1, 2, 4, 8, 16]}],
        "profile": [
            "http://iiif.io/api/image/2/level2.json",
            {
                "formats": FORMATS,
                "qualities": QUALITIES,
                "supports": list(FEATURES_V2),
                "maxWidth": 3000,
                "maxArea": 6_000_000,
            },
        ],
    }
    json.dumps(info)


def test_minimal_documents_omit_empty_lists() -> None:
    info3 = build_info(V3, SERVICE_ID, IMAGE, [], [], Limits(), ["jpg", "png"], ["default"], [])
    assert info3 == {
        "@context": CONTEXT[V3],
        "id": SERVICE_ID,
        "type": "ImageService3",
        "protocol": PROTOCOL,
        "profile": "level2",
        "width": 6000,
        "height": 4000,
        "preferredFormats": ["jpg"],
    }
    info2 = build_info(V2, SERVICE_ID, IMAGE, [], [], Limits(), [], [], [])
    assert info2["profile"] == [PROFILE_URI[V2]]
    assert "sizes" not in info2
    assert "tiles" not in info2


def test_sizes_and_tiles_respect_inferred_max_height() -> None:
    # maxHeight defaults to maxWidth when only maxWidth is set (3.0 section 5.2).
    info = build_info(
        V3,
        SERVICE_ID,
        ImageDims(1000, 3000),
        [(100, 300), (1000, 3000), (500, 1500)],
        [TileSpec(1024, 2048, (4, 2)), TileSpec(256, 256, (1,)), TileSpec(256, None, (2, 1))],
        Limits(max_width=1200),
        FORMATS,
        QUALITIES,
        FEATURES_V3,
    )
    assert info["sizes"] == [{"width": 100, "height": 300}]
    assert info["tiles"] == [{"width": 256, "height": 256, "scaleFactors": [1, 2]}]
    assert "maxHeight" not in info


def test_preferred_formats_only_if_offered() -> None:
    info = build_info(V3, SERVICE_ID, IMAGE, [], [], Limits(), ["png"], ["default"], [])
    assert "preferredFormats" not in info
    info = build_info(
        V3,
        SERVICE_ID,
        IMAGE,
        [],
        [],
        Limits(),
        FORMATS,
        ["default"],
        [],
        preferred_formats=["webp", "pdf", "png"],
    )
    assert info["preferredFormats"] == ["webp", "png"]


def test_other_versions_feature_names_are_dropped() -> None:
    both = sorted(set(FEATURES_V2) | set(FEATURES_V3))
    limits = Limits(max_area=10_000_000)
    info3 = build_info(V3, SERVICE_ID, IMAGE, [], [], limits, [], [], both)
    assert "sizeAboveFull" not in info3["extraFeatures"]  # type: ignore[operator]
    assert "sizeUpscaling" in info3["extraFeatures"]  # type: ignore[operator]
    info2 = build_info(V2, SERVICE_ID, IMAGE, [], [], limits, [], [], both)
    profile = info2["profile"]
    assert isinstance(profile, list)
    assert "sizeUpscaling" not in profile[1]["supports"]
    assert "sizeAboveFull" in profile[1]["supports"]


def test_upscaling_needs_a_width_or_area_limit() -> None:
    with pytest.raises(ValueError, match="sizeUpscaling"):
        build_info(V3, SERVICE_ID, IMAGE, [], [], Limits(), [], [], ["sizeUpscaling"])
    build_info(V3, SERVICE_ID, IMAGE, [], [], Limits(max_width=10), [], [], ["sizeUpscaling"])
    build_info(V3, SERVICE_ID, IMAGE, [], [], Limits(max_area=10), [], [], ["sizeUpscaling"])
