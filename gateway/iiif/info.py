"""Image information documents (info.json) for Image API 3.0 and 2.1.

Version differences live in the tables below, in the manner of zimeon/iiif's info.py: the
context, the level 2 profile and what that profile already promises, so that only what goes
beyond it is listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.iiif.types import ApiVersion, ImageDims, Limits

PROTOCOL: Final = "http://iiif.io/api/image"

CONTEXT: Final[Mapping[ApiVersion, str]] = {
    ApiVersion.V2: "http://iiif.io/api/image/2/context.json",
    ApiVersion.V3: "http://iiif.io/api/image/3/context.json",
}

# The compliance level URI, for info.json (2.1) and the Link rel="profile" header (both).
PROFILE_URI: Final[Mapping[ApiVersion, str]] = {
    ApiVersion.V2: "http://iiif.io/api/image/2/level2.json",
    ApiVersion.V3: "http://iiif.io/api/image/3/level2.json",
}

# The feature names this server implements, in each version's vocabulary
# (3.0 section 5.7 feature table; 2.1 section 5.3 feature table). 2.1's sizeAboveFull is 3.0's
# sizeUpscaling; 2.1's sizeByDistortedWh is part of 3.0's sizeByWh. The deprecated 2.1 names
# sizeByWhListed and sizeByForcedWh are left out, as 2.1 advises.
FEATURES_V3: Final[tuple[str, ...]] = (
    "baseUriRedirect",
    "canonicalLinkHeader",
    "cors",
    "jsonldMediaType",
    "mirroring",
    "profileLinkHeader",
    "regionByPct",
    "regionByPx",
    "regionSquare",
    "rotationArbitrary",
    "rotationBy90s",
    "sizeByConfinedWh",
    "sizeByH",
    "sizeByPct",
    "sizeByW",
    "sizeByWh",
    "sizeUpscaling",
)
FEATURES_V2: Final[tuple[str, ...]] = (
    "baseUriRedirect",
    "canonicalLinkHeader",
    "cors",
    "jsonldMediaType",
    "mirroring",
    "profileLinkHeader",
    "regionByPct",
    "regionByPx",
    "regionSquare",
    "rotationArbitrary",
    "rotationBy90s",
    "sizeAboveFull",
    "sizeByConfinedWh",
    "sizeByDistortedWh",
    "sizeByH",
    "sizeByPct",
    "sizeByW",
    "sizeByWh",
)
FEATURES: Final[Mapping[ApiVersion, tuple[str, ...]]] = {
    ApiVersion.V2: FEATURES_V2,
    ApiVersion.V3: FEATURES_V3,
}

# Formats to suggest in 3.0's preferredFormats, best first, when the server offers them.
PREFERRED_FORMATS: Final[tuple[str, ...]] = ("jpg", "webp")


@dataclass(frozen=True, slots=True)
class _Level2:
    formats: frozenset[str]
    qualities: frozenset[str]
    features: frozenset[str]
    # Names only the other version defines; dropped so one feature list can serve both.
    foreign_features: frozenset[str]


_LEVEL2: Final[Mapping[ApiVersion, _Level2]] = {
    # 3.0 compliance document sections 3-4. Qualities: "services that make additional qualities
    # beyond default available MUST list those qualities in the extraQualities property"
    # regardless of level (3.0 section 4.4), so only default counts as implied.
    ApiVersion.V3: _Level2(
        formats=frozenset({"jpg", "png"}),
        qualities=frozenset({"default"}),
        features=frozenset(
            {
                "baseUriRedirect",
                "cors",
                "jsonldMediaType",
                "regionByPct",
                "regionByPx",
                "regionSquare",
                "rotationBy90s",
                "sizeByConfinedWh",
                "sizeByH",
                "sizeByPct",
                "sizeByW",
                "sizeByWh",
            }
        ),
        foreign_features=frozenset(
            {"sizeAboveFull", "sizeByDistortedWh", "sizeByWhListed", "sizeByForcedWh"}
        ),
    ),
    # http://iiif.io/api/image/2/level2.json
    ApiVersion.V2: _Level2(
        formats=frozenset({"jpg", "png"}),
        qualities=frozenset({"default", "bitonal"}),
        features=frozenset(
            {
                "baseUriRedirect",
                "cors",
                "jsonldMediaType",
                "regionByPct",
                "regionByPx",
                "rotationBy90s",
                "sizeByWhListed",
                "sizeByConfinedWh",
                "sizeByDistortedWh",
                "sizeByForcedWh",
                "sizeByH",
                "sizeByPct",
                "sizeByW",
                "sizeByWh",
            }
        ),
        foreign_features=frozenset({"sizeUpscaling"}),
    ),
}


@dataclass(frozen=True, slots=True)
class TileSpec:
    """One tile grid: tile width and height in output pixels (height None means square) and the
    scale factors (divisors of the full image size) at which tiles are efficient."""

    width: int
    height: int | None
    scale_factors: tuple[int, ...]


def build_info(
    version: ApiVersion,
    service_id: str,
    image: ImageDims,
    sizes: Sequence[tuple[int, int]],
    tiles: Sequence[TileSpec],
    limits: Limits,
    formats: Sequence[str],
    qualities: Sequence[str],
    features: Sequence[str],
    *,
    preferred_formats: Sequence[str] = PREFERRED_FORMATS,
) -> dict[str, object]:
    """The info.json document for one image, ready for ``json.dumps``.

    ``service_id`` is the image's base URI (scheme, server, prefix, encoded identifier, no
    trailing slash). ``sizes`` are (width, height) pixels of the full image; ``formats``,
    ``qualities`` and ``features`` are everything the server supports for the image, in the
    version's vocabulary (``FEATURES[version]``); names only the other version defines are
    dropped. Sizes and tiles beyond ``limits`` are left out ("Servers MUST ensure that sizes
    specified by any sizes or tiles properties are within any size limits expressed"), sizes are
    sorted ascending and tiles with the same width and height merged.

    3.0 lists what goes beyond level 2 in extraFormats / extraQualities / extraFeatures and
    suggests ``preferred_formats`` that are offered. 2.1 puts the level 2 URI first in
    ``profile``, then an object with the full formats, qualities and supports lists (the set
    supported is the union of all profile entries, so repeating level 2 values is harmless and
    spares clients a lookup of the level 2 document) and the limits. Empty lists are omitted.

    Raises ValueError if ``sizeUpscaling`` is claimed without ``max_width`` or ``max_area``,
    which 3.0 section 5.7 forbids ("MUST specify maxWidth or maxArea").
    """
    level2 = _LEVEL2[version]
    offered_features = _unique(f for f in features if f not in level2.foreign_features)
    if (
        version == ApiVersion.V3
        and "sizeUpscaling" in offered_features
        and limits.max_width is None
        and limits.max_area is None
    ):
        raise ValueError("sizeUpscaling requires maxWidth or maxArea (Image API 3.0 5.7)")
    size_list: list[object] = [
        {"width": w, "height": h} for w, h in sorted(set(sizes)) if _within(w, h, limits)
    ]
    tile_list: list[object] = list(_tiles(tiles, limits))
    limit_props = _limit_properties(limits)

    if version == ApiVersion.V3:
        offered_formats = _unique(formats)
        info: dict[str, object] = {
            "@context": CONTEXT[version],
            "id": service_id,
            "type": "ImageService3",
            "protocol": PROTOCOL,
            "profile": "level2",
            "width": image.width,
            "height": image.height,
            **limit_props,
        }
        optional: dict[str, list[object]] = {
            "sizes": size_list,
            "tiles": tile_list,
            # "MUST be among those specified in the referenced profile or listed in
            # extraFormats" (3.0 section 5.5): offered ones only.
            "preferredFormats": [f for f in _unique(preferred_formats) if f in offered_formats],
            "extraFormats": [f for f in offered_formats if f not in level2.formats],
            "extraQualities": [q for q in _unique(qualities) if q not in level2.qualities],
            "extraFeatures": [f for f in offered_features if f not in level2.features],
        }
        info.update({key: value for key, value in optional.items() if value})
        return info

    profile_object: dict[str, object] = {
        key: value
        for key, value in (
            ("formats", _unique(formats)),
            ("qualities", _unique(qualities)),
            ("supports", offered_features),
        )
        if value
    }
    profile_object.update(limit_props)
    info = {
        "@context": CONTEXT[version],
        "@id": service_id,
        "protocol": PROTOCOL,
        "width": image.width,
        "height": image.height,
    }
    if size_list:
        info["sizes"] = size_list
    if tile_list:
        info["tiles"] = tile_list
    profile: list[object] = [PROFILE_URI[version]]
    if profile_object:
        profile.append(profile_object)
    info["profile"] = profile
    return info


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _within(width: int, height: int, limits: Limits) -> bool:
    max_h = limits.effective_max_height
    return (
        width >= 1
        and height >= 1
        and (limits.max_width is None or width <= limits.max_width)
        and (max_h is None or height <= max_h)
        and (limits.max_area is None or width * height <= limits.max_area)
    )


def _limit_properties(limits: Limits) -> dict[str, int]:
    props: dict[str, int] = {}
    if limits.max_width is not None:
        props["maxWidth"] = limits.max_width
    if limits.max_height is not None:
        props["maxHeight"] = limits.max_height
    if limits.max_area is not None:
        props["maxArea"] = limits.max_area
    return props


def _tiles(tiles: Sequence[TileSpec], limits: Limits) -> list[dict[str, object]]:
    # Tiles with the same width and height must be one entry (3.0 section 5.4), so merge them.
    merged: dict[tuple[int, int], tuple[set[int], bool]] = {}
    for tile in tiles:
        height = tile.width if tile.height is None else tile.height
        if not _within(tile.width, height, limits):
            continue
        factors, explicit = merged.setdefault((tile.width, height), (set(), False))
        factors.update(f for f in tile.scale_factors if f >= 1)
        merged[tile.width, height] = (factors, explicit or tile.height is not None)
    out: list[dict[str, object]] = []
    for (width, height), (factors, explicit) in merged.items():
        if not factors:
            continue
        entry: dict[str, object] = {"width": width}
        if explicit:
            entry["height"] = height
        entry["scaleFactors"] = sorted(factors)
        out.append(entry)
    return out
