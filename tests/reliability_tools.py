"""Measuring tools for reliability tests: process memory, Prometheus samples."""

from __future__ import annotations

import re
from pathlib import Path

import httpx


def memory_kib(pid: int, field: str) -> int:
    """A memory field of /proc/PID/status in KiB: VmRSS (now) or VmHWM (peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def metric(url: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of one metric's samples at `url` whose labels include `labels`."""
    return metric_in(httpx.get(url, timeout=5).text, name, labels)


def metric_in(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of one metric's samples in `text` (Prometheus text format)
    whose labels include `labels`."""
    total = 0.0
    pattern = re.compile(rf"^{re.escape(name)}(\{{(?P<labels>[^}}]*)\}})? (?P<value>\S+)$")
    for line in text.splitlines():
        match = pattern.match(line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group("labels") or ""))
        if all(found.get(k) == v for k, v in (labels or {}).items()):
            total += float(match.group("value"))
    return total
