"""`{id}/info.json`: describe the image, build the document, negotiate its type."""

from __future__ import annotations

import json

import falcon
import falcon.asgi
from cachetools import LRUCache

from gateway.conditional import etag_for, not_modified
from gateway.decoder_client import ImageDescription
from gateway.iiif.info import CONTEXT, build_info
from gateway.iiif.types import ImageDims, InfoRequest
from gateway.info_view import advertised_sizes, advertised_tiles
from gateway.resources.context import MountContext
from gateway.resources.links import profile_link, service_id
from gateway.resources.support import FORMATS, QUALITIES, advertised_features

JSON_LD = "application/ld+json"
# Serialised documents kept per mount: building one costs 0.1 ms, a sizeable
# part of answering a warm info.json. About 1 KB each, so a few MB at most.
DOCUMENTS_KEPT = 4096


class InfoResponder:
    def __init__(self, ctx: MountContext) -> None:
        self._ctx = ctx
        self._client = ctx.client
        self._limits = ctx.limits
        # By identifier, source version and service id (which follows the
        # request's host and proxy headers): a changed image is never served
        # from an old document.
        self._documents: LRUCache[tuple[str, str, str], str] = LRUCache(maxsize=DOCUMENTS_KEPT)

    def _document(self, parsed: InfoRequest, desc: ImageDescription, sid: str) -> str:
        key = (parsed.identifier, desc.version, sid)
        text = self._documents.get(key)
        if text is None:
            doc = build_info(
                parsed.version,
                sid,
                ImageDims(desc.width, desc.height),
                advertised_sizes(desc, self._limits),
                advertised_tiles(desc),
                self._limits,
                FORMATS,
                QUALITIES[parsed.version],
                advertised_features(parsed.version, self._limits),
            )
            text = json.dumps(doc, separators=(",", ":"))
            self._documents[key] = text
        return text

    async def respond(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, parsed: InfoRequest
    ) -> None:
        desc = await self._client.describe(parsed.identifier)
        version = parsed.version
        sid = service_id(req, self._ctx.public_base, self._ctx.mount, parsed.identifier)
        # JSON-LD only when asked for; plain JSON keeps naive clients happy
        # (3.0 section 7.1, 2.1 section 5.1).
        if JSON_LD in (req.accept or ""):
            resp.content_type = f'{JSON_LD};profile="{CONTEXT[version]}"'
        else:
            resp.content_type = falcon.MEDIA_JSON
        resp.set_header("Vary", "Accept")
        resp.append_header("Link", profile_link(version))
        etag = etag_for(desc.version, f"info {version} {sid} {resp.content_type}")
        resp.set_header("ETag", etag)
        resp.last_modified = desc.last_modified
        resp.cache_control = [self._ctx.cache_control]
        if not_modified(
            etag,
            desc.last_modified,
            req.get_header("If-None-Match"),
            req.get_header("If-Modified-Since"),
        ):
            resp.status = falcon.HTTP_304
            return
        resp.text = self._document(parsed, desc, sid)
