"""How much memory this process may use: the container's limit, else the machine's."""

from __future__ import annotations

from pathlib import Path

_CGROUP_LIMITS = (
    Path("/sys/fs/cgroup/memory.max"),  # cgroup v2
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),  # cgroup v1
)
# cgroup v1 reports "no limit" as a huge number near 2**63.
_UNLIMITED = 1 << 60


def memory_limit_bytes() -> int:
    """The cgroup memory limit when one is set, else physical memory."""
    for path in _CGROUP_LIMITS:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < _UNLIMITED:
            return int(text)
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("cannot tell how much memory this machine has")


def default_render_budget_mb() -> int:
    """Half the limit: the rest is the interpreter, libvips, caches and fetch buffers."""
    return max(64, memory_limit_bytes() // 2 >> 20)
