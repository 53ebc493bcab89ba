"""GrokEngine vs OpenJpegEngine, in-process, on what the decoder really decodes.

    .venv/bin/python -m bench.grok_engines [--rounds 2] [--smoke] [--out docs/grok.md]

Replays the tile requests of one deep-zoom session (bench.workload:
OpenSeadragon with 256 and 512 px tiles zooming into one point of the
benchmark's 6000 x 8000 masters, 131 requests) through
``decoder.pipeline.run_pipeline`` exactly as the decoder runs them: with
the level cache on (256 MiB, levels up to 2 Mpx, so small regions are
decoded as their aligned 1024 px block and cached; see
decoder/pipeline/load.py), libvips with one worker thread, JPEG output.
The engine's ``load_region`` is wrapped to add up the process CPU it takes
(all threads: the codec's workers count) per (level, decoded box size);
the session's total CPU (decode, resize, encode) is measured too.

Configurations: ``openjpeg`` and ``grok``, each with 1 and 2 codec threads,
and ``grok-plt`` (Grok with PLT markers used for packet skipping, its own
default; 1 thread) for reference only: it returns wrong pixels for some
codestreams (docs/grok.md), so the engine turns it off. Grok's thread pool
is per process, so every run is a child process of its own, on a warm page
cache (one untimed run per image first). Runs repeat for ``--rounds``
rounds, the configuration order reversed every other round, so slow
drifts of a noisy machine hit all alike.

Printed, and with ``--out`` spliced into that Markdown file as the section
``## In-process`` (replacing an older one, keeping the rest): per image and
configuration, the median over rounds of the session's total CPU and the
engine's CPU, and the engine CPU per (level, box) shape; then the verdict
for untiled codestreams.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from bench.images import FULL, SMOKE, ImageType, ensure_images
from bench.workload import Source, deep_zoom_session

IMAGES: Final = (ImageType.JP2_PRECINCTS, ImageType.JP2_TILED)
CONFIGS: Final = ("openjpeg-1", "grok-1", "openjpeg-2", "grok-2", "grok-plt-1")
SECTION: Final = "## In-process: GrokEngine vs OpenJpegEngine on a deep-zoom session"
# Grok replaces OpenJPEG for untiled codestreams only if it saves at least
# this much engine CPU (median over rounds) at both thread counts: less is
# within this machine's run-to-run noise and would not pay for a second engine.
MIN_SAVING: Final = 0.2


@dataclass(frozen=True)
class RunResult:
    """One child run: one configuration over one image's session."""

    image: str
    config: str
    total_cpu_s: float
    wall_s: float
    engine_cpu_s: float
    decodes: int
    fallbacks: int
    shapes: dict[str, tuple[int, float]]  # "L<level> <w>x<h>" -> (decodes, CPU s)


def child(config: str, path: Path, width: int, height: int) -> dict[str, Any]:
    """Run the session once in this process with `config`; the measurements."""
    from decoder import levelcache
    from decoder.engines import grok
    from decoder.engines.base import Engine
    from decoder.engines.openjpeg import OpenJpegEngine, OpenJpegOptions
    from decoder.engines.sniff import SNIFF_BYTES, sniff
    from decoder.engines.vips import init_vips
    from decoder.pipeline import run_pipeline
    from decoder.plan import Box, Plan
    from decoder.sources.filesystem import FileReader

    name, threads = config.rsplit("-", 1)
    init_vips(concurrency=1)
    levelcache.configure(256 << 20, 2_000_000)
    engine: Engine
    if name == "openjpeg":
        engine = OpenJpegEngine(OpenJpegOptions(threads=int(threads)))
    else:
        if name == "grok-plt":
            # Reference only: Grok's default random access, wrong for some codestreams.
            grok.RANDOM_ACCESS = 7  # type: ignore[misc]
        engine = grok.GrokEngine(grok.GrokOptions(threads=int(threads)))
    fd = os.open(path, os.O_RDONLY)
    reader = FileReader(fd, os.fstat(fd).st_size, path.resolve())
    info = engine.describe(reader, sniff(reader.read_at(0, SNIFF_BYTES)))
    shapes: dict[str, list[float]] = {}
    load = engine.load_region

    def timed(reader: Any, info: Any, level: int, box: Box) -> Any:
        start = time.process_time()
        image = load(reader, info, level, box)
        spent = time.process_time() - start
        entry = shapes.setdefault(f"L{level} {box.width}x{box.height}", [0, 0.0])
        entry[0] += 1
        entry[1] += spent
        return image

    engine.load_region = timed  # type: ignore[method-assign]
    requests = deep_zoom_session(Source(path.name, width, height))
    cpu, wall = time.process_time(), time.perf_counter()
    for request in requests:
        assert request.region is not None
        assert request.size is not None
        r = request.region
        plan = Plan(Box(r.x, r.y, r.w, r.h), *request.size)
        run_pipeline(engine, reader, info, plan, None, ("k", "v"))
    reader.close()
    return {
        "total_cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - wall,
        "engine_cpu_s": sum(cpu for _, cpu in shapes.values()),
        "decodes": sum(int(n) for n, _ in shapes.values()),
        "fallbacks": getattr(engine, "fallbacks", 0),
        "shapes": {k: (int(n), c) for k, (n, c) in shapes.items()},
    }


def run_child(config: str, image: str, path: Path, size: tuple[int, int]) -> RunResult:
    """`child` in a fresh interpreter (Grok's thread pool is per process)."""
    cmd = [sys.executable, "-m", "bench.grok_engines", "--child", config, str(path)]
    cmd += [str(size[0]), str(size[1])]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    data = json.loads(out.strip().splitlines()[-1])
    shapes = {k: (int(v[0]), float(v[1])) for k, v in data.pop("shapes").items()}
    return RunResult(image=image, config=config, shapes=shapes, **data)


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def summary(results: Sequence[RunResult]) -> dict[tuple[str, str], dict[str, float]]:
    """Per (image, config): median total and engine CPU (s), decodes, fallbacks."""
    groups: dict[tuple[str, str], list[RunResult]] = {}
    for r in results:
        groups.setdefault((r.image, r.config), []).append(r)
    return {
        key: {
            "total": _median([r.total_cpu_s for r in rs]),
            "engine": _median([r.engine_cpu_s for r in rs]),
            "runs": float(len(rs)),
            "decodes": float(rs[0].decodes),
            "fallbacks": float(max(r.fallbacks for r in rs)),
        }
        for key, rs in groups.items()
    }


def verdict(results: Sequence[RunResult]) -> str:
    """Whether "grok" should become the default for untiled codestreams."""
    s = summary(results)
    image = ImageType.JP2_PRECINCTS.value
    savings = []
    for threads in (1, 2):
        opj = s.get((image, f"openjpeg-{threads}"))
        grk = s.get((image, f"grok-{threads}"))
        if opj is None or grk is None or opj["engine"] <= 0:
            return "no verdict: a configuration is missing"
        savings.append(1 - grk["engine"] / opj["engine"])
    shown = ", ".join(
        f"{t} thread{'s' if t > 1 else ''}: {x:+.0%}" for t, x in zip((1, 2), savings, strict=True)
    )
    if min(savings) >= MIN_SAVING:
        return f"yes: Grok saves engine CPU on the untiled master ({shown})"
    return (
        f"no: Grok does not save at least {MIN_SAVING:.0%} of the engine CPU on the untiled "
        f"master ({shown}; negative = Grok costs more)"
    )


def _shape_rows(results: Sequence[RunResult], image: str) -> list[str]:
    """Engine CPU per shape (median over rounds, ms per decode) for each config."""
    configs = [c for c in CONFIGS if any(r.config == c and r.image == image for r in results)]
    keys: dict[str, int] = {}
    for r in results:
        if r.image == image:
            for k, (n, _) in r.shapes.items():
                keys[k] = n
    rows = []

    def order(key: str) -> tuple[int, int]:
        level, size = key.split()
        w, h = size.split("x")
        return int(level[1:]), -int(w) * int(h)

    for key in sorted(keys, key=order):
        cells = []
        for c in configs:
            per = [
                r.shapes[key][1] / r.shapes[key][0]
                for r in results
                if r.image == image and r.config == c and key in r.shapes
            ]
            cells.append(f"{_median(per) * 1000:.0f}" if per else "-")
        level, size = key.split()
        rows.append(f"| {level[1:]} | {size} | {keys[key]} | " + " | ".join(cells) + " |")
    head = "| level | box | decodes | " + " | ".join(f"{c} ms" for c in configs) + " |"
    rule = "|---:|---|---:|" + "---:|" * len(configs)
    return [head, rule, *rows]


def markdown(results: Sequence[RunResult], rounds: int, image_set: str) -> str:
    """The section for docs/grok.md."""
    from decoder.engines.grok import grok_version
    from decoder.engines.openjpeg import openjpeg_version

    s = summary(results)
    method = (
        f"OpenJPEG {openjpeg_version()} (`OpenJpegEngine`) and Grok {grok_version()} "
        "(`GrokEngine`: PLT off, whole-tile windows on multi-tile codestreams, OpenJPEG for "
        "windows Grok warns about) decoded one deep-zoom session "
        "(`bench.workload.deep_zoom_session`: OpenSeadragon, 256 and 512 px tiles, "
        f"131 requests) of each of the `{image_set}` set's two JPEG 2000 masters, through "
        "`decoder.pipeline.run_pipeline` as the decoder runs it: level cache 256 MiB / 2 Mpx "
        "(small regions decoded as their aligned 1024 px block, or the whole small level, "
        "and cached), libvips with one thread, JPEG out. `load_region` was wrapped to add "
        "up process CPU (every thread, the codec's workers too) per decoded shape. Each "
        "configuration ran in its own process (Grok's thread pool is per process) on a warm "
        f"page cache, {rounds} rounds, the order reversed every other round; numbers are "
        "medians over rounds. `grok-plt-1` is Grok with its default PLT packet skipping, "
        "for reference only: it returns wrong pixels for some codestreams. Machine: "
        f"{os.cpu_count()} cores; run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC "
        "(`python -m bench.grok_engines`)."
    )
    lines = [SECTION, "", "### Method", "", method, "", "### Totals", ""]
    lines += [
        "| image | config | session CPU s | engine CPU s | engine vs openjpeg | decodes "
        "| OpenJPEG fallbacks |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for image in (t.value for t in IMAGES):
        for config in CONFIGS:
            row = s.get((image, config))
            if row is None:
                continue
            threads = config.rsplit("-", 1)[1]
            base = s.get((image, f"openjpeg-{threads}"))
            ratio = f"{row['engine'] / base['engine']:.2f}" if base and base["engine"] else "-"
            lines.append(
                f"| {image} | {config} | {row['total']:.2f} | {row['engine']:.2f} | "
                f"x{ratio} | {row['decodes']:.0f} | {row['fallbacks']:.0f} |"
            )
    for image in (t.value for t in IMAGES):
        lines += ["", f"### Engine CPU per decode, {image}", ""]
        lines += _shape_rows(results, image)
    lines += ["", f"**Verdict** (grok as the default for untiled codestreams): {verdict(results)}"]
    return "\n".join(lines) + "\n"


def splice(document: str, section: str) -> str:
    """`document` with its SECTION (up to the next same-level heading)
    replaced by `section`, or `section` appended."""
    start = document.find(SECTION)
    if start < 0:
        return document.rstrip("\n") + "\n\n" + section
    end = document.find("\n## ", start + len(SECTION))
    rest = "" if end < 0 else document[end:]
    return document[:start] + section + rest


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="the small image set (quick)")
    parser.add_argument("--out", type=Path, help="splice the Markdown section into this file")
    parser.add_argument(
        "--child", nargs=4, metavar=("CONFIG", "PATH", "W", "H"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        config, path, w, h = args.child
        print(json.dumps(child(config, Path(path), int(w), int(h))))
        return
    size = SMOKE if args.smoke else FULL
    images = ensure_images(size=size)
    results: list[RunResult] = []
    paths = {t: images.root / images.get(t, "master").identifier for t in IMAGES}
    for type_, path in paths.items():
        run_child("openjpeg-1", type_.value, path, size.master)  # warms the page cache
    for round_ in range(args.rounds):
        order = CONFIGS if round_ % 2 == 0 else tuple(reversed(CONFIGS))
        for type_, path in paths.items():
            for config in order:
                r = run_child(config, type_.value, path, size.master)
                results.append(r)
                print(
                    f"round {round_ + 1} {type_.value:14} {config:11} "
                    f"session {r.total_cpu_s:6.2f} s engine {r.engine_cpu_s:6.2f} s "
                    f"decodes {r.decodes} fallbacks {r.fallbacks}",
                    flush=True,
                )
    print(verdict(results))
    if args.out is not None:
        old = args.out.read_text() if args.out.exists() else ""
        args.out.write_text(splice(old, markdown(results, args.rounds, size.name)))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
