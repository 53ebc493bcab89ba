"""Pure parts of the benchmark: workloads, percentiles, wrk output, ratios, profiles."""

from __future__ import annotations

import math

import pytest

from bench.codec_floor import pick_reduction
from bench.load import LoadResult, parse_wrk_output, percentile
from bench.profile import categorise, summarise
from bench.report import (
    FLOOR,
    IIP,
    LOCAL,
    S3,
    Measurement,
    Report,
    aggregate,
    disagreements,
    ratio_rows,
    render_markdown,
)
from bench.workload import (
    RequestKind,
    Source,
    build_workload,
    deep_zoom_session,
    fit,
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


def _m(case: str, rps: float, run: int, phase: str = "warm", c: int = 1) -> Measurement:
    return Measurement(case, "jp2-tiled", "tiles", phase, c, run, 10, _result(rps), 1 << 20)


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
