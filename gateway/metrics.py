"""Prometheus metrics of the gateway, served at /metrics on its HTTP port.

With several uvicorn workers, prometheus_client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by `python -m gateway` before the workers
start) merges every worker's samples at scrape time.
"""

from __future__ import annotations

import os

import falcon
import falcon.asgi
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)
from prometheus_client.multiprocess import MultiProcessCollector

REQUESTS = Counter(
    "iiif_gateway_requests_total",
    "HTTP requests answered, by route and status",
    ["route", "status"],
)
REQUEST_SECONDS = Histogram(
    "iiif_gateway_request_seconds",
    "Time to the end of the response handler (streamed bodies excluded), by route",
    ["route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

RENDER_CACHE = Counter(
    "iiif_gateway_render_cache_total", "Image requests by render cache outcome", ["outcome"]
)

STORED_TILE_BATCHES = Counter(
    "iiif_gateway_stored_tile_batches_total",
    "Decoder calls fetching stored tiles (the square around a missed tile, or "
    "groups asked for together), by outcome",
    ["outcome"],
)


def observe(route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(route, str(status)).inc()
    REQUEST_SECONDS.labels(route).observe(seconds)


def _registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def serve_metrics(host: str, port: int) -> None:
    """Expose /metrics on its own port from a daemon thread of this process."""
    start_http_server(port, addr=host, registry=_registry())


class MetricsResource:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        req.context.route = "metrics"
        resp.content_type = CONTENT_TYPE_LATEST
        resp.data = generate_latest(_registry())
