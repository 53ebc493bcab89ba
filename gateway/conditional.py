"""HTTP validators: ETags and conditional GETs (RFC 9110 section 13), pure functions."""

from __future__ import annotations

import hashlib
from datetime import datetime
from email.utils import parsedate_to_datetime


def etag_for(version: str, representation: str) -> str:
    """A strong ETag for one representation (`representation`) of a source version."""
    digest = hashlib.blake2b(f"{version}\0{representation}".encode(), digest_size=16)
    return f'"{digest.hexdigest()}"'


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def not_modified(
    etag: str,
    last_modified: datetime,
    if_none_match: str | None,
    if_modified_since: str | None,
) -> bool:
    """Whether a GET with these conditional headers may be answered 304.

    If-None-Match wins over If-Modified-Since when both are present
    (RFC 9110 section 13.1.3); comparison is weak, as GET allows.
    """
    if if_none_match is not None:
        candidates = [_opaque(t) for t in if_none_match.split(",")]
        return "*" in candidates or _opaque(etag) in candidates
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        if since.tzinfo is None:
            return False
        return last_modified.replace(microsecond=0) <= since
    return False
