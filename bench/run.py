"""One benchmark run, start to finish: tools, images, servers, load, floor, profile, report.

Every case runs in the same invocation, interleaved step by step (and in a
rotated order from one run to the next), so a noisy neighbour slows all of
them alike instead of one; every step is repeated `runs` times, servers are
restarted between runs so that each run's cold and first passes are cold again.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from bench import codec_floor, machine, procs, profile, servers
from bench.images import (
    DEFAULT_CACHE,
    FULL,
    SMOKE,
    BenchImage,
    ImageSet,
    ImageType,
    ensure_images,
    recipe,
)
from bench.load import Client, LoadResult, have_wrk, run_load
from bench.report import (
    CASES,
    FLOOR,
    IIP,
    LOCAL,
    S3,
    Measurement,
    Report,
    render_markdown,
    write_report,
)
from bench.s3 import s3_missing, start_s3_stack
from bench.workload import ImageRequest, RequestKind, Source, build_workload, tile_list, urls
from decoder.engines.openjpeg import openjpeg

Log = Callable[[str], None]
Workloads = dict[ImageType, dict[RequestKind, list[ImageRequest]]]
# (image type, concurrency) -> the tile list of that type's master under its
# `first` alias for that concurrency.
FirstWorkloads = dict[tuple[ImageType, int], list[ImageRequest]]

DOCS: Final = procs.REPO / "docs" / "benchmarks.md"
RESULTS: Final = procs.REPO / "bench" / "results"
JP2_RESOLUTIONS: Final = 7  # "-n 7" in bench.images' recipes
# A first pass (each tile URL once at c > 1) ends after this long at the
# latest (or the cold bound, when longer): long enough for the whole list.
FIRST_MIN_DURATION_S: Final = 30.0


@dataclass(frozen=True)
class Options:
    """Everything a run can be told; `python -m bench --help` documents them."""

    smoke: bool = False
    install: bool = False
    cases: tuple[str, ...] = CASES
    types: tuple[ImageType, ...] = tuple(ImageType)
    concurrency: tuple[int, ...] = (1, 4, 16)
    duration_s: float = 2.0
    cold_duration_s: float = 5.0
    runs: int = 2
    limit: int | None = None
    api: int = 2
    s3_latency_ms: float = 20.0
    # py-spy seconds per profiled load (0: no profile).
    profile_s: float = 15.0
    client: Client = "auto"
    markdown: Path = DOCS
    results_dir: Path = RESULTS
    cache_dir: Path = DEFAULT_CACHE
    command: str = "python -m bench"
    render: Path | None = None  # re-render this results.json instead of measuring


def smoke_options(options: Options) -> Options:
    """`options` shrunk to a seconds-long run (tiny images, a few URLs, c=1)."""
    return replace(
        options,
        smoke=True,
        concurrency=(1,),
        duration_s=1.0,
        # As long as a full run's: on a starved machine one cold request of a
        # fresh stack has taken over 2 s.
        cold_duration_s=5.0,
        runs=1,
        limit=4,
    )


@dataclass
class Context:
    """State shared by the steps of one invocation."""

    options: Options
    images: ImageSet
    workloads: Workloads
    out_dir: Path
    log: Log
    first_workloads: FirstWorkloads = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    measurements: list[Measurement] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        """Where server logs go."""
        return self.out_dir / "logs"


def _workloads(images: ImageSet, limit: int | None) -> Workloads:
    def source(image: BenchImage) -> Source:
        return Source(image.identifier, image.width, image.height)

    return {
        t: build_workload(
            source(images.get(t, "master")), [source(m) for m in images.mids(t)], limit
        )
        for t in ImageType
    }


# The profile's load: first passes at the concurrency of the TIFF goal.
PROFILE_CONCURRENCY: Final = 16
PROFILED_TYPES: Final = (ImageType.TIFF_PYRAMID, ImageType.JP2_TILED, ImageType.JP2_PRECINCTS)


def first_concurrencies(opts: Options) -> tuple[int, ...]:
    """The concurrencies of the `first` phase: every one above 1, in order."""
    return tuple(dict.fromkeys(c for c in opts.concurrency if c > 1))


def first_duration(opts: Options) -> float:
    """The time bound of a first pass."""
    return max(opts.cold_duration_s, FIRST_MIN_DURATION_S)


def _first_workloads(images: ImageSet, opts: Options) -> FirstWorkloads:
    """Make the `first` aliases of the masters of `opts.types` and their tile lists."""
    lists: FirstWorkloads = {}
    for type_ in opts.types:
        for c in first_concurrencies(opts):
            alias = images.first_pass_master(type_, c)
            lists[(type_, c)] = tile_list(
                Source(alias.identifier, alias.width, alias.height), opts.limit
            )
    return lists


def _start_servers(ctx: Context, run_no: int) -> dict[str, servers.RunningServer]:
    opts, started = ctx.options, {}
    root = ctx.images.root
    probe = ctx.images.get(ImageType.TIFF_PYRAMID, "mid").identifier
    # The first phase's aliases are objects of their own in the S3 store.
    aliases = sorted({r.source.identifier for lst in ctx.first_workloads.values() for r in lst})
    starters: dict[str, Callable[[], servers.RunningServer]] = {
        LOCAL: lambda: servers.start_our_stack(LOCAL, root, ctx.logs / f"run{run_no}"),
        IIP: lambda: servers.start_iipimage(root, ctx.out_dir / f"iipimage-run{run_no}", probe),
        S3: lambda: start_s3_stack(
            root,
            [image.identifier for image in ctx.images.images] + aliases,
            ctx.out_dir / f"s3-run{run_no}",
            ctx.logs / f"run{run_no}",
            opts.s3_latency_ms,
        ),
    }
    wanted = [case for case in starters if case in opts.cases and case not in ctx.skipped]
    ctx.log(f"  starting {', '.join(wanted)}")
    # In parallel: SeaweedFS alone takes seconds to come up.
    with ThreadPoolExecutor(max_workers=max(1, len(wanted))) as pool:
        futures = {case: pool.submit(starters[case]) for case in wanted}
    for case, future in futures.items():
        try:
            started[case] = future.result()
        except Exception as exc:
            ctx.skipped[case] = f"did not start: {exc}"
            ctx.log(f"  {case} did not start: {exc}")
    return started


def _line(case: str, t: str, kind: str, phase: str, c: int, r: LoadResult) -> str:
    return (
        f"  {case:10} {t:13} {kind:6} {phase:5} c={c:<2} {r.rps:8.1f} req/s "
        f"p50 {r.p50_ms:7.1f} ms p99 {r.p99_ms:7.1f} ms errors {r.errors}"
    )


def _step(
    ctx: Context,
    case: str,
    server: servers.RunningServer,
    type_: ImageType,
    kind: RequestKind,
    phase: str,
    concurrency: int,
    run_no: int,
    warm_duration_s: float | None = None,
    requests: list[ImageRequest] | None = None,
) -> Measurement | None:
    """One load step over `requests` (by default the type's `kind` list); None
    (and a note) when the load client failed."""
    opts = ctx.options
    api = 2 if case == IIP else opts.api
    listed = ctx.workloads[type_][kind] if requests is None else requests
    targets = urls(listed, server.prefixes[api], api)
    limit: int | None
    if phase == "cold":
        duration, limit = opts.cold_duration_s, len(targets)
    elif phase == "first":
        duration, limit = first_duration(opts), len(targets)
    else:
        duration = warm_duration_s or opts.duration_s
        limit = 3 * len(targets) if opts.smoke else None
    if server.reset_stats is not None:
        server.reset_stats()
    try:
        with procs.RssSampler(server.measured) as rss:
            result = run_load(
                server.base_url, targets, concurrency, duration, limit, client=opts.client
            )
    except (RuntimeError, TimeoutError, OSError) as exc:
        ctx.notes.append(
            f"{case} {type_.value} {kind.value} {phase} c={concurrency} run {run_no}: "
            f"not measured ({exc})."
        )
        ctx.log(f"  {case} step failed: {exc}")
        return None
    extra = server.read_stats() if server.read_stats is not None else {}
    m = Measurement(
        case,
        type_.value,
        kind.value,
        phase,
        concurrency,
        run_no,
        len(targets),
        result,
        rss.peak,
        extra,
    )
    ctx.log(_line(case, type_.value, kind.value, phase, concurrency, result))
    if phase in ("cold", "first") and result.requests < len(targets):
        at = f" c={concurrency}" if phase == "first" else ""
        ctx.notes.append(
            f"{case} {type_.value} {kind.value}{at} run {run_no}: the {phase} pass stopped at "
            f"its {duration:.0f} s bound after {result.requests} of {len(targets)} URLs."
        )
    return m


def _measure_servers(ctx: Context, running: dict[str, servers.RunningServer], run_no: int) -> None:
    opts = ctx.options
    # Rotate who goes first each run: warm-up and neighbour effects even out.
    order = list(running)
    if order:
        shift = (run_no - 1) % len(order)
        order = order[shift:] + order[:shift]
    dead: set[str] = set()
    for type_ in opts.types:
        for kind in RequestKind:
            for case in order:
                if case not in dead and (ended := running[case].exited()):
                    # A server that died is not measured again in this run (the
                    # next run restarts it); the report says so.
                    dead.add(case)
                    ctx.notes.append(
                        f"{case} stopped during run {run_no} before {type_.value} "
                        f"{kind.value} ({', '.join(ended)}); see its logs in {ctx.logs}."
                    )
                    ctx.log(f"  {case} exited: {', '.join(ended)}")
            active = [c for c in order if type_ in running[c].serves and c not in dead]
            broken: set[str] = set()
            cold_mean_s: dict[str, float] = {}
            for case in active:
                cold = _step(
                    ctx, case, running[case], type_, kind, "cold", opts.concurrency[0], run_no
                )
                if cold is None:
                    broken.add(case)
                    continue
                ctx.measurements.append(cold)
                # At c=1 the cold pass's duration is the sum of its latencies.
                done = cold.result.requests
                cold_mean_s[case] = cold.result.duration_s / done if done else opts.cold_duration_s
                if cold.result.requests and cold.result.errors >= cold.result.requests:
                    # Replaying failures would measure error pages, not images.
                    broken.add(case)
                    ctx.notes.append(
                        f"{case} answered every {type_.value} {kind.value} request with an "
                        f"error in run {run_no}; its warm steps were skipped (see the logs)."
                    )
            for c in opts.concurrency:
                for case in active:
                    if case not in broken and case not in dead:
                        duration = warm_duration(opts, cold_mean_s[case], c, servers.cores())
                        warm = _step(
                            ctx, case, running[case], type_, kind, "warm", c, run_no, duration
                        )
                        if warm is not None:
                            ctx.measurements.append(warm)
            if kind == RequestKind.TILES:
                usable = [c for c in active if c not in broken and c not in dead]
                _measure_first(ctx, running, type_, usable, run_no)


def _measure_first(
    ctx: Context,
    running: dict[str, servers.RunningServer],
    type_: ImageType,
    cases: Sequence[str],
    run_no: int,
) -> None:
    """The `first` steps of `type_`: at each concurrency above 1, one pass over
    the tile list of an alias of the master that no server has seen in this run
    (so every cache is cold for it), the cases alternating in `cases`' order.

    Run after the type's tile steps rather than before: the cold tile pass
    then still comes first after start-up, as it always has, and start-up
    costs are not charged to a pass at concurrency. Skipped for image types
    IIPImage does not read (plain JPEG) when it runs: the phase is there to
    compare decoding with it, and those passes take minutes."""
    if IIP in running and type_ not in running[IIP].serves:
        return
    for c in first_concurrencies(ctx.options):
        requests = ctx.first_workloads.get((type_, c))
        if not requests:
            continue
        for case in cases:
            first = _step(
                ctx,
                case,
                running[case],
                type_,
                RequestKind.TILES,
                "first",
                c,
                run_no,
                requests=requests,
            )
            if first is not None:
                ctx.measurements.append(first)


# A warm step lasts long enough for about this many responses, up to
# WARM_STRETCH times the set duration: two responses say nothing of a rate.
WARM_MIN_RESPONSES: Final = 8
WARM_STRETCH: Final = 2.0


def warm_duration(opts: Options, mean_latency_s: float, concurrency: int, cores: int) -> float:
    """The warm step's duration: `opts.duration_s`, stretched for slow requests.

    With requests taking `mean_latency_s` alone, about min(c, cores) finish
    per `mean_latency_s`, and the first only after c/cores of them.
    """
    parallel = max(1, min(concurrency, cores))
    first = mean_latency_s * max(1.0, concurrency / cores)
    needed = WARM_MIN_RESPONSES * mean_latency_s / parallel + first
    return min(max(opts.duration_s, needed), WARM_STRETCH * opts.duration_s)


def _measure_floor(ctx: Context, run_no: int) -> None:
    opts = ctx.options
    cores = servers.cores()
    counts = sorted({min(c, cores) for c in opts.concurrency})
    limit_factor = 3 if opts.smoke else None
    with codec_floor.FloorPool(max(counts)) as pool:
        for type_ in opts.types:
            for kind in RequestKind:
                if kind == RequestKind.INFO:
                    continue  # no pixels: nothing for a codec to do
                requests = ctx.workloads[type_][kind]
                tasks = [
                    codec_floor.FloorTask(
                        type_,
                        ctx.images.path_of(r.source.identifier),
                        r.region,
                        r.size,
                        JP2_RESOLUTIONS,
                    )
                    for r in requests
                    if r.region is not None and r.size is not None
                ]
                for n in counts:
                    limit = None if limit_factor is None else limit_factor * len(tasks)
                    result = pool.run(
                        tasks, n, opts.duration_s, limit, quality=servers.JPEG_QUALITY
                    )
                    ctx.measurements.append(
                        Measurement(
                            FLOOR, type_.value, kind.value, "warm", n, run_no, len(tasks), result
                        )
                    )
                    ctx.log(_line(FLOOR, type_.value, kind.value, "warm", n, result))


def _profile(ctx: Context) -> list[profile.ProfileSummary]:
    """Profiles of our decoder and gateway where the goals are measured: first
    passes over the tile list at c=16 (pyramidal TIFF, where our overhead
    shows, and both JPEG 2000 masters, where decoding does).

    Each pass is over an alias of the master the stack has not seen
    (``<type>-master-profile<n>``), one after another until the profile's
    time is up: replaying one image would profile the render cache.
    """
    opts = ctx.options
    if profile.pyspy_binary() is None:
        ctx.skipped["profile"] = "py-spy is not installed (pip install py-spy)"
        return []
    summaries: list[profile.ProfileSummary] = []
    server = servers.start_our_stack("profile", ctx.images.root, ctx.logs / "profile")
    try:
        decoder_pid, gateway_pid = server.measured
        for type_ in PROFILED_TYPES:
            if type_ not in opts.types:
                continue
            label = f"{type_.value} tiles, first passes, c={PROFILE_CONCURRENCY}"
            ctx.log(f"  profiling our stack: {label}, {opts.profile_s:.0f} s")
            recorders = {
                name: (pid, ctx.out_dir / f"profile-{type_.value}-{name}.txt")
                for name, pid in (("decoder", decoder_pid), ("gateway", gateway_pid))
            }
            started = {
                name: profile.start_recording(pid, opts.profile_s, out)
                for name, (pid, out) in recorders.items()
            }
            trees = {name: procs.process_tree([pid]) for name, (pid, _) in recorders.items()}
            perfs = {
                name: profile.start_perf(trees[name], opts.profile_s, out.with_suffix(".perf"))
                for name, (_, out) in recorders.items()
                if profile.perf_binary() is not None
            }
            time.sleep(0.5)  # py-spy and perf attach before the load starts
            cpu_before = {name: procs.cpu_seconds(tree) for name, tree in trees.items()}
            t0 = time.monotonic()
            passes = 0
            while (left := opts.profile_s - (time.monotonic() - t0)) > 0.2:
                alias = ctx.images.profile_master(type_, passes)
                passes += 1
                source = Source(alias.identifier, alias.width, alias.height)
                targets = urls(tile_list(source, opts.limit), server.prefixes[opts.api], opts.api)
                run_load(
                    server.base_url, targets, PROFILE_CONCURRENCY, left,
                    limit=len(targets), client=opts.client,
                )  # fmt: skip
            elapsed = time.monotonic() - t0
            for name, proc in started.items():
                cores_busy = (procs.cpu_seconds(trees[name]) - cpu_before[name]) / elapsed
                proc.wait(opts.profile_s + 30)
                out = recorders[name][1]
                if out.exists():
                    summary = profile.summarise(
                        f"{name} ({label}, {passes} images)", out.read_text(), opts.profile_s
                    )
                    summary.cpu_cores = cores_busy
                    if name in perfs:
                        perfs[name].wait(opts.profile_s + 30)
                        summary.libraries = profile.library_shares(out.with_suffix(".perf"))
                    summaries.append(summary)
                else:
                    ctx.notes.append(f"py-spy wrote no profile of the {name}; see {out}.log")
    finally:
        server.stop()
    return summaries


def method_text(opts: Options, r: dict[str, Any]) -> str:
    """The Method section of the report, with this run's parameters and image recipe."""
    size = r["size"]
    mids = size["mids"]
    if have_wrk() and opts.client != "httpx":
        client = "wrk (one thread, a Lua script cycling through the URL list)"
    else:
        client = "an asyncio httpx client (wrk was not installed)"
    conc = ", ".join(str(c) for c in opts.concurrency)
    first_conc = ", ".join(f"c={c}" for c in first_concurrencies(opts)) or "none in this run"
    return f"""
Everything below is made and run by `python -m bench` in one invocation, on 127.0.0.1.

**Images** (cached in `bench/.cache/`): a photo-like RGB master of
{size["master"][0]}x{size["master"][1]} and {mids} mid-size images of
{size["mid"][0]}x{size["mid"][1]} (the master scaled down, and crops of it), each saved as
- `jp2-tiled`: `opj_compress {r["jp2_tiled"]}`
- `jp2-precincts` (untiled): `opj_compress {r["jp2_precincts"]}`
- `tiff-pyramid`: `{r["tiff"]}`
- `jpeg-baseline`: `{r["jpeg"]}`

**Requests**, Image API 2.1 URLs for every server (IIPImage 1.1 speaks 2.x only; ours
was driven with Image API {opts.api}):
- `tiles`: an OpenSeadragon deep-zoom session on the master, 256 and 512 px tiles: the
  whole grid at every scale factor that fits a 1280x960 viewport, then the tiles under
  the viewport while zooming into one point down to full resolution;
- `thumbs`: `/full/!200,200/0/default.jpg` of the master and of {mids} mid-size images;
- `full`: `/full/max/0/default.jpg` of the {mids} mid-size images;
- `info`: `info.json` of all of them.

Lists are replayed in order and have at least as many URLs as connections, so the
requests in flight at one time are all different: our decoder shares identical
renders in flight, and this keeps that from inflating its rates.

**Steps**: for each image type and request list, every server first gets each URL once
(`cold`, at c={opts.concurrency[0]}, bounded to {opts.cold_duration_s:.0f} s: a server too slow to
finish the list in time is measured on the part it reached, and lists start with the
costliest, coarsest tiles, so cold ratios flatter the faster server a little), then
the list is replayed for {opts.duration_s:.0f} s (`warm`) at each concurrency ({conc});
a warm step of slow requests is stretched, up to {WARM_STRETCH:.0f}x, until about
{WARM_MIN_RESPONSES} responses can finish.
The cases alternate step by step, in an order rotated every run; there are {opts.runs}
runs, and the servers are restarted between runs.
The load client is {client}.

**First pass at concurrency** (`first`): warm steps above c=1 mostly measure caches, so
after its tile steps each image type IIPImage reads also gets, at each concurrency above 1
({first_conc}), one pass over the `tiles` list of an image no server has seen yet in the
run: the master under another name (`<type>-master-first<c>.<ext>`, a symlink beside it;
an object of its own in the S3 store, uploaded with the others), so every server's caches
are cold for it. Each URL is asked exactly once (the load client never sends more than the
list, even at c > 1), bounded to {first_duration(opts):.0f} s; the cases alternate as
above. The file's bytes may still be in the operating system's page cache, as for `cold`.

**Cases**
- IIPImage: Debian's iipimage-server as FastCGI behind lighttpd, one `iipsrv.fcgi`
  process per core, JPEG quality {servers.JPEG_QUALITY}, its default 10 MB tile cache,
  logging off. It does not read plain JPEG files.
- ours (local folder): `python -m decoder` and `python -m gateway` with their default
  settings (so their caches on), JPEG quality {servers.JPEG_QUALITY}, warnings-only logs.
- ours (S3 +20 ms): the same decoder with `IIIF_DECODER_SOURCE=s3`, reading from
  SeaweedFS through a proxy that delays every S3 request by {opts.s3_latency_ms:.0f} ms.
- codec floor: the same regions decoded in-process by the codec alone (OpenJPEG via
  ctypes with decode area and resolution factor; libtiff tiles of the right pyramid page;
  libjpeg DCT shrink), resized when needed and JPEG-encoded, one thread per process,
  min(c, cores) processes; no HTTP, no gRPC, no caches. No floor for `info`.
  The floor keeps nothing between requests (it re-reads headers and decodes every time),
  so a server's caches can take it above 1: the floor is what decoding costs, not a cap.

Peak RSS is the largest resident memory of the server's processes (ours: decoder and
gateway; IIPImage: lighttpd and its iipsrv processes) sampled during each step.
"""


def _meta(
    opts: Options, started: float, load_before: str, cpu_before: tuple[int, int] | None
) -> dict[str, object]:
    hardware = machine.machine()
    hardware["load average (1/5/15 min) at start, at end"] = (
        f"{load_before}; {machine.load_average()}"
    )
    hardware["hypervisor steal during the run"] = machine.steal_share(
        cpu_before, machine.cpu_counters()
    )
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(started)),
        "command": opts.command,
        "wall_s": time.time() - started,
        "cores": servers.cores(),
        "machine": hardware,
        "versions": machine.versions(),
        "options": {
            "concurrency": list(opts.concurrency),
            "duration_s": opts.duration_s,
            "cold_duration_s": opts.cold_duration_s,
            "runs": opts.runs,
            "limit": opts.limit,
            "api": opts.api,
            "smoke": opts.smoke,
            "s3_latency_ms": opts.s3_latency_ms,
        },
    }


def run(options: Options, log: Log = print) -> Report:
    """Run the benchmark described by `options`; write and return its report."""
    started = time.time()
    load_before = machine.load_average()
    cpu_before = machine.cpu_counters()
    opts = smoke_options(options) if options.smoke else options
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(started))
    out_dir = opts.results_dir / (stamp + ("-smoke" if opts.smoke else ""))
    out_dir.mkdir(parents=True, exist_ok=True)
    if opts.smoke and opts.markdown == DOCS:
        # A smoke run's numbers mean nothing: never let it overwrite the real report.
        opts = replace(opts, markdown=out_dir / "benchmarks.md")
    log(f"bench: results in {out_dir}")

    missing = servers.ensure_tools(servers.install_requested(opts.install), log)
    if missing:
        log(f"bench: missing {', '.join(missing)} (pass --install to apt-get them)")
    images = ensure_images(opts.cache_dir, SMOKE if opts.smoke else FULL, log)
    ctx = Context(
        opts, images, _workloads(images, opts.limit), out_dir, log, _first_workloads(images, opts)
    )
    if IIP in opts.cases and (why := servers.iipimage_missing()):
        ctx.skipped[IIP] = why
    if S3 in opts.cases and (why := s3_missing()):
        ctx.skipped[S3] = why
    if FLOOR in opts.cases:
        try:
            openjpeg()
        except OSError as exc:
            ctx.skipped[FLOOR] = f"libopenjp2.so.7 not loadable: {exc}"
    for case, why in ctx.skipped.items():
        log(f"bench: skipping {case}: {why}")
    if not have_wrk() and opts.client == "auto":
        ctx.notes.append("wrk is not installed: the Python fallback client measured everything.")

    for run_no in range(1, opts.runs + 1):
        log(f"bench: run {run_no} of {opts.runs}")
        running = _start_servers(ctx, run_no)
        try:
            _measure_servers(ctx, running, run_no)
        finally:
            # In parallel: each may wait seconds for its processes to exit.
            with ThreadPoolExecutor(max_workers=max(1, len(running))) as pool:
                list(pool.map(lambda server: server.stop(), running.values()))
        if FLOOR in opts.cases and FLOOR not in ctx.skipped:
            _measure_floor(ctx, run_no)

    profiles: list[profile.ProfileSummary] = []
    if opts.profile_s > 0 and LOCAL in opts.cases:
        try:
            profiles = _profile(ctx)
        except Exception as exc:
            ctx.skipped["profile"] = f"failed: {exc}"
    report = Report(
        _meta(opts, started, load_before, cpu_before),
        ctx.measurements,
        ctx.skipped,
        profiles,
        ctx.notes,
    )
    write_report(report, method_text(opts, images.recipe), opts.markdown, out_dir / "results.json")
    log(f"bench: report in {opts.markdown} ({(time.time() - started) / 60:.1f} min)")
    return report


def command_line(argv: Sequence[str]) -> str:
    """How this run was invoked, for the report."""
    return " ".join(["python -m bench", *(shlex.quote(a) for a in argv)])


def rerender(results_json: Path, markdown: Path) -> None:
    """Write `markdown` again from a run's results.json (e.g. after the report's
    wording changed), without measuring anything."""
    data = json.loads(results_json.read_text())
    report = Report.from_json(data)
    saved = data["meta"]["options"]
    opts = Options(
        smoke=bool(saved["smoke"]),
        concurrency=tuple(saved["concurrency"]),
        duration_s=float(saved["duration_s"]),
        cold_duration_s=float(saved["cold_duration_s"]),
        runs=int(saved["runs"]),
        limit=saved["limit"],
        api=int(saved["api"]),
        s3_latency_ms=float(saved.get("s3_latency_ms", 20.0)),
    )
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(
        render_markdown(report, method_text(opts, recipe(SMOKE if opts.smoke else FULL)))
    )
