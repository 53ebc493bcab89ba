"""Mirror and rotate, as IIIF orders them: flip first, then turn clockwise."""

from __future__ import annotations

import math

from decoder.engines.base import VipsImage
from decoder.pipeline.resize import max_alpha
from decoder.plan import ALPHA_FORMATS, Plan


def normalise_degrees(degrees: float) -> float:
    """`degrees` reduced to [0, 360)."""
    return degrees % 360.0


def rotated_size(width: int, height: int, degrees: float) -> tuple[int, int]:
    """The size in pixels of a `width` x `height` image after rotating it by
    `degrees`: the bounding box of the turned rectangle, rounded to the
    nearest pixel (as libvips rounds it), at least 1 x 1."""
    d = normalise_degrees(degrees)
    if d % 90 == 0:
        return (width, height) if d % 180 == 0 else (height, width)
    c, s = abs(math.cos(math.radians(d))), abs(math.sin(math.radians(d)))
    w = math.floor(width * c + height * s + 0.5)
    h = math.floor(width * s + height * c + 0.5)
    return max(1, w), max(1, h)


def mirror_rotate(image: VipsImage, plan: Plan) -> VipsImage:
    """Flip horizontally if `plan.mirror`, then rotate clockwise by
    `plan.rotation` degrees.

    Multiples of 90 are exact pixel moves. Other angles enlarge the image to
    `rotated_size()`; the uncovered corners are transparent when the output
    format carries alpha (an alpha band is added) and white otherwise.
    Lazy; raises pyvips.Error only when evaluated.
    """
    if plan.mirror:
        image = image.flip("horizontal")
    degrees = normalise_degrees(plan.rotation)
    if degrees == 0:
        return image
    if degrees % 90 == 0:
        return image.rot(f"d{int(degrees)}")
    target = rotated_size(image.width, image.height, degrees)
    opaque = max_alpha(image)
    if plan.format in ALPHA_FORMATS:
        if not image.hasalpha():
            image = image.bandjoin_const([opaque])
        fmt = image.format
        # Premultiplied, so edge pixels blend towards transparent rather than
        # towards transparent *black*.
        out = image.premultiply(max_alpha=opaque).rotate(degrees, background=[0] * image.bands)
        out = out.unpremultiply(max_alpha=opaque).cast(fmt)
        background = [0] * image.bands
    else:
        background = [opaque] * image.bands
        out = image.rotate(degrees, background=background)
    if (out.width, out.height) != target:
        out = out.gravity(
            "centre", target[0], target[1], extend="background", background=background
        )
    return out
