"""The shared block cache: LRU, bounded in bytes, keyed by object version."""

from __future__ import annotations

from decoder.sources.blockcache import BlockCache, RangeKey


def key(start: int, end: int, version: str = "v1") -> RangeKey:
    return RangeKey("s3://b/k", version, start, end)


def test_lru_eviction_keeps_bytes_bounded() -> None:
    cache = BlockCache(capacity_bytes=30)
    cache.put(key(0, 10), b"a" * 10)
    cache.put(key(10, 20), b"b" * 10)
    cache.put(key(20, 30), b"c" * 10)
    assert cache.get(key(0, 10)) == b"a" * 10  # now most recently used
    cache.put(key(30, 40), b"d" * 10)
    assert cache.get(key(10, 20)) is None  # the least recently used went
    assert cache.size_bytes == 30
    assert len(cache) == 3
    assert (cache.hits, cache.misses) == (1, 1)


def test_versions_never_mix_and_oversized_ranges_are_not_cached() -> None:
    cache = BlockCache(capacity_bytes=10)
    cache.put(key(0, 4, "v1"), b"old!")
    assert cache.get(key(0, 4, "v2")) is None
    cache.put(key(0, 11), b"x" * 11)
    assert cache.get(key(0, 11)) is None
    assert cache.size_bytes == 4


def test_peek_span_reads_inside_one_aligned_block() -> None:
    cache = BlockCache(capacity_bytes=100)
    cache.put(key(16, 26), bytes(range(10)))  # block 1 of 16-byte blocks, object of 26 bytes
    assert cache.peek_span("s3://b/k", "v1", 18, 21, 16, 26) == bytes([2, 3, 4])
    assert cache.peek_span("s3://b/k", "v1", 14, 18, 16, 26) is None  # spans two blocks
    assert cache.peek_span("s3://b/k", "v1", 0, 4, 16, 26) is None
    cache.clear()
    assert cache.size_bytes == 0
    assert cache.peek_span("s3://b/k", "v1", 18, 21, 16, 26) is None
