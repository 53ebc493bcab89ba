"""The gateway's configuration: one frozen object, read once from IIIF_GATEWAY_* variables."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    """Every gateway setting; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="IIIF_GATEWAY_", frozen=True, extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    # Any gRPC target: host:port, or dns:///decoder.ns.svc:50051 for every
    # decoder a headless Service lists.
    decoder_target: str = "127.0.0.1:50051"
    # gRPC channels per gateway process, each one connection to one decoder
    # address picked at random: a few per decoder process (pods x worker
    # processes) reach them all; calls are balanced over those reached.
    decoder_channels: int = Field(8, ge=1, le=256)
    # Public base URL (scheme://host[:port][/prefix]) used in info.json ids and
    # Link headers; when unset it comes from Forwarded / X-Forwarded-* headers,
    # else from the request itself.
    public_base_url: str | None = None
    max_width: int | None = Field(None, ge=1)
    max_height: int | None = Field(None, ge=1)
    # Caps every output (and so what full/max means): bots asking for full-size
    # renders of huge masters must not be able to exhaust decoder memory.
    max_area: int | None = Field(25_000_000, ge=1)
    cache_control: str = "public, max-age=86400"
    request_timeout_s: float = Field(30.0, gt=0)
    retry_after_s: int = Field(2, ge=1)
    # Rendered images kept in memory per gateway process (0 = off): viewers
    # ask for the same tiles and thumbnails again and again.
    render_cache_mb: int = Field(64, ge=0)
    render_cache_item_kb: int = Field(512, ge=1)
    # On a render cache miss for a stored TIFF tile, fetch the aligned square
    # of this many tiles a side around it in one decoder call and cache them
    # for the viewer's next requests (1 = one tile at a time). Needs the
    # render cache.
    stored_tile_batch: int = Field(4, ge=1, le=16)
    describe_cache_entries: int = Field(10_000, ge=1)
    describe_cache_ttl_s: float = Field(300.0, ge=0)
    workers: int = Field(1, ge=1)
    # 0: /metrics on the HTTP port. Otherwise /metrics only on this port, so an
    # Ingress in front of the HTTP port does not publish it.
    metrics_port: int = Field(0, ge=0, le=65535)
    # OpenTelemetry traces (exporter endpoint from the OTEL_EXPORTER_OTLP_* variables).
    tracing: bool = False
    tracing_exporter: Literal["otlp", "console"] = "otlp"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"

    @model_validator(mode="after")
    def _height_needs_width(self) -> GatewaySettings:
        # Image API 3.0 section 5.3: maxHeight is only meaningful with maxWidth.
        if self.max_height is not None and self.max_width is None:
            raise ValueError("IIIF_GATEWAY_MAX_HEIGHT needs IIIF_GATEWAY_MAX_WIDTH")
        return self

    @field_validator("max_width", "max_height", "max_area", mode="before")
    @classmethod
    def _no_limit(cls, value: object) -> object:
        """`none`, `0` or an empty value switch a limit off."""
        if isinstance(value, str) and value.strip().lower() in ("", "none", "0"):
            return None
        return value
