"""Where a IIIF service lives for the client that asked, and the headers that say so."""

from __future__ import annotations

from urllib.parse import quote

import falcon.asgi

from gateway.iiif.info import PROFILE_URI
from gateway.iiif.types import ApiVersion
from gateway.public_url import public_base_url


def service_id(
    req: falcon.asgi.Request, configured_base: str | None, mount: str, identifier: str
) -> str:
    """The image service's public id: base URL, mount point, encoded identifier."""
    headers = {k.lower(): v for k, v in req.headers.items()}
    base = public_base_url(configured_base, headers, req.scheme, req.netloc)
    # Identifiers must be percent-encoded in URIs, slashes included (3.0 section 9).
    return f"{base}{mount}/{quote(identifier, safe='')}"


def profile_link(version: ApiVersion) -> str:
    return f'<{PROFILE_URI[version]}>;rel="profile"'
