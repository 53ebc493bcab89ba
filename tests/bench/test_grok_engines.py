"""bench/grok_engines.py: its verdict and how it rewrites its docs section."""

from __future__ import annotations

from bench.grok_engines import SECTION, RunResult, splice, summary, verdict


def _run(image: str, config: str, engine_s: float) -> RunResult:
    return RunResult(
        image=image,
        config=config,
        total_cpu_s=engine_s + 1,
        wall_s=engine_s + 1,
        engine_cpu_s=engine_s,
        decodes=3,
        fallbacks=0,
        shapes={"L0 1024x1024": (3, engine_s)},
    )


def _untiled(grok_1: float, grok_2: float) -> list[RunResult]:
    return [
        _run("jp2-precincts", "openjpeg-1", 10.0),
        _run("jp2-precincts", "grok-1", grok_1),
        _run("jp2-precincts", "openjpeg-2", 10.0),
        _run("jp2-precincts", "grok-2", grok_2),
    ]


def test_grok_must_save_a_fifth_at_both_thread_counts() -> None:
    assert verdict(_untiled(7.0, 7.5)).startswith("yes")
    assert verdict(_untiled(7.0, 9.0)).startswith("no")
    assert verdict(_untiled(12.0, 12.0)).startswith("no")
    assert verdict(_untiled(7.0, 7.0)[:2]).startswith("no verdict")


def test_summary_takes_medians_over_rounds() -> None:
    runs = [_run("a", "grok-1", s) for s in (5.0, 9.0, 6.0)]
    assert summary(runs)[("a", "grok-1")]["engine"] == 6.0


def test_splice_replaces_only_its_section() -> None:
    head = "# Title\n\n## Method\n\nCLI text\n"
    tail = "\n## Verdict\n\nkept\n"
    first = splice(head, f"{SECTION}\n\nold\n")
    assert first == f"{head}\n{SECTION}\n\nold\n"
    again = splice(first + tail, f"{SECTION}\n\nnew\n")
    assert again == f"{head}\n{SECTION}\n\nnew\n{tail}"
