"""The public base URL a client used, so info.json ids and Link headers point back at it.

Order (first that applies): configured base URL; the RFC 7239 `Forwarded`
header; the de-facto X-Forwarded-Proto / -Host / -Prefix headers; the request.
"""

from __future__ import annotations

from collections.abc import Mapping


def _first(value: str | None) -> str | None:
    if not value:
        return None
    head = value.split(",", 1)[0].strip()
    return head or None


def _forwarded_pairs(value: str | None) -> dict[str, str]:
    """The first element of an RFC 7239 Forwarded header as lowercase key -> value."""
    pairs: dict[str, str] = {}
    element = _first(value)
    if element is None:
        return pairs
    for part in element.split(";"):
        key, sep, val = part.partition("=")
        if sep:
            pairs[key.strip().lower()] = val.strip().strip('"')
    return pairs


def public_base_url(
    configured: str | None, headers: Mapping[str, str], scheme: str, host: str
) -> str:
    """`scheme://host[/prefix]` without a trailing slash.

    `headers` must have lowercase names; `scheme` and `host` are what the
    request itself says.
    """
    if configured:
        return configured.rstrip("/")
    forwarded = _forwarded_pairs(headers.get("forwarded"))
    proto = forwarded.get("proto") or _first(headers.get("x-forwarded-proto")) or scheme
    fwd_host = forwarded.get("host") or _first(headers.get("x-forwarded-host")) or host
    prefix = (_first(headers.get("x-forwarded-prefix")) or "").strip("/")
    base = f"{proto.lower()}://{fwd_host}"
    return f"{base}/{prefix}" if prefix else base
