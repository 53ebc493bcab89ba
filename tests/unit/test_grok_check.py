"""bench/grok_check.py: its windows, pixel comparison and verdict, and the tool
end to end (only where both codecs' command-line tools are installed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import pyvips
from hypothesis import given
from hypothesis import strategies as st

from bench import grok_check
from bench.grok_check import (
    MAX_AGREEING_DIFF,
    MIN_CPU_RATIO,
    OUT_SIZES,
    REDUCTIONS,
    PixelDiff,
    Run,
    Window,
    WindowResult,
    choose_windows,
    compare,
    verdict,
)

HAVE_TOOLS = (
    shutil.which("grk_decompress") is not None and shutil.which("opj_decompress") is not None
)


@given(
    width=st.integers(1, 9000),
    height=st.integers(1, 9000),
    count=st.integers(0, 12),
    seed=st.integers(0, 2**32),
)
def test_windows_fit_the_image_on_the_reduced_grid(
    width: int, height: int, count: int, seed: int
) -> None:
    windows = choose_windows(width, height, count, seed)
    assert len(windows) == count
    for w in windows:
        assert w.reduction in REDUCTIONS
        assert w.size >= 1
        assert w.side == w.size * 2**w.reduction
        assert w.x % 2**w.reduction == 0
        assert w.y % 2**w.reduction == 0
        assert w.x >= 0
        assert w.y >= 0
        assert w.x + w.side <= width
        assert w.y + w.side <= height
        if min(width, height) >= max(OUT_SIZES) << max(REDUCTIONS):
            assert w.size in OUT_SIZES


@given(seed=st.integers(0, 2**32))
def test_windows_are_deterministic_for_a_seed(seed: int) -> None:
    assert choose_windows(6000, 8000, 8, seed) == choose_windows(6000, 8000, 8, seed)


def test_windows_vary_with_the_seed() -> None:
    assert choose_windows(6000, 8000, 8, 1) != choose_windows(6000, 8000, 8, 2)


def test_window_region_is_the_full_resolution_box() -> None:
    assert Window(x=512, y=1024, size=256, reduction=2).region == "512,1024,1536,2048"


def _result(image: str, max_diff: float, opj_cpu: float, grk_cpu: float) -> WindowResult:
    return WindowResult(
        image=image,
        window=Window(0, 0, 256, 0),
        opj=Run(cpu_s=opj_cpu, wall_s=opj_cpu),
        grk=Run(cpu_s=grk_cpu, wall_s=grk_cpu),
        diff=PixelDiff(same_size=True, max_diff=max_diff, mean_diff=max_diff / 10),
    )


def test_a_disagreeing_window_means_no_whatever_the_speed() -> None:
    results = [_result("a", 0, 1.0, 0.1), _result("b", 255, 1.0, 0.1)]
    v = verdict(results)
    assert not v.offer
    assert v.cpu_ratio == pytest.approx(10)
    assert [(s.image, s.windows, s.agreeing) for s in v.images] == [("a", 1, 1), ("b", 1, 0)]


def test_agreeing_and_clearly_cheaper_means_offer() -> None:
    results = [_result("a", MAX_AGREEING_DIFF, 0.15, 0.1), _result("b", 0, 0.15, 0.1)]
    v = verdict(results)
    assert v.offer
    assert v.cpu_ratio == pytest.approx(1.5)
    assert all(s.cpu_ratio == pytest.approx(1.5) for s in v.images)


def test_agreeing_but_barely_cheaper_means_no() -> None:
    v = verdict([_result("a", 0, 0.105, 0.1), _result("b", 1, 0.105, 0.1)])
    assert MIN_CPU_RATIO > 1.05
    assert not v.offer
    assert v.cpu_ratio == pytest.approx(1.05)


def test_a_failed_decode_means_no() -> None:
    failed = WindowResult(
        image="a",
        window=Window(0, 0, 256, 0),
        opj=Run(cpu_s=0.2, wall_s=0.2),
        grk=Run(cpu_s=0.01, wall_s=0.01, error="exit 1: boom"),
        diff=None,
    )
    v = verdict([failed, _result("a", 0, 0.3, 0.1)])
    assert not v.offer
    assert v.images[0].agreeing == 1
    assert v.cpu_ratio == pytest.approx(3)  # the failed window has no ratio


def test_no_windows_means_no() -> None:
    assert not verdict([]).offer


def test_compare_counts_the_changed_pixel(tmp_path: Path) -> None:
    black = pyvips.Image.black(8, 8, bands=3)
    black.write_to_file(str(tmp_path / "a.tif"))
    black.draw_rect([200, 0, 0], 2, 3, 1, 1, fill=True).write_to_file(str(tmp_path / "b.tif"))
    diff = compare(tmp_path / "a.tif", tmp_path / "b.tif")
    assert diff.same_size
    assert diff.max_diff == 200
    assert diff.mean_diff == pytest.approx(200 / (8 * 8 * 3))
    assert not diff.agrees
    assert compare(tmp_path / "a.tif", tmp_path / "a.tif").agrees


def test_compare_reports_other_sizes_as_disagreeing(tmp_path: Path) -> None:
    pyvips.Image.black(8, 8, bands=3).write_to_file(str(tmp_path / "a.tif"))
    pyvips.Image.black(8, 6, bands=3).write_to_file(str(tmp_path / "b.tif"))
    diff = compare(tmp_path / "a.tif", tmp_path / "b.tif")
    assert not diff.same_size
    assert not diff.agrees


def test_missing_tools_skip_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("bench.grok_check.shutil.which", lambda _name: None)
    grok_check.main(["--smoke"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert "grk_decompress" in out[0]
    assert "grokj2k-tools" in out[0]


@pytest.mark.skipif(not HAVE_TOOLS, reason="needs grk_decompress and opj_decompress")
def test_end_to_end_smoke(tmp_path: Path) -> None:
    out = tmp_path / "grok.md"
    grok_check.main(["--smoke", "--windows", "3", "--out", str(out)])
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| jp2-")]
    assert len(rows) == 2 * 3
    assert "verdict:" in text
    assert "OpenJPEG" in text
    assert "Grok" in text


def test_rewriting_keeps_the_in_process_sections() -> None:
    from bench.grok_check import keep_later_sections
    from bench.grok_engines import SECTION

    later = f"{SECTION}\n\nnumbers\n\n## What the engine does\n\nwhy\n"
    existing = f"# Old\n\n## Windows\n\nold rows\n\n{later}"
    ours = "# New\n\n## Windows\n\nnew rows\n"
    assert keep_later_sections(ours, existing) == f"{ours}\n{later}"
    assert keep_later_sections("# New\n", "# Old\n") == "# New\n"
