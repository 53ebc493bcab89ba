"""bench/wakeups.py: real processes, real sockets and real gRPC calls."""

from __future__ import annotations

import os

import pytest

from bench import wakeups

pytestmark = pytest.mark.integration


def test_placements_use_the_cores_this_process_may_use() -> None:
    assert wakeups.placements({3, 5}) == {
        "same core": (3, 3),
        "across cores": (3, 5),
        "free": (None, None),
    }
    # One core: nothing can be across cores.
    assert "across cores" not in wakeups.placements({2})


def test_every_exchange_is_measured_in_every_placement(capsys: pytest.CaptureFixture[str]) -> None:
    wakeups.main(["--rounds", "1", "--trips", "50"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows[1:]] == list(wakeups.EXCHANGES)
    for row in rows[1:]:
        cells = row.strip("| ").split(" | ")[1:]
        assert len(cells) == 2 * len(wakeups.placements(os.sched_getaffinity(0))) - 1
        assert all(float(cell) > 0 for cell in cells)
