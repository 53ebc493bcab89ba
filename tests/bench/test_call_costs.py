"""bench/call_costs.py end to end on the small image set: real decoder
processes on both event loops, real gRPC calls."""

from __future__ import annotations

import pytest

from bench import call_costs

pytestmark = pytest.mark.integration


def test_call_costs_measures_every_call_on_both_loops(capsys: pytest.CaptureFixture[str]) -> None:
    call_costs.main(["--rounds", "1", "--calls", "40", "--smoke"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "ms" in line]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows] == list(call_costs.KINDS)
    for row in rows:
        ratio = float(row.rstrip(" |").rsplit("| ", 1)[1])
        assert ratio > 0
