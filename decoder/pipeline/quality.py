"""Colour handling: everything leaves here as 8-bit sRGB, grey or bitonal."""

from __future__ import annotations

import pyvips

from decoder.engines.base import VipsImage
from decoder.plan import Plan, Quality

_GREY_INTERPRETATIONS = frozenset({"b-w", "grey16"})


def to_srgb(image: VipsImage) -> VipsImage:
    """8-bit sRGB (or 8-bit grey for grey sources) with no ICC profile left.

    An embedded ICC profile is applied and then dropped; an unusable profile
    is ignored rather than failing the request. CMYK, Lab, 16-bit and other
    colour spaces go through libvips' colourspace conversion. Alpha is kept
    (scaled to 8 bits). Lazy.
    """
    if image.get_typeof("icc-profile-data") != 0:
        try:
            converted = image.icc_transform("srgb", embedded=True, intent="relative", depth=8)
        except pyvips.Error:
            converted = None  # a broken profile: fall back to the plain conversion
        image = image.copy()
        image.remove("icc-profile-data")
        if converted is not None:
            converted = converted.copy()
            converted.remove("icc-profile-data")
            return _to_uchar(converted)
    if image.interpretation in _GREY_INTERPRETATIONS:
        return _to_uchar(image.colourspace("b-w"))
    if image.interpretation == "multiband" or image.bands < 3:
        # Unknown layouts: take the first band as grey, keeping a last alpha.
        grey = image[0].copy(interpretation="b-w" if image.format == "uchar" else "grey16")
        if image.hasalpha():
            grey = grey.bandjoin(image[image.bands - 1])
        return _to_uchar(grey.colourspace("b-w"))
    return _to_uchar(image.colourspace("srgb"))


def _to_uchar(image: VipsImage) -> VipsImage:
    if image.format == "uchar":
        return image
    if image.format in ("ushort", "short"):
        return (image >> 8).cast("uchar")
    return image.cast("uchar")


def apply_quality(image: VipsImage, plan: Plan) -> VipsImage:
    """Apply `plan.quality` and bring the image to 8 bits per band.

    color: sRGB (grey sources stay one band); gray: one luminance band;
    bitonal: one band of 0 or 255, thresholded at 128 on luminance. An alpha
    band, if present, is kept. Lazy.
    """
    image = to_srgb(image)
    if plan.quality is Quality.COLOR:
        return image
    grey = image.colourspace("b-w")
    if plan.quality is Quality.GRAY:
        return grey
    alpha = grey[1] if grey.hasalpha() else None
    bitonal = (grey[0] >= 128).copy(interpretation="b-w")
    return bitonal if alpha is None else bitonal.bandjoin(alpha)
