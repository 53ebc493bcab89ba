"""How much memory one render may need, estimated before any pixel is decoded.

Pure: from the image's description, the plan and the object's size. The
estimate errs high; admission control (decoder/admission.py) weighs requests
with it so a few huge renders cannot starve tiles or exhaust the process.
"""

from __future__ import annotations

import math

from decoder.engines.base import ImageInfo, SourceFormat
from decoder.pipeline.load import choose_level, decode_block, level_box
from decoder.plan import Plan

# Codec working buffers per decoded sample: OpenJPEG decodes into int32 planes;
# the others decode 8-bit samples straight into libvips' buffers.
_DECODE_BYTES_PER_SAMPLE = {SourceFormat.JPEG2000: 4}
# Untiled JPEG and PNG are decoded whole at the chosen scale (no random access).
_WHOLE_LEVEL = frozenset({SourceFormat.JPEG, SourceFormat.PNG})
# Fixed per-render overhead: libvips regions, thread buffers, encoder state.
BASE_BYTES = 4 * 1024 * 1024


def _tiled_span(start: int, length: int, tile: int) -> int:
    """Pixels covered by the whole tiles that `start..start+length` touches."""
    if tile <= 0:
        return length
    first = start // tile
    last = (start + length - 1) // tile
    return (last - first + 1) * tile


def estimate_render_bytes(info: ImageInfo, plan: Plan, object_size: int) -> int:
    """Peak bytes a render of `plan` may hold: decoded source pixels at the
    chosen level (whole tiles, the aligned block a small JPEG 2000 region is
    decoded in, or the whole level for formats without random access), the
    source bytes a codec copies (OpenJPEG keeps the codestream it reads: the
    whole object for an untiled JPEG2000), the resized and rotated output,
    and the encoded result.
    """
    level_index = choose_level(info, plan.region, plan.width, plan.height)
    level = info.levels[level_index]
    box = level_box(info, level_index, plan.region)
    bands = max(1, info.bands)
    sample = max(1, info.bits_per_sample // 8)
    block = decode_block(info, level_index, box)
    if info.format in _WHOLE_LEVEL:
        decoded_px = level.width * level.height
    elif block is not None:
        decoded_px = block.width * block.height
    else:
        decoded_px = _tiled_span(box.x, box.width, level.tile_width) * _tiled_span(
            box.y, box.height, level.tile_height
        )
    decode_bytes = decoded_px * bands * _DECODE_BYTES_PER_SAMPLE.get(info.format, sample)

    held_source = 0
    if info.format is SourceFormat.JPEG2000:
        tiles_total = _tile_count(info.width, info.height, info.tile_width, info.tile_height)
        if tiles_total <= 1:
            held_source = object_size
        else:
            touched = _tile_count(
                _tiled_span(plan.region.x, plan.region.width, info.tile_width),
                _tiled_span(plan.region.y, plan.region.height, info.tile_height),
                info.tile_width,
                info.tile_height,
            )
            held_source = object_size * touched // tiles_total

    # Rotation by a non-right angle grows the canvas to the bounding box.
    radians = math.radians(plan.rotation % 90)
    grow = (math.cos(radians) + math.sin(radians)) ** 2
    out_px = plan.width * plan.height
    out_bands = bands + 1  # room for an alpha band added by rotation
    # Resized image, rotated image, and the encoded copy (bounded by raw size).
    output_bytes = int(out_px * out_bands * (1 + grow) + out_px * out_bands)
    return BASE_BYTES + decode_bytes + held_source + output_bytes


def _tile_count(width: int, height: int, tile_w: int, tile_h: int) -> int:
    if tile_w <= 0 or tile_h <= 0:
        return 1
    return max(1, -(-width // tile_w)) * max(1, -(-height // tile_h))
