"""Makers of small synthetic source images, shared by unit tests, integration
tests and `make run`'s sample images.

Every image shows the same deterministic pattern (see `pattern`), so a test
can compute the expected pixels of any render directly with pyvips.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyvips

VipsImage = Any  # pyvips is untyped


def pattern(width: int, height: int, bands: int = 3) -> VipsImage:
    """A deterministic 8-bit test pattern, `width` x `height` pixels.

    Red grows left to right, green top to bottom, blue is a 64-pixel
    checkerboard: smooth areas for resampling checks, sharp edges and no
    symmetry, so a wrong crop, mirror or rotation is obvious. `bands` is 1
    (grey), 2 (grey + alpha), 3 (sRGB) or 4 (sRGB + alpha, alpha a
    left-to-right ramp from 255 down to 64).
    """
    xy = pyvips.Image.xyz(width, height)
    x, y = xy[0], xy[1]
    red = x * (255.0 / max(1, width - 1))
    green = y * (255.0 / max(1, height - 1))
    checker = ((x / 64).floor() + (y / 64).floor()) % 2
    blue = checker * 160 + 48
    rgb = red.bandjoin([green, blue]).cast("uchar").copy(interpretation="srgb")
    alpha = (255 - x * (191.0 / max(1, width - 1))).cast("uchar")
    if bands == 3:
        return rgb
    if bands == 4:
        return rgb.bandjoin(alpha)
    grey = rgb.colourspace("b-w")
    if bands == 1:
        return grey
    if bands == 2:
        return grey.bandjoin(alpha)
    raise ValueError("bands must be 1, 2, 3 or 4")


def have_opj_compress() -> bool:
    """True when OpenJPEG's `opj_compress` tool is on PATH."""
    return shutil.which("opj_compress") is not None


def opj_compress(image: VipsImage, out: Path, *args: str) -> Path:
    """Encode `image` with opj_compress and its arguments `args` (PNM input
    for 1 and 3 bands), written to a temporary name and moved to `out`."""
    src = out.with_name(out.stem + ("_in.pgm" if image.bands == 1 else "_in.ppm"))
    image.write_to_file(str(src))
    tmp = out.with_name(out.stem + "_tmp" + out.suffix)
    subprocess.run(
        ["opj_compress", "-i", str(src), "-o", str(tmp), *args], check=True, capture_output=True
    )
    shutil.move(tmp, out)
    return out


def make_tiled_jp2(
    path: Path,
    width: int,
    height: int,
    tile: int = 256,
    resolutions: int = 5,
    lossless: bool = False,
    bands: int = 3,
    image: VipsImage | None = None,
) -> Path:
    """Write a tiled JPEG 2000 file: `tile` x `tile` tiles, `resolutions`
    resolution levels (decompositions + 1).

    A `.j2k`/`.j2c` path gets a raw codestream, anything else a JP2 file.
    Uses `opj_compress` (exact control of tiles and resolutions, lossy at
    about 2 bits per pixel unless `lossless`); without it, falls back to
    libvips' jp2ksave, which picks the number of resolutions itself.
    `image` (8-bit) replaces the pattern if given.
    """
    source = pattern(width, height, bands) if image is None else image
    raw = path.suffix.lower() in (".j2k", ".j2c")
    if not have_opj_compress():
        if raw:
            raise RuntimeError("raw J2K codestreams need opj_compress")
        source.jp2ksave(str(path), tile_width=tile, tile_height=tile, lossless=lossless, Q=90)
        return path
    with tempfile.TemporaryDirectory() as tmp:
        # PNM for 1 and 3 bands (every opj_compress build reads it), PNG
        # for bands with alpha.
        suffix = {1: ".pgm", 3: ".ppm"}.get(source.bands, ".png")
        src = Path(tmp) / f"in{suffix}"
        source.write_to_file(str(src))
        out = Path(tmp) / ("out.j2k" if raw else "out.jp2")
        cmd = ["opj_compress", "-i", str(src), "-o", str(out)]
        cmd += ["-t", f"{tile},{tile}", "-n", str(resolutions)]
        if not lossless:
            bits = 8 * source.bands
            cmd += ["-I", "-r", str(max(1, bits // 2))]
        subprocess.run(cmd, check=True, capture_output=True)
        shutil.move(out, path)
    return path


def make_pyramid_tiff(
    path: Path,
    width: int,
    height: int,
    tile: int = 256,
    compression: str = "jpeg",
    bigtiff: bool = False,
    subifd: bool = False,
    bands: int = 3,
    image: VipsImage | None = None,
    quality: int = 90,
) -> Path:
    """Write a tiled pyramidal TIFF: each page (or, with `subifd`, each
    SubIFD of page 0) a half-size copy of the one before, down to one tile.

    `compression` is a libvips TIFF compression ("jpeg" at Q `quality`,
    "deflate", "none", ...); `bigtiff` writes BigTIFF. Below Q 90 libvips
    writes JPEG tiles as YCbCr with 4:2:0 chroma (16 px MCUs), from Q 90 as
    RGB without subsampling.
    """
    source = pattern(width, height, bands) if image is None else image
    source.tiffsave(
        str(path),
        tile=True,
        tile_width=tile,
        tile_height=tile,
        pyramid=True,
        subifd=subifd,
        bigtiff=bigtiff,
        compression=compression,
        Q=quality,
    )
    return path


def make_striped_tiff(
    path: Path, width: int, height: int, bands: int = 3, image: VipsImage | None = None
) -> Path:
    """Write a plain (striped, single-page, deflate) TIFF."""
    source = pattern(width, height, bands) if image is None else image
    source.tiffsave(str(path), compression="deflate")
    return path


def make_jpeg(
    path: Path,
    width: int,
    height: int,
    quality: int = 90,
    image: VipsImage | None = None,
    icc: bool = False,
) -> Path:
    """Write a baseline JPEG (alpha is flattened onto white). With `icc`,
    embed libvips' built-in sRGB profile."""
    source = pattern(width, height) if image is None else image
    if source.hasalpha():
        source = source.flatten(background=[255])
    if icc:
        source = source.icc_transform("srgb", input_profile="srgb", embedded=False)
    source.jpegsave(str(path), Q=quality, strip=not icc)
    return path


def make_png(
    path: Path, width: int, height: int, bands: int = 3, image: VipsImage | None = None
) -> Path:
    """Write a PNG with `bands` bands (4 = RGBA, see `pattern`)."""
    source = pattern(width, height, bands) if image is None else image
    source.pngsave(str(path), compression=1)
    return path


@dataclass(frozen=True)
class SourceSet:
    """One image of every kind the decoder reads, all showing `pattern`."""

    root: Path
    width: int
    height: int
    tile: int
    jp2_resolutions: int
    jp2: Path  # tiled JP2, lossless
    j2k: Path  # the same as a raw codestream
    pyramid_tiff: Path  # tiled pyramid, deflate
    bigtiff: Path  # tiled pyramid, BigTIFF, JPEG-compressed
    subifd_tiff: Path  # pyramid in the SubIFDs of page 0, deflate
    striped_tiff: Path  # one striped page
    jpeg: Path  # (width + 1) x (height + 1): odd sizes exercise level rounding
    icc_jpeg: Path  # with an embedded sRGB ICC profile
    png: Path
    rgba_png: Path
    grey_png: Path


def make_source_set(
    root: Path, width: int = 600, height: int = 400, tile: int = 128, jp2_resolutions: int = 4
) -> SourceSet:
    """Write one image of every supported kind into `root` (needs
    opj_compress for the JPEG 2000 files)."""
    root.mkdir(parents=True, exist_ok=True)
    w, h = width, height
    return SourceSet(
        root=root,
        width=w,
        height=h,
        tile=tile,
        jp2_resolutions=jp2_resolutions,
        jp2=make_tiled_jp2(
            root / "tiled.jp2", w, h, tile=tile, resolutions=jp2_resolutions, lossless=True
        ),
        j2k=make_tiled_jp2(
            root / "tiled.j2k", w, h, tile=tile, resolutions=jp2_resolutions, lossless=True
        ),
        pyramid_tiff=make_pyramid_tiff(
            root / "pyramid.tif", w, h, tile=tile, compression="deflate"
        ),
        bigtiff=make_pyramid_tiff(root / "big.tif", w, h, tile=tile, bigtiff=True),
        subifd_tiff=make_pyramid_tiff(
            root / "subifd.tif", w, h, tile=tile, subifd=True, compression="deflate"
        ),
        striped_tiff=make_striped_tiff(root / "striped.tif", w, h),
        jpeg=make_jpeg(root / "photo.jpg", w + 1, h + 1, quality=95),
        icc_jpeg=make_jpeg(root / "icc.jpg", w, h, icc=True),
        png=make_png(root / "plain.png", w, h),
        rgba_png=make_png(root / "rgba.png", w, h, bands=4),
        grey_png=make_png(root / "grey.png", w, h, bands=1),
    )
