"""Join stored JPEG tiles into one JPEG without decoding them (see jpeg_mosaic.c).

The C module is built at install time (``python -m decoder.native.build``);
where it is missing, :func:`available` is False and callers decode instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

try:
    from decoder.native._jpeg_mosaic import ffi as _ffi
    from decoder.native._jpeg_mosaic import lib as _lib
except ImportError:  # not built: the decoded path serves every request
    _ffi = _lib = None

_MESSAGE_BYTES = 200


class MosaicError(Exception):
    """The tiles cannot be joined as asked (they differ, the box is not
    MCU-aligned or leaves the tiles, or a tile is not a valid baseline JPEG)."""


class OffMcuGrid(MosaicError):
    """Only the box's origin is off the tiles' MCU grid (16 px for 4:2:0
    chroma): a request of another shape, not a problem with the tiles."""


def available() -> bool:
    """Whether the native module was built and loaded."""
    return _lib is not None


def mosaic(
    tiles: Sequence[bytes],
    columns: int,
    rows: int,
    box: tuple[int, int, int, int],
    optimize: bool = False,
) -> bytes:
    """One baseline JPEG of `box` (x, y, width, height in the mosaic's
    pixels) from `columns` x `rows` JPEG tiles given row by row, all of one
    size, quantisation tables and sampling: their DCT coefficients copied,
    never decoded or quantised again. `optimize` computes Huffman tables for
    this image (smaller output, one more pass).

    Runs without the GIL. Raises MosaicError, or RuntimeError when the
    module was not built.
    """
    if _lib is None or _ffi is None:
        raise RuntimeError("decoder.native._jpeg_mosaic is not built")
    if len(tiles) != columns * rows:
        raise MosaicError(f"{len(tiles)} tiles for a {columns}x{rows} grid")
    x, y, width, height = box
    buffers: list[Any] = [_ffi.from_buffer(tile) for tile in tiles]
    pointers = _ffi.new("const unsigned char *[]", buffers)
    sizes = _ffi.new("size_t[]", [len(tile) for tile in tiles])
    out = _ffi.new("unsigned char **")
    out_size = _ffi.new("unsigned long *")
    message = _ffi.new("char[]", _MESSAGE_BYTES)
    status = _lib.iiif_jpeg_mosaic(
        pointers, sizes, columns, rows, x, y, width, height, int(optimize),
        out, out_size, message, _MESSAGE_BYTES,
    )  # fmt: skip
    if status != 0:
        error = OffMcuGrid if status == -2 else MosaicError
        raise error(_ffi.string(message).decode("utf-8", "replace"))
    try:
        return bytes(_ffi.buffer(out[0], out_size[0]))
    finally:
        _lib.iiif_jpeg_free(out[0])
