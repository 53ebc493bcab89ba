"""A first pass over an S3 object fetches each block once per process, even
when the requests that open it overlap with the index build the first of
them starts (moto behind the latency proxy, as in test_s3_source).

The pattern of the benchmark's first pass over a tiled JPEG 2000: a
Describe reads the header with a large read (read-ahead starts) and closes,
which starts the index build (it preloads the whole object); renders read
blocks meanwhile. Each block used to be fetched up to three times.
"""

from __future__ import annotations

import asyncio
import collections

import pytest

from decoder.sources.s3 import S3Source
from tests.integration import s3support
from tests.integration.s3support import S3Images, s3_source
from tests.s3proxy import ProxyThread

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

moto_endpoint = s3support.moto_endpoint
s3_images = s3support.s3_images
proxy = s3support.proxy
fresh_proxy = s3support.fresh_proxy

BLOCK = 16 << 10


async def test_overlapping_first_requests_and_index_build_fetch_each_block_once(
    fresh_proxy: ProxyThread, s3_images: S3Images
) -> None:
    fresh_proxy.delay_s = 0.05  # fetches overlap as they do 20 ms from S3
    size = s3_images.size("tiled")
    assert size > 12 * BLOCK
    source: S3Source = s3_source(
        fresh_proxy.url,
        block_size=BLOCK,
        readahead=4,
        whole_object_bytes=0,
        request_timeout_s=60.0,  # a GET sent again would count its bytes twice
    )
    try:
        # "Describe": a small read, then a large one that reads ahead, then close.
        describe = (await source.open("tiled")).reader
        await asyncio.to_thread(describe.read_at, 0, 16)
        await asyncio.to_thread(describe.read_at, 0, BLOCK)
        describe.close()  # starts the index build on the loop's next turn
        await asyncio.sleep(0.01)
        # A render of the same object reads blocks while the build's preload runs.
        render = (await source.open("tiled")).reader
        got = await asyncio.gather(
            asyncio.to_thread(render.read_at, 2 * BLOCK + 7, 100),
            asyncio.to_thread(render.read_at, 9 * BLOCK + 7, 100),
        )
        render.close()
        await source.wait_for_indexes()
        await asyncio.sleep(0.2)  # read-ahead still landing
        data = s3_images.path("tiled").read_bytes()
        assert list(got) == [
            data[2 * BLOCK + 7 : 2 * BLOCK + 107],
            data[9 * BLOCK + 7 : 9 * BLOCK + 107],
        ]
        stat = await source.stat("tiled")
        assert source.index_of(stat.key, stat.version) is not None
        ranges = collections.Counter(
            r.range for r in fresh_proxy.records() if r.method == "GET" and r.status == 206
        )
        twice = {rng: n for rng, n in ranges.items() if n > 1}
        assert not twice, f"fetched more than once: {twice}"
        assert sum(r.body_bytes for r in fresh_proxy.records() if r.method == "GET") == size
        assert source.budget.in_use == 0
    finally:
        await source.aclose()
