"""The gateway's render routing: the same block as the decoder, keys spread stably."""

from __future__ import annotations

import itertools
import math
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from decoder.engines.base import ImageInfo, Level, SourceFormat
from decoder.pipeline.load import JP2_BLOCK, cache_block, choose_level, decode_block, level_box
from decoder.plan import Box
from gateway.decoder_client import Level as DescribedLevel
from gateway.routing import block_of, choose_channel, image_key, owner, render_affinity


def _jp2_info(width: int, height: int, count: int, tile: int = 0) -> ImageInfo:
    """Untiled, or in `tile` px codestream tiles (ceil(tile / d) at level k)."""
    levels = tuple(
        Level(
            math.ceil(width / 2**k),
            math.ceil(height / 2**k),
            2**k,
            math.ceil(tile / 2**k),
            math.ceil(tile / 2**k),
        )
        for k in range(count)
    )
    return ImageInfo(width, height, levels, 3, 8, SourceFormat.JPEG2000, False)


@st.composite
def _requests(draw: st.DrawFn) -> tuple[ImageInfo, tuple[int, int, int, int], int, int]:
    width = draw(st.integers(1, 20_000))
    height = draw(st.integers(1, 20_000))
    tile = draw(st.sampled_from((0, 0, 256, 512, 1024, 2048)))
    info = _jp2_info(width, height, draw(st.integers(1, 8)), tile)
    x = draw(st.integers(0, width - 1))
    y = draw(st.integers(0, height - 1))
    w = draw(st.integers(1, width - x))
    h = draw(st.integers(1, height - y))
    # Output sizes around the region's size at some level, as viewers ask.
    scale = 2 ** draw(st.integers(0, 7))
    out_w = max(1, w // scale + draw(st.integers(-2, 2)))
    out_h = max(1, h // scale + draw(st.integers(-2, 2)))
    return info, (x, y, w, h), out_w, out_h


@settings(max_examples=400, deadline=None)
@given(_requests())
def test_the_gateway_names_the_block_the_decoder_decodes(
    request: tuple[ImageInfo, tuple[int, int, int, int], int, int],
) -> None:
    info, region, out_w, out_h = request
    level = choose_level(info, Box(*region), out_w, out_h)
    block = decode_block(info, level, level_box(info, level, Box(*region)))
    got = block_of(info.levels, info.width, info.height, JP2_BLOCK, region, out_w, out_h)
    if block is None:
        return  # the gateway may still route it by the square it lies in: harmless
    # The gateway's key is the aligned square of Describe's cache_block that
    # holds the decoder's block (a block is that size or half of it), so all
    # regions of one block go to one decoder process.
    assert block.width <= JP2_BLOCK
    assert got == (level, block.x // JP2_BLOCK, block.y // JP2_BLOCK)
    assert (block.right - 1) // JP2_BLOCK == got[1]
    assert (block.bottom - 1) // JP2_BLOCK == got[2]


def test_cache_block_is_announced_for_jpeg2000_only() -> None:
    info = _jp2_info(4000, 3000, 4)
    assert cache_block(info) == JP2_BLOCK
    tiff = ImageInfo(4000, 3000, info.levels, 3, 8, SourceFormat.TIFF, False)
    assert cache_block(tiff) == 0
    assert block_of(info.levels, 4000, 3000, 0, (0, 0, 256, 256), 256, 256) is None


def test_owner_is_stable_and_moves_only_the_keys_of_a_member_that_leaves() -> None:
    members = [f"decoder-{i}" for i in range(4)]
    keys = [("image", "v1", 0, col, row) for col in range(20) for row in range(20)]
    before = {key: owner(key, members) for key in keys}
    assert before == {key: owner(key, reversed(members)) for key in keys}, "order-independent"
    spread = Counter(before.values())
    assert set(spread) == set(members)
    assert min(spread.values()) > len(keys) / 8
    after = {key: owner(key, members[1:]) for key in keys}
    moved = {key for key in keys if after[key] != before[key]}
    assert moved == {key for key in keys if before[key] == "decoder-0"}
    assert owner(keys[0], []) is None


def test_renders_carry_their_block_else_their_image_when_it_has_stored_tiles() -> None:
    info = _jp2_info(4000, 3000, 4)
    jp2 = tuple(
        DescribedLevel(lv.width, lv.height, lv.downscale, lv.tile_width, lv.tile_height)
        for lv in info.levels
    )
    tile = (0, 0, 256, 256)
    # A small JPEG 2000 region: its block, by version.
    assert render_affinity("a", "v1", jp2, 4000, 3000, JP2_BLOCK, tile, 256, 256) == (
        "a",
        "v1",
        *block_of(jp2, 4000, 3000, JP2_BLOCK, tile, 256, 256),  # type: ignore[misc]
    )
    # A region too large for a block, of an image without stored tiles: anywhere.
    whole = (0, 0, 4000, 3000)
    assert render_affinity("a", "v1", jp2, 4000, 3000, JP2_BLOCK, whole, 2000, 1500) is None

    def levels(stored: bool) -> tuple[DescribedLevel, ...]:
        return tuple(
            DescribedLevel(4000 // 2**k, 3000 // 2**k, 2**k, 256, 256, stored) for k in range(4)
        )

    # A pyramidal TIFF (no blocks): with stored tiles, with its describes and
    # stored-tile calls; without (say LZW), anywhere, as processes pay there.
    assert render_affinity("t", "v1", levels(True), 4000, 3000, 0, whole, 400, 300) == image_key(
        "t"
    )
    assert render_affinity("t", "v1", levels(False), 4000, 3000, 0, whole, 400, 300) is None
    assert image_key("t") == image_key("t") != image_key("u")


def _picks(members: list[str], affinities: list[object]) -> list[int]:
    turn, spread = itertools.count(), itertools.count()
    return [choose_channel(members, a, turn.__next__, spread.__next__) for a in affinities]


def test_keyed_calls_wait_for_every_channel_to_answer_before_following_their_key() -> None:
    """One process known, two channels not: keyed calls must still reach the
    unknown channels (else a gateway of keyed calls only, TIFFs, would never
    learn where they lead and send everything to the first process)."""
    members = ["a", "", "a", ""]
    picks = _picks(members, [image_key(f"img{i}") for i in range(6)])
    assert {1, 3} <= set(picks)
    assert picks == _picks(members, [None] * 6)  # the same turns as unkeyed calls


def test_keyed_calls_follow_their_owner_once_every_channel_has_answered() -> None:
    members = ["a", "b", "a", "b"]
    keys = [image_key(f"img{i}") for i in range(40)]
    for key, index in zip(keys, _picks(members, keys), strict=True):
        assert members[index] == owner(key, ["a", "b"])
    # ... and use every channel of their owner, not one.
    assert set(_picks(members, [keys[0]] * 4)) in ({0, 2}, {1, 3})


@given(
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=8),
    st.lists(st.booleans(), min_size=1, max_size=30),
)
def test_unkeyed_calls_share_the_processes_equally_whatever_the_keyed_ones_do(
    members: list[str], keyed: list[bool]
) -> None:
    """Every channel known: unkeyed calls take turns over the processes
    alone, however keyed calls fall between them (a keyed call never uses
    up an unkeyed one's turn)."""
    slots = len(set(members))
    turn, spread = itertools.count(), itertools.count()
    unkeyed = []
    for is_keyed in keyed:
        index = choose_channel(
            members, image_key("x") if is_keyed else None, turn.__next__, spread.__next__
        )
        assert 0 <= index < len(members)
        if not is_keyed:
            unkeyed.append(members[index])
    # Each window of `slots` unkeyed calls visits every process once.
    for start in range(0, len(unkeyed) - slots + 1, slots):
        assert len(set(unkeyed[start : start + slots])) == slots
