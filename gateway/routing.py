"""Which decoder process a call should go to, for the decoders' caches (pure).

A decoder decodes a small JPEG 2000 region as the whole aligned block of
its level around it and keeps that block in its own memory (Describe's
``cache_block``). A viewer asks for the neighbouring tiles of that block at
nearly the same time; spread over several decoder processes, each would
decode the same block again. Renders of one block therefore carry an
affinity key, and a key goes to one decoder by rendezvous hashing: the same
decoder for every gateway, and when a decoder joins or leaves, only its own
share of the keys moves.

An image whose levels are stored as tiles (a pyramidal TIFF) is routed as a
whole instead: its Describe, its StoredTiles calls and its renders go to
one decoder, keyed by the identifier. Its calls are cheap (stored tiles are
sent as they are), so what each decoder process would pay again is the
image's setup: describing it, opening it, indexing its tiles, decoding its
small levels. Measured on first passes over a new TIFF (2 decoder workers,
2 cores; five series of alternating runs, medians of paired runs): CPU
per tile 0.84-1.00 of spreading the calls, tiles per second 0.91-1.18.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Protocol


class _Level(Protocol):
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...


def choose_level(
    levels: Sequence[_Level],
    width: int,
    height: int,
    region: tuple[int, int, int, int],
    out_width: int,
    out_height: int,
) -> int:
    """The index of the smallest level at which `region` (x, y, w, h in
    full-resolution pixels of a `width` x `height` image) still measures at
    least `out_width` x `out_height`: the level the decoder decodes from
    (decoder/pipeline/load.py chooses the same way)."""
    _, _, rw, rh = region
    chosen = 0
    for index, level in enumerate(levels):
        if rw * level.width >= out_width * width and rh * level.height >= out_height * height:
            chosen = index
        else:
            break
    return chosen


def block_of(
    levels: Sequence[_Level],
    width: int,
    height: int,
    block: int,
    region: tuple[int, int, int, int],
    out_width: int,
    out_height: int,
) -> tuple[int, int, int] | None:
    """(level, column, row) of the aligned `block` the decoder decodes
    `region` as, or None when it decodes the region by itself (no block
    cache, or a region larger than half a block or across a block edge)."""
    if block <= 0 or not levels or width <= 0 or height <= 0:
        return None
    index = choose_level(levels, width, height, region, out_width, out_height)
    x0, y0, w, h = level_box(levels[index], width, height, region)
    x1, y1 = x0 + w, y0 + h
    if w > block // 2 or h > block // 2:
        return None
    col, row = x0 // block, y0 // block
    if (x1 - 1) // block != col or (y1 - 1) // block != row:
        return None
    return index, col, row


def level_box(
    level: _Level, width: int, height: int, region: tuple[int, int, int, int]
) -> tuple[int, int, int, int]:
    """`region` (x, y, w, h in full-resolution pixels of a `width` x `height`
    image) in `level`'s pixels: origin floored, far edge ceiled, clipped to
    the level, at least 1 x 1 (decoder/pipeline/load.py's level_box)."""
    x, y, w, h = region
    x0, x1 = _span(x, x + w, level.width, width)
    y0, y1 = _span(y, y + h, level.height, height)
    return x0, y0, x1 - x0, y1 - y0


def _span(start: int, end: int, size: int, full: int) -> tuple[int, int]:
    lo = max(0, min(size - 1, start * size // full))
    hi = max(lo + 1, min(size, -(-end * size // full)))
    return lo, hi


def owner(key: Hashable, members: Iterable[str]) -> str | None:
    """The member `key` belongs to by rendezvous (highest random weight)
    hashing, or None when there is no member. Stable across processes."""
    best: tuple[int, str] | None = None
    for member in members:
        digest = hashlib.blake2b(f"{key!r}|{member}".encode(), digest_size=8).digest()
        weight = (int.from_bytes(digest, "big"), member)
        if best is None or weight > best:
            best = weight
    return None if best is None else best[1]


def choose_channel(
    members: Sequence[str],
    affinity: Hashable | None,
    turn: Callable[[], int],
    spread: Callable[[], int],
) -> int:
    """The index of the channel a call goes to. `members[i]` is the decoder
    process channel i last reached ("" when it has not answered yet);
    `turn` and `spread` are the caller's counters, drawn only when used (a
    turn taken by a keyed call would skew the shares of the others).

    A call with an `affinity` goes to the process that owns it (see `owner`),
    but only once every channel has answered: before that the owner among
    the processes known so far need not be the owner among all of them, and
    following it would keep every keyed call on the first process that
    answered (a gateway serving only TIFFs, whose calls are all keyed, would
    never learn where its other channels lead). Calls without one, and every
    call while some channel is unknown, take turns over the processes and
    the unknown channels, so each process gets an equal share however many
    channels reach it. Among a process's channels, `spread` picks. Pure
    but for the counters.
    """
    known = sorted({m for m in members if m})
    unknown = [i for i, m in enumerate(members) if not m]
    target = owner(affinity, known) if affinity is not None and not unknown else None
    if target is None:
        slot = turn() % (len(known) + len(unknown))
        if slot >= len(known):
            return unknown[slot - len(known)]
        target = known[slot]
    mine = [i for i, m in enumerate(members) if m == target]
    return mine[spread() % len(mine)]


def image_key(identifier: str) -> Hashable:
    """The affinity key of everything about one image routed as a whole."""
    return ("image", identifier)


class _TiledLevel(_Level, Protocol):
    @property
    def stored_tiles(self) -> bool: ...


def render_affinity(
    identifier: str,
    version: str,
    levels: Sequence[_TiledLevel],
    width: int,
    height: int,
    block: int,
    region: tuple[int, int, int, int],
    out_width: int,
    out_height: int,
) -> Hashable | None:
    """The affinity key of a render: its decoded block's (see block_of), the
    image's when the image has stored tiles (see image_key), else None
    (any decoder: the render owes nothing to one's caches)."""
    found = block_of(levels, width, height, block, region, out_width, out_height)
    if found is not None:
        return (identifier, version, *found)
    if any(level.stored_tiles for level in levels):
        return image_key(identifier)
    return None
