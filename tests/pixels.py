"""Comparing decoded images in tests: a strict JPEG decode and pixel
differences (pyvips images of equal size and bands)."""

from __future__ import annotations

from typing import Any

import pyvips


def load_strict(data: bytes) -> Any:
    """Decode a JPEG the strict way: jpegload fails on any libjpeg warning."""
    image = pyvips.Image.jpegload_buffer(data, fail=True)
    image.avg()  # force the decode
    return image


def abs_diff(a: Any, b: Any) -> Any:
    """|a - b| per pixel and band, as a float image."""
    assert (a.width, a.height, a.bands) == (b.width, b.height, b.bands)
    return (a.cast("float") - b.cast("float")).abs()


def max_abs_diff(a: Any, b: Any) -> float:
    return float(abs_diff(a, b).max())


def mean_abs_diff(a: Any, b: Any) -> float:
    return float(abs_diff(a, b).avg())
