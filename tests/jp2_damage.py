"""Damaged copies of a JPEG 2000 file, decoded by an engine: what the
engines' robustness tests share (a crash, not an exception, fails them)."""

from __future__ import annotations

import random

from decoder.engines.base import DecodeError, Engine, ImageInfo
from decoder.plan import Box
from tests.readers import BytesReader


def decode_damaged(
    engine: Engine, data: bytes, info: ImageInfo, rounds: int = 60, seed: int = 1234
) -> dict[str, int]:
    """Decode `rounds` seeded damaged copies of `data` (bits flipped here and
    there, or 256 bytes zeroed), each at a random level, whole; count the
    outcomes: "decoded" or "DecodeError". Any other exception propagates."""
    rng = random.Random(seed)
    outcomes = {"decoded": 0, "DecodeError": 0}
    for _ in range(rounds):
        damaged = bytearray(data)
        if rng.random() < 0.5:
            for _ in range(rng.randrange(1, 12)):
                damaged[rng.randrange(100, len(damaged))] ^= 1 << rng.randrange(8)
        else:
            at = rng.randrange(100, len(damaged) - 300)
            damaged[at : at + 256] = bytes(256)
        level = rng.randrange(len(info.levels))
        lvl = info.levels[level]
        try:
            engine.load_region(
                BytesReader(bytes(damaged)), info, level, Box(0, 0, lvl.width, lvl.height)
            )
            outcomes["decoded"] += 1
        except DecodeError:
            outcomes["DecodeError"] += 1
    return outcomes
