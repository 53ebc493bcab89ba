"""Every setting of both services is in the README's one configuration table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from decoder.settings import DecoderSettings
from gateway.settings import GatewaySettings

README = (Path(__file__).resolve().parent.parent.parent / "README.md").read_text()
DOCUMENTED = set(re.findall(r"`(IIIF_[A-Z0-9_]+)`", README))
# Rows that document two variables at once: `IIIF_X_LOG_LEVEL` / `_LOG_FORMAT`.
DOCUMENTED |= {
    "_".join(m.group(1).split("_")[:2]) + m.group(2)
    for m in re.finditer(r"`(IIIF_[A-Z_]+)` / `(_[A-Z_]+)`", README)
}


@pytest.mark.parametrize("settings", [GatewaySettings, DecoderSettings])
def test_every_setting_is_documented(settings: type[BaseSettings]) -> None:
    prefix = settings.model_config.get("env_prefix", "")
    names = {f"{prefix}{field}".upper() for field in settings.model_fields}
    missing = names - DOCUMENTED
    assert not missing, f"add to the README's configuration table: {sorted(missing)}"
