"""CodecShelf: idle codecs by key, bounded by their estimated memory."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st

from decoder.engines.codec_shelf import CodecShelf


class Codec:
    def __init__(self, name: str) -> None:
        self.name = name
        self.destroyed = 0


def destroy(codec: Codec) -> None:
    codec.destroyed += 1


def test_a_codec_given_back_is_taken_once_under_its_own_key() -> None:
    shelf: CodecShelf[Codec] = CodecShelf(100, destroy)
    a = Codec("a")
    shelf.give(("img", 0), a, 10)
    assert shelf.take(("img", 1)) is None
    assert shelf.take(("img", 0)) is a
    assert shelf.take(("img", 0)) is None, "a taken codec is the taker's alone"
    assert shelf.nbytes == 0
    assert a.destroyed == 0


def test_several_codecs_of_one_key_are_kept_and_the_latest_comes_first() -> None:
    shelf: CodecShelf[Codec] = CodecShelf(100, destroy)
    a, b = Codec("a"), Codec("b")
    shelf.give("k", a, 10)
    shelf.give("k", b, 10)
    assert len(shelf) == 2
    assert shelf.take("k") is b
    assert shelf.take("k") is a


def test_the_least_recently_given_back_is_destroyed_beyond_the_bound() -> None:
    shelf: CodecShelf[Codec] = CodecShelf(25, destroy)
    a, b, c = Codec("a"), Codec("b"), Codec("c")
    shelf.give("a", a, 10)
    shelf.give("b", b, 10)
    shelf.give("c", c, 10)
    assert (a.destroyed, b.destroyed, c.destroyed) == (1, 0, 0)
    assert shelf.nbytes == 20
    assert shelf.take("a") is None
    assert shelf.take("b") is b


def test_a_codec_larger_than_the_bound_is_destroyed_at_once() -> None:
    shelf: CodecShelf[Codec] = CodecShelf(25, destroy)
    small, big = Codec("small"), Codec("big")
    shelf.give("s", small, 10)
    shelf.give("b", big, 26)
    assert big.destroyed == 1
    assert small.destroyed == 0, "an oversized codec evicts nothing"
    assert shelf.take("b") is None


def test_clear_destroys_every_idle_codec() -> None:
    shelf: CodecShelf[Codec] = CodecShelf(100, destroy)
    codecs = [Codec(str(i)) for i in range(3)]
    for i, codec in enumerate(codecs):
        shelf.give(i, codec, 10)
    shelf.clear()
    assert [c.destroyed for c in codecs] == [1, 1, 1]
    assert len(shelf) == 0
    assert shelf.nbytes == 0


@given(
    st.integers(0, 60),
    st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 40)), max_size=60),
)
def test_every_codec_is_either_kept_handed_out_or_destroyed_exactly_once(
    bound: int, steps: list[tuple[bool, int, int]]
) -> None:
    shelf: CodecShelf[Codec] = CodecShelf(bound, destroy)
    given_back: list[Codec] = []
    taken: list[Codec] = []
    for n, (give, key, size) in enumerate(steps):
        if give:
            codec = Codec(str(n))
            given_back.append(codec)
            shelf.give(key, codec, size)
        else:
            got = shelf.take(key)
            if got is not None:
                taken.append(got)
        assert 0 <= shelf.nbytes <= bound
    assert all(c.destroyed <= 1 for c in given_back)
    assert not any(c.destroyed for c in taken)
    kept = len(given_back) - len(taken) - sum(c.destroyed for c in given_back)
    assert kept == len(shelf)


def test_threads_never_take_the_same_codec() -> None:
    shelf: CodecShelf[Codec] = CodecShelf(10_000, destroy)
    for i in range(200):
        shelf.give("k", Codec(str(i)), 1)
    got: list[Codec] = []
    lock = threading.Lock()

    def taker() -> None:
        while (codec := shelf.take("k")) is not None:
            with lock:
                got.append(codec)

    threads = [threading.Thread(target=taker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 200
    assert len({id(c) for c in got}) == 200
