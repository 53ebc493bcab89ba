"""Prometheus metrics of the decoder, served on their own port (IIIF_DECODER_METRICS_PORT)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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
REJECTIONS = Gauge("iiif_decoder_rejections_total", "Renders refused by admission control")
QUEUE_DEPTH = Gauge("iiif_decoder_queue_depth", "Renders waiting for admission")
MEMORY_BYTES = Gauge("iiif_decoder_memory_bytes", "Estimated memory of the renders admitted now")
MEMORY_PEAK_BYTES = Gauge(
    "iiif_decoder_memory_peak_bytes", "Most estimated memory ever admitted at once"
)


def watch_admission(
    waiting: Callable[[], float],
    in_use: Callable[[], float],
    peak: Callable[[], float],
    rejected: Callable[[], float],
) -> None:
    """Read admission state at scrape time (no bookkeeping on the hot path)."""
    QUEUE_DEPTH.set_function(waiting)
    MEMORY_BYTES.set_function(in_use)
    MEMORY_PEAK_BYTES.set_function(peak)
    REJECTIONS.set_function(rejected)


class _S3Collector(Collector):
    """Reads the S3 source's own counters at scrape time."""

    def __init__(self, source: S3Source) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        src = self._source
        requests = CounterMetricFamily(
            "iiif_decoder_s3_requests", "S3 requests sent, by method", labels=["method"]
        )
        for method, count in src.requests.items():
            requests.add_metric([method], count)
        yield requests
        yield CounterMetricFamily(
            "iiif_decoder_s3_gets", "S3 ranged GETs sent", value=src.requests.get("GET", 0)
        )
        yield CounterMetricFamily(
            "iiif_decoder_s3_bytes", "Bytes received from S3", value=src.bytes_fetched
        )
        yield CounterMetricFamily(
            "iiif_decoder_s3_retries",
            "S3 requests retried after a transient fault",
            value=src.retries,
        )
        yield CounterMetricFamily(
            "iiif_decoder_block_cache_hits",
            "Block reads served from the block cache",
            value=src.cache.hits,
        )
        yield CounterMetricFamily(
            "iiif_decoder_block_cache_misses",
            "Block reads that had to fetch",
            value=src.cache.misses,
        )
        yield GaugeMetricFamily(
            "iiif_decoder_source_budget_bytes",
            "Bytes remote reads hold for requests in flight",
            value=src.budget.in_use,
        )


def watch_source(source: object) -> None:
    """Export the S3 source's counters (nothing to export for a local folder)."""
    if isinstance(source, S3Source):
        REGISTRY.register(_S3Collector(source))


def serve_metrics(host: str, port: int) -> None:
    """Expose /metrics over HTTP on `host:port` from a daemon thread."""
    start_http_server(port, addr=host)
