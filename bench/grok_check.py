"""Grok vs OpenJPEG: should the decoder offer Grok as a second JPEG 2000 codec?

    .venv/bin/python -m bench.grok_check [--windows 8] [--smoke] [--install] [--out docs/grok.md]

Runs the two codecs' command-line tools, ``opj_decompress`` (Debian's
libopenjp2-tools) and ``grk_decompress`` (grokj2k-tools), on the same windows
of the benchmark's two JPEG 2000 masters (bench/images.py: 1024 px tiles, and
untiled with 256 px precincts), and compares what they return and what it
costs. Each window is a seeded random box of side ``size * 2**R``
(``size`` 256 or 512 px, reduction ``R`` 0-3, origin a multiple of ``2**R``)
decoded with ``-d x0,y0,x1,y1 -r R`` to a ``size`` px TIFF, both tools
single-threaded (``-threads 1``, ``-H 1``). Each tool runs once to warm the
page cache, then once timed: CPU (user + system time of the child) and wall
time; the tool order alternates window by window, so machine noise hits both.

Printed (and with ``--out`` written as Markdown): per window both tools' CPU
ms, their ratio (>1 = Grok cheaper), the largest and mean absolute pixel
difference, and whether they agree; per image the windows agreeing and the
geometric mean of the CPU ratio; then the verdict. Without either tool it
says what to install and exits 0: the comparison is optional.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import pyvips

from bench.images import FULL, SMOKE, ImageType, ensure_images

OPJ: Final = "opj_decompress"
GRK: Final = "grk_decompress"
PACKAGES: Final = {OPJ: "libopenjp2-tools", GRK: "grokj2k-tools"}
IMAGES: Final = (ImageType.JP2_TILED, ImageType.JP2_PRECINCTS)
OUT_SIZES: Final = (256, 512)
REDUCTIONS: Final = (0, 1, 2, 3)
SEED: Final = 1

# Correctness first: both tools implement the same integer / irreversible 9/7
# pipeline, so they may differ by rounding (1) but a larger difference is a
# wrong pixel, and a codec that returns wrong pixels is not offered at any speed.
MAX_AGREEING_DIFF: Final = 1
# Below ~20% less CPU the gain would vanish in this machine's run-to-run noise
# and would not pay for a second engine (its packaging, tests and bugs).
MIN_CPU_RATIO: Final = 1.2
# Enough of a failing tool's output to see why, short enough for a table.
ERROR_TAIL: Final = 200


@dataclass(frozen=True, slots=True)
class Window:
    """A box of the full-resolution image decoded at reduction `reduction`
    to `size` x `size` pixels."""

    x: int
    y: int
    size: int
    reduction: int

    @property
    def side(self) -> int:
        """The box's side in full-resolution pixels."""
        return self.size << self.reduction

    @property
    def region(self) -> str:
        """The tools' ``-d`` argument (full-resolution x0,y0,x1,y1)."""
        return f"{self.x},{self.y},{self.x + self.side},{self.y + self.side}"


@dataclass(frozen=True, slots=True)
class PixelDiff:
    """Two decodes of one window compared; max/mean are None when the sizes differ."""

    same_size: bool
    max_diff: float | None
    mean_diff: float | None

    @property
    def agrees(self) -> bool:
        return self.same_size and self.max_diff is not None and self.max_diff <= MAX_AGREEING_DIFF


@dataclass(frozen=True, slots=True)
class Run:
    """One timed run of a tool: child CPU and wall seconds; `error` when it failed."""

    cpu_s: float
    wall_s: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class WindowResult:
    """Both tools on one window of one image; `diff` None when a tool failed."""

    image: str
    window: Window
    opj: Run
    grk: Run
    diff: PixelDiff | None

    @property
    def agrees(self) -> bool:
        return self.diff is not None and self.diff.agrees

    @property
    def cpu_ratio(self) -> float | None:
        """OpenJPEG's CPU over Grok's (>1 = Grok cheaper); None if either failed."""
        if self.diff is None or self.grk.cpu_s <= 0:
            return None
        return self.opj.cpu_s / self.grk.cpu_s


@dataclass(frozen=True, slots=True)
class ImageSummary:
    """One image's windows: how many agree, geometric-mean CPU ratio."""

    image: str
    windows: int
    agreeing: int
    cpu_ratio: float | None


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether Grok is worth offering, with the numbers that decided it."""

    offer: bool
    reason: str
    images: tuple[ImageSummary, ...]
    cpu_ratio: float | None


@dataclass(frozen=True, slots=True)
class Setup:
    """What the Markdown report's method paragraph names."""

    opj_version: str
    grk_version: str
    cores: int
    date: datetime
    image_set: str
    windows: int
    seed: int


def choose_windows(width: int, height: int, count: int, seed: int) -> list[Window]:
    """`count` seeded random windows inside a `width` x `height` image.

    Small images get smaller windows (and at most the reduction that leaves
    one pixel), so that every box fits: the tools would clip a box that does
    not, and the two outputs would then measure different things."""
    rng = random.Random(seed)
    max_reduction = min(width, height).bit_length() - 1
    windows = []
    for _ in range(count):
        reduction = min(rng.choice(REDUCTIONS), max_reduction)
        size = min(rng.choice(OUT_SIZES), width >> reduction, height >> reduction)
        side, step = size << reduction, 1 << reduction
        # Origins on the reduced grid: the box then maps to exactly `size`
        # output pixels in both tools, with no rounding at its edges.
        x = rng.randrange((width - side) // step + 1) * step
        y = rng.randrange((height - side) // step + 1) * step
        windows.append(Window(x, y, size, reduction))
    return windows


def compare(a_path: Path, b_path: Path) -> PixelDiff:
    """Pixel difference of two image files.

    The paths must be distinct names for distinct files: pyvips caches
    `new_from_file` by name, so a rewritten file could be read stale."""
    a = pyvips.Image.new_from_file(str(a_path))
    b = pyvips.Image.new_from_file(str(b_path))
    if (a.width, a.height, a.bands) != (b.width, b.height, b.bands):
        return PixelDiff(same_size=False, max_diff=None, mean_diff=None)
    # Signed ints: uchar subtraction would wrap instead of going negative.
    diff = (a.cast("int") - b.cast("int")).abs()
    return PixelDiff(same_size=True, max_diff=float(diff.max()), mean_diff=float(diff.avg()))


def verdict(results: Sequence[WindowResult]) -> Verdict:
    """Offer Grok only if every window agrees and it is clearly cheaper overall."""
    by_image: dict[str, list[WindowResult]] = {}
    for r in results:
        by_image.setdefault(r.image, []).append(r)
    images = tuple(
        ImageSummary(
            image=image,
            windows=len(rs),
            agreeing=sum(r.agrees for r in rs),
            cpu_ratio=_geomean([r.cpu_ratio for r in rs]),
        )
        for image, rs in by_image.items()
    )
    ratio = _geomean([r.cpu_ratio for r in results])
    if not results:
        return Verdict(False, "no windows were compared", images, ratio)
    failed = sum(r.diff is None for r in results)
    resized = sum(r.diff is not None and not r.diff.same_size for r in results)
    wrong = sum(r.diff is not None and r.diff.same_size and not r.diff.agrees for r in results)
    if failed or resized or wrong:
        kinds = [
            f"{n} {what}"
            for n, what in (
                (wrong, f"with pixels off by more than {MAX_AGREEING_DIFF}"),
                (resized, "of another size"),
                (failed, "failed"),
            )
            if n
        ]
        reason = f"of {len(results)} windows, {', '.join(kinds)}"
        return Verdict(False, reason, images, ratio)
    if ratio is None or ratio <= MIN_CPU_RATIO:
        shown = "n/a" if ratio is None else f"x{ratio:.2f}"
        reason = f"all windows agree, but Grok's CPU gain {shown} is not above x{MIN_CPU_RATIO}"
        return Verdict(False, reason, images, ratio)
    reason = f"all windows agree and Grok needs x{ratio:.2f} less CPU (above x{MIN_CPU_RATIO})"
    return Verdict(True, reason, images, ratio)


def _geomean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None and v > 0]
    return statistics.geometric_mean(present) if present else None


# Text columns (left-aligned); the others are numbers.
LEFT: Final = frozenset({0, 1, 11})
HEADER: Final = (
    "image",
    "window (x,y,w,h)",
    "R",
    "out",
    "opj cpu ms",
    "grk cpu ms",
    "opj/grk",
    "opj wall ms",
    "grk wall ms",
    "max diff",
    "mean diff",
    "agrees",
)


def _row(r: WindowResult) -> tuple[str, ...]:
    w = r.window

    def ms(run: Run) -> str:
        return "failed" if run.error is not None else f"{run.cpu_s * 1000:.0f}"

    def wall(run: Run) -> str:
        return f"{run.wall_s * 1000:.0f}"

    ratio = r.cpu_ratio
    diff = r.diff
    if diff is None:
        max_d = mean_d = "-"
        agrees = "failed"
    elif not diff.same_size:
        max_d = mean_d = "-"
        agrees = "no (size)"
    else:
        max_d, mean_d = f"{diff.max_diff:.0f}", f"{diff.mean_diff:.3f}"
        agrees = "yes" if diff.agrees else "no"
    return (
        r.image,
        f"{w.x},{w.y},{w.side},{w.side}",
        str(w.reduction),
        str(w.size),
        ms(r.opj),
        ms(r.grk),
        "-" if ratio is None else f"{ratio:.2f}",
        wall(r.opj),
        wall(r.grk),
        max_d,
        mean_d,
        agrees,
    )


def _summary_lines(v: Verdict) -> list[str]:
    lines = []
    for s in v.images:
        ratio = "n/a" if s.cpu_ratio is None else f"x{s.cpu_ratio:.2f}"
        lines.append(
            f"{s.image}: {s.agreeing} of {s.windows} windows agree; "
            f"CPU ratio opj/grk (geometric mean) {ratio}"
        )
    overall = "n/a" if v.cpu_ratio is None else f"x{v.cpu_ratio:.2f}"
    lines.append(f"all windows: CPU ratio opj/grk (geometric mean) {overall}")
    answer = "offer Grok" if v.offer else "do not offer Grok"
    lines.append(f"verdict: {answer}: {v.reason}")
    return lines


def _failures(results: Sequence[WindowResult]) -> list[str]:
    out = []
    for r in results:
        for name, run in ((OPJ, r.opj), (GRK, r.grk)):
            if run.error is not None:
                out.append(
                    f"{r.image} {r.window.region} -r {r.window.reduction}: {name}: {run.error}"
                )
    return out


def table(results: Sequence[WindowResult], v: Verdict) -> str:
    """The plain-text report: one row per window, then the summary and verdict."""
    rows = [HEADER, *(_row(r) for r in results)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = [
        "  ".join(
            cell.ljust(w) if i in LEFT else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join([*lines, "", *_failures(results), *_summary_lines(v)])


def markdown(setup: Setup, results: Sequence[WindowResult], v: Verdict) -> str:
    """The report as Markdown: method, table, summary and verdict."""
    sizes = "256 or 512 px"
    if setup.image_set == SMOKE.name:
        sizes += " (less: the smoke images are small)"
    method = (
        f"`opj_decompress` (OpenJPEG {setup.opj_version}) and `grk_decompress` "
        f"(Grok {setup.grk_version}) decoded the same {setup.windows} seeded random "
        f"windows (seed {setup.seed}) of each of the benchmark's two JPEG 2000 masters "
        f"(`{setup.image_set}` set of `bench/images.py`: 1024 px tiles, and untiled with "
        f"256 px precincts) with `-d x0,y0,x1,y1 -r R` to TIFFs of {sizes}, both "
        "single-threaded (`-threads 1`, `-H 1`). Each tool ran once to warm the page "
        "cache, then once timed (CPU = user + system time of the child), the tool "
        "order alternating window by window. Pixels were compared with pyvips; a "
        f"window agrees when both outputs have the same size and differ by at most "
        f"{MAX_AGREEING_DIFF} per sample. Grok would be worth offering only if every "
        f"window agrees and OpenJPEG's CPU over Grok's (geometric mean) is above "
        f"{MIN_CPU_RATIO}. Machine: {setup.cores} cores; run "
        f"{setup.date:%Y-%m-%d %H:%M} UTC (`python -m bench.grok_check`)."
    )
    head = "| " + " | ".join(HEADER) + " |"
    rule = "|" + "|".join("---" if i in LEFT else "---:" for i in range(len(HEADER))) + "|"
    body = ["| " + " | ".join(_row(r)) + " |" for r in results]
    failures = _failures(results)
    parts = [
        "# Grok vs OpenJPEG for JPEG 2000 windows",
        "",
        "## Method",
        "",
        method,
        "",
        "## Windows",
        "",
        head,
        rule,
        *body,
        "",
    ]
    if failures:
        parts += ["Failed decodes:", "", *(f"- `{f}`" for f in failures), ""]
    parts += ["## Summary", "", *(f"- {line}" for line in _summary_lines(v)), ""]
    return "\n".join(parts)


def opj_version() -> str:
    """OpenJPEG's version as ``opj_decompress -h`` states it."""
    out = subprocess.run([OPJ, "-h"], capture_output=True, text=True, check=False)
    found = re.search(r"openjp2 library v(\S+?)\.?\s", out.stdout + out.stderr)
    return found.group(1) if found else "unknown"


def grk_version() -> str:
    """Grok's Debian package version, else what ``grk_decompress -version`` says."""
    if shutil.which("dpkg-query") is not None:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "libgrokj2k1"],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    out = subprocess.run([GRK, "-version"], capture_output=True, text=True, check=False)
    found = re.search(r"version:\s*(\S+)", out.stdout + out.stderr)
    return found.group(1) if found else "unknown"


def missing_tools() -> list[str]:
    """The tools (of OPJ, GRK) not on PATH."""
    return [tool for tool in (OPJ, GRK) if shutil.which(tool) is None]


def install(tools: Sequence[str]) -> None:
    """apt-get the packages of `tools` when root; otherwise say what to install."""
    packages = [PACKAGES[t] for t in tools]
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"grok_check: not root: install {' '.join(packages)} (apt-get) and run again")
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    print(f"grok_check: {' '.join(cmd)}")
    subprocess.run(cmd, check=False, env=env, stdout=subprocess.DEVNULL)


def command(tool: str, src: Path, window: Window, out: Path) -> list[str]:
    """The tool's command line decoding `window` of `src` to `out`, one thread."""
    area = ["-d", window.region, "-r", str(window.reduction)]
    if tool == OPJ:
        return [OPJ, "-quiet", "-threads", "1", "-i", str(src), "-o", str(out), *area]
    return [GRK, "-H", "1", "-i", str(src), "-o", str(out), *area]


def run_tool(cmd: Sequence[str], out: Path) -> Run:
    """Run `cmd` once: the child's CPU and wall time, and why it failed if it did."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    error = None
    if proc.returncode != 0 or not out.exists() or out.stat().st_size == 0:
        tail = " ".join((proc.stderr + proc.stdout).split())[-ERROR_TAIL:]
        error = f"exit {proc.returncode}: {tail}" if tail else f"exit {proc.returncode}, no output"
    return Run(cpu_s=cpu, wall_s=wall, error=error)


def check_window(image: str, src: Path, window: Window, index: int, tmp: Path) -> WindowResult:
    """Both tools on one window: warm runs, timed runs (order by `index`), compare."""
    order = (OPJ, GRK) if index % 2 == 0 else (GRK, OPJ)

    def out(tool: str, phase: str) -> Path:
        # Unique per image, window, tool and phase: see compare().
        return tmp / f"{image}-{index}-{tool}-{phase}.tif"

    for tool in order:
        run_tool(command(tool, src, window, out(tool, "warm")), out(tool, "warm"))
    runs = {
        tool: run_tool(command(tool, src, window, out(tool, "t")), out(tool, "t")) for tool in order
    }
    failed = any(run.error is not None for run in runs.values())
    diff = None if failed else compare(out(OPJ, "t"), out(GRK, "t"))
    return WindowResult(image, window, runs[OPJ], runs[GRK], diff)


def main(argv: Sequence[str] | None = None) -> None:
    """Compare the tools on every window and print (and write) the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=8, help="windows per image")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the random windows")
    parser.add_argument("--smoke", action="store_true", help="the small image set (quick)")
    parser.add_argument(
        "--install", action="store_true", help="apt-get the missing tools (as root)"
    )
    parser.add_argument("--out", type=Path, help="also write the report as Markdown here")
    args = parser.parse_args(argv)
    missing = missing_tools()
    if missing and args.install:
        install(missing)
        missing = missing_tools()
    if missing:
        packages = " ".join(PACKAGES[t] for t in missing)
        print(
            f"grok_check: {', '.join(missing)} missing: skipped "
            f"(apt-get install {packages}, or pass --install as root)"
        )
        return
    # Without this, a window's output read again by name could be a stale image.
    pyvips.cache_set_max(0)
    size = SMOKE if args.smoke else FULL
    images = ensure_images(size=size)
    setup = Setup(
        opj_version=opj_version(),
        grk_version=grk_version(),
        cores=os.cpu_count() or 1,
        date=datetime.now(UTC),
        image_set=size.name,
        windows=args.windows,
        seed=args.seed,
    )
    print(
        f"OpenJPEG {setup.opj_version}, Grok {setup.grk_version}, {setup.cores} cores, "
        f"{args.windows} windows per image"
    )
    results: list[WindowResult] = []
    with tempfile.TemporaryDirectory(prefix="grok-check-") as tmp:
        for type_ in IMAGES:
            path = images.root / images.get(type_, "master").identifier
            probe = pyvips.Image.new_from_file(str(path))
            windows = choose_windows(probe.width, probe.height, args.windows, args.seed)
            for window in windows:
                index = len(results)
                results.append(check_window(type_.value, path, window, index, Path(tmp)))
    v = verdict(results)
    print(table(results, v))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        kept = args.out.read_text() if args.out.exists() else ""
        args.out.write_text(keep_later_sections(markdown(setup, results, v), kept))
        print(f"wrote {args.out}")


def keep_later_sections(ours: str, existing: str) -> str:
    """`ours` followed by what `existing` has from bench/grok_engines.py's
    section on (its in-process results and what follows), so rewriting this
    tool's part of docs/grok.md keeps them."""
    from bench.grok_engines import SECTION

    start = existing.find(SECTION)
    if start < 0:
        return ours
    return ours.rstrip("\n") + "\n\n" + existing[start:]


if __name__ == "__main__":
    main()
