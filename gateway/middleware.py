"""Cross-cutting HTTP behaviour: CORS on every answer, request ids, one log line per request."""

from __future__ import annotations

import time
import uuid

import falcon.asgi
import structlog

from gateway import metrics
from gateway.decoder_client import DecoderClient

log = structlog.get_logger("gateway")

EXPOSED = "Link, ETag, Last-Modified, Retry-After, Content-Length, X-Request-ID"


class Cors:
    """`Access-Control-Allow-Origin: *` on every response, errors included:
    IIIF images are public and viewers on any origin must read them."""

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        resp.set_header("Access-Control-Allow-Origin", "*")
        resp.set_header("Access-Control-Expose-Headers", EXPOSED)


class RequestLog:
    """Binds a request id (the client's X-Request-ID, else a new one) for the
    request's log lines and echoes it; logs one line per request."""

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        request_id = req.get_header("X-Request-ID") or uuid.uuid4().hex
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id[:128])
        req.context.started = time.perf_counter()
        resp.set_header("X-Request-ID", request_id[:128])

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        started = getattr(req.context, "started", None)
        elapsed = time.perf_counter() - started if started else 0.0
        route = getattr(req.context, "route", "other")
        metrics.observe(route, resp.status_code, elapsed)
        log.info(
            "request",
            method=req.method,
            path=req.path,
            route=route,
            status=resp.status_code,
            ms=round(elapsed * 1000, 2),
        )


class DecoderLifespan:
    """Opens the decoder channel on the server's event loop, closes it at shutdown."""

    def __init__(self, client: DecoderClient) -> None:
        self._client = client

    async def process_startup(self, scope: object, event: object) -> None:
        await self._client.start()

    async def process_shutdown(self, scope: object, event: object) -> None:
        await self._client.close()
