"""The render pipeline: decode a region at a level, resize, mirror/rotate,
apply quality, encode. Synchronous and thread-safe: runs in worker threads.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import pyvips

from decoder.engines.base import DecodeError, Engine, ImageInfo, RenderError, VipsImage
from decoder.engines.vips import vips_error_message
from decoder.pipeline.encode import encode
from decoder.pipeline.load import choose_level, level_box, load_region
from decoder.pipeline.mosaic import try_mosaic
from decoder.pipeline.passthrough import try_passthrough
from decoder.pipeline.quality import apply_quality
from decoder.pipeline.resize import resize
from decoder.pipeline.rotate import mirror_rotate, rotated_size
from decoder.plan import Plan
from decoder.sources.base import ByteReader, SourceError

Step = Callable[[VipsImage, Plan], VipsImage]

# The steps between decoding and encoding, in order. Each returns its input
# unchanged when it has nothing to do.
STEPS: tuple[Step, ...] = (resize, mirror_rotate, apply_quality)


def validate_plan(info: ImageInfo, plan: Plan) -> None:
    """Check that `plan` can be rendered from an image described by `info`.

    Raises RenderError if the region is empty or not inside the image, the
    output size is below 1 x 1, the rotation is not finite or the encode
    quality is outside 1-100.
    """
    r = plan.region
    if r.width < 1 or r.height < 1:
        raise RenderError("region is empty")
    if r.x < 0 or r.y < 0 or r.right > info.width or r.bottom > info.height:
        raise RenderError(
            f"region {r.x},{r.y},{r.width},{r.height} is outside the "
            f"{info.width}x{info.height} image"
        )
    if plan.width < 1 or plan.height < 1:
        raise RenderError("output size is below one pixel")
    if not math.isfinite(plan.rotation):
        raise RenderError("rotation is not a finite number")
    if not 1 <= plan.encode_quality <= 100:
        raise RenderError("encode quality must be 1-100")


class Cancelled(Exception):
    """The render was abandoned (deadline passed or the caller went away)."""


def _abort_when(image: VipsImage, cancel: threading.Event) -> VipsImage:
    """Make libvips stop evaluating `image` soon after `cancel` is set.

    libvips computes lazily while encoding; its progress signal lets a
    callback set the kill flag, which ends the evaluation with an error.
    """
    image.set_progress(True)

    def on_eval(img: VipsImage, progress: object) -> None:
        if cancel.is_set():
            img.set_kill(True)

    image.signal_connect("eval", on_eval)
    return image


def run_pipeline(
    engine: Engine,
    reader: ByteReader,
    info: ImageInfo,
    plan: Plan,
    cancel: threading.Event | None = None,
    cache_key: tuple[str, str] | None = None,
) -> bytes:
    """Render `plan` from the image behind `reader` (described by `info`);
    return the encoded bytes (content type `plan.content_type`).

    `cache_key` is the source's (key, version). With it, a plan that is
    exactly one stored JPEG tile is answered with that tile's bytes (see
    passthrough.py), a box of stored tiles at their own scale with one JPEG
    joined from them (see mosaic.py), and small levels are decoded once into
    the level cache (see decoder/levelcache.py); without it, every render
    decodes.

    Raises RenderError for a plan that does not fit the image and
    DecodeError when the source cannot be decoded, Cancelled soon after
    `cancel` is set. Any libvips failure after
    the plan was validated is attributed to the source and raised as
    DecodeError: decoding is lazy, so corrupt pixel data only shows up while
    encoding.
    """
    validate_plan(info, plan)
    if (data := try_passthrough(reader, info, plan, cache_key)) is not None:
        return data
    if (data := try_mosaic(reader, info, plan, cache_key)) is not None:
        return data
    try:
        image = load_region(engine, reader, info, plan, cache_key)
        for step in STEPS:
            if cancel is not None and cancel.is_set():
                raise Cancelled("render cancelled")
            image = step(image, plan)
        if cancel is not None:
            image = _abort_when(image, cancel)
        data = encode(image, plan)
    except (pyvips.Error, DecodeError) as exc:
        if cancel is not None and cancel.is_set():
            raise Cancelled("render cancelled") from exc
        # A failed read inside the codec looks like a corrupt file to it.
        if (failure := _read_failure(reader)) is not None:
            raise failure from exc
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError(vips_error_message(exc)) from exc
    if (failure := _read_failure(reader)) is not None:
        # Some loaders take a failed read for the end of a truncated file
        # and decode grey: never hand that out as the image.
        raise failure
    return data


def _read_failure(reader: ByteReader) -> SourceError | None:
    """The source error a read of `reader` raised, if it keeps one (remote
    readers do: decoder.sources.readahead.BlockReader.failure)."""
    failure = getattr(reader, "failure", None)
    return failure if isinstance(failure, SourceError) else None


__all__ = [
    "STEPS",
    "Cancelled",
    "Step",
    "apply_quality",
    "choose_level",
    "encode",
    "level_box",
    "load_region",
    "mirror_rotate",
    "resize",
    "rotated_size",
    "run_pipeline",
    "try_mosaic",
    "try_passthrough",
    "validate_plan",
]
