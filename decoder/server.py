"""Wires the decoder together and serves it over gRPC until SIGTERM.

Shutdown follows gRPC's graceful pattern: health turns NOT_SERVING so load
balancers stop sending, new calls are refused, in-flight calls get
`grace_period_s` to finish (streamed answers keep their call open a moment
after their last message, so callers read it before connections close).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
from concurrent.futures import ThreadPoolExecutor

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from iiif_decoder.v1 import decoder_pb2, decoder_pb2_grpc

from decoder import levelcache, metrics
from decoder.admission import Admission
from decoder.allocator import keep_freed_memory
from decoder.engines.registry import registry_for
from decoder.engines.vips import init_vips
from decoder.health import NamedHealthServicer
from decoder.native import jpeg_mosaic
from decoder.pipeline import passthrough
from decoder.service import ImageService, SourceLimits
from decoder.servicer import DecoderServicer
from decoder.settings import DecoderSettings
from decoder.sources.base import Source
from decoder.sources.filesystem import FilesystemSource
from decoder.sources.readahead import ReadPolicy
from decoder.sources.s3 import S3Config, S3Source

log = structlog.get_logger("decoder")

SERVICE_NAME: str = decoder_pb2.DESCRIPTOR.services_by_name["Decoder"].full_name


def build_source(settings: DecoderSettings) -> Source:
    """The image source `settings.source` names. Call on the event loop: the
    S3 source binds to it. Close it with :func:`close_source`."""
    if settings.source == "s3":
        return S3Source(s3_config(settings))
    return FilesystemSource(settings.image_root)


async def close_source(source: Source) -> None:
    """Release what `source` holds (the S3 client and its connections)."""
    if isinstance(source, S3Source):
        await source.aclose()


def s3_config(settings: DecoderSettings) -> S3Config:
    """The S3 source's configuration from the ``s3_*`` and budget settings."""
    block = settings.s3_block_bytes
    policy = ReadPolicy(
        block_size=block,
        readahead=settings.s3_readahead_blocks,
        max_concurrent=settings.s3_request_concurrency,
        whole_object_bytes=settings.s3_whole_object_bytes,
        max_segment_bytes=4 * block,
        read_timeout_s=settings.s3_read_timeout_s,
    )
    return S3Config(
        bucket=settings.s3_bucket,
        prefix=settings.s3_prefix,
        allowed_buckets=frozenset(
            b.strip() for b in settings.s3_allowed_buckets.split(",") if b.strip()
        ),
        endpoint_url=settings.s3_endpoint_url or None,
        region=settings.s3_region or None,
        addressing_style=settings.s3_addressing_style,
        try_extensions=settings.s3_try_extensions,
        max_concurrent_gets=settings.s3_max_concurrent_gets,
        max_attempts=settings.s3_max_attempts,
        request_timeout_s=settings.s3_request_timeout_s,
        connect_timeout_s=settings.s3_connect_timeout_s,
        stat_ttl_s=settings.s3_stat_ttl_s,
        resolve_ttl_s=settings.s3_resolve_ttl_s,
        index_cache_entries=settings.s3_index_cache_entries,
        block_cache_bytes=settings.s3_block_cache_mb << 20,
        memory_budget_bytes=settings.source_memory_budget_mb << 20,
        budget_wait_s=settings.source_budget_wait_s,
        policy=policy,
    )


def build_service(
    settings: DecoderSettings, executor: ThreadPoolExecutor, source: Source | None = None
) -> ImageService:
    """The ImageService for `settings` (the configured source unless `source`
    is given, default engines)."""
    service = ImageService(
        source=source if source is not None else build_source(settings),
        engines=registry_for(
            settings.jp2_engine,
            jp2_threads=settings.jp2_threads,
            open_tiffs=settings.open_tiffs,
            openjpeg_library=settings.openjpeg_library or None,
            kept_codec_bytes=settings.jp2_kept_codecs_mb << 20,
        ),
        executor=executor,
        admission=Admission(
            slots=settings.decode_threads,
            budget_bytes=settings.render_budget_mb << 20,
            small_bytes=settings.small_render_mb << 20,
            reserved_small_bytes=int((settings.render_budget_mb << 20) * settings.small_lane_share),
            max_queued=settings.max_queued,
            timeout_s=settings.queue_timeout_s,
        ),
        describe_cache_entries=settings.describe_cache_entries,
        limits=SourceLimits(settings.max_source_pixels, settings.max_source_bytes),
    )
    return service


def _warn_without_our_openjpeg() -> None:
    # JPEG 2000 still decodes with the system's libopenjp2, only with more
    # reads per decode (it ignores TLM markers before 2.5.3): say why.
    from decoder.engines.openjpeg import BUNDLED_LIBRARY, loaded_library, openjpeg_version

    if loaded_library() != str(BUNDLED_LIBRARY):
        log.warning(
            "OpenJPEG 2.5.4 is not built: JPEG 2000 decodes with the system's libopenjp2",
            version=openjpeg_version(),
            fix="python -m decoder.native.build_openjpeg",
        )


def process_id() -> str:
    """This process's id for callers that route by it: host and pid, plus a
    random part, since pids repeat across container restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


# How long a streamed answer's call stays open after its last message while
# the server drains (see DecoderServicer._linger_if_draining); at most a
# quarter of the grace period, so the calls still end within it.
DRAIN_LINGER_S = 1.0


async def serve(settings: DecoderSettings, serve_metrics: bool = True) -> None:
    """Run one decoder process until SIGTERM or SIGINT, then drain and stop.

    `serve_metrics` is False in worker processes: their supervisor serves
    every worker's metrics on the metrics port.
    """
    keep_freed_memory(settings.malloc_keep_mb << 20)
    init_vips(concurrency=settings.vips_concurrency)
    levelcache.configure(settings.level_cache_mb << 20, settings.level_cache_max_pixels)
    passthrough.configure(enabled=settings.tile_passthrough)
    if settings.tile_passthrough and not jpeg_mosaic.available():
        # Everything still works (mosaics decode instead), only slower: say why.
        log.warning(
            "decoder.native is not built: stored-tile mosaics are decoded instead",
            fix="python -m decoder.native.build",
        )
    if settings.jp2_engine != "vips" and not settings.openjpeg_library:
        _warn_without_our_openjpeg()
    provider = None
    if settings.tracing:
        from decoder.tracing import enable_tracing

        provider = enable_tracing("iiif-decoder", settings.tracing_exporter)
    executor = ThreadPoolExecutor(max_workers=settings.decode_threads, thread_name_prefix="decode")
    # Remote sources bridge decoder threads to this loop: decodes must stay
    # on the executor, never on the loop thread (see decoder/sources/readahead.py).
    source = build_source(settings)
    options: list[tuple[str, int]] = [
        ("grpc.max_send_message_length", 4 * 1024 * 1024),
        ("grpc.max_receive_message_length", 1024 * 1024),
    ]
    if settings.max_connection_age_s > 0:
        options += [
            ("grpc.max_connection_age_ms", int(settings.max_connection_age_s * 1000)),
            # Calls in flight on an aged connection get the drain time to finish.
            ("grpc.max_connection_age_grace_ms", int(settings.grace_period_s * 1000)),
        ]
    server = grpc.aio.server(options=options)
    service = build_service(settings, executor, source)
    draining = asyncio.Event()
    decoder_id = process_id()
    decoder_pb2_grpc.add_DecoderServicer_to_server(
        DecoderServicer(
            service,
            chunk_bytes=settings.chunk_bytes,
            jpeg_quality=settings.jpeg_quality,
            max_output_pixels=settings.max_output_pixels,
            decoder_id=decoder_id,
            draining=draining,
            drain_linger_s=min(DRAIN_LINGER_S, settings.grace_period_s / 4),
        ),
        server,
    )
    health_servicer = NamedHealthServicer(decoder_id)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    sampler = asyncio.create_task(metrics.run_sampler(service.admission, source))
    if (
        settings.metrics_port
        and serve_metrics
        and not metrics.serve_metrics(settings.host, settings.metrics_port)
    ):
        log.error("metrics port unavailable; serving without /metrics", port=settings.metrics_port)
    address = f"{settings.host}:{settings.port}"
    port = server.add_insecure_port(address)
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "decoder listening",
        address=f"{settings.host}:{port}",
        root=str(settings.image_root),
        event_loop=type(asyncio.get_running_loop()).__module__,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("decoder draining", grace_s=settings.grace_period_s)
    draining.set()
    await health_servicer.enter_graceful_shutdown()
    await server.stop(settings.grace_period_s)
    sampler.cancel()
    executor.shutdown(wait=False, cancel_futures=True)
    await close_source(source)
    if provider is not None:
        provider.shutdown()  # flush the last spans
    log.info("decoder stopped")
