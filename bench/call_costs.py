"""The decoder's CPU per gRPC call on each event loop (IIIF_DECODER_EVENT_LOOP).

    .venv/bin/python -m bench.call_costs [--rounds 3] [--calls 800] [--smoke]

Cheap calls are where a decoder's per-call work shows: a Describe answered
from the description cache, and StoredTiles calls for 1 and 3 x 3 stored
tiles of the pyramidal TIFF master (passthrough: read and sent, nothing
decoded). For each event loop in turn, a one-process decoder is started on
the benchmark's images; each kind of call is warmed up, then sent `--calls`
times with 8 in flight, and the decoder's CPU (user + system, all threads)
is divided by the calls. Rounds alternate the loops, the order reversed
every other round, so slow drifts of a noisy machine hit both alike.

Printed: per call kind and loop, the median over rounds of CPU per call
and calls per second, and uvloop's CPU per call as a ratio of asyncio's
(the baseline, measured in the same run).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

import grpc
from iiif_decoder.v1 import decoder_pb2 as pb
from iiif_decoder.v1 import decoder_pb2_grpc

from bench import procs
from bench.images import FULL, SMOKE, ImageType, ensure_images, identifier
from bench.servers import start_decoder

LOOPS: Final = ("asyncio", "uvloop")
KINDS: Final = ("describe", "stored 1", "stored 3x3")
IN_FLIGHT: Final = 8

Call = Callable[[], Awaitable[None]]


async def _worker(call: Call, left: list[int]) -> None:
    """Makes calls while `left[0]` (shared by the workers) counts down."""
    while left[0] > 0:
        left[0] -= 1
        await call()


async def _calls(target: str, image: str, calls: int, pid: int) -> dict[str, tuple[float, float]]:
    """(CPU ms per call, calls/s) per kind, against the decoder at `target`."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = decoder_pb2_grpc.DecoderStub(channel)
        desc = await stub.Describe(pb.DescribeRequest(identifier=image))
        # A level with at least 3 x 3 stored tiles, as small as possible.
        level = max(
            i
            for i, lvl in enumerate(desc.levels)
            if lvl.stored_tiles
            and lvl.width >= 3 * lvl.tile_width
            and lvl.height >= 3 * lvl.tile_height
        )

        async def describe() -> None:
            await stub.Describe(pb.DescribeRequest(identifier=image))

        def stored(side: int) -> Call:
            async def call() -> None:
                request = pb.StoredTilesRequest(
                    identifier=image, level=level, columns=side, rows=side,
                    expected_version=desc.version, packed=True,
                )  # fmt: skip
                async for _ in stub.StoredTiles(request):
                    pass

            return call

        kinds: dict[str, Call] = {
            "describe": describe, "stored 1": stored(1), "stored 3x3": stored(3),
        }  # fmt: skip
        out: dict[str, tuple[float, float]] = {}
        for kind, call in kinds.items():
            for _ in range(50):
                await call()
            tree = procs.process_tree([pid])
            cpu0, t0 = procs.cpu_seconds(tree), time.perf_counter()
            left = [calls]
            await asyncio.gather(*(_worker(call, left) for _ in range(IN_FLIGHT)))
            cpu1, t1 = procs.cpu_seconds(tree), time.perf_counter()
            out[kind] = (1000 * (cpu1 - cpu0) / calls, calls / (t1 - t0))
        return out


def measure(
    loop: str, root: Path, image: str, calls: int, logs: Path
) -> dict[str, tuple[float, float]]:
    """One decoder process on `loop`, measured."""
    env = {"IIIF_DECODER_WORKERS": "1", "IIIF_DECODER_METRICS_PORT": "0"}
    proc, port = start_decoder(
        f"call-costs-{loop}", root, logs, {**env, "IIIF_DECODER_EVENT_LOOP": loop}
    )
    try:
        return asyncio.run(_calls(f"127.0.0.1:{port}", image, calls, proc.pid))
    finally:
        procs.stop(proc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.call_costs", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=800)
    parser.add_argument("--smoke", action="store_true", help="the small image set")
    args = parser.parse_args(argv)
    size = SMOKE if args.smoke else FULL
    images = ensure_images(size=size)
    image = identifier(ImageType.TIFF_PYRAMID, "master")
    logs = images.root.parent / "logs"
    results: dict[str, dict[str, list[tuple[float, float]]]] = {
        loop: {kind: [] for kind in KINDS} for loop in LOOPS
    }
    for r in range(args.rounds):
        for loop in LOOPS if r % 2 == 0 else tuple(reversed(LOOPS)):
            got = measure(loop, images.root, image, args.calls, logs)
            print(
                f"round {r + 1} {loop}: " + ", ".join(f"{k} {v[0]:.3f} ms" for k, v in got.items()),
                flush=True,
            )
            for kind, value in got.items():
                results[loop][kind].append(value)
    print(
        f"\nDecoder CPU per call, median of {args.rounds} rounds "
        f"({args.calls} calls, {IN_FLIGHT} in flight):"
    )
    print("| call | asyncio | uvloop | uvloop / asyncio |")
    print("|---|---|---|---|")
    for kind in KINDS:
        cpu = {loop: statistics.median(v[0] for v in results[loop][kind]) for loop in LOOPS}
        rate = {loop: statistics.median(v[1] for v in results[loop][kind]) for loop in LOOPS}
        print(
            f"| {kind} | {cpu['asyncio']:.2f} ms ({rate['asyncio']:.0f}/s) "
            f"| {cpu['uvloop']:.2f} ms ({rate['uvloop']:.0f}/s) "
            f"| {cpu['uvloop'] / cpu['asyncio']:.2f} |"
        )


if __name__ == "__main__":
    main()
