"""Session-wide fixtures: one image folder, one real decoder and one real gateway per run."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import settings

from tests import processes
from tests.sample_images import make_sample_images

settings.register_profile("ci", max_examples=100, deadline=None)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@dataclass(frozen=True)
class Stack:
    """A running decoder and gateway on 127.0.0.1."""

    image_root: Path
    decoder_target: str
    gateway_url: str
    gateway_port: int
    decoder_metrics_url: str
    logs: Path


@pytest.fixture(scope="session")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    make_sample_images(root, small=True)
    # Broken sources: the decoder must answer them with a clear error and keep serving.
    jp2 = (root / "sample-tiled.jp2").read_bytes()
    (root / "corrupt-truncated.jp2").write_bytes(jp2[: len(jp2) // 3])
    (root / "corrupt-empty.jpg").write_bytes(b"")
    (root / "corrupt-text.tif").write_bytes(b"this is not an image\n" * 10)
    # An identifier with a slash, reachable as `nested%2Fphoto`.
    (root / "nested").mkdir()
    (root / "nested" / "photo.jpg").write_bytes((root / "sample-photo.jpg").read_bytes())
    return root


def _grpc_serving(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        resp = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""), timeout=1.0
        )
    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)


def start_decoder(
    root: Path, logs: Path, name: str, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """A decoder process over `root`; returns it and its gRPC target once SERVING."""
    port = processes.free_port()
    env = {
        "IIIF_DECODER_PORT": str(port),
        "IIIF_DECODER_IMAGE_ROOT": str(root),
        "IIIF_DECODER_GRACE_PERIOD_S": "5",
        # Off unless asked for: several decoders run at once in the tests.
        "IIIF_DECODER_METRICS_PORT": "0",
        # One process unless a test asks for workers (RSS and signals then
        # concern the process the test holds).
        "IIIF_DECODER_WORKERS": "1",
        **(extra_env or {}),
    }
    proc = processes.start("decoder", env, logs / f"{name}.log")
    target = f"127.0.0.1:{port}"
    processes.wait_until(lambda: _grpc_serving(target), proc, 30, name)
    return proc, target


def start_gateway(
    decoder_target: str, logs: Path, name: str, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """A gateway process in front of `decoder_target`; returns it and its port once ready."""
    port = processes.free_port()
    env = {
        "IIIF_GATEWAY_PORT": str(port),
        "IIIF_GATEWAY_DECODER_TARGET": decoder_target,
        # Off unless a test asks for it: most tests are about what the
        # decoders do with each request.
        "IIIF_GATEWAY_RENDER_CACHE_MB": "0",
        **(extra_env or {}),
    }
    proc = processes.start("gateway", env, logs / f"{name}.log")
    url = f"http://127.0.0.1:{port}"
    processes.wait_until(
        lambda: httpx.get(f"{url}/health/ready", timeout=1.0).status_code == 200,
        proc,
        30,
        name,
    )
    return proc, port


@pytest.fixture(scope="session")
def stack(image_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("logs")
    metrics_port = processes.free_port()
    decoder, target = start_decoder(
        image_root, logs, "decoder", {"IIIF_DECODER_METRICS_PORT": str(metrics_port)}
    )
    try:
        gateway, port = start_gateway(target, logs, "gateway")
        try:
            yield Stack(
                image_root,
                target,
                f"http://127.0.0.1:{port}",
                port,
                f"http://127.0.0.1:{metrics_port}/metrics",
                logs,
            )
        finally:
            processes.stop(gateway)
    finally:
        processes.stop(decoder)


@pytest.fixture(scope="session")
def decoder_target(stack: Stack) -> str:
    return stack.decoder_target


@pytest.fixture
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=30.0) as client:
        yield client
