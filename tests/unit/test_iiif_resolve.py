"""Resolving requests to pixel plans: the spec's examples and geometric invariants."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.iiif.errors import IIIFError
from gateway.iiif.parse import parse_path
from gateway.iiif.resolve import resolve, resolve_region, resolve_size
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
    SizeMode,
    SquareRegion,
)

T = TypeVar("T")
V2 = ApiVersion.V2
V3 = ApiVersion.V3
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NO_LIMITS = Limits()
# The spec's example image is 300 x 200 pixels (region example 5: 125,15,200,200 -> 175,185).
SPEC_IMAGE = ImageDims(300, 200)


def _plan(
    path: str,
    image: ImageDims = SPEC_IMAGE,
    limits: Limits = NO_LIMITS,
    version: ApiVersion = V3,
) -> RenderPlan:
    req = parse_path(version, "id/" + path)
    assert isinstance(req, ImageRequest)
    return resolve(req, image, limits)


def _fails(
    path: str,
    image: ImageDims = SPEC_IMAGE,
    limits: Limits = NO_LIMITS,
    version: ApiVersion = V3,
) -> IIIFError:
    with pytest.raises(IIIFError) as info:
        _plan(path, image, limits, version)
    return info.value


# --- Region examples (3.0 and 2.1 section 4.1). ----------------------------------------------
@pytest.mark.parametrize(
    ("region", "box"),
    [
        ("full", PixelBox(0, 0, 300, 200)),
        ("square", PixelBox(50, 0, 200, 200)),
        ("125,15,120,140", PixelBox(125, 15, 120, 140)),
        ("pct:41.6,7.5,40,70", PixelBox(125, 15, 120, 140)),
        # N.B. "Returned image is 175,185 px" for both.
        ("125,15,200,200", PixelBox(125, 15, 175, 185)),
        ("pct:41.6,7.5,66.6,100", PixelBox(125, 15, 175, 185)),
    ],
)
@pytest.mark.parametrize(("version", "size"), [(V3, "max"), (V2, "full")])
def test_region_examples(region: str, box: PixelBox, version: ApiVersion, size: str) -> None:
    plan = _plan(f"{region}/{size}/0/default.jpg", version=version)
    assert plan.crop == box
    assert (plan.width, plan.height) == (box.w, box.h)


def test_square_of_tall_image_is_centred() -> None:
    assert resolve_region(SquareRegion(), ImageDims(100, 301)) == PixelBox(0, 100, 100, 100)


@pytest.mark.parametrize(
    "region",
    [
        "300,0,10,10",
        "0,200,10,10",
        "1000,1000,5,5",
        "pct:100,0,10,10",
        "pct:0,100,10,10",
        "pct:150,0,10,10",
    ],
)
def test_region_outside_image_is_400(region: str) -> None:
    err = _fails(f"{region}/max/0/default.jpg")
    assert (err.status, err.parameter) == (400, "region")


def test_region_clipped_at_edge() -> None:
    assert _plan("299,199,10,10/max/0/default.jpg").crop == PixelBox(299, 199, 1, 1)
    # A sliver that rounds to nothing still starts inside the image: one pixel.
    assert _plan("pct:99.9,0,0.01,100/max/0/default.jpg").crop == PixelBox(299, 0, 1, 200)


def test_adjacent_percent_regions_tile_without_gaps() -> None:
    image = ImageDims(1001, 7)
    boxes = [resolve_region(PercentRegion(100 * i / 3, 0, 100 / 3, 100), image) for i in range(3)]
    assert boxes[0].x == 0
    assert boxes[0].x + boxes[0].w == boxes[1].x
    assert boxes[1].x + boxes[1].w == boxes[2].x
    assert boxes[2].x + boxes[2].w == 1001


def test_hand_built_bad_regions_are_400() -> None:
    for region in (
        PixelRegion(-1, 0, 5, 5),
        PixelRegion(0, 0, 0, 5),
        PercentRegion(float("nan"), 0, 5, 5),
        PercentRegion(0, 0, float("inf"), 5),
        PercentRegion(0, 0, 0, 5),
    ):
        with pytest.raises(IIIFError):
            resolve_region(region, SPEC_IMAGE)


# --- Size examples (3.0 section 4.2), on the 300 x 200 image. ---------------------------------
@pytest.mark.parametrize(
    ("size", "limits", "dims"),
    [
        ("max", NO_LIMITS, (300, 200)),
        # "Assuming that the image has a maxWidth of 200px"
        ("max", Limits(max_width=200), (200, 133)),
        # "Assuming that the image has a maxWidth of 360px"
        ("^max", Limits(max_width=360), (360, 240)),
        ("^max", NO_LIMITS, (300, 200)),
        ("150,", NO_LIMITS, (150, 100)),
        ("^360,", NO_LIMITS, (360, 240)),
        (",150", NO_LIMITS, (225, 150)),
        ("^,240", NO_LIMITS, (360, 240)),
        ("pct:50", NO_LIMITS, (150, 100)),
        ("^pct:120", NO_LIMITS, (360, 240)),
        ("225,100", NO_LIMITS, (225, 100)),
        ("^360,360", NO_LIMITS, (360, 360)),
        # "N.B. Returned image is 150,100 px"
        ("!225,100", NO_LIMITS, (150, 100)),
        # "N.B. Returned image is 360,240 px"
        ("^!360,360", NO_LIMITS, (360, 240)),
        ("^150,", NO_LIMITS, (150, 100)),  # ^ allows upscaling, does not require it
        ("!300,1000", NO_LIMITS, (300, 200)),
        ("^!360,360", Limits(max_width=330), (330, 220)),
        ("^!360,360", Limits(max_area=300 * 200), (300, 200)),
    ],
)
def test_size_examples_v3(size: str, limits: Limits, dims: tuple[int, int]) -> None:
    plan = _plan(f"full/{size}/0/default.jpg", limits=limits)
    assert (plan.width, plan.height) == dims


@pytest.mark.parametrize(
    "size",
    [
        "301,",
        ",201",
        "301,200",
        "300,201",
        # The IIIF validator's size_noup expects !w,h that needs upscaling to fail without ^.
        "!600,600",
        "!2000,3000",
    ],
)
def test_v3_upscaling_without_caret_is_400(size: str) -> None:
    err = _fails(f"full/{size}/0/default.jpg")
    assert (err.status, err.parameter) == (400, "size")


def test_v3_confined_box_within_region_is_fine() -> None:
    # The validator's own example: ^!2000,500 of a 1000 x 1000 image is 500 x 500, and so is
    # !2000,500, which needs no upscaling.
    image = ImageDims(1000, 1000)
    for size in ("!2000,500", "^!2000,500"):
        plan = _plan(f"full/{size}/0/default.jpg", image=image)
        assert (plan.width, plan.height) == (500, 500)


@pytest.mark.parametrize(
    ("size", "limits"),
    [
        ("300,", Limits(max_width=299)),
        (",200", Limits(max_width=1000, max_height=199)),
        ("300,200", Limits(max_area=300 * 200 - 1)),
        ("^pct:200", Limits(max_width=500)),
        ("^400,", Limits(max_width=399)),
        # maxHeight defaults to maxWidth (3.0 section 5.2).
        ("^,400", Limits(max_width=399)),
    ],
)
def test_size_beyond_limits(size: str, limits: Limits) -> None:
    err = _fails(f"full/{size}/0/default.jpg", limits=limits)
    assert (err.status, err.parameter) == (400, "size")
    # 2.1's error table: 404 for "the requested size is greater than the limits specified".
    v2_size = size.removeprefix("^")
    err = _fails(f"full/{v2_size}/0/default.jpg", limits=limits, version=V2)
    assert (err.status, err.parameter) == (404, "size")


def test_max_shrinks_into_every_limit() -> None:
    plan = _plan("full/max/0/default.jpg", limits=Limits(max_area=6000))
    assert plan.width * plan.height <= 6000
    assert (plan.width, plan.height) == (94, 63)
    plan = _plan("full/max/0/default.jpg", limits=Limits(max_width=1000, max_height=100))
    assert (plan.width, plan.height) == (150, 100)
    plan = _plan("full/^max/0/default.jpg", limits=Limits(max_area=600_000))
    assert (plan.width, plan.height) == (948, 632)
    assert plan.width * plan.height <= 600_000


def test_derived_side_is_at_least_one_pixel() -> None:
    image = ImageDims(10_000, 3)
    assert (_plan("full/10,/0/default.jpg", image=image).height) == 1
    assert (_plan("full/pct:1/0/default.jpg", image=image).height) == 1
    assert (_plan("full/!10,10/0/default.jpg", image=image).height) == 1


# --- 2.1 (section 4.2). ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("size", "limits", "dims"),
    [
        ("full", NO_LIMITS, (300, 200)),
        ("max", NO_LIMITS, (300, 200)),
        ("max", Limits(max_width=200), (200, 133)),
        ("150,", NO_LIMITS, (150, 100)),
        (",150", NO_LIMITS, (225, 150)),
        ("pct:50", NO_LIMITS, (150, 100)),
        ("225,100", NO_LIMITS, (225, 100)),
        ("!225,100", NO_LIMITS, (150, 100)),
        # sizeAboveFull: no prefix needed in 2.1.
        ("600,", NO_LIMITS, (600, 400)),
        ("pct:200", NO_LIMITS, (600, 400)),
        ("!900,400", NO_LIMITS, (600, 400)),
        ("!900,400", Limits(max_width=450), (450, 300)),
    ],
)
def test_size_examples_v2(size: str, limits: Limits, dims: tuple[int, int]) -> None:
    plan = _plan(f"full/{size}/0/default.jpg", limits=limits, version=V2)
    assert (plan.width, plan.height) == dims


def test_v2_full_beyond_limits_is_refused_but_max_shrinks() -> None:
    limits = Limits(max_width=200)
    err = _fails("full/full/0/default.jpg", limits=limits, version=V2)
    assert (err.status, err.parameter) == (404, "size")
    plan = _plan("full/max/0/default.jpg", limits=limits, version=V2)
    assert (plan.width, plan.height) == (200, 133)


def test_rotation_is_normalised() -> None:
    assert _plan("full/max/360/default.jpg").rotation == 0.0
    assert _plan("full/max/!22.5/default.jpg").rotation == 22.5
    req = ImageRequest("id", FullRegion(), Size("max"), 450.0, False, "default", "jpg", V3)
    assert resolve(req, SPEC_IMAGE, NO_LIMITS).rotation == 90.0


def test_limits_validation() -> None:
    with pytest.raises(ValueError, match="max_width"):
        Limits(max_height=100)
    with pytest.raises(ValueError, match="at least 1"):
        Limits(max_area=0)
    with pytest.raises(ValueError, match="positive"):
        ImageDims(0, 10)
    assert Limits(max_width=10).effective_max_height == 10
    assert Limits(max_width=10, max_height=5).effective_max_height == 5


# --- Properties. -----------------------------------------------------------------------------
_dims = st.builds(ImageDims, st.integers(1, 5000), st.integers(1, 5000))
_px = st.integers(0, 6000)
_pct = st.builds(lambda n, k: n / 10**k, st.integers(0, 20_000), st.integers(0, 3))
_regions: st.SearchStrategy[Region] = st.one_of(
    st.just(FullRegion()),
    st.just(SquareRegion()),
    st.builds(PixelRegion, _px, _px, st.integers(1, 6000), st.integers(1, 6000)),
    st.builds(PercentRegion, _pct, _pct, _pct.filter(bool), _pct.filter(bool)),
)
_side = st.integers(1, 8000)
_limit = st.none() | st.integers(1, 6000)
_area = st.none() | st.integers(1, 20_000_000)


@st.composite
def _limits(draw: st.DrawFn) -> Limits:
    width = draw(_limit)
    height = draw(_limit) if width is not None else None
    return Limits(width, height, draw(_area))


_MODES: st.SearchStrategy[SizeMode] = st.sampled_from(["max", "w", "h", "wh", "confined", "pct"])
_PERCENTS = st.floats(0.01, 100)
_VERSIONS = st.sampled_from([V2, V3])
_ROTATIONS = st.floats(0, 360, exclude_max=True)


@st.composite
def _sizes(draw: st.DrawFn, version: ApiVersion) -> Size:
    upscale = version == V3 and draw(st.booleans())
    mode: SizeMode = draw(_MODES)
    if mode == "max":
        return Size("max", upscale=upscale, full=version == V2 and draw(st.booleans()))
    if mode == "pct":
        top = 100.0 if version == V3 and not upscale else 400.0
        return Size("pct", percent=draw(_PERCENTS) * top / 100, upscale=upscale)
    width = draw(_side) if mode != "h" else None
    height = draw(_side) if mode != "w" else None
    return Size(mode, width, height, upscale=upscale)


@st.composite
def cases(draw: st.DrawFn) -> tuple[ImageRequest, ImageDims, Limits]:
    version = draw(_VERSIONS)
    req = ImageRequest(
        identifier="id",
        region=draw(_regions),
        size=draw(_sizes(version)),
        rotation=draw(_ROTATIONS),
        mirror=draw(st.booleans()),
        quality="default",
        format="jpg",
        version=version,
    )
    return req, draw(_dims), draw(_limits())


def _outcome(compute: Callable[[], T]) -> T | IIIFError:
    try:
        return compute()
    except IIIFError as err:
        return err


def _within_limits(width: int, height: int, limits: Limits) -> bool:
    max_h = limits.effective_max_height
    return (
        (limits.max_width is None or width <= limits.max_width)
        and (max_h is None or height <= max_h)
        and (limits.max_area is None or width * height <= limits.max_area)
    )


@FAST
@given(cases())
def test_resolve_invariants(case: tuple[ImageRequest, ImageDims, Limits]) -> None:
    req, image, limits = case
    size = req.size
    plan = _outcome(lambda: resolve(req, image, limits))
    if isinstance(plan, IIIFError):
        assert plan.status in (400, 404)
        assert plan.parameter in ("region", "size")
        # max, ^max and confined sizes shrink into the limits rather than fail; only regions
        # outside the image, or a !w,h needing ^ in 3.0, make them fail.
        if size.mode in ("max", "confined") and not size.full:
            assert plan.parameter == "region" or (size.mode == "confined" and not size.upscale)
        return
    crop = plan.crop
    assert crop.x >= 0
    assert crop.y >= 0
    assert crop.w >= 1
    assert crop.h >= 1
    assert crop.x + crop.w <= image.width
    assert crop.y + crop.h <= image.height
    assert plan.width >= 1
    assert plan.height >= 1
    assert _within_limits(plan.width, plan.height, limits)
    assert 0 <= plan.rotation < 360
    assert (plan.mirror, plan.quality, plan.format) == (req.mirror, req.quality, req.format)
    if req.version == V3 and not size.upscale:
        assert plan.width <= crop.w
        assert plan.height <= crop.h
    if size.mode == "wh":
        # w,h may distort; it is exactly what was asked for.
        assert (plan.width, plan.height) == (size.width, size.height)
    if size.mode == "w":
        assert plan.width == size.width
    if size.mode == "h":
        assert plan.height == size.height
    if size.mode == "confined":
        assert size.width is not None
        assert size.height is not None
        assert plan.width <= size.width
        assert plan.height <= size.height
    if size.mode == "max" and not size.upscale:
        assert plan.width <= crop.w
        assert plan.height <= crop.h


@FAST
@given(_dims, _regions)
def test_region_always_inside_or_400(image: ImageDims, region: Region) -> None:
    box = _outcome(lambda: resolve_region(region, image))
    if isinstance(box, IIIFError):
        assert (box.status, box.parameter) == (400, "region")
        return
    assert 0 <= box.x < image.width
    assert 0 <= box.y < image.height
    assert 1 <= box.w <= image.width - box.x
    assert 1 <= box.h <= image.height - box.y


@FAST
@given(_side, _side, st.integers(1, 3000), st.integers(1, 3000), _limits())
def test_confined_keeps_aspect(
    region_w: int, region_h: int, box_w: int, box_h: int, limits: Limits
) -> None:
    width, height = resolve_size(
        Size("confined", box_w, box_h, upscale=True), region_w, region_h, limits, V3
    )
    assert 1 <= width <= box_w
    assert 1 <= height <= box_h
    assert _within_limits(width, height, limits)
    # Aspect kept to within the rounding of one side (plus the 1-pixel floor).
    if width > 1 and height > 1:
        assert abs(width * region_h - height * region_w) <= max(region_w, region_h)
