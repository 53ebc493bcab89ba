"""worker_env: each decoder worker gets its share of every total."""

from __future__ import annotations

from decoder.settings import DecoderSettings
from decoder.supervisor import WORKER_ENV, worker_env


def test_budgets_caches_and_threads_are_split_between_workers() -> None:
    settings = DecoderSettings(
        workers=4,
        decode_threads=10,
        render_budget_mb=4000,
        level_cache_mb=256,
        s3_block_cache_mb=512,
        jp2_kept_codecs_mb=1024,
    )
    env = worker_env(settings, 2)
    assert env[WORKER_ENV] == "2"
    assert env["IIIF_DECODER_WORKERS"] == "1"
    assert env["IIIF_DECODER_DECODE_THREADS"] == "3"
    assert env["IIIF_DECODER_RENDER_BUDGET_MB"] == "1000"
    assert env["IIIF_DECODER_LEVEL_CACHE_MB"] == "64"
    assert env["IIIF_DECODER_S3_BLOCK_CACHE_MB"] == "128"
    assert env["IIIF_DECODER_JP2_KEPT_CODECS_MB"] == "256"
