"""From measurements to docs/benchmarks.md: ratio tables, absolute numbers, flags.

Pure apart from `write_report`. Ratios compare mean requests per second over
the runs of a step (higher than 1 means ours is faster); a step whose runs
disagree by more than `DISAGREEMENT` is flagged, and so is every ratio that
uses it, because on a shared machine one run can be slowed by a neighbour.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from bench.load import LoadResult
from bench.profile import ProfileSummary

DISAGREEMENT: Final = 0.20
IIP: Final = "iipimage"
LOCAL: Final = "ours-local"
S3: Final = "ours-s3"
FLOOR: Final = "floor"
CASES: Final = (IIP, LOCAL, S3, FLOOR)
CASE_TITLES: Final = {
    IIP: "IIPImage",
    LOCAL: "ours (local folder)",
    S3: "ours (S3 +20 ms)",
    FLOOR: "codec floor",
}


@dataclass(frozen=True)
class Measurement:
    """One load step of one case in one run."""

    case: str
    image_type: str
    kind: str
    # "cold" (each URL once, first touch, at the lowest concurrency), "first"
    # (the tiles of an image new to every server, each URL once, at c > 1) or
    # "warm" (replayed).
    phase: str
    concurrency: int
    run: int
    urls: int
    result: LoadResult
    peak_rss_bytes: int | None = None
    # Work behind the server during the step, e.g. {"s3_gets": 12, "s3_body_bytes": ...}.
    extra: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "case": self.case,
            "image_type": self.image_type,
            "kind": self.kind,
            "phase": self.phase,
            "concurrency": self.concurrency,
            "run": self.run,
            "urls": self.urls,
            "result": self.result.to_json(),
            "peak_rss_bytes": self.peak_rss_bytes,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Measurement:
        """The inverse of `to_json`."""
        return cls(
            case=data["case"],
            image_type=data["image_type"],
            kind=data["kind"],
            phase=data["phase"],
            concurrency=int(data["concurrency"]),
            run=int(data["run"]),
            urls=int(data["urls"]),
            result=LoadResult.from_json(data["result"]),
            peak_rss_bytes=data.get("peak_rss_bytes"),
            extra={str(k): float(v) for k, v in data.get("extra", {}).items()},
        )


Key = tuple[str, str, str, int]  # image type, kind, phase, concurrency


@dataclass
class Aggregate:
    """All runs of one case at one key."""

    runs: list[LoadResult] = field(default_factory=list)
    peak_rss_bytes: int = 0

    @property
    def rps(self) -> float:
        """Mean requests per second over the runs."""
        return statistics.fmean(r.rps for r in self.runs) if self.runs else 0.0

    @property
    def spread(self) -> float:
        """(max - min) / min of the runs' requests per second; 0 for one run."""
        values = [r.rps for r in self.runs]
        if len(values) < 2 or min(values) <= 0:
            return 0.0 if len(values) < 2 else float("inf")
        return max(values) / min(values) - 1

    @property
    def disagrees(self) -> bool:
        """True when two runs differ by more than DISAGREEMENT."""
        return self.spread > DISAGREEMENT

    @property
    def errors(self) -> int:
        """Errors over all runs."""
        return sum(r.errors for r in self.runs)

    def median(self, attr: str) -> float:
        """The median over runs of a LoadResult attribute (latencies)."""
        return statistics.median(float(getattr(r, attr)) for r in self.runs) if self.runs else 0.0


def aggregate(measurements: Iterable[Measurement]) -> dict[str, dict[Key, Aggregate]]:
    """case -> key -> the runs measured there."""
    table: dict[str, dict[Key, Aggregate]] = defaultdict(dict)
    for m in measurements:
        key = (m.image_type, m.kind, m.phase, m.concurrency)
        agg = table[m.case].setdefault(key, Aggregate())
        agg.runs.append(m.result)
        agg.peak_rss_bytes = max(agg.peak_rss_bytes, m.peak_rss_bytes or 0)
    return dict(table)


@dataclass(frozen=True)
class Ratio:
    """numerator / denominator of mean requests per second, and whether to trust it."""

    value: float
    flagged: bool

    def cell(self) -> str:
        """Markdown cell text: the ratio with ``†`` if either side's runs disagree."""
        return f"{self.value:.2f}{' †' if self.flagged else ''}"


def ratio(num: Aggregate | None, den: Aggregate | None) -> Ratio | None:
    """num / den, None when either is missing or a side measured nothing."""
    # A side where nothing finished within the step has no rate to compare.
    if num is None or den is None or num.rps <= 0 or den.rps <= 0:
        return None
    return Ratio(num.rps / den.rps, num.disagrees or den.disagrees)


def floor_key(key: Key, cores: int) -> Key:
    """The floor's key for a server key: the floor runs min(c, cores) processes
    and has no caches, so one warm measurement per process count serves all."""
    image_type, kind, _phase, concurrency = key
    return (image_type, kind, "warm", min(concurrency, cores))


def ratio_rows(
    table: dict[str, dict[Key, Aggregate]], cores: int
) -> list[tuple[Key, Ratio | None, Ratio | None, Ratio | None]]:
    """(key, ours/IIPImage, ours/floor, S3/local) for every key we measured locally."""
    ours = table.get(LOCAL, {})
    rows = []
    for key in sorted(ours, key=_sort_key):
        rows.append(
            (
                key,
                ratio(ours[key], table.get(IIP, {}).get(key)),
                ratio(ours[key], table.get(FLOOR, {}).get(floor_key(key, cores))),
                ratio(table.get(S3, {}).get(key), ours[key]),
            )
        )
    return rows


KIND_ORDER: Final = ("tiles", "thumbs", "full", "info")
TYPE_ORDER: Final = ("jp2-tiled", "jp2-precincts", "tiff-pyramid", "jpeg-baseline")
PHASE_ORDER: Final = ("cold", "first", "warm")


def _sort_key(key: Key) -> tuple[int, int, int, int]:
    image_type, kind, phase, concurrency = key
    t = TYPE_ORDER.index(image_type) if image_type in TYPE_ORDER else len(TYPE_ORDER)
    k = KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)
    p = PHASE_ORDER.index(phase) if phase in PHASE_ORDER else len(PHASE_ORDER)
    return (t, k, p, concurrency)


def disagreements(table: dict[str, dict[Key, Aggregate]]) -> list[tuple[str, Key, Aggregate]]:
    """Every (case, key) whose runs differ by more than DISAGREEMENT."""
    found = []
    for case in CASES:
        for key, agg in sorted(table.get(case, {}).items(), key=lambda kv: _sort_key(kv[0])):
            if agg.disagrees:
                found.append((case, key, agg))
    return found


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:.0f}" if nbytes else "-"


def _fmt_ratio(r: Ratio | None) -> str:
    return r.cell() if r else "-"


def _geomean(values: Sequence[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


def headline_markdown(table: dict[str, dict[Key, Aggregate]], cores: int) -> str:
    """Per image type: geometric means of each ratio over request types and
    concurrencies, cold, first and warm apart (info.json, which decodes nothing,
    apart too)."""
    groups: dict[tuple[str, str], list[list[float]]] = defaultdict(lambda: [[], [], []])
    for key, *ratios in ratio_rows(table, cores):
        image_type, kind, phase, _c = key
        label = "info.json" if kind == "info" else phase
        for i, r in enumerate(ratios):
            if r is not None:
                groups[(image_type, label)][i].append(r.value)
    lines = [
        "| image type | requests | ours / IIPImage | ours / codec floor | S3 / local |",
        "|---|---|---:|---:|---:|",
    ]
    order = {"cold": 0, "first": 1, "warm": 2, "info.json": 3}
    for (image_type, label), columns in sorted(
        groups.items(),
        key=lambda kv: (_sort_key((kv[0][0], "tiles", "cold", 0))[0], order[kv[0][1]]),
    ):
        cells = [f"{_geomean(v):.2f}" if v else "-" for v in columns]
        lines.append(f"| {image_type} | {label} | {' | '.join(cells)} |")
    return "\n".join(lines)


def ratios_markdown(table: dict[str, dict[Key, Aggregate]], cores: int) -> str:
    """The ratio table."""
    lines = [
        "| image type | request | phase | c | ours / IIPImage | ours / codec floor | S3 / local |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for key, vs_iip, vs_floor, s3 in ratio_rows(table, cores):
        image_type, kind, phase, c = key
        lines.append(
            f"| {image_type} | {kind} | {phase} | {c} | {_fmt_ratio(vs_iip)} | "
            f"{_fmt_ratio(vs_floor)} | {_fmt_ratio(s3)} |"
        )
    return "\n".join(lines)


def first_markdown(measurements: Iterable[Measurement]) -> str:
    """The `first` phase: per image type and concurrency, requests per second
    (mean over runs) and p99 (median over runs) of ours, IIPImage and (when
    measured) ours on S3, and ours / IIPImage."""
    firsts = [m for m in measurements if m.phase == "first" and m.kind == "tiles"]
    if not firsts:
        return "No first-pass steps in this run (they run at concurrencies above 1 only)."
    table = aggregate(firsts)
    # A pass that stopped at its time bound measured only the start of the list.
    partial = {
        (m.case, (m.image_type, m.kind, m.phase, m.concurrency))
        for m in firsts
        if m.result.requests < m.urls
    }
    with_s3 = S3 in table

    def rate(case: str, key: Key) -> str:
        agg = table.get(case, {}).get(key)
        if agg is None or not agg.runs:
            return "-"
        marks = (" †" if agg.disagrees else "") + (" ‡" if (case, key) in partial else "")
        return f"{agg.rps:.1f}{marks}"

    def p99(case: str, key: Key) -> str:
        agg = table.get(case, {}).get(key)
        return f"{agg.median('p99_ms'):.0f}" if agg is not None and agg.runs else "-"

    header = "| image type | c | ours req/s | IIPImage req/s | ours / IIPImage | ours p99 ms "
    header += "| IIPImage p99 ms |"
    rule = "|---|---:|---:|---:|---:|---:|---:|"
    if with_s3:
        header += " S3 req/s | S3 p99 ms |"
        rule += "---:|---:|"
    lines = [header, rule]
    keys = sorted({k for case in table.values() for k in case}, key=_sort_key)
    for key in keys:
        vs_iip = ratio(table.get(LOCAL, {}).get(key), table.get(IIP, {}).get(key))
        cells = [
            key[0],
            str(key[3]),
            rate(LOCAL, key),
            rate(IIP, key),
            _fmt_ratio(vs_iip),
            p99(LOCAL, key),
            p99(IIP, key),
        ]
        if with_s3:
            cells += [rate(S3, key), p99(S3, key)]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines)


# The fast-decode issue's goals for first passes: ours / IIPImage requests
# per second at least this, per image type (and, for TIFF, only at c=16);
# p99 no worse than IIPImage's everywhere.
RATE_GOALS: Final = {"jp2-tiled": 2.0, "jp2-precincts": 2.0, "tiff-pyramid": 1.0}
RATE_GOAL_CONCURRENCY: Final = {"tiff-pyramid": (16,)}


def goals_markdown(measurements: Iterable[Measurement]) -> str:
    """The first-pass goals, each met or short by how much: rate ratios
    (RATE_GOALS) and p99 against IIPImage's, per image type and c."""
    firsts = [m for m in measurements if m.phase == "first" and m.kind == "tiles"]
    table = aggregate(firsts)
    ours, iip = table.get(LOCAL, {}), table.get(IIP, {})
    keys = sorted(set(ours) & set(iip), key=_sort_key)
    if not keys:
        return "No first passes of both our stack and IIPImage in this run."
    lines = ["| goal | measured | met |", "|---|---|---|"]
    for key in keys:
        image_type, _kind, _phase, c = key
        mine, theirs = ours[key], iip[key]
        goal = RATE_GOALS.get(image_type)
        rate = ratio(mine, theirs)
        counted = c in RATE_GOAL_CONCURRENCY.get(image_type, (c,))
        if goal is not None and rate is not None and counted:
            needed = goal * theirs.rps
            verdict = (
                "yes"
                if rate.value >= goal
                else f"no: {needed:.1f} req/s needed, {needed / mine.rps - 1:.0%} more"
            )
            lines.append(
                f"| {image_type} c={c}: ≥ {goal:g} x IIPImage's req/s "
                f"| {rate.cell()} ({mine.rps:.1f} vs {theirs.rps:.1f}) | {verdict} |"
            )
        p99_ours, p99_iip = mine.median("p99_ms"), theirs.median("p99_ms")
        if mine.runs and theirs.runs and p99_iip > 0:
            verdict = (
                "yes"
                if p99_ours <= p99_iip
                else f"no: {p99_ours / p99_iip - 1:.0%} above IIPImage's"
            )
            lines.append(
                f"| {image_type} c={c}: p99 ≤ IIPImage's "
                f"| {p99_ours:.0f} vs {p99_iip:.0f} ms | {verdict} |"
            )
    return "\n".join(lines)


def absolute_markdown(table: dict[str, dict[Key, Aggregate]]) -> str:
    """Every case's numbers: req/s per run, latency percentiles, errors, memory."""
    lines = [
        "| image type | request | phase | c | case | req/s (per run) | p50 ms | p95 ms | p99 ms "
        "| errors | MB/s | peak RSS MB |",
        "|---|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    keys = sorted({k for case in table.values() for k in case}, key=_sort_key)
    for key in keys:
        image_type, kind, phase, c = key
        for case in CASES:
            agg = table.get(case, {}).get(key)
            if agg is None or not agg.runs:
                continue
            per_run = " / ".join(f"{r.rps:.1f}" for r in agg.runs)
            flag = " †" if agg.disagrees else ""
            mbps = statistics.fmean(r.bytes / r.duration_s for r in agg.runs if r.duration_s)
            lines.append(
                f"| {image_type} | {kind} | {phase} | {c} | {CASE_TITLES[case]} | "
                f"{per_run}{flag} | {agg.median('p50_ms'):.1f} | {agg.median('p95_ms'):.1f} | "
                f"{agg.median('p99_ms'):.1f} | {agg.errors} | {mbps / 1e6:.1f} | "
                f"{_mb(agg.peak_rss_bytes)} |"
            )
    return "\n".join(lines)


def s3_markdown(measurements: Iterable[Measurement]) -> str:
    """S3 requests and bytes per IIIF request in the S3 case (when the proxy counted them)."""
    per: dict[tuple[str, str, str, int], list[tuple[float, float, float]]] = defaultdict(list)
    for m in measurements:
        if m.case != S3 or "s3_requests" not in m.extra or not m.result.requests:
            continue
        n = m.result.requests
        per[(m.image_type, m.kind, m.phase, m.concurrency)].append(
            (
                m.extra["s3_requests"] / n,
                m.extra.get("s3_gets", 0.0) / n,
                m.extra.get("s3_body_bytes", 0.0) / n,
            )
        )
    if not per:
        return "No S3 request counts (the S3 case did not run, or without the counting proxy)."
    lines = [
        "| image type | request | phase | c | S3 requests per IIIF request | of which GET "
        "| KB fetched per IIIF request |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for key in sorted(per, key=_sort_key):
        rows = per[key]
        reqs = statistics.fmean(r[0] for r in rows)
        gets = statistics.fmean(r[1] for r in rows)
        kb = statistics.fmean(r[2] for r in rows) / 1000
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {reqs:.2f} | {gets:.2f} | {kb:.0f} |"
        )
    return "\n".join(lines)


def profile_markdown(profiles: Sequence[ProfileSummary], top_categories: int = 10) -> str:
    """Self-time shares per process."""
    if not profiles:
        return "No profile was taken (py-spy missing or `--no-profile`)."
    parts = []
    for p in profiles:
        cpu = f"; the processes used {p.cpu_cores:.2f} cores" if p.cpu_cores is not None else ""
        parts.append(
            f"**{p.process}**: {p.samples} non-idle samples over {p.duration_s:.0f} s{cpu}\n"
        )
        if p.libraries:
            parts.append("| library (perf, every thread) | share of CPU samples |\n|---|---:|")
            parts.extend(f"| {c} | {s:.0%} |" for c, s in p.libraries[:top_categories])
            parts.append("")
        parts.append("| where (innermost Python frame, py-spy) | share of samples |\n|---|---:|")
        parts.extend(f"| {c} | {s:.0%} |" for c, s in p.categories[:top_categories])
        parts.append("\nTop frames:\n")
        parts.extend(f"- {s:.0%} `{f}`" for f, s in p.top_frames[:8])
        parts.append("")
    return "\n".join(parts)


@dataclass
class Report:
    """Everything docs/benchmarks.md shows."""

    meta: dict[str, Any]
    measurements: list[Measurement]
    skipped: dict[str, str]
    profiles: list[ProfileSummary]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what bench/results/*.json holds)."""
        return {
            "meta": self.meta,
            "measurements": [m.to_json() for m in self.measurements],
            "skipped": self.skipped,
            "profiles": [p.to_json() for p in self.profiles],
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        """The inverse of `to_json`."""
        return cls(
            meta=data["meta"],
            measurements=[Measurement.from_json(m) for m in data["measurements"]],
            skipped=data["skipped"],
            profiles=[ProfileSummary.from_json(p) for p in data["profiles"]],
            notes=list(data.get("notes", [])),
        )


def render_markdown(report: Report, method: str) -> str:
    """docs/benchmarks.md: what was measured, how, the ratios, the numbers, the profile."""
    meta = report.meta
    cores = int(meta.get("cores", 1))
    table = aggregate(report.measurements)
    flagged = disagreements(table)
    out = [
        "# Benchmarks: our stack against IIPImage and the codec floor",
        "",
        f"Measured {meta.get('date', '?')} with `{meta.get('command', 'python -m bench')}` "
        f"({meta.get('wall_s', 0) / 60:.0f} minutes). Regenerate this file with `make bench`.",
        "",
        "## Machine and versions",
        "",
    ]
    out.extend(f"- {k}: {v}" for k, v in meta.get("machine", {}).items())
    out.extend(f"- {k}: {v}" for k, v in meta.get("versions", {}).items())
    out.extend(["", "## Method", "", method.strip(), ""])
    if report.skipped:
        out.extend(["### Not measured in this run", ""])
        out.extend(f"- {CASE_TITLES.get(c, c)}: {why}" for c, why in report.skipped.items())
        out.append("")
    out.extend(
        [
            "## In short",
            "",
            "Geometric means of the ratios below over request types (tiles, thumbnails, "
            "full/max) and concurrencies; above 1: ours is faster.",
            "",
            "Read `cold` as the decode path (every URL new to every server), `first` as "
            "the decode path under concurrent load (tiles only: one pass over an image "
            "new to every server, at each c above 1) and `warm` as "
            "the caches: our gateway keeps rendered tiles and thumbnails in memory "
            "(`IIIF_GATEWAY_RENDER_CACHE_MB`), IIPImage its own tile cache, so warm "
            "steps mostly measure the HTTP path.",
            "",
            headline_markdown(table, cores),
            "",
            "## Ratios",
            "",
            "Mean requests per second over the runs, as ratios (above 1: ours is faster; "
            "ours / codec floor is the share of the codec's own speed we deliver). "
            f"† marks a ratio with a side whose runs disagree by more than "
            f"{DISAGREEMENT:.0%}. ours / codec floor compares with the floor run on "
            f"min(c, {cores}) processes.",
            "",
            ratios_markdown(table, cores),
            "",
            "## First pass at concurrency (caches cold)",
            "",
            "The `tiles` list of each master under a name no server has seen in the run, "
            "each URL asked once at concurrency c: decoding under load, not caches. "
            "req/s: mean over the runs; p99: median over the runs. "
            "† marks a side whose runs disagree by more than "
            f"{DISAGREEMENT:.0%}, ‡ a pass that stopped at its time bound before the end "
            "of the list in some run (its rate covers the costlier start of the list only).",
            "",
            first_markdown(report.measurements),
            "",
            "### The fast-decode goals",
            "",
            "What the fast-decode issue asks of these first passes: JPEG 2000 tiles at "
            "twice IIPImage's requests per second at each c, pyramidal TIFF tiles at "
            "IIPImage's rate at c=16, p99 no worse than IIPImage's. From this one run; "
            "a † says its runs disagreed (see below).",
            "",
            goals_markdown(report.measurements),
            "",
            "## Runs that disagree",
            "",
        ]
    )
    if flagged:
        out.append(
            f"{len(flagged)} steps' runs differ by more than {DISAGREEMENT:.0%} in requests "
            "per second (shared, noisy machine): treat their ratios as rough."
        )
        out.append("")
        out.extend(
            f"- {CASE_TITLES[case]}, {key[0]} {key[1]} {key[2]} c={key[3]}: "
            + " vs ".join(f"{r.rps:.1f}" for r in agg.runs)
            + f" req/s ({agg.spread:.0%})"
            for case, key, agg in flagged
        )
    else:
        out.append(f"None: every step's runs agree within {DISAGREEMENT:.0%}.")
    out.extend(
        [
            "",
            "## Where our time goes",
            "",
            "Profiles of our stack (local folder, default settings) during first passes "
            "over the tile list at c=16, on images the stack had not seen (one alias of "
            "the master after another): the load of the `first` steps, where the goals "
            "are measured. Two views of each process: perf's samples of every thread "
            "by library (where the CPU time goes, C threads included: OpenJPEG's and "
            "libvips' workers are not Python threads), when perf is installed; then "
            "py-spy's Python frames, which say which of our lines led there. py-spy "
            "leaves out threads it sees sleeping but misses some (an event loop waiting "
            "in epoll still shows as `EpollSelector.select`, a pool thread waiting for "
            "work as `_worker`), and charges time in C to the Python line that called "
            "it: `OpenJpegEngine._decode` is OpenJPEG decoding, `mosaic` in "
            "decoder/native/jpeg_mosaic.py is libjpeg joining stored tiles, a pyvips "
            "call is libvips (crop, resize, encode), a grpc frame is gRPC's C core.",
            "",
            profile_markdown(report.profiles),
            "",
        ]
    )
    out.extend(
        [
            "## What the S3 case asks of the store",
            "",
            "Counted by the latency proxy; warm requests are mostly served from the "
            "decoder's block cache.",
            "",
            s3_markdown(report.measurements),
            "",
        ]
    )
    if report.notes:
        out.extend(["## Notes", ""])
        out.extend(f"- {n}" for n in report.notes)
        out.append("")
    out.extend(["## All numbers", "", absolute_markdown(table), ""])
    return "\n".join(out)


def write_report(report: Report, method: str, markdown_path: Path, json_path: Path) -> None:
    """Write the markdown report and the raw JSON beside the results."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report.to_json(), indent=1) + "\n")
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    markdown_path.write_text(render_markdown(report, method))
