"""`{id}/{region}/{size}/{rotation}/{quality}.{format}`: resolve, render, stream."""

from __future__ import annotations

import falcon
import falcon.asgi

from gateway import metrics, routing
from gateway.conditional import etag_for, not_modified
from gateway.decoder_client import ImageDescription, RenderStream, StaleDescription
from gateway.iiif.canonical import canonical_path
from gateway.iiif.resolve import resolve
from gateway.iiif.types import ImageDims, ImageRequest, RenderPlan
from gateway.resources.context import MountContext
from gateway.resources.links import profile_link, service_id
from gateway.resources.support import MEDIA_TYPES


class ImageResponder:
    def __init__(self, ctx: MountContext) -> None:
        self._ctx = ctx
        self._client = ctx.client
        self._limits = ctx.limits

    def _plan(self, parsed: ImageRequest, desc: ImageDescription) -> RenderPlan:
        return resolve(parsed, ImageDims(desc.width, desc.height), self._limits)

    async def _start(
        self, identifier: str, desc: ImageDescription, plan: RenderPlan
    ) -> RenderStream:
        crop = plan.crop
        affinity = routing.render_affinity(
            identifier,
            desc.version,
            desc.levels,
            desc.width,
            desc.height,
            desc.cache_block,
            (crop.x, crop.y, crop.w, crop.h),
            plan.width,
            plan.height,
        )
        return await self._client.render(identifier, plan, desc.version, affinity)

    async def respond(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, parsed: ImageRequest
    ) -> None:
        desc = await self._client.describe(parsed.identifier)
        plan = self._plan(parsed, desc)
        canonical = canonical_path(
            plan, parsed, ImageDims(desc.width, desc.height), limits=self._limits
        )
        sid = service_id(req, self._ctx.public_base, self._ctx.mount, parsed.identifier)
        resp.append_header("Link", f'<{sid}/{canonical}>;rel="canonical"')
        resp.append_header("Link", profile_link(parsed.version))
        etag = etag_for(desc.version, canonical)
        resp.set_header("ETag", etag)
        resp.last_modified = desc.last_modified
        resp.cache_control = [self._ctx.cache_control]
        resp.content_type = MEDIA_TYPES[plan.format]
        if not_modified(
            etag,
            desc.last_modified,
            req.get_header("If-None-Match"),
            req.get_header("If-Modified-Since"),
        ):
            resp.status = falcon.HTTP_304
            return
        if req.method == "HEAD":
            return
        cache = self._ctx.render_cache
        key = (parsed.identifier, desc.version, canonical)
        cached = cache.get(key) if cache is not None else None
        if cache is not None:
            metrics.RENDER_CACHE.labels("hit" if cached is not None else "miss").inc()
        if cached is None and self._ctx.stored_tiles is not None:
            cached = await self._ctx.stored_tiles.fetch(parsed, desc, plan)
        if cached is not None:
            resp.content_type = cached.content_type
            resp.data = cached.data
            return
        stream = await self._render(parsed, desc, plan)
        resp.content_type = stream.content_type
        if stream.content_length is not None:
            resp.content_length = stream.content_length
        # The version in the key is the one the decoder rendered from.
        key = (parsed.identifier, stream.version, canonical)
        resp.stream = (
            cache.tee(key, stream.content_type, stream.chunks)
            if cache is not None
            else stream.chunks
        )

    async def _render(
        self, parsed: ImageRequest, desc: ImageDescription, plan: RenderPlan
    ) -> RenderStream:
        try:
            return await self._start(parsed.identifier, desc, plan)
        except StaleDescription:
            # The image changed after we described it: plan again, once.
            self._client.forget(parsed.identifier)
            fresh = await self._client.describe(parsed.identifier)
            return await self._start(parsed.identifier, fresh, self._plan(parsed, fresh))
