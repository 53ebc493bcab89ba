"""Encode the finished image into the requested output format."""

from __future__ import annotations

from decoder.engines.base import VipsImage
from decoder.plan import ALPHA_FORMATS, OutputFormat, Plan, Quality


def encode(image: VipsImage, plan: Plan) -> bytes:
    """Encode an 8-bit image as `plan.format`; returns the file's bytes.

    Metadata is stripped. JPEG uses Q=`plan.encode_quality` and is
    progressive (interlaced) when `plan.progressive`; WebP and JPEG 2000 are
    lossy at Q; TIFF is deflate-compressed; PNG and TIFF are lossless.
    Formats without alpha (JPEG, JPEG 2000) get alpha flattened onto white.
    Raises pyvips.Error if libvips fails (typically while decoding the
    source, since encoding evaluates the whole lazy pipeline).
    """
    fmt, q = plan.format, plan.encode_quality
    if fmt not in ALPHA_FORMATS and image.hasalpha():
        image = image.flatten(background=[255])
    if fmt is OutputFormat.JPEG:
        data = image.jpegsave_buffer(Q=q, strip=True, interlace=plan.progressive)
    elif fmt is OutputFormat.PNG:
        one_bit = plan.quality is Quality.BITONAL and image.bands == 1
        data = image.pngsave_buffer(strip=True, compression=6, bitdepth=1 if one_bit else 8)
    elif fmt is OutputFormat.WEBP:
        data = image.webpsave_buffer(Q=q, strip=True)
    elif fmt is OutputFormat.TIFF:
        data = image.tiffsave_buffer(strip=True, compression="deflate", predictor="horizontal")
    elif fmt is OutputFormat.GIF:
        data = image.gifsave_buffer(strip=True)
    elif fmt is OutputFormat.JP2:
        data = image.jp2ksave_buffer(Q=q, lossless=False, strip=True)
    else:  # pragma: no cover - OutputFormat is exhaustive
        raise ValueError(f"unknown output format {fmt}")
    return bytes(data)
