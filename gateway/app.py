"""Builds the gateway's ASGI app from settings: collaborators made here, injected below."""

from __future__ import annotations

import json
from typing import cast

import falcon
import falcon.asgi

from gateway import errors
from gateway.decoder_client import DecoderClient
from gateway.disconnect import ASGIApp, CancelOnDisconnect
from gateway.errors import AsgiApp
from gateway.iiif.types import ApiVersion, Limits
from gateway.metrics import MetricsResource
from gateway.middleware import Cors, DecoderLifespan, RequestLog
from gateway.render_cache import RenderCache
from gateway.resources.context import MountContext
from gateway.resources.health import Liveness, Readiness
from gateway.resources.iiif import IIIFMount
from gateway.settings import GatewaySettings
from gateway.tile_batches import StoredTileBatcher

MOUNTS: dict[ApiVersion, str] = {ApiVersion.V3: "/iiif/3", ApiVersion.V2: "/iiif/2"}


class Index:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        req.context.route = "index"
        resp.content_type = falcon.MEDIA_JSON
        resp.text = json.dumps(
            {
                "service": "iiif-gateway",
                "image_api": {
                    "3.0": MOUNTS[ApiVersion.V3] + "/",
                    "2.1": MOUNTS[ApiVersion.V2] + "/",
                },
                "health": ["/health/live", "/health/ready"],
                "metrics": "/metrics",
            }
        )


def create_app(settings: GatewaySettings, client: DecoderClient | None = None) -> AsgiApp:
    """The ASGI app; `client` defaults to one built from `settings`."""
    if client is None:
        client = DecoderClient(
            settings.decoder_target,
            timeout_s=settings.request_timeout_s,
            retry_after_s=settings.retry_after_s,
            cache_entries=settings.describe_cache_entries,
            cache_ttl_s=settings.describe_cache_ttl_s,
            channels=settings.decoder_channels,
        )
    limits = Limits(settings.max_width, settings.max_height, settings.max_area)
    middleware: list[object] = [DecoderLifespan(client), RequestLog(), Cors()]
    app: AsgiApp = falcon.asgi.App(middleware=middleware)  # type: ignore[arg-type]
    errors.register(app)
    # One cache for both API versions: the canonical path differs per version,
    # so their entries never collide.
    render_cache = (
        RenderCache(settings.render_cache_mb << 20, settings.render_cache_item_kb << 10)
        if settings.render_cache_mb
        else None
    )
    batcher = (
        StoredTileBatcher(client, render_cache, settings.stored_tile_batch, limits)
        if render_cache is not None and settings.stored_tile_batch > 1
        else None
    )
    for version, mount in MOUNTS.items():
        ctx = MountContext(
            version,
            mount,
            client,
            limits,
            settings.public_base_url,
            settings.cache_control,
            render_cache,
            batcher,
        )
        app.add_sink(IIIFMount(ctx), prefix=f"^{mount}(?=/)")
    app.add_route("/", Index())
    app.add_route("/health/live", Liveness())
    app.add_route("/health/ready", Readiness(client))
    if not settings.metrics_port:
        app.add_route("/metrics", MetricsResource())
    return app


def create_app_from_env() -> ASGIApp:
    """Factory for ASGI servers (`uvicorn --factory gateway.app:create_app_from_env`)."""
    settings = GatewaySettings()
    if settings.tracing:
        # Imported only when asked for: tracing is optional at run time.
        from gateway.tracing import enable_tracing, traced

        enable_tracing("iiif-gateway", settings.tracing_exporter)
        return traced(CancelOnDisconnect(cast(ASGIApp, create_app(settings))))
    return CancelOnDisconnect(cast(ASGIApp, create_app(settings)))
