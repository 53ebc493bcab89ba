"""Shared pieces of the S3 tests: a moto S3 server on 127.0.0.1, the fault
proxy in front of it, test images, and S3 sources wired to them.

Import the fixtures you use into the test module (they are plain fixtures,
not a conftest, so other test packages are unaffected).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
import pyvips
from moto.server import ThreadedMotoServer

from decoder.admission import Admission
from decoder.engines.registry import EngineRegistry, default_registry
from decoder.service import ImageService
from decoder.sources.readahead import ReadPolicy
from decoder.sources.s3 import S3Config, S3Source
from tests.s3proxy import ProxyThread

BUCKET = "images"
REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
# What a decoder process needs to talk to moto with the standard AWS chain,
# and nothing else (no profile files, no instance metadata lookups).
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@dataclass(frozen=True)
class S3Images:
    """Test images in the moto bucket and the same bytes on local disk."""

    root: Path
    keys: dict[str, str]  # name -> key in BUCKET (also the file name under root)

    def path(self, name: str) -> Path:
        return self.root / self.keys[name]

    def size(self, name: str) -> int:
        return self.path(name).stat().st_size


def _noise(width: int, height: int) -> Any:
    bands = [
        (
            pyvips.Image.gaussnoise(width, height, mean=128, sigma=30)
            + pyvips.Image.xyz(width, height)[i] / 8
        ).cast("uchar")
        for i in range(2)
    ]
    bands.append(pyvips.Image.gaussnoise(width, height, mean=100, sigma=50).cast("uchar"))
    return bands[0].bandjoin(bands[1:]).copy(interpretation="srgb")


def make_s3_images(root: Path) -> dict[str, str]:
    """Write the S3 test images into `root`; returns name -> file name."""
    image = _noise(1024, 1024)
    files = {
        "tiled": "tiled.jp2",
        "untiled": "untiled.jp2",
        "pyramid": "pyramid.tif",
        "photo": "photo.jpg",
        "png": "png.png",
    }
    image.jp2ksave(str(root / files["tiled"]), tile_width=256, tile_height=256, Q=60)
    image.crop(0, 0, 512, 512).jp2ksave(
        str(root / files["untiled"]), tile_width=512, tile_height=512, Q=40
    )
    image.tiffsave(
        str(root / files["pyramid"]),
        tile=True,
        tile_width=256,
        tile_height=256,
        pyramid=True,
        compression="jpeg",
        Q=85,
    )
    image.crop(0, 0, 800, 600).jpegsave(str(root / files["photo"]), Q=85)
    image.crop(0, 0, 300, 200).pngsave(str(root / files["png"]))
    return files


def s3_client(endpoint: str) -> Any:
    """A plain boto3 client for test setup (uploads go straight to moto)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        config=boto3.session.Config(s3={"addressing_style": "path"}),
        **CREDENTIALS,
    )


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 (real HTTP) with an empty BUCKET."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3_client(endpoint).create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(scope="session")
def s3_images(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> S3Images:
    root = tmp_path_factory.mktemp("s3-images")
    keys = make_s3_images(root)
    client = s3_client(moto_endpoint)
    for name in keys.values():
        client.upload_file(str(root / name), BUCKET, name)
    return S3Images(root, keys)


@pytest.fixture(scope="session")
def proxy(moto_endpoint: str) -> Iterator[ProxyThread]:
    """The fault proxy in front of moto, counters reset by each test that uses it."""
    with ProxyThread(moto_endpoint) as running:
        yield running


@pytest.fixture
def fresh_proxy(proxy: ProxyThread) -> Iterator[ProxyThread]:
    proxy.reset()
    proxy.delay_s = 0.0
    yield proxy
    proxy.reset()
    proxy.delay_s = 0.0


def s3_config(endpoint: str, **overrides: Any) -> S3Config:
    """A test S3Config on `endpoint`: path-style, quick retries and timeouts."""
    policy_fields = {k: overrides.pop(k) for k in list(overrides) if k in ReadPolicy.__slots__}
    base = S3Config(
        bucket=BUCKET,
        endpoint_url=endpoint,
        region=REGION,
        addressing_style="path",
        backoff_base_s=0.01,
        backoff_max_s=0.05,
        request_timeout_s=5.0,
        budget_wait_s=2.0,
        policy=replace(ReadPolicy(read_timeout_s=30.0), **policy_fields),
    )
    return replace(base, **overrides)


def s3_source(endpoint: str, **overrides: Any) -> S3Source:
    """An S3Source on `endpoint` (create it inside the test's event loop)."""
    import aioboto3  # type: ignore[import-untyped]

    return S3Source(s3_config(endpoint, **overrides), aioboto3.Session(**CREDENTIALS))


@pytest.fixture(scope="session")
def decode_pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="test-decode") as pool:
        yield pool


def image_service(
    source: Any, pool: ThreadPoolExecutor, slots: int = 4, engines: EngineRegistry | None = None
) -> ImageService:
    """The production ImageService over `source`, with libvips for every
    format unless `engines` says otherwise."""
    return ImageService(
        source=source,
        engines=engines if engines is not None else default_registry(),
        executor=pool,
        admission=_admission(slots),
        describe_cache_entries=64,
    )


def _admission(slots: int) -> Admission:
    """Admission with room for everything these tests run (its constructor
    grows memory-budget arguments elsewhere; give them generous values)."""
    extra: dict[str, Any] = {}
    params = inspect.signature(Admission).parameters
    if "budget_bytes" in params:
        extra = {"budget_bytes": 1 << 40, "small_bytes": 1 << 30, "reserved_small_bytes": 0}
    return Admission(slots=slots, max_queued=64, timeout_s=30.0, **extra)


def decoder_s3_env(endpoint: str, bucket: str) -> dict[str, str]:
    """Environment for a decoder process reading `bucket` at `endpoint`."""
    return {
        **AWS_ENV,
        "IIIF_DECODER_SOURCE": "s3",
        "IIIF_DECODER_S3_BUCKET": bucket,
        "IIIF_DECODER_S3_ENDPOINT_URL": endpoint,
        "IIIF_DECODER_S3_REGION": REGION,
        "IIIF_DECODER_S3_ADDRESSING_STYLE": "path",
    }


def upload_tree(endpoint: str, root: Path, bucket: str) -> None:
    client = s3_client(endpoint)
    client.create_bucket(Bucket=bucket)
    for path in sorted(root.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, path.relative_to(root).as_posix())
