"""A decoder with several worker processes on one port, supervised."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from gateway.decoder_client import DecoderClient
from gateway.iiif.types import PixelBox, RenderPlan
from gateway.tile_grid import TileBatch
from tests import processes
from tests.conftest import start_decoder, start_gateway
from tests.reliability_tools import metric

pytestmark = pytest.mark.integration

# Of a plain JPEG: its renders may go to any worker (a pyramidal TIFF's all
# go to one, a JPEG 2000 block's to one; see gateway/routing.py).
TILES = [
    f"/iiif/3/sample-photo/{x},{y},256,256/{w},/0/default.jpg"
    for x in (0, 256, 512, 768)
    for y in (0, 256, 512)
    for w in (128, 256)
]


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


async def fetch_all(base: str, paths: list[str]) -> list[int]:
    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        return [r.status_code for r in await asyncio.gather(*(client.get(p) for p in paths))]


def test_workers_share_the_port_the_load_and_the_metrics(image_root: Path, tmp_path: Path) -> None:
    metrics_port = processes.free_port()
    supervisor, target = start_decoder(
        image_root,
        tmp_path,
        "decoder-workers",
        {"IIIF_DECODER_WORKERS": "2", "IIIF_DECODER_METRICS_PORT": str(metrics_port)},
    )
    gateway, port = start_gateway(
        target, tmp_path, "gateway-workers", {"IIIF_GATEWAY_DECODER_CHANNELS": "16"}
    )
    base = f"http://127.0.0.1:{port}"
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    try:
        workers = children(supervisor.pid)
        assert len(workers) == 2
        before = {pid: cpu_ticks(pid) for pid in workers}
        assert asyncio.run(fetch_all(base, TILES * 2)) == [200] * (2 * len(TILES))
        used = {pid: cpu_ticks(pid) - before[pid] for pid in workers}
        total = sum(used.values())
        assert all(ticks > 0.05 * total for ticks in used.values()), f"CPU ticks {used}"
        renders = metric(metrics_url, "iiif_decoder_rpcs_total", {"rpc": "Render", "code": "OK"})
        assert renders >= len(TILES), "the supervisor serves every worker's metrics"

        # A worker that dies is replaced; the service goes on.
        os.kill(workers[0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (
            len(children(supervisor.pid)) < 2 or workers[0] in children(supervisor.pid)
        ):
            time.sleep(0.1)
        assert len(children(supervisor.pid)) == 2
        statuses = asyncio.run(fetch_all(base, TILES[:8]))
        assert set(statuses) <= {200, 503}
        time.sleep(1.5)  # the replacement has bound the port by now
        assert asyncio.run(fetch_all(base, TILES[:8])) == [200] * 8

        current = children(supervisor.pid)
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(30) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in current)
    finally:
        processes.stop(gateway)
        processes.stop(supervisor)


def test_renders_of_one_cached_block_go_to_one_worker(image_root: Path, tmp_path: Path) -> None:
    """The gateway's client sends the tiles of one JPEG 2000 block to the
    worker that decoded (and cached) that block, and spreads blocks over
    the workers."""
    supervisor, target = start_decoder(
        image_root, tmp_path, "decoder-affinity", {"IIIF_DECODER_WORKERS": "2"}
    )

    async def scenario() -> None:
        client = DecoderClient(target, 30.0, 1, 16, 60.0, channels=8)
        await client.start()
        try:
            desc = await client.describe("sample-tiled")
            assert desc.cache_block == 1024
            known = await _learn_workers(client, desc.version)
            assert 1 <= len(known) <= 2
            owners: dict[tuple[int, ...], set[str]] = {}
            for key in range(20):
                for x in (0, 64, 128):
                    decoder = await _rendered_by(client, desc.version, x, ("k", key))
                    owners.setdefault((key,), set()).add(decoder)
            assert all(len(ids) == 1 for ids in owners.values()), owners
            used = set().union(*owners.values())
            # With both workers reachable, 20 keys all landing on one has odds 2^-19.
            assert used == known, (used, known)
        finally:
            await client.close()

    try:
        asyncio.run(scenario())
    finally:
        processes.stop(supervisor)


def _two_workers_listening(
    root: Path, tmp_path: Path, name: str
) -> tuple[subprocess.Popen[bytes], str]:
    """A decoder over `root` with two workers, once both listen."""
    supervisor, target = start_decoder(root, tmp_path, name, {"IIIF_DECODER_WORKERS": "2"})
    log = tmp_path / f"{name}.log"
    processes.wait_until(
        lambda: log.read_text().count('"decoder listening"') == 2, supervisor, 30, "workers"
    )
    return supervisor, target


def test_the_client_learns_every_channel_before_its_first_call(
    image_root: Path, tmp_path: Path
) -> None:
    """A new client asks each channel's decoder process its name (health
    Check metadata), so keyed calls follow their owner from the first image
    on instead of spreading until every channel has carried a call."""
    supervisor, target = _two_workers_listening(image_root, tmp_path, "decoder-learn")

    async def scenario() -> None:
        client = DecoderClient(target, 30.0, 1, 16, 60.0, channels=8)
        await client.start()
        try:
            deadline = time.monotonic() + 15
            # Polls the client's own learning task, which has no event to wait on.
            while "" in client.decoders() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            learnt = client.decoders()
            assert "" not in learnt, learnt
            assert len(set(learnt)) == 2, "8 channels reach both workers (odds of not: 2^-7)"
            # The names are those the workers put in their answers, and a
            # key's calls all go to one worker from the very first.
            desc = await client.describe("sample-tiled")
            served = {await _rendered_by(client, desc.version, x, ("k", 1)) for x in (0, 64, 128)}
            assert len(served) == 1, served
            assert served <= set(learnt), (served, learnt)
            assert client.decoders() == learnt
        finally:
            await client.close()

    try:
        asyncio.run(scenario())
    finally:
        processes.stop(supervisor)


def test_an_image_with_stored_tiles_goes_to_one_worker(image_root: Path, tmp_path: Path) -> None:
    """StoredTiles calls of one pyramidal TIFF go to one worker (it keeps the
    image open and indexed), and different images spread over the workers.
    Describes use the same key; renders' keys: tests/unit/test_routing.py.
    The client makes keyed calls only, as a gateway serving only TIFFs does,
    and must still learn where each of its channels leads."""
    root = tmp_path / "images"
    root.mkdir()
    pyramid = (image_root / "sample-pyramid.tif").read_bytes()
    names = [f"pyramid-{i}" for i in range(12)]
    for name in names:
        (root / f"{name}.tif").write_bytes(pyramid)
    # Ready means one worker answers; the channels must find both.
    supervisor, target = _two_workers_listening(root, tmp_path, "decoder-image-affinity")

    async def scenario() -> None:
        client = DecoderClient(target, 30.0, 1, 0, 0.0, channels=8)
        await client.start()
        try:
            for name in names:
                desc = await client.describe(name)
                level = next(i for i, lv in enumerate(desc.levels) if lv.stored_tiles)
                await client.stored_tiles(name, TileBatch(level, 0, 0, 1, 1), desc.version)
            known = {d for d in client.decoders() if d}
            assert len(known) == 2, "8 channels reach both workers (odds of not: 2^-7)"
            owners: dict[str, set[str]] = {}
            for name in names:
                for column in range(3):
                    desc = await client.describe(name)
                    level = next(i for i, lv in enumerate(desc.levels) if lv.stored_tiles)
                    stored = await client.stored_tiles(
                        name, TileBatch(level, column % 2, 0, 1, 1), desc.version
                    )
                    assert stored.tiles, "a stored tile came back"
                    owners.setdefault(name, set()).add(stored.decoder_id)
            assert all(len(ids) == 1 for ids in owners.values()), owners
            # 12 images all on one of 2 workers has odds 2^-11.
            assert set().union(*owners.values()) == known
        finally:
            await client.close()

    try:
        asyncio.run(scenario())
    finally:
        processes.stop(supervisor)


def _plan(x: int, y: int, side: int) -> RenderPlan:
    return RenderPlan(PixelBox(x, y, side, side), side, side, 0.0, False, "default", "jpg")


async def _learn_workers(client: DecoderClient, version: str) -> set[str]:
    """The workers the client's 8 channels lead to, learnt from renders of
    sample-tiled without a key (they take turns; answers name their worker)."""
    for _ in range(3 * 8):
        assert await _rendered_by(client, version, 0)
    return {d for d in client.decoders() if d}


async def _rendered_by(
    client: DecoderClient, version: str, x: int, affinity: tuple[str, int] | None = None
) -> str:
    """Render the 64 px tile at (x, 0) of sample-tiled; the decoder that did it."""
    stream = await client.render("sample-tiled", _plan(x, 0, 64), version, affinity=affinity)
    [_ async for _ in stream.chunks]
    return stream.decoder_id


def test_channels_stick_to_one_decoder_and_calls_balance_over_decoders(
    image_root: Path, tmp_path: Path
) -> None:
    """With a target that resolves to several decoders, each channel stays
    with one (so routing by block holds across pods), and calls without a
    block are shared evenly between the decoders, not between channels."""
    first, first_target = start_decoder(image_root, tmp_path, "decoder-pin-a")
    second, second_target = start_decoder(image_root, tmp_path, "decoder-pin-b")

    async def scenario() -> None:
        # 16 channels over 2 addresses: all on one has odds 2^-15.
        client = DecoderClient(
            f"ipv4:{first_target},{second_target}", 30.0, 1, 16, 60.0, channels=16
        )
        await client.start()
        try:
            desc = await client.describe("sample-tiled")
            for _ in range(3 * 16):
                await _rendered_by(client, desc.version, 0)
            first_seen = client.decoders()
            assert len(set(first_seen)) == 2, first_seen
            served: Counter[str] = Counter()
            for i in range(40):
                served[await _rendered_by(client, desc.version, 64 * (i % 4))] += 1
            assert client.decoders() == first_seen, "a channel changed decoder"
            assert sorted(served.values()) == [20, 20], served
            for key in range(10):
                ids = set()
                for x in (0, 64, 128):
                    ids.add(await _rendered_by(client, desc.version, x, ("k", key)))
                assert len(ids) == 1, (key, ids)
        finally:
            await client.close()

    try:
        asyncio.run(scenario())
    finally:
        processes.stop(first)
        processes.stop(second)
