"""The engine interface: one small contract per source format.

An engine describes an encoded image (size, resolution levels, tiles) and
decodes one rectangle of one level. Swapping in a faster decoder for one
format (e.g. direct OpenJPEG for JPEG 2000) means writing one more Engine and
registering it for that format; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from decoder.plan import Box
from decoder.sources.base import ByteReader

# pyvips ships no type information: images cross this boundary as Any.
VipsImage = Any


class SourceFormat(StrEnum):
    """Encoded formats we can read, identified by content (see sniff)."""

    JPEG2000 = "jpeg2000"
    TIFF = "tiff"
    JPEG = "jpeg"
    PNG = "png"


@dataclass(frozen=True, slots=True)
class Level:
    """One resolution level: its size in pixels, its integer downscale from
    full resolution, its native tile size in this level's pixels (0 x 0 when
    the level is not tiled), and where a TIFF stores it (main-chain page and
    SubIFD index, -1 for none), so decoding never re-reads the directories."""

    width: int
    height: int
    downscale: int
    tile_width: int
    tile_height: int
    # Where, not what: two levels of the same geometry are the same level.
    page: int = field(default=0, compare=False)
    subifd: int = field(default=-1, compare=False)


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """What an encoded image holds.

    `levels` runs largest first; `levels[0]` is full resolution (downscale 1).
    `bits_per_sample` is per band (8, 16, 32 or 64).
    """

    width: int
    height: int
    levels: tuple[Level, ...]
    bands: int
    bits_per_sample: int
    format: SourceFormat
    has_icc: bool

    @property
    def tile_width(self) -> int:
        """Native tile width at full resolution in pixels (0 = untiled)."""
        return self.levels[0].tile_width

    @property
    def tile_height(self) -> int:
        """Native tile height at full resolution in pixels (0 = untiled)."""
        return self.levels[0].tile_height


class DecodeError(Exception):
    """The source is corrupt, truncated or otherwise unreadable."""


class UnsupportedSource(DecodeError):
    """The source is not in a format we read."""


class RenderError(Exception):
    """The plan cannot be carried out on this image (e.g. the region lies
    outside it, or a size is below one pixel)."""


class Engine(Protocol):
    """Decodes the formats in `formats`. Implementations are called from
    several worker threads at once and must be thread-safe."""

    @property
    def formats(self) -> frozenset[SourceFormat]:
        """The source formats this engine reads."""
        ...

    def describe(self, reader: ByteReader, fmt: SourceFormat) -> ImageInfo:
        """Read the image's structure (reading headers only where possible).

        Raises DecodeError (or UnsupportedSource) when the bytes are not a
        readable image of format `fmt`.
        """
        ...

    def load_region(self, reader: ByteReader, info: ImageInfo, level: int, box: Box) -> VipsImage:
        """Decode `box` (in pixels of `info.levels[level]`) from that level.

        The result may be lazily evaluated: pixel errors can surface when it
        is computed. Raises RenderError when `level` or `box` is out of range
        and DecodeError when the source cannot be decoded.
        """
        ...


@runtime_checkable
class BlockEngine(Protocol):
    """An engine that decodes the aligned blocks small regions are cached as
    (decoder/pipeline/load.py) faster when it knows which image, by
    identifier and version, each belongs to (e.g. by keeping a codec)."""

    def load_block(
        self, reader: ByteReader, info: ImageInfo, level: int, box: Box, image_key: Hashable
    ) -> VipsImage:
        """As Engine.load_region, for a block of the image `image_key`."""
        ...


def checked_level(info: ImageInfo, level: int, box: Box) -> Level:
    """`info.levels[level]`, once `box` (that level's pixels) is known to be
    non-empty and inside it; raises RenderError otherwise. Every engine's
    load_region starts here."""
    if not 0 <= level < len(info.levels):
        raise RenderError(f"level {level} out of range")
    lvl = info.levels[level]
    if (
        box.width < 1
        or box.height < 1
        or box.x < 0
        or box.y < 0
        or box.right > lvl.width
        or box.bottom > lvl.height
    ):
        raise RenderError(f"box {box} outside level {level} ({lvl.width}x{lvl.height})")
    return lvl
