"""`python -m decoder`: run the gRPC decoder with settings from IIIF_DECODER_* variables."""

from __future__ import annotations

import asyncio

from decoder.logs import configure_logging
from decoder.server import serve
from decoder.settings import DecoderSettings


def main() -> None:
    settings = DecoderSettings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
