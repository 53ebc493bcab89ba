"""`python -m decoder`: run the gRPC decoder with settings from IIIF_DECODER_* variables."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable

from decoder.logs import configure_logging
from decoder.server import serve
from decoder.settings import DecoderSettings
from decoder.supervisor import WORKER_ENV


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for IIIF_DECODER_EVENT_LOOP (None: asyncio's own)."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def main() -> None:
    settings = DecoderSettings()
    configure_logging(settings.log_level, settings.log_format)
    if settings.workers > 1:
        from decoder.supervisor import supervise

        sys.exit(supervise(settings))
    # A worker of a supervisor leaves /metrics to it.
    with asyncio.Runner(loop_factory=loop_factory(settings.event_loop)) as runner:
        runner.run(serve(settings, serve_metrics=WORKER_ENV not in os.environ))


if __name__ == "__main__":
    main()
