"""Viewer-like IIIF request lists, for Image API 3.0 and 2.1 (pure: no I/O).

What a library's viewers ask of an image server, per image type:

* ``tiles``: a deep-zoom session as OpenSeadragon makes it, with 256 and with
  512 px tiles. At each scale factor, from the one where the image fits one
  tile down to 1: the whole tile grid while the level fits the viewport, then
  the tiles under the viewport as the user zooms in towards one point;
* ``thumbs``: ``/full/!200,200/0/default.jpg`` of the master and of every
  mid-size image (search results, manifests' thumbnails);
* ``full``: ``/full/max/0/default.jpg`` of every mid-size image (downloads,
  simple viewers);
* ``info``: ``info.json`` of all of them.

Lists are replayed in order, so with at least as many distinct URLs as
connections, requests in flight at the same time are all different: a
server that shares identical renders in flight (ours does) then gains
nothing from it, and rates measure decoding, not sharing.

Every request carries its source region and output size too, so the codec
floor can decode exactly the same pixels without HTTP.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

TILE_SIZES: Final = (256, 512)
# A laptop browser window's image area, in CSS pixels.
VIEWPORT: Final = (1280, 960)
# Where the user zooms in, as fractions of width and height: off-centre so
# that partial edge tiles and unaligned rows both occur.
FOCUS: Final = (0.41, 0.57)
THUMB_BOX: Final = 200


class RequestKind(StrEnum):
    """The request types reported separately."""

    TILES = "tiles"
    THUMBS = "thumbs"
    FULL = "full"
    INFO = "info"


@dataclass(frozen=True)
class Region:
    """A rectangle of the full-resolution image."""

    x: int
    y: int
    w: int
    h: int


@dataclass(frozen=True)
class Source:
    """An image the workload is made for: identifier and full size."""

    identifier: str
    width: int
    height: int


@dataclass(frozen=True)
class ImageRequest:
    """One request: its paths for both API versions and what it decodes.

    `v3` and `v2` are the paths after ``/iiif/3/`` and ``/iiif/2/``; `region`
    and `size` (output pixels) are None for info.json.
    """

    kind: RequestKind
    source: Source
    v3: str
    v2: str
    region: Region | None = None
    size: tuple[int, int] | None = None

    def path(self, api: int) -> str:
        """The path after the API prefix for Image API `api` (2 or 3)."""
        if api == 3:
            return self.v3
        if api == 2:
            return self.v2
        raise ValueError(f"no Image API {api}")


def _image_request(
    kind: RequestKind, source: Source, region: Region, size: tuple[int, int], full: bool
) -> ImageRequest:
    w, h = size
    region_part = "full" if full else f"{region.x},{region.y},{region.w},{region.h}"
    # OpenSeadragon asks 3.0 servers for "w,h" and 2.x servers for "w,"; "max"
    # when the whole image at full size is wanted.
    whole = full and (w, h) == (source.width, source.height)
    v3_size = "max" if whole else f"{w},{h}"
    v2_size = "max" if whole else f"{w},"
    tail = "0/default.jpg"
    return ImageRequest(
        kind,
        source,
        v3=f"{source.identifier}/{region_part}/{v3_size}/{tail}",
        v2=f"{source.identifier}/{region_part}/{v2_size}/{tail}",
        region=region,
        size=size,
    )


def top_scale_exponent(width: int, height: int, tile: int) -> int:
    """The smallest k such that the image at scale factor 2^k fits one tile."""
    k = 0
    while math.ceil(width / 2**k) > tile or math.ceil(height / 2**k) > tile:
        k += 1
    return k


def _window(level_size: int, view: int, focus: float) -> tuple[int, int]:
    # The viewport's span on one axis of a level, centred on the focus point
    # and kept inside the level.
    if level_size <= view:
        return 0, level_size
    start = round(level_size * focus - view / 2)
    start = min(max(0, start), level_size - view)
    return start, start + view


def deep_zoom_session(
    source: Source,
    tile_sizes: Sequence[int] = TILE_SIZES,
    viewport: tuple[int, int] = VIEWPORT,
    focus: tuple[float, float] = FOCUS,
) -> list[ImageRequest]:
    """Tile requests of an OpenSeadragon session zooming into `focus`."""
    requests: list[ImageRequest] = []
    for tile in tile_sizes:
        top = top_scale_exponent(source.width, source.height, tile)
        for k in range(top, -1, -1):
            scale = 2**k
            lw, lh = math.ceil(source.width / scale), math.ceil(source.height / scale)
            x0, x1 = _window(lw, viewport[0], focus[0])
            y0, y1 = _window(lh, viewport[1], focus[1])
            for row in range(y0 // tile, (y1 - 1) // tile + 1):
                for col in range(x0 // tile, (x1 - 1) // tile + 1):
                    x, y = col * tile * scale, row * tile * scale
                    region = Region(
                        x,
                        y,
                        min(tile * scale, source.width - x),
                        min(tile * scale, source.height - y),
                    )
                    size = (math.ceil(region.w / scale), math.ceil(region.h / scale))
                    # The single top tile is asked for as region "full", as OpenSeadragon does.
                    full = k == top
                    requests.append(_image_request(RequestKind.TILES, source, region, size, full))
    return requests


def fit(width: int, height: int, box: int) -> tuple[int, int]:
    """The size of a `width` x `height` image scaled to fit `box` x `box` (``!box,box``)."""
    scale = min(box / width, box / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def thumbnail(source: Source, box: int = THUMB_BOX) -> ImageRequest:
    """``/full/!box,box/0/default.jpg``: the whole image, fitted into a square."""
    size = fit(source.width, source.height, box)
    path = f"{source.identifier}/full/!{box},{box}/0/default.jpg"
    region = Region(0, 0, source.width, source.height)
    return ImageRequest(RequestKind.THUMBS, source, v3=path, v2=path, region=region, size=size)


def full_max(source: Source) -> ImageRequest:
    """``/full/max/0/default.jpg``: the whole image at full size."""
    region = Region(0, 0, source.width, source.height)
    return _image_request(
        RequestKind.FULL, source, region, (source.width, source.height), full=True
    )


def info(source: Source) -> ImageRequest:
    """The image's info.json."""
    path = f"{source.identifier}/info.json"
    return ImageRequest(RequestKind.INFO, source, v3=path, v2=path)


def _spread(items: list[ImageRequest], limit: int | None) -> list[ImageRequest]:
    # A bounded workload keeps requests from every level, not just the first ones.
    if limit is None or len(items) <= limit:
        return items
    step = len(items) / limit
    return [items[int(i * step)] for i in range(limit)]


def tile_list(source: Source, limit: int | None = None) -> list[ImageRequest]:
    """The `tiles` list of one image: its deep-zoom session, capped as in `build_workload`."""
    return _spread(deep_zoom_session(source), limit)


def build_workload(
    master: Source, mids: Sequence[Source], limit: int | None = None
) -> dict[RequestKind, list[ImageRequest]]:
    """Every request list for one image type (its master and mid-size images).

    `limit` caps each list (smoke runs), keeping requests spread over the list.
    """
    lists = {
        RequestKind.TILES: deep_zoom_session(master),
        RequestKind.THUMBS: [thumbnail(master)] + [thumbnail(mid) for mid in mids],
        RequestKind.FULL: [full_max(mid) for mid in mids],
        RequestKind.INFO: [info(master)] + [info(mid) for mid in mids],
    }
    return {kind: _spread(items, limit) for kind, items in lists.items()}


def urls(requests: Iterable[ImageRequest], prefix: str, api: int) -> list[str]:
    """Request targets (path and query) for a server whose API root is `prefix`.

    `prefix` is e.g. ``/iiif/3/`` for us or ``/fcgi-bin/iipsrv.fcgi?IIIF=`` for IIPImage.
    """
    return [prefix + request.path(api) for request in requests]
