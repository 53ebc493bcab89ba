"""The cache of decoded low-resolution levels: a small level is decoded once,
whole, and later requests crop it; bounded in bytes (LRU); one decode per
key however many threads miss at once; same pixels as the uncached path."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pyvips

from decoder import levelcache
from decoder.engines.base import ImageInfo, Level
from decoder.engines.vips import VipsEngine
from decoder.levelcache import LevelCache
from decoder.pipeline import passthrough, run_pipeline
from decoder.pipeline.load import load_region
from decoder.plan import Box, Plan
from decoder.sources.base import ByteReader
from tests.counting_engine import CountingEngine
from tests.images import make_pyramid_tiff

ReaderFactory = Callable[[Path], ByteReader]
Describe = Callable[[ByteReader], ImageInfo]

KEY = ("pyramid.tif", "v1")


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Levels 1024x768 (0.79 Mpx), 512x384, 256x192; deflate, so crops of the
    # cached level and direct decodes must agree exactly.
    root = tmp_path_factory.mktemp("levelcache")
    return make_pyramid_tiff(root / "pyramid.tif", 1024, 768, tile=128, compression="deflate")


@pytest.fixture(autouse=True)
def isolated() -> Iterator[None]:
    """Fresh shared cache; passthrough off (deflate never passes anyway)."""
    levelcache.configure()
    passthrough.configure(enabled=False)
    yield
    levelcache.configure()
    passthrough.configure(enabled=True)


def identical(a: Any, b: Any) -> bool:
    return bool(
        (a.width, a.height, a.bands) == (b.width, b.height, b.bands)
        and (a.cast("float") - b.cast("float")).abs().max() == 0
    )


def test_second_tile_of_a_cached_level_does_not_decode_again(
    pyramid: Path, reader_for: ReaderFactory, describe: Describe, engine: VipsEngine
) -> None:
    reader = reader_for(pyramid)
    info = describe(reader)
    counting = CountingEngine(engine)
    cache = LevelCache()
    # Two tiles of level 1 (512 x 384), asked for at that level's scale.
    first = Plan(Box(0, 0, 256, 256), 128, 128)
    second = Plan(Box(512, 256, 256, 256), 128, 128)

    a = load_region(counting, reader, info, first, KEY, cache)
    b = load_region(counting, reader, info, second, KEY, cache)

    assert counting.loads == [(1, Box(0, 0, 512, 384))]  # the whole level, once
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)
    assert cache.size_bytes == 512 * 384 * 3
    assert identical(a, load_region(engine, reader, info, first))
    assert identical(b, load_region(engine, reader, info, second))


def test_levels_above_the_pixel_limit_and_keyless_requests_bypass_the_cache(
    pyramid: Path, reader_for: ReaderFactory, describe: Describe, engine: VipsEngine
) -> None:
    reader = reader_for(pyramid)
    info = describe(reader)
    counting = CountingEngine(engine)
    cache = LevelCache(max_pixels=512 * 384)  # level 0 (1024 x 768) is too big
    full_res = Plan(Box(128, 128, 128, 128), 128, 128)

    load_region(counting, reader, info, full_res, KEY, cache)
    load_region(counting, reader, info, Plan(Box(0, 0, 256, 256), 128, 128), None, cache)

    assert counting.loads == [(0, Box(128, 128, 128, 128)), (1, Box(0, 0, 128, 128))]
    assert len(cache) == 0


def test_whole_level_requests_get_their_own_image(
    pyramid: Path, reader_for: ReaderFactory, describe: Describe, engine: VipsEngine
) -> None:
    reader = reader_for(pyramid)
    info = describe(reader)
    cache = LevelCache()
    plan = Plan(Box(0, 0, 1024, 768), 256, 192)  # all of level 2
    image = load_region(engine, reader, info, plan, KEY, cache)
    cached = cache.get((*KEY, 2))
    assert cached is not None
    # The pipeline sets progress signals and the kill flag on what it renders.
    assert image.pointer != cached.pointer
    assert identical(image, cached)


def test_eviction_is_least_recently_used_by_bytes() -> None:
    side = 100
    size = side * side * 3
    cache = LevelCache(max_bytes=2 * size + size // 2)  # room for two levels
    loads: list[str] = []

    def loader(name: str) -> Callable[[], Any]:
        def load() -> Any:
            loads.append(name)
            return pyvips.Image.black(side, side, bands=3).cast("uchar")

        return load

    cache.get_or_load(("a", "1", 0), loader("a"))
    cache.get_or_load(("b", "1", 0), loader("b"))
    cache.get_or_load(("a", "1", 0), loader("a"))  # hit: "a" is now the most recent
    cache.get_or_load(("c", "1", 0), loader("c"))  # evicts "b", the least recent

    assert loads == ["a", "b", "c"]
    assert cache.size_bytes == 2 * size
    assert cache.get(("a", "1", 0)) is not None
    assert cache.get(("b", "1", 0)) is None
    assert cache.get(("c", "1", 0)) is not None
    # Too big to keep at all: returned, not cached.
    big = cache.get_or_load(
        ("d", "1", 0), lambda: pyvips.Image.black(side, 3 * side, bands=3).cast("uchar")
    )
    assert big.height == 3 * side
    assert cache.get(("d", "1", 0)) is None


def test_accepts_respects_pixels_and_bytes() -> None:
    cache = LevelCache(max_bytes=1000, max_pixels=300)
    assert cache.accepts(Level(10, 30, 1, 0, 0), 3, 1)
    assert not cache.accepts(Level(10, 31, 1, 0, 0), 3, 1)  # 310 pixels
    assert not cache.accepts(Level(10, 30, 1, 0, 0), 3, 2)  # 1800 bytes
    assert not LevelCache(max_bytes=0).accepts(Level(1, 1, 1, 0, 0), 1, 1)


def test_concurrent_misses_decode_once() -> None:
    cache = LevelCache()
    calls = 0
    calls_lock = threading.Lock()
    threads_n = 16
    barrier = threading.Barrier(threads_n)
    results: list[Any] = []
    errors: list[BaseException] = []

    def load() -> Any:
        nonlocal calls
        with calls_lock:
            calls += 1
        time.sleep(0.05)  # a slow decode, so the others pile up behind it
        return pyvips.Image.black(64, 64, bands=3).cast("uchar")

    def worker() -> None:
        try:
            barrier.wait()
            results.append(cache.get_or_load(("img", "1", 3), load))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert not errors
    assert calls == 1
    assert len(results) == threads_n
    assert len({r.pointer for r in results}) == 1
    assert (cache.misses, cache.hits) == (1, threads_n - 1)


def test_concurrent_renders_of_one_level_decode_it_once(
    pyramid: Path, reader_for: ReaderFactory, describe: Describe, engine: VipsEngine
) -> None:
    reader = reader_for(pyramid)
    info = describe(reader)
    counting = CountingEngine(engine)
    cache = LevelCache()
    plans = [Plan(Box(x * 256, y * 256, 256, 256), 128, 128) for x in range(4) for y in range(3)]
    barrier = threading.Barrier(len(plans))
    out: dict[Plan, Any] = {}

    def worker(plan: Plan) -> None:
        barrier.wait()
        out[plan] = load_region(counting, reader, info, plan, KEY, cache).copy_memory()

    threads = [threading.Thread(target=worker, args=(p,)) for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert counting.loads == [(1, Box(0, 0, 512, 384))]
    for plan in plans:
        assert identical(out[plan], load_region(engine, reader, info, plan))


def test_failed_decodes_are_not_cached() -> None:
    cache = LevelCache()
    attempts = 0

    def load() -> Any:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise pyvips.Error("corrupt")
        return pyvips.Image.black(8, 8).cast("uchar")

    with pytest.raises(pyvips.Error):
        cache.get_or_load(("x", "1", 0), load)
    assert cache.get(("x", "1", 0)) is None
    assert cache.get_or_load(("x", "1", 0), load).width == 8
    assert attempts == 2


def test_cached_level_outlives_a_callback_reader(
    pyramid: Path, callback_reader_for: ReaderFactory, describe: Describe, engine: VipsEngine
) -> None:
    # Remote readers are closed after each request; the cached pixels must
    # not read through them (nor keep libvips calling into them) afterwards.
    reader = callback_reader_for(pyramid)
    info = describe(reader)
    cache = LevelCache()
    plan = Plan(Box(0, 0, 256, 256), 64, 64)
    load_region(engine, reader, info, plan, KEY, cache)
    reader.close()  # any read through it now fails
    gc.collect()
    image = load_region(engine, reader, info, Plan(Box(256, 256, 256, 256), 64, 64), KEY, cache)
    assert image.avg() > 0
    assert cache.misses == 1


def test_pipeline_uses_the_shared_cache_with_the_same_pixels(
    pyramid: Path, reader_for: ReaderFactory, describe: Describe, engine: VipsEngine
) -> None:
    reader = reader_for(pyramid)
    info = describe(reader)
    plan = Plan(Box(256, 0, 512, 512), 128, 128)

    cached = run_pipeline(engine, reader, info, plan, cache_key=KEY)
    again = run_pipeline(engine, reader, info, plan, cache_key=KEY)

    shared = levelcache.shared()
    assert (shared.misses, shared.hits) == (1, 1)
    assert cached == again == run_pipeline(engine, reader, info, plan)
