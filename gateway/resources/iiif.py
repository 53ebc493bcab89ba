"""The IIIF Image API mount (`/iiif/3`, `/iiif/2`): parses the raw path and dispatches.

A sink rather than routes, because identifiers may hold encoded slashes
(`a%2Fb`) that routing on the decoded path would split.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import falcon
import falcon.asgi

from gateway.iiif.parse import parse_path
from gateway.iiif.types import BaseRequest, ImageRequest, InfoRequest
from gateway.resources.context import MountContext
from gateway.resources.image import ImageResponder
from gateway.resources.info import InfoResponder
from gateway.resources.links import service_id

ALLOWED_METHODS = "GET, HEAD, OPTIONS"


class IIIFMount:
    def __init__(self, ctx: MountContext) -> None:
        self.version = ctx.version
        self.mount = ctx.mount
        self._public_base = ctx.public_base
        self._info = InfoResponder(ctx)
        self._image = ImageResponder(ctx)

    async def __call__(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response | None, **kwargs: Any
    ) -> None:
        assert resp is not None  # Falcon passes None only to sinks on WebSocket routes
        req.context.route = "preflight"
        if req.method == "OPTIONS":
            # CORS preflight (the CORS middleware adds the Access-Control headers).
            resp.status = falcon.HTTP_204
            resp.set_header("Allow", ALLOWED_METHODS)
            resp.set_header("Access-Control-Allow-Methods", ALLOWED_METHODS)
            resp.set_header(
                "Access-Control-Allow-Headers",
                req.get_header("Access-Control-Request-Headers") or "*",
            )
            resp.set_header("Access-Control-Max-Age", "86400")
            return
        if req.method not in ("GET", "HEAD"):
            raise falcon.HTTPMethodNotAllowed(ALLOWED_METHODS.split(", "))
        req.context.route = "invalid"
        parsed = parse_path(self.version, self._raw_tail(req))
        req.context.route = f"{type(parsed).__name__.removesuffix('Request').lower()}"
        if isinstance(parsed, BaseRequest):
            # 3.0 section 2.2: the base URI redirects (303) to info.json.
            sid = service_id(req, self._public_base, self.mount, parsed.identifier)
            raise falcon.HTTPSeeOther(f"{sid}/info.json")
        if isinstance(parsed, InfoRequest):
            await self._info.respond(req, resp, parsed)
        elif isinstance(parsed, ImageRequest):
            await self._image.respond(req, resp, parsed)

    def _raw_tail(self, req: falcon.asgi.Request) -> str:
        """The still percent-encoded path after the mount point."""
        raw = req.scope.get("raw_path")
        path = raw.decode("utf-8", "replace") if raw else quote(req.path, safe="/")
        # raw_path includes any ASGI root_path; strip up to and including the mount.
        index = path.find(self.mount + "/")
        return path[index + len(self.mount) + 1 :] if index >= 0 else ""
