"""JPEG 2000 engines head to head: libvips' jp2kload vs OpenJPEG direct.

    .venv/bin/python -m bench.jp2_engines [--tiles 6] [--smoke]

Decodes 256 px tiles (boxes in the level's pixels, as the pipeline asks
for them) at full resolution and at resolution reductions 1-3 of the
benchmark's two 6000 x 8000 JPEG 2000 masters (bench/images.py: 1024 px
tiles, and untiled with 256 px precincts; both RPCL, tile-parts per
resolution, PLT and TLM), through each engine's `load_region`, pixels forced
into memory. Each case runs twice (rounds "a" and "b", in alternating engine
order) single-threaded and with 2 threads decoding concurrently through the
same engine; every engine sees the same tiles in the same run, so machine
noise hits all of them. Printed: median wall ms per tile, process CPU ms per
tile (all threads, libvips' workers included), tiles per second, and the
ratio of libvips' median to each engine's (>1 = faster than libvips).

Engines: ``vips`` (VipsEngine, local file), ``opj`` (OpenJpegEngine, C file
stream), ``opj-cb`` (OpenJpegEngine through Python read callbacks, as for
remote objects), ``opj-t2`` (OpenJpegEngine with 2 OpenJPEG threads per
decode; single-threaded runs only).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from bench.images import FULL, SMOKE, ImageType, ensure_images
from decoder.engines.base import Engine, ImageInfo, SourceFormat
from decoder.engines.openjpeg import OpenJpegEngine, OpenJpegOptions, openjpeg_version
from decoder.engines.vips import VipsEngine, init_vips
from decoder.plan import Box
from decoder.sources.base import ByteReader
from decoder.sources.filesystem import FileReader

TILE: Final = 256
LEVELS: Final = (0, 1, 2, 3)


class PathlessReader:
    """A local file seen as a remote object: no path, so engines use read
    callbacks."""

    def __init__(self, inner: ByteReader) -> None:
        self._inner = inner

    @property
    def size(self) -> int:
        return self._inner.size

    @property
    def path(self) -> Path | None:
        return None

    def read_at(self, offset: int, length: int) -> bytes:
        return self._inner.read_at(offset, length)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class Contender:
    """An engine and the reader it gets."""

    name: str
    engine: Engine
    pathless: bool = False
    single_only: bool = False


@dataclass(frozen=True)
class Result:
    """One engine on one case: per-tile wall and CPU medians (ms), throughput."""

    wall_ms: float
    cpu_ms: float
    tiles_per_s: float


def open_reader(path: Path) -> FileReader:
    """A local-file reader like the filesystem source's."""
    fd = os.open(path, os.O_RDONLY)
    return FileReader(fd, os.fstat(fd).st_size, path.resolve())


def tile_boxes(info: ImageInfo, level: int, count: int, seed: int) -> list[Box]:
    """`count` grid-aligned 256 px tiles of `level`, edge tiles included."""
    lvl = info.levels[level]
    cols, rows = -(-lvl.width // TILE), -(-lvl.height // TILE)
    rng = random.Random(seed * 100 + level)
    cells = [(cols - 1, rows - 1)] + [
        (rng.randrange(cols), rng.randrange(rows)) for _ in range(count - 1)
    ]
    return [
        Box(c * TILE, r * TILE, min(TILE, lvl.width - c * TILE), min(TILE, lvl.height - r * TILE))
        for c, r in cells
    ]


def run_case(
    contender: Contender,
    reader: ByteReader,
    info: ImageInfo,
    level: int,
    boxes: Sequence[Box],
    threads: int,
) -> Result:
    """Decode every box (`threads` at a time); per-tile wall and CPU times."""

    def one(box: Box) -> float:
        start = time.perf_counter()
        contender.engine.load_region(reader, info, level, box).write_to_memory()
        return time.perf_counter() - start

    cpu0, wall0 = time.process_time(), time.perf_counter()
    if threads == 1:
        walls = [one(box) for box in boxes]
    else:
        with ThreadPoolExecutor(threads) as pool:
            walls = list(pool.map(one, boxes))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return Result(
        wall_ms=statistics.median(walls) * 1000,
        cpu_ms=cpu / len(boxes) * 1000,
        tiles_per_s=len(boxes) / wall,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run the comparison and print one row per engine and case."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=6, help="tiles per level and round")
    parser.add_argument("--smoke", action="store_true", help="the small image set (quick)")
    args = parser.parse_args(argv)
    init_vips(concurrency=1)  # the decoder's default (IIIF_DECODER_VIPS_CONCURRENCY)
    images = ensure_images(size=SMOKE if args.smoke else FULL)
    contenders = [
        Contender("vips", VipsEngine()),
        Contender("opj", OpenJpegEngine()),
        Contender("opj-cb", OpenJpegEngine(OpenJpegOptions(file_stream=False)), pathless=True),
        Contender("opj-t2", OpenJpegEngine(OpenJpegOptions(threads=2)), single_only=True),
    ]
    print(f"OpenJPEG {openjpeg_version()}, {os.cpu_count()} cores, {args.tiles} tiles per case")
    header = f"{'image':<14}{'lvl':>4}{'thr':>4}{'rnd':>4}  {'engine':<8}"
    header += f"{'wall ms':>9}{'cpu ms':>9}{'tiles/s':>9}{'vs vips':>9}"
    print(header)
    ratios: dict[tuple[str, str, int], list[float]] = {}
    for type_ in (ImageType.JP2_TILED, ImageType.JP2_PRECINCTS):
        path = images.root / images.get(type_, "master").identifier
        reader = open_reader(path)
        pathless = PathlessReader(reader)
        info = VipsEngine().describe(reader, SourceFormat.JPEG2000)
        for level in LEVELS:
            if level >= len(info.levels):
                continue
            for threads in (1, 2):
                for rnd in ("a", "b"):
                    boxes = tile_boxes(info, level, args.tiles * threads, seed=ord(rnd))
                    order = contenders if rnd == "a" else contenders[::-1]
                    results: dict[str, Result] = {}
                    for c in order:
                        if c.single_only and threads > 1:
                            continue
                        rd = pathless if c.pathless else reader
                        run_case(c, rd, info, level, boxes[:1], 1)  # warm the page cache
                        results[c.name] = run_case(c, rd, info, level, boxes, threads)
                    base = results["vips"].wall_ms
                    for c in contenders:
                        if c.name not in results:
                            continue
                        r = results[c.name]
                        ratio = base / r.wall_ms
                        ratios.setdefault((type_.value, c.name, threads), []).append(ratio)
                        print(
                            f"{type_.value:<14}{level:>4}{threads:>4}{rnd:>4}  {c.name:<8}"
                            f"{r.wall_ms:>9.1f}{r.cpu_ms:>9.1f}{r.tiles_per_s:>9.1f}{ratio:>9.2f}"
                        )
        reader.close()
    summarise(ratios)


def summarise(ratios: dict[tuple[str, str, int], list[float]]) -> None:
    """Geometric mean over levels and rounds of each engine's speed-up."""
    print("\nspeed-up over libvips (median wall ms per tile; geometric mean, min-max of")
    print("levels 0-3 x 2 rounds):")
    for (image, name, threads), values in sorted(ratios.items()):
        if name != "vips":
            gm = statistics.geometric_mean(values)
            lo, hi = min(values), max(values)
            print(f"  {image:<14} {threads} thread(s)  {name:<8} x{gm:.2f}  (x{lo:.2f}-x{hi:.2f})")


if __name__ == "__main__":
    main()
