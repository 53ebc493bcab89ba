"""What every resource of one IIIF mount needs, built once in app.py."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.decoder_client import DecoderClient
from gateway.iiif.types import ApiVersion, Limits
from gateway.render_cache import RenderCache
from gateway.tile_batches import StoredTileBatcher


@dataclass(frozen=True, slots=True)
class MountContext:
    """One Image API version's mount point and its shared collaborators."""

    version: ApiVersion
    mount: str  # e.g. "/iiif/3"
    client: DecoderClient
    limits: Limits
    public_base: str | None
    cache_control: str
    render_cache: RenderCache | None = None
    stored_tiles: StoredTileBatcher | None = None
