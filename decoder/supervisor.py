"""Several decoder processes on one port: a supervisor and its workers.

libvips' Python call machinery holds the GIL for a good part of each small
render, so threads barely scale while processes do. Each worker is a complete
decoder (its own source, caches and thread pool) listening on the same port
with SO_REUSEPORT (gRPC's default on Linux); the kernel spreads connections
over them, and gateways open several channels so one gateway reaches every
worker. The supervisor splits the memory budgets between the workers so they
hold together, serves the merged metrics, forwards SIGTERM, and restarts a
worker that dies.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import structlog
from prometheus_client import multiprocess

from decoder.settings import DecoderSettings

log = structlog.get_logger("decoder")

WORKER_ENV = "IIIF_DECODER_WORKER_INDEX"
_RESTART_BACKOFF_S = 1.0


def worker_env(settings: DecoderSettings, index: int) -> dict[str, str]:
    """Environment of worker `index`: one process, its share of every budget."""
    n = settings.workers
    env = dict(os.environ)
    env.update(
        {
            WORKER_ENV: str(index),
            "IIIF_DECODER_WORKERS": "1",
            "IIIF_DECODER_DECODE_THREADS": str(max(1, math.ceil(settings.decode_threads / n))),
            "IIIF_DECODER_RENDER_BUDGET_MB": str(max(16, settings.render_budget_mb // n)),
            "IIIF_DECODER_SOURCE_MEMORY_BUDGET_MB": str(
                max(16, settings.source_memory_budget_mb // n)
            ),
            "IIIF_DECODER_S3_BLOCK_CACHE_MB": str(settings.s3_block_cache_mb // n),
            "IIIF_DECODER_LEVEL_CACHE_MB": str(settings.level_cache_mb // n),
            "IIIF_DECODER_JP2_KEPT_CODECS_MB": str(settings.jp2_kept_codecs_mb // n),
        }
    )
    return env


def _start(settings: DecoderSettings, index: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "decoder"], env=worker_env(settings, index))


def supervise(settings: DecoderSettings) -> int:
    """Run `settings.workers` worker processes until SIGTERM; returns an exit code."""
    metrics_dir = tempfile.mkdtemp(prefix="iiif-decoder-metrics-")
    # Set before any worker starts: prometheus_client picks its mode at import.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    if settings.metrics_port:
        from decoder.metrics import serve_metrics

        if not serve_metrics(settings.host, settings.metrics_port):
            log.error(
                "metrics port unavailable; serving without /metrics", port=settings.metrics_port
            )

    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    workers = [_start(settings, i) for i in range(settings.workers)]
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("decoder supervisor", workers=[p.pid for p in workers], port=settings.port)

    while not stopping:
        time.sleep(0.2)
        for index, proc in enumerate(workers):
            code = proc.poll()
            if code is not None and not stopping:
                multiprocess.mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
                log.error("decoder worker died; restarting", pid=proc.pid, code=code)
                time.sleep(_RESTART_BACKOFF_S)
                workers[index] = _start(settings, index)

    deadline = time.monotonic() + settings.grace_period_s + 5
    exit_code = 0
    for proc in workers:
        try:
            code = proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        exit_code = exit_code or (code if code > 0 else 0)
    for path in Path(metrics_dir).glob("*.db"):
        path.unlink(missing_ok=True)
    Path(metrics_dir).rmdir()
    log.info("decoder supervisor stopped", code=exit_code)
    return exit_code
