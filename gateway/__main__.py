"""`python -m gateway`: serve the IIIF gateway with uvicorn, settings from IIIF_GATEWAY_*."""

from __future__ import annotations

import os
import tempfile

import uvicorn

from gateway.logs import configure_logging
from gateway.metrics import serve_metrics
from gateway.settings import GatewaySettings


def main() -> None:
    settings = GatewaySettings()
    configure_logging(settings.log_level, settings.log_format)
    if settings.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Workers are separate processes: they share metrics through files.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="iiif-gateway-metrics-")
    if settings.metrics_port:
        # In this (parent) process: with several workers it reads all their files.
        serve_metrics(settings.host, settings.metrics_port)
    uvicorn.run(
        "gateway.app:create_app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        # Let in-flight responses finish on SIGTERM, bounded like the decoder's grace.
        timeout_graceful_shutdown=int(settings.request_timeout_s),
        lifespan="on",
    )


if __name__ == "__main__":
    main()
