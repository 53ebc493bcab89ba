from __future__ import annotations

from collections.abc import AsyncIterator

from gateway.render_cache import CachedRender, RenderCache


def test_lru_by_bytes_with_a_cap_per_entry() -> None:
    cache = RenderCache(max_bytes=10, max_item_bytes=6)
    cache.put(("a", "v1", "p"), CachedRender("image/jpeg", b"12345"))
    cache.put(("b", "v1", "p"), CachedRender("image/jpeg", b"1234"))
    assert cache.get(("a", "v1", "p")) is not None  # a is now the most recent
    cache.put(("c", "v1", "p"), CachedRender("image/jpeg", b"123"))  # 12 > 10: drop b
    assert cache.get(("b", "v1", "p")) is None
    assert cache.get(("c", "v1", "p")) is not None
    cache.put(("d", "v1", "p"), CachedRender("image/jpeg", b"1234567"))  # over the cap
    assert cache.get(("d", "v1", "p")) is None
    assert cache.size_bytes <= 10
    assert cache.get(("a", "v2", "p")) is None, "another version is another entry"


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_tee_stores_only_complete_small_streams() -> None:
    cache = RenderCache(max_bytes=100, max_item_bytes=5)
    small = [c async for c in cache.tee(("s", "v", "p"), "image/png", _chunks(b"ab", b"cd"))]
    assert small == [b"ab", b"cd"]
    assert cache.get(("s", "v", "p")) == CachedRender("image/png", b"abcd")
    large = [c async for c in cache.tee(("l", "v", "p"), "image/png", _chunks(b"abc", b"def"))]
    assert large == [b"abc", b"def"]
    assert cache.get(("l", "v", "p")) is None

    async def broken() -> AsyncIterator[bytes]:
        yield b"ab"
        raise ConnectionError("decoder went away")

    stream = cache.tee(("x", "v", "p"), "image/png", broken())
    try:
        async for _ in stream:
            pass
    except ConnectionError:
        pass
    assert cache.get(("x", "v", "p")) is None, "a broken stream is never cached"
