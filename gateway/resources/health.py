"""Liveness (the process answers) and readiness (it can reach a decoder)."""

from __future__ import annotations

import time

import falcon
import falcon.asgi

from gateway.decoder_client import DecoderClient


class Liveness:
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        req.context.route = "live"
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = "ok\n"


class Readiness:
    """Ready while a decoder answers SERVING; the answer is reused for `ttl_s`
    so probes from many kubelets do not each cost a gRPC call."""

    def __init__(self, client: DecoderClient, ttl_s: float = 1.0) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._checked_at = float("-inf")
        self._ready = False

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        req.context.route = "ready"
        now = time.monotonic()
        if now - self._checked_at > self._ttl_s:
            self._ready = await self._client.healthy()
            self._checked_at = now
        resp.content_type = falcon.MEDIA_TEXT
        resp.status = falcon.HTTP_200 if self._ready else falcon.HTTP_503
        resp.text = "ready\n" if self._ready else "no decoder is serving\n"
