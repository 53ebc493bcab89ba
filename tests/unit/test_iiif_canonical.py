"""Canonical URIs (3.0 section 4.8, 2.1 section 4.7) and their stability under re-resolution."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.iiif.canonical import (
    canonical_path,
    encode_identifier,
    format_number,
    format_rotation,
    serialize,
)
from gateway.iiif.errors import IIIFError
from gateway.iiif.parse import parse_path
from gateway.iiif.resolve import resolve
from gateway.iiif.types import (
    QUALITIES,
    ApiVersion,
    FullRegion,
    ImageDims,
    ImageRequest,
    Limits,
    Size,
)

V2 = ApiVersion.V2
V3 = ApiVersion.V3
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NO_LIMITS = Limits()


def _canonical(
    path: str, image: ImageDims, limits: Limits = NO_LIMITS, version: ApiVersion = V3
) -> str:
    req = parse_path(version, "id/" + path)
    assert isinstance(req, ImageRequest)
    return canonical_path(resolve(req, image, limits), req, image, limits=limits)


# The spec's Link header examples: full/400,300/0/default.jpg (3.0), full/400,/0/default.jpg
# (2.1), for an image whose aspect ratio is 4:3.
@pytest.mark.parametrize(
    ("version", "path", "expected"),
    [
        (V3, "full/400,/0/default.jpg", "full/400,300/0/default.jpg"),
        (V3, "full/,300/0/default.jpg", "full/400,300/0/default.jpg"),
        (V3, "full/pct:50/0/default.jpg", "full/400,300/0/default.jpg"),
        (V3, "full/!400,400/0/default.jpg", "full/400,300/0/default.jpg"),
        (V3, "full/400,300/0/default.jpg", "full/400,300/0/default.jpg"),
        (V2, "full/400,/0/default.jpg", "full/400,/0/default.jpg"),
        (V2, "full/,300/0/default.jpg", "full/400,/0/default.jpg"),
        (V2, "full/pct:50/0/default.jpg", "full/400,/0/default.jpg"),
        (V2, "full/400,300/0/default.jpg", "full/400,/0/default.jpg"),
        (V2, "full/!400,400/0/default.jpg", "full/400,/0/default.jpg"),
    ],
)
def test_spec_link_header_examples(version: ApiVersion, path: str, expected: str) -> None:
    assert _canonical(path, ImageDims(800, 600), version=version) == expected


@pytest.mark.parametrize(
    ("version", "path", "expected"),
    [
        # Region: full when the whole image is asked for, else x,y,w,h of the clipped crop.
        (V3, "0,0,800,600/max/0/default.jpg", "full/max/0/default.jpg"),
        (V3, "0,0,9000,9000/max/0/default.jpg", "full/max/0/default.jpg"),
        (V3, "pct:0,0,100,100/max/0/default.jpg", "full/max/0/default.jpg"),
        (V3, "square/max/0/default.jpg", "100,0,600,600/max/0/default.jpg"),
        (V3, "700,500,200,200/max/0/default.jpg", "700,500,100,100/max/0/default.jpg"),
        (V3, "pct:50,50,50,50/max/0/default.jpg", "400,300,400,300/max/0/default.jpg"),
        # Size, 3.0: max, ^max, w,h, ^w,h.
        (V3, "full/pct:100/0/default.jpg", "full/max/0/default.jpg"),
        (V3, "full/800,600/0/default.jpg", "full/max/0/default.jpg"),
        (V3, "full/^max/0/default.jpg", "full/max/0/default.jpg"),
        (V3, "full/400,100/0/default.jpg", "full/400,100/0/default.jpg"),
        (V3, "full/^1600,/0/default.jpg", "full/^1600,1200/0/default.jpg"),
        (V3, "full/^800,700/0/default.jpg", "full/^800,700/0/default.jpg"),
        # Size, 2.1: full, w, (aspect kept), w,h (distorted).
        (V2, "full/full/0/default.jpg", "full/full/0/default.jpg"),
        (V2, "full/max/0/default.jpg", "full/full/0/default.jpg"),
        (V2, "full/800,600/0/default.jpg", "full/full/0/default.jpg"),
        (V2, "square/full/0/default.jpg", "100,0,600,600/full/0/default.jpg"),
        (V2, "full/400,100/0/default.jpg", "full/400,100/0/default.jpg"),
        (V2, "full/1600,/0/default.jpg", "full/1600,/0/default.jpg"),
        # Rotation: integer if possible, ! when mirrored, 360 is 0.
        (V3, "full/max/90.0/default.jpg", "full/max/90/default.jpg"),
        (V3, "full/max/!22.50/default.jpg", "full/max/!22.5/default.jpg"),
        (V3, "full/max/360/default.jpg", "full/max/0/default.jpg"),
        (V3, "full/max/.5/default.jpg", "full/max/0.5/default.jpg"),
        (V3, "full/max/0.00001/default.jpg", "full/max/0.00001/default.jpg"),
        # Quality and format are kept: color is not rewritten to default.
        (V3, "full/max/0/color.png", "full/max/0/color.png"),
        (V2, "full/full/0/gray.webp", "full/full/0/gray.webp"),
    ],
)
def test_canonical_forms(version: ApiVersion, path: str, expected: str) -> None:
    assert _canonical(path, ImageDims(800, 600), version=version) == expected


def test_square_of_square_image_is_full() -> None:
    # 2.1: "full" if the whole image is requested, "including a square region of a square image".
    assert _canonical("square/full/0/default.jpg", ImageDims(500, 500), version=V2) == (
        "full/full/0/default.jpg"
    )


def test_limited_max_is_max_when_limits_are_given() -> None:
    image = ImageDims(800, 600)
    limits = Limits(max_width=400)
    assert _canonical("full/max/0/default.jpg", image, limits) == "full/max/0/default.jpg"
    assert _canonical("full/400,/0/default.jpg", image, limits) == "full/max/0/default.jpg"
    assert _canonical("full/^max/0/default.jpg", image, limits) == "full/max/0/default.jpg"
    # Without the limits the same plan is written w,h, which resolves to the same plan.
    req = parse_path(V3, "id/full/max/0/default.jpg")
    assert isinstance(req, ImageRequest)
    plan = resolve(req, image, limits)
    assert canonical_path(plan, req, image) == "full/400,300/0/default.jpg"


def test_upscaled_max_is_caret_max() -> None:
    image = ImageDims(300, 200)
    limits = Limits(max_width=360)
    assert _canonical("full/^max/0/default.jpg", image, limits) == "full/^max/0/default.jpg"
    assert _canonical("full/^360,/0/default.jpg", image, limits) == "full/^max/0/default.jpg"
    assert _canonical("full/^330,/0/default.jpg", image, limits) == "full/^330,220/0/default.jpg"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0"),
        (90.0, "90"),
        (22.5, "22.5"),
        (0.5, "0.5"),
        (1e-05, "0.00001"),
        (123456789.125, "123456789.125"),
        (1e16, "10000000000000000"),
        (0.1 + 0.2, "0.30000000000000004"),
    ],
)
def test_format_number(value: float, text: str) -> None:
    assert format_number(value) == text
    assert float(text) == value


def test_format_rotation() -> None:
    assert format_rotation(180.0, True) == "!180"
    assert format_rotation(22.5, False) == "22.5"


def test_serialize_refuses_inexpressible_sizes() -> None:
    up = ImageRequest(
        "id", FullRegion(), Size("max", upscale=True), 0.0, False, "default", "jpg", V2
    )
    with pytest.raises(ValueError, match=r"2\.1"):
        serialize(up)
    full = ImageRequest(
        "id", FullRegion(), Size("max", full=True), 0.0, False, "default", "jpg", V3
    )
    with pytest.raises(ValueError, match=r"3\.0"):
        serialize(full)


def test_encode_identifier_matches_spec_table() -> None:
    assert encode_identifier("ark:/12025/654xz321") == "ark:%2F12025%2F654xz321"
    assert encode_identifier("http://example.com/?54#a") == "http:%2F%2Fexample.com%2F%3F54%23a"
    assert encode_identifier("[frob] \u00e9") == "%5Bfrob%5D%20%C3%A9"


# --- Properties: the canonical path resolves to the same plan and is a fixed point. ----------
def _decimals(low: int, high: int) -> st.SearchStrategy[float]:
    """Decimals with up to 3 places in [low, high), as they are written in URIs."""
    return st.builds(lambda n: n / 1000, st.integers(low * 1000, high * 1000 - 1))


# Strategies are built once: building them inside a composite costs more than the test.
_SIDE = st.integers(1, 3000)
_REGION_TEXT = (
    st.sampled_from(["full", "square"])
    | st.builds(
        lambda x, y, w, h: f"{x},{y},{w},{h}",
        st.integers(0, 3000),
        st.integers(0, 3000),
        _SIDE,
        _SIDE,
    )
    | st.builds(
        lambda x, y, w, h: "pct:" + ",".join(format_number(v) for v in (x, y, w, h)),
        _decimals(0, 100),
        _decimals(0, 100),
        _decimals(0, 100).map(lambda v: v + 0.5),
        _decimals(0, 100).map(lambda v: v + 0.5),
    )
)
_SIZE_BODY = (
    st.builds(lambda w: f"{w},", _SIDE)
    | st.builds(lambda h: f",{h}", _SIDE)
    | st.builds(lambda w, h: f"{w},{h}", _SIDE, _SIDE)
    | st.builds(lambda w, h: f"!{w},{h}", _SIDE, _SIDE)
    | st.builds(lambda p: f"pct:{format_number(p)}", _decimals(0, 300).map(lambda v: v + 0.5))
)
_SIZE_TEXT = {
    V2: st.sampled_from(["max", "full"]) | _SIZE_BODY,
    V3: st.sampled_from(["max", "^max"])
    | st.builds(str.__add__, st.sampled_from(["", "^"]), _SIZE_BODY),
}
_ROTATION_TEXT = st.builds(
    lambda mirror, r: mirror + format_number(min(r, 360.0)),
    st.sampled_from(["", "!"]),
    _decimals(0, 361),
)


@st.composite
def _paths(draw: st.DrawFn, version: ApiVersion) -> str:
    region = draw(_REGION_TEXT)
    size = draw(_SIZE_TEXT[version])
    rotation = draw(_ROTATION_TEXT)
    quality = draw(st.sampled_from(QUALITIES))
    return f"id/{region}/{size}/{rotation}/{quality}.jpg"


_LIMIT = st.none() | st.integers(1, 4000)
_AREA = st.none() | st.integers(1, 10_000_000)


@st.composite
def _cases(draw: st.DrawFn) -> tuple[ApiVersion, str, ImageDims, Limits]:
    version = draw(st.sampled_from([V2, V3]))
    image = ImageDims(draw(st.integers(1, 3000)), draw(st.integers(1, 3000)))
    max_w = draw(_LIMIT)
    max_h = draw(_LIMIT) if max_w is not None else None
    limits = Limits(max_w, max_h, draw(_AREA))
    return version, draw(_paths(version)), image, limits


@FAST
@given(_cases())
def test_canonical_resolves_to_same_plan(case: tuple[ApiVersion, str, ImageDims, Limits]) -> None:
    version, path, image, limits = case
    try:
        req = parse_path(version, path)
        assert isinstance(req, ImageRequest)
        plan = resolve(req, image, limits)
    except IIIFError:
        return
    for given_limits in (limits, None):
        canonical = canonical_path(plan, req, image, limits=given_limits)
        again = parse_path(version, "id/" + canonical)
        assert isinstance(again, ImageRequest)
        again_plan = resolve(again, image, limits)
        assert again_plan == plan, canonical
        assert canonical_path(again_plan, again, image, limits=given_limits) == canonical
