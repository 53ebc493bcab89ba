from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.settings import GatewaySettings


def test_limits_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IIIF_GATEWAY_MAX_AREA", "none")
    assert GatewaySettings().max_area is None


def test_max_height_needs_max_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IIIF_GATEWAY_MAX_HEIGHT", "1000")
    with pytest.raises(ValidationError, match="MAX_WIDTH"):
        GatewaySettings()


def test_every_bad_variable_is_reported_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IIIF_GATEWAY_PORT", "http")
    monkeypatch.setenv("IIIF_GATEWAY_REQUEST_TIMEOUT_S", "-1")
    with pytest.raises(ValidationError) as info:
        GatewaySettings()
    assert {e["loc"][0] for e in info.value.errors()} == {"port", "request_timeout_s"}
