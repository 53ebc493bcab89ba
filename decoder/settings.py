"""The decoder's configuration: one frozen object, read once from IIIF_DECODER_* variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from decoder.memory import default_render_budget_mb


def available_cores() -> int:
    """Cores this process may run on (honours CPU affinity, as containers set it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def default_decode_threads() -> int:
    """Four per core: a render is off the CPU part of its time (reads, the
    GIL, waiting for a JPEG 2000 block another render is decoding), and
    renders are routed by block or image, so a busy process keeps its queue
    while another's core idles. Measured on first passes over the
    benchmark's tile lists (2 cores, 2 workers, alternating runs; cores
    busy): one per core 1.50-1.76, two 1.62-1.85; two against four
    (2026-11-23): tiled JPEG 2000 c=16 1.76 against 1.90 (49.7 against 56.3
    tiles/s), c=4 1.71 against 1.81, untiled c=16 1.78 against 1.87, TIFF
    c=16 1.46 against 1.52; six per core kept 1.91."""
    return 4 * available_cores()


class DecoderSettings(BaseSettings):
    """Every decoder setting; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="IIIF_DECODER_", frozen=True, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    image_root: Path = Path("images")
    # Decoder processes sharing the port (SO_REUSEPORT); budgets, caches and
    # decode threads below are totals, split evenly between them.
    workers: int = Field(default_factory=available_cores, ge=1, le=64)
    decode_threads: int = Field(default_factory=default_decode_threads, ge=1, le=256)
    # Estimated memory of the renders running at once (see decoder/cost.py);
    # default: half the container's memory limit (cgroup), else half the RAM.
    render_budget_mb: int = Field(default_factory=default_render_budget_mb, ge=16)
    # Renders estimated at most this size form the "small" lane (tiles,
    # thumbnails); a share of the budget is reserved for them so a few huge
    # renders never starve viewers.
    small_render_mb: int = Field(64, ge=1)
    small_lane_share: float = Field(0.25, ge=0.0, lt=1.0)
    # Renders that do not fit wait in a bounded queue, then are refused with
    # RESOURCE_EXHAUSTED instead of piling up until memory runs out.
    max_queued: int = Field(64, ge=0)
    queue_timeout_s: float = Field(10.0, gt=0)
    chunk_bytes: int = Field(256 * 1024, ge=4096, le=3 * 1024 * 1024)
    jpeg_quality: int = Field(85, ge=1, le=100)
    # A hard cap on any one output, whatever the caller asks: upscaling and
    # rotation must not be a way to allocate gigapixels.
    max_output_pixels: int = Field(100_000_000, ge=1)
    # Largest source served (0 = no limit): headers can claim absurd sizes.
    max_source_pixels: int = Field(2_000_000_000, ge=0)
    max_source_bytes: int = Field(0, ge=0)
    describe_cache_entries: int = Field(4096, ge=0)
    vips_concurrency: int = Field(1, ge=1, le=64)
    # Stored JPEG tiles of tiled TIFFs are sent as they are when a request is
    # exactly one whole tile (no decode, no re-encode).
    tile_passthrough: bool = True
    # Opened TIFF directories of local files kept per worker process for the
    # next request (0: open every time); S3 objects are never kept open.
    open_tiffs: int = Field(64, ge=0, le=4096)
    # Small levels (at most level_cache_max_pixels) are decoded whole once and
    # served by cropping, and so are the 512-1024 px blocks around small JPEG 2000
    # regions (a tiled JPEG 2000's small levels too, block by block: see
    # decoder/pipeline/load.py); bounded in memory, least recently used dropped first.
    level_cache_mb: int = Field(256, ge=0)
    level_cache_max_pixels: int = Field(2_000_000, ge=0)
    # JPEG2000 decoder: libopenjp2 directly, region by region (decoder/engines/
    # openjpeg.py), Grok likewise (decoder/engines/grok.py; needs libgrokj2k1,
    # not the default: docs/grok.md), or libvips' loader, which decodes whole
    # codestream tiles.
    jp2_engine: Literal["openjpeg", "grok", "vips"] = "openjpeg"
    # OpenJPEG threads per decode: other requests often wait for one decode
    # (a JPEG 2000 block that a viewer's neighbouring tiles share), so it may
    # use the cores that are idle meanwhile; not split between workers. For
    # Grok, the size of its one worker pool per process.
    jp2_threads: int = Field(default_factory=lambda: min(4, available_cores()), ge=1, le=64)
    # The libopenjp2 of the "openjpeg" engine: "" = our build of OpenJPEG
    # 2.5.4 (made by `make install` and the container build; it seeks tile-
    # parts by TLM markers), else the system's; "system" = the system's
    # (Debian 12: 2.5.0); or a path to another build.
    openjpeg_library: str = ""
    # Idle OpenJPEG codecs of untiled JPEG 2000s kept for the image's next
    # block at the same level, which then skips reading and parsing the
    # codestream (0.55-0.75 of the CPU a block); each is charged 3 times its
    # file's size (decoder/engines/openjpeg.py), so files over a third of
    # this are never kept. 0 turns it off.
    jp2_kept_codecs_mb: int = Field(256, ge=0)
    # Free memory each C heap keeps for reuse instead of returning it to the
    # kernel at once (glibc; 0 = glibc's own thresholds): see decoder/allocator.py.
    malloc_keep_mb: int = Field(8, ge=0, le=256)
    # The event loop under gRPC: uvloop (libuv) costs the decoder 10-30% less
    # CPU per cheap call (a stored-tile call, a cached Describe) than
    # asyncio's own loop (bench/call_costs.py, docs/deployment.md).
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    grace_period_s: float = Field(10.0, ge=0)
    # Connections older than this are closed gracefully, so gateways using
    # client-side round-robin rediscover decoders as they scale; 0 = never.
    max_connection_age_s: float = Field(300.0, ge=0)
    # Prometheus /metrics on its own port; 0 turns it off.
    metrics_port: int = Field(9090, ge=0, le=65535)
    # OpenTelemetry traces (exporter endpoint from the OTEL_EXPORTER_OTLP_* variables).
    tracing: bool = False
    tracing_exporter: Literal["otlp", "console"] = "otlp"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    # -- where images come from ------------------------------------------------
    source: Literal["filesystem", "s3"] = "filesystem"
    # S3 or an S3-compatible store (credentials: the standard AWS chain).
    s3_bucket: str = ""
    s3_prefix: str = ""
    # Comma-separated buckets that `s3://bucket/key` identifiers may name;
    # empty disables such identifiers.
    s3_allowed_buckets: str = ""
    s3_endpoint_url: str = ""
    s3_region: str = ""
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    # Identifiers without extension: HEAD the key, then LIST `key.*` (cached).
    s3_try_extensions: bool = True
    # GETs in flight per process (also the connection pool size) and per request.
    s3_max_concurrent_gets: int = Field(32, ge=1, le=512)
    s3_request_concurrency: int = Field(8, ge=1, le=64)
    s3_block_bytes: int = Field(1 << 20, ge=64 * 1024, le=64 << 20)
    s3_readahead_blocks: int = Field(4, ge=0, le=64)
    # Objects up to this size are fetched whole, in parallel blocks, at open.
    s3_whole_object_bytes: int = Field(8 << 20, ge=0)
    s3_block_cache_mb: int = Field(256, ge=0)
    s3_index_cache_entries: int = Field(1024, ge=0)
    s3_max_attempts: int = Field(4, ge=1, le=20)
    s3_request_timeout_s: float = Field(10.0, gt=0)
    s3_connect_timeout_s: float = Field(3.0, gt=0)
    # How long a decoder thread waits for one read before failing it.
    s3_read_timeout_s: float = Field(60.0, gt=0)
    s3_stat_ttl_s: float = Field(5.0, ge=0)
    s3_resolve_ttl_s: float = Field(60.0, ge=0)
    # Bytes remote sources may hold for requests in flight (fetched data and
    # the codec's copy); requests wait this long for room, then get
    # RESOURCE_EXHAUSTED. The block cache is bounded separately.
    source_memory_budget_mb: int = Field(512, ge=1)
    source_budget_wait_s: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> DecoderSettings:
        if self.source == "s3" and not self.s3_bucket:
            raise ValueError("IIIF_DECODER_S3_BUCKET is required when IIIF_DECODER_SOURCE=s3")
        return self
