"""The render pipeline: level choice, exact output sizes, every format and
quality, rotation and mirroring checked pixel by pixel against the same
operations done directly with pyvips on the full-resolution source, and
broken sources."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import pyvips

from decoder.engines import DecodeError, ImageInfo, Level, RenderError, SourceFormat
from decoder.engines.vips import VipsEngine
from decoder.pipeline import STEPS, choose_level, level_box, rotated_size, run_pipeline
from decoder.plan import ALPHA_FORMATS, Box, OutputFormat, Plan, Quality
from decoder.sources.base import ByteReader
from tests.images import SourceSet, make_jpeg
from tests.pixels import mean_abs_diff

ReaderFactory = Callable[[Path], ByteReader]
Describe = Callable[[ByteReader], ImageInfo]

# Mean absolute difference (0-255 scale) allowed between a render and the
# same operations done directly on the full-resolution image. Renders from a
# reduced level differ by the codec's own downsampling filter (see
# test_vips_engine); lossy output formats add their own error.
TOLERANCE = 6.0
LOSSY_EXTRA = {OutputFormat.JPEG: 3.0, OutputFormat.WEBP: 3.0, OutputFormat.JP2: 3.0}


def make_info(width: int, height: int, downscales: tuple[int, ...]) -> ImageInfo:
    levels = tuple(Level(-(-width // d), -(-height // d), d, 0, 0) for d in downscales)
    return ImageInfo(width, height, levels, 3, 8, SourceFormat.TIFF, False)


def decode(data: bytes) -> Any:
    return pyvips.Image.new_from_buffer(data, "")


def expected_render(path: Path, plan: Plan) -> Any:
    """The plan done the direct way: full-resolution decode, crop, resize,
    flip, rotate, colour. 8-bit, alpha kept where the format has alpha."""
    image = pyvips.Image.new_from_file(str(path))
    if image.hasalpha() and plan.format not in ALPHA_FORMATS:
        image = image.flatten(background=[255])
    r = plan.region
    image = image.crop(r.x, r.y, r.width, r.height)
    image = image.resize(plan.width / r.width, vscale=plan.height / r.height, kernel="lanczos3")
    image = image.gravity("north-west", plan.width, plan.height, extend="copy")
    if plan.mirror:
        image = image.flip("horizontal")
    if plan.rotation % 90 == 0:
        image = image.rot(f"d{int(plan.rotation) % 360}")
    else:
        if plan.format in ALPHA_FORMATS and not image.hasalpha():
            image = image.bandjoin(255)
        background = [0] * image.bands if plan.format in ALPHA_FORMATS else [255] * image.bands
        image = image.rotate(plan.rotation, background=background)
    if plan.quality is not Quality.COLOR:
        image = image.colourspace("b-w")
        if plan.quality is Quality.BITONAL:
            bw = image[0] >= 128
            image = bw.bandjoin(image[1]) if image.hasalpha() else bw
    return image


def comparable(got: Any, expected: Any) -> tuple[Any, Any]:
    """Bring a decoded output and the expected image to the same bands:
    outputs that cannot hold grey (WebP, GIF) come back as sRGB."""
    if got.bands != expected.bands:
        if expected.hasalpha() and not got.hasalpha():
            expected = expected.flatten(background=[255])
        if got.bands > expected.bands:
            got = got.colourspace("b-w") if expected.bands <= 2 else got
            got = got[0 : expected.bands] if got.bands > expected.bands else got
        elif expected.bands > got.bands:
            expected = expected[0 : got.bands]
    return got, expected


# -- pure level choice ------------------------------------------------------------


def test_choose_level_never_upscales_a_reduced_level() -> None:
    info = make_info(6000, 4000, (1, 2, 4, 8, 16))
    full = Box(0, 0, 6000, 4000)
    assert choose_level(info, full, 6000, 4000) == 0
    assert choose_level(info, full, 3001, 2000) == 0
    assert choose_level(info, full, 3000, 2000) == 1
    assert choose_level(info, full, 375, 250) == 4
    assert choose_level(info, full, 10, 10) == 4
    assert choose_level(info, full, 12000, 8000) == 0  # upscaling starts from level 0
    # A tile: 1024 x 1024 full-res pixels rendered at 256 x 256 -> downscale 4.
    assert choose_level(info, Box(2048, 1024, 1024, 1024), 256, 256) == 2
    assert choose_level(info, Box(2048, 1024, 1024, 1024), 257, 256) == 1
    # Distorting sizes: the more demanding axis decides.
    assert choose_level(info, full, 100, 2000) == 1


def test_choose_level_uses_true_level_sizes() -> None:
    # 601 wide: a ceil-rounded level 1 is 301 wide, and asking for exactly
    # that size from the full region must use it.
    info = make_info(601, 401, (1, 2))
    assert choose_level(info, Box(0, 0, 601, 401), 301, 201) == 1


def test_level_box_rounds_outwards_and_clips() -> None:
    info = make_info(6000, 4000, (1, 2, 4))
    assert level_box(info, 0, Box(10, 20, 30, 40)) == Box(10, 20, 30, 40)
    assert level_box(info, 1, Box(0, 0, 6000, 4000)) == Box(0, 0, 3000, 2000)
    assert level_box(info, 2, Box(1, 2, 6, 5)) == Box(0, 0, 2, 2)
    assert level_box(info, 2, Box(5999, 3999, 1, 1)) == Box(1499, 999, 1, 1)
    odd = make_info(601, 401, (1, 2))  # level 1 is 301 x 201
    assert level_box(odd, 1, Box(600, 400, 1, 1)) == Box(300, 200, 1, 1)
    with pytest.raises(RenderError):
        level_box(info, 3, Box(0, 0, 1, 1))


def test_rotated_size() -> None:
    assert rotated_size(600, 400, 0) == (600, 400)
    assert rotated_size(600, 400, 90) == (400, 600)
    assert rotated_size(600, 400, 180) == (600, 400)
    assert rotated_size(600, 400, 270) == (400, 600)
    assert rotated_size(600, 400, 360) == (600, 400)
    assert rotated_size(600, 400, 22.5) == (707, 599)
    assert rotated_size(600, 400, 45) == (707, 707)
    assert rotated_size(1, 1, 45) == (1, 1)


# -- whole renders ------------------------------------------------------------------


@pytest.fixture
def render(
    engine: VipsEngine, reader_for: ReaderFactory, describe: Describe
) -> Callable[[Path, Plan], bytes]:
    def run(path: Path, plan: Plan) -> bytes:
        reader = reader_for(path)
        return run_pipeline(engine, reader, describe(reader), plan)

    return run


def test_steps_are_in_order() -> None:
    assert [s.__name__ for s in STEPS] == ["resize", "mirror_rotate", "apply_quality"]


@pytest.mark.parametrize("fmt", list(OutputFormat))
@pytest.mark.parametrize("quality", list(Quality))
def test_every_format_and_quality(
    sources: SourceSet, render: Callable[[Path, Plan], bytes], fmt: OutputFormat, quality: Quality
) -> None:
    plan = Plan(Box(120, 40, 360, 300), 180, 150, quality=quality, format=fmt, encode_quality=90)
    out = decode(render(sources.jp2, plan))
    assert (out.width, out.height) == (180, 150)
    assert out.format == "uchar"
    assert out.get_typeof("icc-profile-data") == 0 or fmt is OutputFormat.GIF
    if quality is not Quality.COLOR and fmt not in (OutputFormat.WEBP, OutputFormat.GIF):
        assert out.bands == 1  # one luminance band
    if quality is Quality.BITONAL and fmt in (OutputFormat.PNG, OutputFormat.TIFF):
        assert ((out > 0) & (out < 255)).max() == 0  # only black and white
    expected = expected_render(sources.jp2, plan)
    got, want = comparable(out, expected)
    tolerance = TOLERANCE + LOSSY_EXTRA.get(fmt, 0.0) + (4.0 if fmt is OutputFormat.GIF else 0)
    if quality is Quality.BITONAL:
        tolerance = 0.05 * 255  # at most ~5% of pixels on the other side of 128
    assert mean_abs_diff(got, want) <= tolerance


@pytest.mark.parametrize("rotation", [0.0, 90.0, 180.0, 270.0, 22.5])
@pytest.mark.parametrize("mirror", [False, True])
@pytest.mark.parametrize("fmt", [OutputFormat.PNG, OutputFormat.JPEG])
def test_rotation_and_mirror(
    sources: SourceSet,
    render: Callable[[Path, Plan], bytes],
    rotation: float,
    mirror: bool,
    fmt: OutputFormat,
) -> None:
    plan = Plan(Box(60, 30, 480, 320), 240, 160, rotation=rotation, mirror=mirror, format=fmt)
    out = decode(render(sources.pyramid_tiff, plan))
    assert (out.width, out.height) == rotated_size(240, 160, rotation)
    expected = expected_render(sources.pyramid_tiff, plan)
    got, want = comparable(out, expected)
    # Rotated edges are interpolated differently by a pixel or so.
    extra = 2.0 if rotation % 90 else 0.0
    assert mean_abs_diff(got, want) <= TOLERANCE + LOSSY_EXTRA.get(fmt, 0.0) + extra


def test_mirror_really_mirrors(sources: SourceSet, render: Callable[[Path, Plan], bytes]) -> None:
    # Red grows to the right in the pattern: mirrored, it shrinks.
    plan = Plan(Box(0, 0, 600, 400), 60, 40, mirror=True, format=OutputFormat.PNG)
    out = decode(render(sources.png, plan))
    assert out.crop(0, 0, 5, 40)[0].avg() > 200
    assert out.crop(55, 0, 5, 40)[0].avg() < 55


def test_non_right_angles_fill_corners(
    sources: SourceSet, render: Callable[[Path, Plan], bytes]
) -> None:
    base = Plan(Box(0, 0, 600, 400), 300, 200, rotation=30)
    png = decode(render(sources.png, Plan(**{**_fields(base), "format": OutputFormat.PNG})))
    assert png.bands == 4
    assert png.getpoint(0, 0)[3] == 0  # transparent corner
    assert png.getpoint(png.width // 2, png.height // 2)[3] == 255
    jpeg = decode(render(sources.png, Plan(**{**_fields(base), "format": OutputFormat.JPEG})))
    assert jpeg.bands == 3
    assert min(jpeg.getpoint(1, 1)) > 240  # white corner
    grey = decode(
        render(
            sources.png,
            Plan(**{**_fields(base), "format": OutputFormat.PNG, "quality": Quality.BITONAL}),
        )
    )
    assert grey.bands == 2
    assert grey.getpoint(0, 0)[1] == 0


def _fields(plan: Plan) -> dict[str, Any]:
    return {name: getattr(plan, name) for name in Plan.__slots__}


def test_progressive_jpeg(sources: SourceSet, render: Callable[[Path, Plan], bytes]) -> None:
    plan = Plan(Box(0, 0, 600, 400), 300, 200, progressive=True)
    data = render(sources.png, plan)
    assert decode(data).get("interlaced") == 1
    # SOF2 (progressive DCT) rather than SOF0.
    assert b"\xff\xc2" in data
    assert b"\xff\xc0" not in data


def test_jpeg_quality_changes_size(
    sources: SourceSet, render: Callable[[Path, Plan], bytes]
) -> None:
    low = render(sources.png, Plan(Box(0, 0, 600, 400), 600, 400, encode_quality=20))
    high = render(sources.png, Plan(Box(0, 0, 600, 400), 600, 400, encode_quality=95))
    assert len(low) < len(high)


def test_upscaling_and_distortion(
    sources: SourceSet, render: Callable[[Path, Plan], bytes]
) -> None:
    plan = Plan(Box(100, 100, 50, 30), 500, 90, format=OutputFormat.PNG)
    out = decode(render(sources.bigtiff, plan))
    assert (out.width, out.height) == (500, 90)
    assert mean_abs_diff(out, expected_render(sources.bigtiff, plan)) <= TOLERANCE


@pytest.mark.parametrize(
    ("size", "region"),
    [
        ((1, 1), Box(0, 0, 600, 400)),
        ((599, 3), Box(0, 0, 600, 400)),
        ((7, 13), Box(599, 399, 1, 1)),
    ],
)
def test_extreme_sizes_are_exact(
    sources: SourceSet,
    render: Callable[[Path, Plan], bytes],
    size: tuple[int, int],
    region: Box,
) -> None:
    for path in (sources.jp2, sources.jpeg, sources.subifd_tiff):
        out = decode(render(path, Plan(region, size[0], size[1], format=OutputFormat.PNG)))
        assert (out.width, out.height) == size


def test_reduced_level_is_used(
    sources: SourceSet, reader_for: ReaderFactory, describe: Describe
) -> None:
    calls: list[tuple[int, Box]] = []

    class Spy(VipsEngine):
        def load_region(self, reader: ByteReader, info: ImageInfo, level: int, box: Box) -> Any:
            calls.append((level, box))
            return super().load_region(reader, info, level, box)

    reader = reader_for(sources.jp2)
    info = describe(reader)
    run_pipeline(Spy(), reader, info, Plan(Box(0, 0, 600, 400), 150, 100))
    run_pipeline(Spy(), reader, info, Plan(Box(256, 128, 256, 256), 64, 64))
    run_pipeline(Spy(), reader, info, Plan(Box(256, 128, 256, 256), 65, 64))
    assert calls == [
        (2, Box(0, 0, 150, 100)),
        (2, Box(64, 32, 64, 64)),
        (1, Box(128, 64, 128, 128)),
    ]


def test_icc_profile_is_applied_and_dropped(
    sources: SourceSet, render: Callable[[Path, Plan], bytes]
) -> None:
    plan = Plan(Box(0, 0, 600, 400), 300, 200, format=OutputFormat.PNG)
    with_icc = decode(render(sources.icc_jpeg, plan))
    assert with_icc.get_typeof("icc-profile-data") == 0
    # The embedded profile is sRGB itself, so colours barely move.
    assert mean_abs_diff(with_icc, expected_render(sources.icc_jpeg, plan)) <= TOLERANCE


def test_grey_and_16_bit_sources(
    sources: SourceSet, render: Callable[[Path, Plan], bytes], tmp_path: Path
) -> None:
    grey = decode(render(sources.grey_png, Plan(Box(0, 0, 600, 400), 60, 40)))
    assert grey.bands == 1  # a grey source stays grey in colour quality
    deep = tmp_path / "deep.png"
    rgb16 = (pyvips.Image.new_from_file(str(sources.png)) * 257).cast("ushort")
    rgb16.copy(interpretation="rgb16").pngsave(str(deep))
    plan = Plan(Box(0, 0, 600, 400), 300, 200, format=OutputFormat.PNG)
    out = decode(render(deep, plan))
    assert (out.format, out.bands) == ("uchar", 3)
    assert mean_abs_diff(out, expected_render(sources.png, plan)) <= 1.0


def test_alpha_source_to_jpeg_is_flattened_on_white(
    sources: SourceSet, render: Callable[[Path, Plan], bytes]
) -> None:
    out = decode(render(sources.rgba_png, Plan(Box(0, 0, 600, 400), 300, 200)))
    assert out.bands == 3
    plan = Plan(Box(0, 0, 600, 400), 300, 200, format=OutputFormat.JPEG)
    assert mean_abs_diff(out, expected_render(sources.rgba_png, plan)) <= TOLERANCE + 3
    kept = decode(
        render(sources.rgba_png, Plan(Box(0, 0, 600, 400), 300, 200, format=OutputFormat.PNG))
    )
    assert kept.bands == 4


@pytest.mark.parametrize(
    "plan",
    [
        Plan(Box(0, 0, 601, 400), 10, 10),
        Plan(Box(-1, 0, 10, 10), 10, 10),
        Plan(Box(590, 390, 11, 10), 10, 10),
        Plan(Box(0, 0, 0, 10), 10, 10),
        Plan(Box(0, 0, 10, 10), 0, 10),
        Plan(Box(0, 0, 10, 10), 10, 10, rotation=float("nan")),
        Plan(Box(0, 0, 10, 10), 10, 10, encode_quality=0),
    ],
)
def test_impossible_plans_raise_render_error(
    sources: SourceSet, render: Callable[[Path, Plan], bytes], plan: Plan
) -> None:
    with pytest.raises(RenderError):
        render(sources.png, plan)


# -- broken sources -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["jp2", "j2k", "pyramid_tiff", "bigtiff", "jpeg", "png"])
@pytest.mark.parametrize("keep", [0.0, 0.02, 0.5, 0.9])
@pytest.mark.parametrize("size", [(600, 400), (75, 50)])
def test_truncated_sources_fail_or_match(
    sources: SourceSet,
    render: Callable[[Path, Plan], bytes],
    tmp_path: Path,
    kind: str,
    keep: float,
    size: tuple[int, int],
) -> None:
    """A truncated file raises DecodeError (UnsupportedSource for zero bytes)
    unless every byte the render needs survived, and then the pixels are
    exactly those of the intact file: never silently grey or black."""
    intact = getattr(sources, kind)
    data = intact.read_bytes()
    path = tmp_path / "broken"
    path.write_bytes(data[: int(len(data) * keep)])
    plan = Plan(Box(0, 0, 600, 400), size[0], size[1], format=OutputFormat.PNG)
    if keep <= 0.5:
        with pytest.raises(DecodeError):
            render(path, plan)
        return
    try:
        out = render(path, plan)
    except DecodeError:
        return
    # Only a pyramid TIFF keeps its full-resolution page intact this way
    # (libvips writes it first); smaller pages lost, a bigger level is used.
    assert kind in ("pyramid_tiff", "bigtiff")
    assert mean_abs_diff(decode(out), decode(render(intact, plan))) <= TOLERANCE


def test_corrupt_jpeg_data(tmp_path: Path, describe: Describe, reader_for: ReaderFactory) -> None:
    path = make_jpeg(tmp_path / "src.jpg", 300, 200)
    data = bytearray(path.read_bytes())
    middle = len(data) // 3
    data[middle : middle + 2000] = bytes(range(256)) * 7 + bytes(208)
    path.write_bytes(bytes(data))
    reader = reader_for(path)
    info = describe(reader)
    plan = Plan(Box(0, 0, 300, 200), 300, 200)
    # libjpeg reports corrupt entropy-coded data only as a warning: the
    # default engine renders what it can (at the right size), a strict one
    # refuses.
    assert decode(run_pipeline(VipsEngine(), reader, info, plan)).width == 300
    with pytest.raises(DecodeError):
        run_pipeline(VipsEngine(fail_on="warning"), reader, info, plan)
    with pytest.raises(ValueError, match="fail_on"):
        VipsEngine(fail_on="none")
