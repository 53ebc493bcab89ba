"""decoder.servicer.packed_messages: how a packed StoredTiles answer is cut
into messages."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from decoder.servicer import packed_messages

Tile = tuple[int, int, bytes]


def tile(n: int, size: int) -> Tile:
    return (n, 0, bytes(size))


def test_small_tiles_share_one_message() -> None:
    tiles = [tile(n, 100) for n in range(5)]
    assert packed_messages(tiles, 1000) == [tiles]


def test_a_message_is_cut_where_the_next_tile_would_pass_the_limit() -> None:
    tiles = [tile(0, 400), tile(1, 400), tile(2, 300), tile(3, 1)]
    assert packed_messages(tiles, 1000) == [tiles[:2], tiles[2:]]


def test_a_tile_over_the_limit_goes_alone() -> None:
    tiles = [tile(0, 10), tile(1, 5000), tile(2, 10)]
    assert packed_messages(tiles, 1000) == [[tiles[0]], [tiles[1]], [tiles[2]]]


def test_nothing_to_send() -> None:
    assert packed_messages([], 1000) == []


@given(
    sizes=st.lists(st.integers(min_value=0, max_value=3000), max_size=40),
    limit=st.integers(min_value=1, max_value=4000),
)
def test_every_tile_once_in_order_and_messages_within_the_limit(
    sizes: list[int], limit: int
) -> None:
    tiles = [tile(n, size) for n, size in enumerate(sizes)]

    messages = packed_messages(tiles, limit)

    assert [t for message in messages for t in message] == tiles
    for message in messages:
        assert message
        assert len(message) == 1 or sum(len(t[2]) for t in message) <= limit
    # Greedy: no message could have taken the next one's first tile.
    for message, after in itertools.pairwise(messages):
        assert sum(len(t[2]) for t in message) + len(after[0][2]) > limit
