"""Prometheus metrics of the decoder, served on their own port (IIIF_DECODER_METRICS_PORT).

With several worker processes (IIIF_DECODER_WORKERS), prometheus_client's
multiprocess mode merges every worker's samples: the supervisor sets
PROMETHEUS_MULTIPROC_DIR before starting workers and serves /metrics itself.
State that lives in objects (admission, the S3 source) is sampled into plain
counters and gauges once a second, which works the same in both modes.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

from decoder.admission import Admission
from decoder.sources.s3 import S3Source

RPCS = Counter(
    "iiif_decoder_rpcs_total", "gRPC calls answered, by method and status code", ["rpc", "code"]
)
RPC_SECONDS = Histogram(
    "iiif_decoder_rpc_seconds",
    "Time to answer a gRPC call, by method",
    ["rpc"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DECODE_SECONDS = Histogram(
    "iiif_decoder_decode_seconds",
    "Time spent decoding, processing and encoding one render, by source format",
    ["format"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SHARED_RENDERS = Counter(
    "iiif_decoder_shared_renders_total", "Renders answered by joining an identical one in flight"
)
PASSTHROUGH = Counter(
    "iiif_decoder_passthrough_total",
    "Renders answered with a stored JPEG tile's bytes, without decoding (decodes avoided)",
)
MOSAICS = Counter(
    "iiif_decoder_tile_mosaics_total",
    "Renders of several stored JPEG tiles, or part of one, answered by joining their DCT "
    "coefficients without decoding (outcome: joined, or failed and decoded instead)",
    ["outcome"],
)
REJECTIONS = Counter("iiif_decoder_rejections_total", "Renders refused by admission control")
QUEUE_DEPTH = Gauge(
    "iiif_decoder_queue_depth", "Renders waiting for admission", multiprocess_mode="livesum"
)
MEMORY_BYTES = Gauge(
    "iiif_decoder_memory_bytes",
    "Estimated memory of the renders admitted now",
    multiprocess_mode="livesum",
)
MEMORY_PEAK_BYTES = Gauge(
    "iiif_decoder_memory_peak_bytes",
    "Most estimated memory ever admitted at once (per worker)",
    multiprocess_mode="max",
)
S3_REQUESTS = Counter("iiif_decoder_s3_requests_total", "S3 requests sent, by method", ["method"])
S3_GETS = Counter("iiif_decoder_s3_gets_total", "S3 ranged GETs sent")
S3_BYTES = Counter("iiif_decoder_s3_bytes_total", "Bytes received from S3")
S3_RETRIES = Counter("iiif_decoder_s3_retries_total", "S3 requests retried after a transient fault")
CACHE_HITS = Counter("iiif_decoder_block_cache_hits_total", "Block reads served from the cache")
CACHE_MISSES = Counter("iiif_decoder_block_cache_misses_total", "Block reads that had to fetch")
SOURCE_BUDGET_BYTES = Gauge(
    "iiif_decoder_source_budget_bytes",
    "Bytes remote reads hold for requests in flight",
    multiprocess_mode="livesum",
)

SAMPLE_INTERVAL_S = 1.0


@dataclass(slots=True)
class _Seen:
    """Counter values already exported, so each sample adds only the difference."""

    values: dict[str, float] = field(default_factory=dict)

    def delta(self, name: str, now: float) -> float:
        before = self.values.get(name, 0.0)
        self.values[name] = now
        return max(0.0, now - before)


def sample(admission: Admission, source: object, seen: _Seen) -> None:
    """Copy admission and source state into the metrics (cheap; call periodically)."""
    QUEUE_DEPTH.set(admission.waiting)
    MEMORY_BYTES.set(admission.in_use)
    MEMORY_PEAK_BYTES.set(admission.peak)
    REJECTIONS.inc(seen.delta("rejected", admission.rejected))
    if isinstance(source, S3Source):
        for method, count in source.requests.items():
            S3_REQUESTS.labels(method).inc(seen.delta(f"req:{method}", count))
        S3_GETS.inc(seen.delta("gets", source.requests.get("GET", 0)))
        S3_BYTES.inc(seen.delta("bytes", source.bytes_fetched))
        S3_RETRIES.inc(seen.delta("retries", source.retries))
        CACHE_HITS.inc(seen.delta("hits", source.cache.hits))
        CACHE_MISSES.inc(seen.delta("misses", source.cache.misses))
        SOURCE_BUDGET_BYTES.set(source.budget.in_use)


async def run_sampler(admission: Admission, source: object) -> None:
    """Sample forever, every SAMPLE_INTERVAL_S; cancel to stop."""
    seen = _Seen()
    while True:
        sample(admission, source, seen)
        await asyncio.sleep(SAMPLE_INTERVAL_S)


def registry() -> CollectorRegistry:
    """All workers' metrics in multiprocess mode, else this process's."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        return merged
    return REGISTRY


def serve_metrics(host: str, port: int) -> bool:
    """Expose /metrics over HTTP on `host:port` from a daemon thread.

    Returns False (and serves no metrics) when the port cannot be bound: a
    busy metrics port must not keep the decoder itself from serving.
    """
    try:
        _start_http_server(port, addr=host, registry=registry())
    except OSError:
        return False
    return True
