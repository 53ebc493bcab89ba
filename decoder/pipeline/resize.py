"""Scale a decoded region to the exact output size."""

from __future__ import annotations

from decoder.engines.base import VipsImage
from decoder.plan import Plan


def max_alpha(image: VipsImage) -> int:
    """The opaque alpha value for the image's band format (65535 for 16-bit
    images, else 255)."""
    return 65535 if image.format in ("ushort", "short") else 255


def resize(image: VipsImage, plan: Plan) -> VipsImage:
    """Scale `image` to exactly `plan.width` x `plan.height` pixels.

    The axes scale independently (distortion allowed) and upscaling is
    allowed. Alpha is premultiplied around the resampling so transparent
    pixels do not bleed dark fringes. Lazy; raises pyvips.Error only when
    evaluated.
    """
    width, height = plan.width, plan.height
    if (image.width, image.height) == (width, height):
        return image
    hscale, vscale = width / image.width, height / image.height
    if image.hasalpha():
        fmt, alpha = image.format, max_alpha(image)
        out = image.premultiply(max_alpha=alpha).resize(hscale, vscale=vscale, kernel="lanczos3")
        out = out.unpremultiply(max_alpha=alpha).cast(fmt)
    else:
        out = image.resize(hscale, vscale=vscale, kernel="lanczos3")
    if (out.width, out.height) != (width, height):
        # libvips rounds the scaled size itself and can miss by a pixel: crop
        # the excess, replicate the edge for any shortfall.
        out = out.crop(0, 0, min(width, out.width), min(height, out.height))
        if (out.width, out.height) != (width, height):
            out = out.embed(0, 0, width, height, extend="copy")
    return out
