"""Pure parts of the benchmark: workloads, percentiles, wrk output, ratios, profiles."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import machine, procs
from bench.codec_floor import pick_reduction
from bench.images import BenchImage, ImageSet, ImageType, first_alias, link_alias
from bench.load import LoadResult, parse_wrk_output, percentile
from bench.profile import ProfileSummary, categorise, summarise, summarise_libraries
from bench.report import (
    FLOOR,
    IIP,
    LOCAL,
    S3,
    Measurement,
    Report,
    aggregate,
    disagreements,
    first_markdown,
    goals_markdown,
    headline_markdown,
    profile_markdown,
    ratio_rows,
    ratios_markdown,
    render_markdown,
)
from bench.run import (
    FIRST_MIN_DURATION_S,
    Options,
    first_concurrencies,
    first_duration,
    smoke_options,
)
from bench.servers import fastcgi_socket, lighttpd_config
from bench.workload import (
    RequestKind,
    Source,
    build_workload,
    deep_zoom_session,
    fit,
    tile_list,
    top_scale_exponent,
    urls,
)

MASTER = Source("m.jp2", 6000, 8000)
MID = Source("d.jp2", 1500, 2000)


def test_deep_zoom_session_covers_every_scale_factor_with_in_bounds_tiles() -> None:
    session = deep_zoom_session(MASTER, tile_sizes=(256,))
    top = top_scale_exponent(MASTER.width, MASTER.height, 256)
    assert top == 5  # 8000 / 32 = 250 fits one 256 px tile
    scales = set()
    for request in session:
        assert request.region is not None
        assert request.size is not None
        r = request.region
        assert 0 <= r.x < MASTER.width
        assert 0 <= r.y < MASTER.height
        assert r.x + r.w <= MASTER.width
        assert r.y + r.h <= MASTER.height
        scale = max(r.w / request.size[0], r.h / request.size[1])
        scales.add(2 ** round(math.log2(scale)))
        assert max(request.size) <= 256
    assert scales == {1, 2, 4, 8, 16, 32}
    # The top tile is asked for as region "full", the way OpenSeadragon does.
    assert session[0].v3 == "m.jp2/full/188,250/0/default.jpg"
    assert session[0].v2 == "m.jp2/full/188,/0/default.jpg"
    # Full resolution: only the tiles under a 1280 x 960 viewport (5-6 x 4-5).
    full_res = [r for r in session if r.size and r.region and r.region.w == r.size[0]]
    assert 20 <= len(full_res) <= 30


def test_workload_lists_and_urls_for_both_servers() -> None:
    lists = build_workload(MASTER, [MID])
    assert set(lists) == set(RequestKind)
    assert [r.v3 for r in lists[RequestKind.THUMBS]] == [
        "m.jp2/full/!200,200/0/default.jpg",
        "d.jp2/full/!200,200/0/default.jpg",
    ]
    assert lists[RequestKind.THUMBS][0].size == (150, 200)
    assert [r.v2 for r in lists[RequestKind.FULL]] == ["d.jp2/full/max/0/default.jpg"]
    assert [r.v3 for r in lists[RequestKind.INFO]] == ["m.jp2/info.json", "d.jp2/info.json"]
    ours = urls(lists[RequestKind.INFO], "/iiif/2/", 2)
    iip = urls(lists[RequestKind.INFO], "/fcgi-bin/iipsrv.fcgi?IIIF=", 2)
    assert ours[0] == "/iiif/2/m.jp2/info.json"
    assert iip[0] == "/fcgi-bin/iipsrv.fcgi?IIIF=m.jp2/info.json"


def test_limited_workload_keeps_requests_from_every_level() -> None:
    full = build_workload(MASTER, [MID])[RequestKind.TILES]
    limited = build_workload(MASTER, [MID], limit=5)[RequestKind.TILES]
    assert len(limited) == 5
    assert limited[0] == full[0]
    assert limited[-1] != full[4]


@pytest.mark.parametrize(
    ("w", "h", "box", "expected"), [(6000, 8000, 200, (150, 200)), (100, 50, 200, (100, 50))]
)
def test_fit(w: int, h: int, box: int, expected: tuple[int, int]) -> None:
    assert fit(w, h, box) == expected


def test_pick_reduction_never_decodes_fewer_pixels_than_asked() -> None:
    from bench.workload import Region

    assert pick_reduction(Region(0, 0, 4096, 4096), (256, 256), 6) == 4
    assert pick_reduction(Region(0, 0, 4096, 4096), (256, 256), 2) == 2
    assert pick_reduction(Region(0, 0, 6000, 8000), (150, 200), 6) == 5
    assert pick_reduction(Region(0, 0, 300, 300), (256, 256), 6) == 0


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([], 50) == 0


def test_parse_wrk_output() -> None:
    out = (
        "Running 2s test @ http://127.0.0.1:1\n"
        'BENCH_JSON {"requests":10,"duration_us":2000000,"bytes":1000,'
        '"errors":{"connect":0,"read":0,"write":0,"status":2,"timeout":1},'
        '"latency_us":{"p50":1500,"p95":3000,"p99":4000,"max":5000,"mean":1600.5}}\n'
    )
    result = parse_wrk_output(out, 4)
    assert result.rps == 5
    assert result.errors == 3
    assert (result.p50_ms, result.p99_ms) == (1.5, 4.0)


def _result(rps: float) -> LoadResult:
    return LoadResult("wrk", 1, int(rps * 10), 10.0, 0, 0, 1.0, 2.0, 3.0, 4.0)


def _m(
    case: str,
    rps: float,
    run: int,
    phase: str = "warm",
    c: int = 1,
    p99: float = 3.0,
    image_type: str = "jp2-tiled",
) -> Measurement:
    result = LoadResult("wrk", c, int(rps * 10), 10.0, 0, 0, 1.0, 2.0, p99, 4.0)
    return Measurement(case, image_type, "tiles", phase, c, run, int(rps * 10), result, 1 << 20)


def test_ratios_and_disagreement_flags() -> None:
    ms = [
        _m(LOCAL, 100, 1),
        _m(LOCAL, 110, 2),
        _m(IIP, 50, 1),
        _m(IIP, 80, 2),  # 60% apart: flagged
        _m(FLOOR, 200, 1),
        _m(FLOOR, 200, 2),
        _m(S3, 21, 1),
        _m(S3, 21, 2),
    ]
    table = aggregate(ms)
    ((key, vs_iip, vs_floor, s3),) = ratio_rows(table, cores=2)
    assert key == ("jp2-tiled", "tiles", "warm", 1)
    assert vs_iip is not None
    assert vs_iip.value == pytest.approx(105 / 65)
    assert vs_iip.flagged
    assert vs_floor is not None
    assert vs_floor.value == pytest.approx(105 / 200)
    assert not vs_floor.flagged
    assert s3 is not None
    assert s3.value == pytest.approx(21 / 105)
    assert [(case, k) for case, k, _ in disagreements(table)] == [(IIP, key)]


def test_floor_matches_server_concurrency_by_process_count() -> None:
    ms = [_m(LOCAL, 100, 1, c=16), _m(FLOOR, 400, 1, c=2)]
    ((_, _, vs_floor, _),) = ratio_rows(aggregate(ms), cores=2)
    assert vs_floor is not None
    assert vs_floor.value == pytest.approx(0.25)


def test_markdown_report_round_trips_through_json() -> None:
    report = Report(
        meta={"date": "today", "command": "python -m bench", "wall_s": 60, "cores": 2},
        measurements=[_m(LOCAL, 100, 1), _m(IIP, 50, 1), _m(LOCAL, 100, 1, "cold")],
        skipped={S3: "no SeaweedFS"},
        profiles=[],
    )
    again = Report.from_json(report.to_json())
    text = render_markdown(again, "How.")
    assert "| jp2-tiled | tiles | warm | 1 | 2.00 | - | - |" in text
    assert "ours (S3 +20 ms): no SeaweedFS" in text


def test_profile_categories() -> None:
    raw = "\n".join(
        [
            "serve (decoder/server.py:10);opj_t1_decode_cblks (libopenjp2.so.7) 60",
            "serve (decoder/server.py:10);render (decoder/pipeline/encode.py:5) 20",
            "run (/usr/lib/python3.11/asyncio/events.py:80);"
            "_PyEval_EvalFrameDefault (libpython3.11.so) 10",
            "x (libc.so.6) 10",
        ]
    )
    summary = summarise("decoder", raw, duration_s=1.0, rate=100)
    shares = dict(summary.categories)
    assert shares["OpenJPEG (JPEG 2000 decoding)"] == pytest.approx(0.6)
    assert shares["our code: decoder/pipeline/encode.py"] == pytest.approx(0.2)
    assert shares["asyncio event loop"] == pytest.approx(0.1)
    assert summary.busy == pytest.approx(1.0)
    assert categorise(["a (libjpeg.so.62)"]).startswith("libjpeg")


def test_perf_library_shares_by_category() -> None:
    report = "\n".join(
        [
            "# Samples: 1K of event 'cpu-clock'",
            "#",
            "# Overhead  Shared Object",
            "    55.00%  libopenjp2.so.2.5.0",
            "    20.50%  libpython3.11.so.1.0",
            "    10.00%  [kernel.kallsyms]",
            "     5.00%  libvips.so.42.16.1",
            "     4.50%  libglib-2.0.so.0.7400.6",
            "     3.00%  _jpeg_mosaic.cpython-311-x86_64-linux-gnu.so",
            "     1.00%  _asyncio.cpython-311-x86_64-linux-gnu.so",
            "     1.00%  libsomething.so",
            "",
        ]
    )
    shares = summarise_libraries(report)
    assert shares[0][0] == "OpenJPEG (JPEG 2000 decoding)"
    got = dict(shares)
    assert got["OpenJPEG (JPEG 2000 decoding)"] == pytest.approx(0.55)
    assert got["Python interpreter"] == pytest.approx(0.215)
    assert got["kernel (syscalls, scheduling, page faults)"] == pytest.approx(0.10)
    assert got["libvips (crop, resize, colour, pipeline)"] == pytest.approx(0.05)
    assert got["GLib (libvips' runtime)"] == pytest.approx(0.045)
    assert got["our C helper (stored-tile joins)"] == pytest.approx(0.03)
    assert got["other: libsomething.so"] == pytest.approx(0.01)
    # Largest first, and the header lines are not counted.
    assert [s for _, s in shares] == sorted((s for _, s in shares), reverse=True)
    assert sum(got.values()) == pytest.approx(1.0)


def test_profile_summary_keeps_its_library_shares_through_json() -> None:
    summary = ProfileSummary("decoder (x)", 10, 1.0, 100, [("a", 1.0)], [("f", 1.0)], 0.5)
    summary.libraries = [("OpenJPEG (JPEG 2000 decoding)", 0.7)]
    again = ProfileSummary.from_json(summary.to_json())
    assert again == summary
    text = profile_markdown([again])
    assert "| OpenJPEG (JPEG 2000 decoding) | 70% |" in text
    assert text.index("library (perf") < text.index("innermost Python frame")
    # Results written before perf was used have no shares, and no perf table.
    old = summary.to_json()
    del old["libraries"]
    assert "library (perf" not in profile_markdown([ProfileSummary.from_json(old)])


def test_first_alias_names_a_new_identifier_with_the_same_extension() -> None:
    assert first_alias("jp2-tiled-master.jp2", 4) == "jp2-tiled-master-first4.jp2"
    assert first_alias("tiff-pyramid-master.tif", 16) == "tiff-pyramid-master-first16.tif"
    assert first_alias("noext", 4) == "noext-first4"
    assert first_alias("a.b/noext", 4) == "a.b/noext-first4"


def test_link_alias_is_a_relative_symlink_made_once_and_repaired(tmp_path: Path) -> None:
    (tmp_path / "m.jp2").write_bytes(b"master")
    (tmp_path / "other.jp2").write_bytes(b"other")
    link = link_alias(tmp_path, "m.jp2", "m-first4.jp2")
    assert link == tmp_path / "m-first4.jp2"
    assert os.readlink(link) == "m.jp2"  # relative: the cache folder can move
    assert link.read_bytes() == b"master"
    link_alias(tmp_path, "m.jp2", "m-first4.jp2")  # again: kept
    assert os.readlink(link) == "m.jp2"
    link.unlink()
    link.symlink_to("other.jp2")
    link_alias(tmp_path, "m.jp2", "m-first4.jp2")  # pointing elsewhere: replaced
    assert link.read_bytes() == b"master"


def test_first_pass_master_is_the_master_under_its_alias(tmp_path: Path) -> None:
    master = BenchImage(ImageType.JP2_TILED, "master", "jp2-tiled-master.jp2", 600, 800)
    (tmp_path / master.identifier).write_bytes(b"jp2")
    images = ImageSet(tmp_path, (master,), {})
    alias = images.first_pass_master(ImageType.JP2_TILED, 16)
    assert alias.identifier == "jp2-tiled-master-first16.jp2"
    assert (alias.width, alias.height, alias.role) == (600, 800, "master")
    assert images.path_of(alias.identifier).resolve() == images.path_of(master.identifier)
    # The alias is not one of the set's images: nothing else requests it.
    assert images.get(ImageType.JP2_TILED, "master") == master
    tiles = tile_list(Source(alias.identifier, alias.width, alias.height))
    assert tiles == deep_zoom_session(Source(alias.identifier, 600, 800))
    assert all(r.v2.startswith("jp2-tiled-master-first16.jp2/") for r in tiles)
    assert len(tile_list(Source(alias.identifier, 600, 800), limit=3)) == 3


def test_first_phase_runs_at_every_concurrency_above_one() -> None:
    assert first_concurrencies(Options()) == (4, 16)
    assert first_concurrencies(Options(concurrency=(1, 4, 4, 2))) == (4, 2)
    assert first_concurrencies(smoke_options(Options())) == ()
    assert first_duration(Options(cold_duration_s=5)) == FIRST_MIN_DURATION_S
    assert first_duration(Options(cold_duration_s=90)) == 90


def _first_report_measurements() -> list[Measurement]:
    ms = [
        # c=4: ours 20 then 30 req/s, IIPImage 10 both runs, S3 5.
        _m(LOCAL, 20, 1, "first", 4, p99=400),
        _m(LOCAL, 30, 2, "first", 4, p99=600),
        _m(IIP, 10, 1, "first", 4, p99=900),
        _m(IIP, 10, 2, "first", 4, p99=900),
        _m(S3, 5, 1, "first", 4, p99=2000),
        _m(S3, 5, 2, "first", 4, p99=2000),
        # c=16: ours 40, IIPImage 20.
        _m(LOCAL, 40, 1, "first", 16),
        _m(IIP, 20, 1, "first", 16),
        # Other phases, which the section leaves out.
        _m(LOCAL, 100, 1, "cold"),
        _m(IIP, 50, 1, "cold"),
        _m(LOCAL, 500, 1, "warm", 4),
        _m(IIP, 250, 1, "warm", 4),
    ]
    # IIPImage's c=16 pass stopped at its bound after 200 of 300 URLs.
    partial = ms[7]
    ms[7] = Measurement(
        partial.case, partial.image_type, partial.kind, partial.phase, 16, 1, 300, partial.result
    )
    return ms


def test_first_section_has_rates_ratio_and_p99_per_type_and_concurrency() -> None:
    text = first_markdown(_first_report_measurements())
    lines = text.splitlines()
    assert lines[0].startswith("| image type | c | ours req/s | IIPImage req/s | ours / IIPImage")
    assert lines[0].endswith("| S3 req/s | S3 p99 ms |")
    # Mean rates over runs (25 req/s), ratio 2.5 flagged (runs 50% apart), median p99.
    assert lines[2] == "| jp2-tiled | 4 | 25.0 † | 10.0 | 2.50 † | 500 | 900 | 5.0 | 2000 |"
    assert lines[3] == "| jp2-tiled | 16 | 40.0 | 20.0 ‡ | 2.00 | 3 | 3 | - | - |"
    assert len(lines) == 4


def test_first_section_without_s3_or_first_steps() -> None:
    ms = [m for m in _first_report_measurements() if m.case != S3]
    assert "S3" not in first_markdown(ms).splitlines()[0]
    no_first = [m for m in ms if m.phase != "first"]
    assert first_markdown(no_first).startswith("No first-pass steps")


def test_goals_say_which_are_met_and_by_how_much_the_others_fall_short() -> None:
    ms = _first_report_measurements()
    ms += [
        # TIFF: the rate goal (1x) only counts at c=16.
        _m(LOCAL, 50, 1, "first", 4, p99=10, image_type="tiff-pyramid"),
        _m(IIP, 100, 1, "first", 4, p99=20, image_type="tiff-pyramid"),
        _m(LOCAL, 80, 1, "first", 16, p99=50, image_type="tiff-pyramid"),
        _m(IIP, 100, 1, "first", 16, p99=40, image_type="tiff-pyramid"),
    ]
    lines = goals_markdown(ms).splitlines()

    assert lines[:2] == ["| goal | measured | met |", "|---|---|---|"]
    assert lines[2:] == [
        # jp2-tiled c=4: 25 vs 10 req/s (runs 50% apart), p99 500 vs 900.
        "| jp2-tiled c=4: ≥ 2 x IIPImage's req/s | 2.50 † (25.0 vs 10.0) | yes |",
        "| jp2-tiled c=4: p99 ≤ IIPImage's | 500 vs 900 ms | yes |",
        "| jp2-tiled c=16: ≥ 2 x IIPImage's req/s | 2.00 (40.0 vs 20.0) | yes |",
        "| jp2-tiled c=16: p99 ≤ IIPImage's | 3 vs 3 ms | yes |",
        "| tiff-pyramid c=4: p99 ≤ IIPImage's | 10 vs 20 ms | yes |",
        "| tiff-pyramid c=16: ≥ 1 x IIPImage's req/s | 0.80 (80.0 vs 100.0) "
        "| no: 100.0 req/s needed, 25% more |",
        "| tiff-pyramid c=16: p99 ≤ IIPImage's | 50 vs 40 ms | no: 25% above IIPImage's |",
    ]
    assert goals_markdown([m for m in ms if m.case != IIP]).startswith("No first passes")


def test_first_phase_in_ratio_and_headline_tables() -> None:
    table = aggregate(_first_report_measurements())
    ratios = ratios_markdown(table, cores=2).splitlines()[2:]
    phases = [(line.split(" | ")[2], line.split(" | ")[3]) for line in ratios]
    assert phases == [("cold", "1"), ("first", "4"), ("first", "16"), ("warm", "4")]
    assert "| jp2-tiled | tiles | first | 4 | 2.50 † | - | 0.20 † |" in ratios
    headline = headline_markdown(table, cores=2).splitlines()[2:]
    assert [line.split(" | ")[1] for line in headline] == ["cold", "first", "warm"]
    # Geometric mean over c of ours / IIPImage: sqrt(2.5 * 2).
    assert headline[1].startswith(f"| jp2-tiled | first | {math.sqrt(5):.2f} |")


def test_markdown_report_has_the_first_section() -> None:
    report = Report(
        meta={"date": "today", "command": "python -m bench", "wall_s": 60, "cores": 2},
        measurements=_first_report_measurements(),
        skipped={},
        profiles=[],
    )
    text = render_markdown(Report.from_json(report.to_json()), "How.")
    section = text.split("## First pass at concurrency (caches cold)\n", 1)[1]
    assert section.split("\n## ", 1)[0].count("| jp2-tiled |") == 2


def test_steal_share_is_the_hypervisors_part_of_the_cpu_time_between_readings() -> None:
    assert machine.steal_share((100, 10_000), (350, 11_000)) == "25% of CPU time"
    assert machine.steal_share(None, (1, 2)) == "unknown"
    assert machine.steal_share((5, 100), (5, 100)) == "unknown"
    now = machine.cpu_counters()
    assert now is not None, "Linux has /proc/stat"
    steal, total = now
    assert 0 <= steal < total


def test_wait_quiet_tells_an_idle_process_from_a_busy_one() -> None:
    idle = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert procs.wait_quiet([idle.pid], window_s=0.2, timeout_s=5)
        assert not procs.wait_quiet([busy.pid], window_s=0.2, timeout_s=1)
    finally:
        for proc in (idle, busy):
            proc.kill()
            proc.wait()


def test_free_ports_are_never_handed_out_twice() -> None:
    """Ports chosen for servers that bind them later: the kernel may offer a
    chosen, not yet bound port again; this process never passes it on twice."""
    ports = [procs.free_port() for _ in range(50)] + procs.free_ports(50)
    assert len(set(ports)) == len(ports) == 100


def test_the_fastcgi_socket_path_fits_a_unix_socket(tmp_path: Path) -> None:
    short = fastcgi_socket(Path("/tmp/run"), 8080)
    assert short == Path("/tmp/run/iipsrv.sock")
    deep = tmp_path.joinpath(*(["a-rather-long-folder-name"] * 6))
    sock = fastcgi_socket(deep, 8080)
    # lighttpd appends "-N" per process; the kernel takes 107 bytes at most.
    assert len(os.fsencode(sock)) + len("-16") <= 107
    assert f'"socket" => "{sock}"' in lighttpd_config(8080, deep, tmp_path, 2)
