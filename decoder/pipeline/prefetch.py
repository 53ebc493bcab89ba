"""Announce to a remote reader the data a decode is about to read.

Readers of remote objects (decoder.sources.readahead.BlockReader) accept a
``will_need(ranges)`` hint and know the object's layout once it is indexed;
local readers have neither and are left alone. Announcing the tiles of the
region before the codec starts turns one round trip per tile, as the codec
reads them one by one, into a few parallel GETs.
"""

from __future__ import annotations

from decoder.engines.base import ImageInfo, SourceFormat
from decoder.engines.openjpeg import reference_area
from decoder.plan import Box
from decoder.sources.base import ByteReader
from decoder.sources.layout import Jp2Layout, Range, TiffLayout, jp2_ranges, tiff_ranges


def announce(reader: ByteReader, info: ImageInfo, level: int, box: Box) -> None:
    """Hint `reader` with the data ranges decoding `box` (pixels of
    `info.levels[level]`) needs, when it takes hints and knows its layout.
    Never raises for a mismatch: a missed hint only costs round trips."""
    will_need = getattr(reader, "will_need", None)
    layout = getattr(getattr(reader, "index", None), "layout", None)
    if will_need is None or layout is None or not 0 <= level < len(info.levels):
        return
    ranges = needed_ranges(layout, info, level, box)
    if ranges:
        will_need(ranges)


def needed_ranges(
    layout: Jp2Layout | TiffLayout, info: ImageInfo, level: int, box: Box
) -> list[Range]:
    """The data ranges `box` of `info.levels[level]` touches in `layout`;
    empty when the layout does not match the description."""
    lvl = info.levels[level]
    if isinstance(layout, Jp2Layout) and info.format is SourceFormat.JPEG2000:
        h = layout.header
        # JPEG 2000 levels are reductions: the window the engine decodes.
        window, _left, _top = reference_area((h.x0, h.y0, h.x1, h.y1), level, box, (1, 1))
        return jp2_ranges(layout, *window)
    if isinstance(layout, TiffLayout) and info.format is SourceFormat.TIFF:
        if not 0 <= lvl.page < len(layout.pages):
            return []
        subifds = layout.subifds[lvl.page]
        if lvl.subifd >= len(subifds):
            return []
        directory = layout.pages[lvl.page] if lvl.subifd < 0 else subifds[lvl.subifd]
        if (directory.width, directory.height) != (lvl.width, lvl.height):
            return []
        return tiff_ranges(directory, box.x, box.y, box.right, box.bottom)
    return []
