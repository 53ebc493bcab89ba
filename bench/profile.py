"""Where our processes spend their time: py-spy and perf samples, summarised.

py-spy attaches to the running decoder and gateway while a separate,
unmeasured load runs. ``--nonblocking``: the process is never paused, and
idle threads (waiting on a queue, a lock or epoll) are told apart by their
OS state and left out, though not all of them (a loop in epoll still shows).

py-spy sees Python frames only (its native unwinding does not resolve
symbols in this environment), and only Python threads: time in C libraries
is charged to the Python line that called them (a pyvips call is libvips
work, a ctypes call in decoder/engines/openjpeg.py is OpenJPEG decoding, a
grpc frame is gRPC's C core), and C threads of their own (OpenJPEG's and
libvips' workers) are not seen at all. Each sample counts for its innermost
frame ("self" time): by package, our own modules by file.

perf, where installed, samples every thread of the same processes; its
shares by shared library say where the CPU time went, C threads included.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

# Innermost-frame markers -> category, first match wins.
NATIVE_CATEGORIES: Final = (
    ("libopenjp2", "OpenJPEG (JPEG 2000 decoding)"),
    ("libjpeg", "libjpeg-turbo (JPEG decode/encode)"),
    ("libtiff", "libtiff"),
    ("libvips", "libvips (crop, resize, colour, pipeline)"),
    ("liborc", "libvips (crop, resize, colour, pipeline)"),
    ("libglib", "GLib (libvips' runtime)"),
    ("libgobject", "GLib (libvips' runtime)"),
    ("cygrpc", "gRPC C core"),
    ("libgrpc", "gRPC C core"),
    ("_pb2", "protobuf"),
    ("_message", "protobuf"),
    ("libz", "zlib"),
    ("libc.so", "libc (memcpy, malloc, syscalls)"),
    ("libm.so", "libc (memcpy, malloc, syscalls)"),
    ("libstdc++", "libc (memcpy, malloc, syscalls)"),
    ("ld-linux", "libc (memcpy, malloc, syscalls)"),
)
# What time in these packages' frames really is (C calls are charged to the caller).
PACKAGE_LABELS: Final = {
    "pyvips": "libvips via pyvips (decode, crop, resize, JPEG encode)",
    "grpc": "gRPC (C core and its Python layer)",
    "google/protobuf": "protobuf",
    "asyncio": "asyncio event loop",
    "uvicorn": "uvicorn (HTTP server)",
    "falcon": "Falcon (ASGI framework)",
}
PYTHON_PACKAGES: Final = (
    "grpc",
    "google/protobuf",
    "falcon",
    "uvicorn",
    "httptools",
    "h11",
    "structlog",
    "pydantic",
    "pyvips",
    "cffi",
    "aioboto3",
    "aiobotocore",
    "botocore",
    "aiohttp",
    "asyncio",
    "concurrent/futures",
    "threading",
    "logging",
)


# Shared objects -> what they are, for perf's per-library shares; first match wins.
LIBRARY_CATEGORIES: Final = (
    *NATIVE_CATEGORIES,
    ("_jpeg_mosaic", "our C helper (stored-tile joins)"),
    ("libpython", "Python interpreter"),
    ("python3", "Python interpreter"),
    ("kernel", "kernel (syscalls, scheduling, page faults)"),
    ("_cffi_backend", "cffi and ctypes (calls into C)"),
    ("_ctypes", "cffi and ctypes (calls into C)"),
    ("libffi", "cffi and ctypes (calls into C)"),
    # The interpreter's own C modules (_asyncio, _struct, select...).
    ("cpython-3", "Python interpreter"),
)


def pyspy_binary() -> str | None:
    """py-spy beside our Python (venv) or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_recording(
    pid: int, duration_s: float, out: Path, rate: int = 100
) -> subprocess.Popen[bytes]:
    """py-spy recording `pid` for `duration_s` into `out` (collapsed stacks)."""
    exe = pyspy_binary()
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    cmd = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(max(1, round(duration_s))),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--nonblocking",
        # The decoder is a supervisor whose worker processes do the decoding.
        "--subprocesses",
        "--output",
        str(out),
    ]
    log = out.with_suffix(".log").open("wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def perf_binary() -> str | None:
    """Linux perf on PATH, if any."""
    return shutil.which("perf")


def start_perf(pids: list[int], duration_s: float, out: Path) -> subprocess.Popen[bytes]:
    """perf sampling every thread of `pids` (C threads too: OpenJPEG's and
    libvips' workers, which py-spy cannot see) for `duration_s` into `out`."""
    exe = perf_binary()
    if exe is None:
        raise RuntimeError("perf is not installed")
    cmd = [
        exe, "record", "--quiet", "-F", "499", "-p", ",".join(map(str, pids)),
        "-o", str(out), "--", "sleep", str(max(1, round(duration_s))),
    ]  # fmt: skip
    log = out.with_suffix(".log").open("wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


def library_shares(data: Path) -> list[tuple[str, float]]:
    """Shares of perf's samples in `data` by library category, largest first
    (empty when perf cannot read it)."""
    exe = perf_binary()
    if exe is None or not data.exists():
        return []
    proc = subprocess.run(
        [exe, "report", "-i", str(data), "--sort", "dso", "--stdio", "-g", "none"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    return summarise_libraries(proc.stdout)


def summarise_libraries(report: str) -> list[tuple[str, float]]:
    """`perf report --sort dso --stdio` text -> (category, share) pairs."""
    shares: dict[str, float] = {}
    for line in report.splitlines():
        parts = line.split()
        if len(parts) < 2 or line.lstrip().startswith("#") or not parts[0].endswith("%"):
            continue
        try:
            share = float(parts[0][:-1]) / 100
        except ValueError:
            continue
        dso = " ".join(parts[1:])
        category = next(
            (label for marker, label in LIBRARY_CATEGORIES if marker in dso), f"other: {dso}"
        )
        shares[category] = shares.get(category, 0.0) + share
    ranked = sorted(shares.items(), key=lambda item: -item[1])
    return [(c, share) for c, share in ranked if share > 0]


def _frame_file(frame: str) -> str:
    # "func (path/to/file.py:12)" -> "path/to/file.py"; "sym (libfoo.so)" -> "libfoo.so"
    if frame.endswith(")") and " (" in frame:
        return frame.rsplit(" (", 1)[1][:-1].rsplit(":", 1)[0]
    return frame


def _under(path: str, package: str) -> str | None:
    """The part of `path` inside `package`, or None if it is not in it.

    py-spy names files relative to sys.path when it can ("grpc/aio/_call.py"),
    else by absolute path: both are accepted.
    """
    if path.startswith(f"{package}/"):
        return path[len(package) + 1 :]
    marker = f"/{package}/"
    if marker in path:
        return path.split(marker, 1)[1]
    return None


def _python_category(path: str, ours: tuple[str, ...]) -> str:
    for root in ours:
        tail = _under(path, root)
        if tail is not None:
            return f"our code: {root}/{tail}"
    for package in PYTHON_PACKAGES:
        if _under(path, package) is not None or path in (f"{package}.py", f"/{package}.py"):
            return PACKAGE_LABELS.get(package, f"Python: {package}")
    return "Python: other"


def categorise(stack: list[str], ours: tuple[str, ...] = ("decoder", "gateway")) -> str:
    """The category of one sample's stack (root first, innermost last)."""
    leaf = _frame_file(stack[-1])
    for marker, category in NATIVE_CATEGORIES:
        if marker in leaf:
            return category
    # Interpreter internals count for the Python code they were running.
    for frame in reversed(stack):
        path = _frame_file(frame)
        if path.endswith(".py"):
            return _python_category(path, ours)
    return "other native"


@dataclass
class ProfileSummary:
    """Self-time shares of one process."""

    process: str
    samples: int
    duration_s: float
    rate: int
    categories: list[tuple[str, float]] = field(default_factory=list)
    top_frames: list[tuple[str, float]] = field(default_factory=list)
    # CPU time the process tree used during the profile, per second: cores busy.
    cpu_cores: float | None = None
    # perf's shares by library over every thread (empty without perf).
    libraries: list[tuple[str, float]] = field(default_factory=list)

    @property
    def busy(self) -> float:
        """Cores busy on average by the samples (non-idle samples per interval)."""
        expected = self.duration_s * self.rate
        return self.samples / expected if expected else 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "process": self.process,
            "samples": self.samples,
            "duration_s": self.duration_s,
            "rate": self.rate,
            "categories": self.categories,
            "top_frames": self.top_frames,
            "cpu_cores": self.cpu_cores,
            "libraries": self.libraries,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProfileSummary:
        """The inverse of `to_json`."""
        return cls(
            data["process"],
            data["samples"],
            data["duration_s"],
            data["rate"],
            [(str(c), float(s)) for c, s in data["categories"]],
            [(str(c), float(s)) for c, s in data["top_frames"]],
            data.get("cpu_cores"),
            [(str(c), float(s)) for c, s in data.get("libraries", [])],
        )


def summarise(
    process: str, raw: str, duration_s: float, rate: int = 100, top: int = 12
) -> ProfileSummary:
    """Summarise py-spy's raw (collapsed) output: ``frame;frame;... count`` per line."""
    categories: Counter[str] = Counter()
    frames: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        stack = stack_text.split(";")
        categories[categorise(stack)] += count
        frames[stack[-1]] += count
        total += count
    share = (lambda n: n / total) if total else (lambda n: 0.0)
    return ProfileSummary(
        process=process,
        samples=total,
        duration_s=duration_s,
        rate=rate,
        categories=[(c, share(n)) for c, n in categories.most_common()],
        top_frames=[(f, share(n)) for f, n in frames.most_common(top)],
    )
