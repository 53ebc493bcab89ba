"""Local processes for the benchmark: start, wait, stop, and their memory.

Deliberately independent of tests/processes.py: the benchmark is a tool
people run on its own, and it must keep working while tests change.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

REPO = Path(__file__).resolve().parent.parent


# Ports this process has handed out. A server binds its port a while after
# it is chosen (a decoder takes seconds to start), and the cases of a run
# start in parallel: the kernel may offer a chosen, not yet bound port again,
# and the second server then fails to bind ("address already in use": a
# smoke run lost our whole local case that way).
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, never one this
    process handed out before."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """`count` different TCP ports on 127.0.0.1 that were free a moment ago,
    none handed out before by this process.

    All are held open until all are chosen, so the kernel cannot offer one
    twice meanwhile.
    """
    with _handed_out_lock, contextlib.ExitStack() as stack:
        ports: list[int] = []
        attempts = count + 1000
        while len(ports) < count:
            if attempts == 0:
                raise OSError("no free port that was not handed out already")
            attempts -= 1
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in _handed_out:
                ports.append(port)
        _handed_out.update(ports)
        return ports


def spawn(
    argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start `argv` in its own process group, output to `log_path`.

    `env` is added to a copy of ours without IIIF_* variables, so a developer's
    shell settings cannot change what is measured.
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("IIIF_")}
    full_env.update(env or {})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            cwd=REPO,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def port_open(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def http_ok(url: str) -> bool:
    """True when GET `url` answers 2xx."""
    try:
        return httpx.get(url, timeout=2.0).is_success
    except httpx.HTTPError:
        return False


def wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], timeout_s: float, what: str
) -> None:
    """Poll `ready` until true; fail fast if `proc` exits or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before becoming ready")
        if ready():
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s")


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 10.0) -> None:
    """SIGTERM the process (and its group: lighttpd's FastCGI children), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                # The command name may hold spaces and parentheses: split after the last ')'.
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def process_tree(roots: Iterable[int]) -> list[int]:
    """`roots` and all their descendants (lighttpd spawns iipsrv, uvicorn workers)."""
    children = _children()
    seen: list[int] = []
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(children.get(pid, []))
    return seen


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time of `pids` so far, added up (threads included)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except (OSError, ValueError, IndexError):
            continue
    return total / ticks


def wait_quiet(
    roots: Iterable[int], window_s: float = 0.5, busy_s: float = 0.05, timeout_s: float = 30.0
) -> bool:
    """Wait until the processes under `roots` spend at most `busy_s` of CPU
    in a `window_s` window (start-up done: imports, worker processes still
    binding), at most `timeout_s`; whether they got there."""
    roots = list(roots)
    deadline = time.monotonic() + timeout_s
    before = cpu_seconds(process_tree(roots))
    while time.monotonic() < deadline:
        time.sleep(window_s)
        now = cpu_seconds(process_tree(roots))
        if now - before <= busy_s:
            return True
        before = now
    return False


def rss_bytes(pids: Iterable[int]) -> int:
    """Resident memory of `pids` added up, now."""
    return sum(_status_kib(pid, "VmRSS") for pid in pids) * 1024


def peak_rss_bytes(pids: Iterable[int]) -> int:
    """The kernel's high-water mark of resident memory (VmHWM) of `pids`, added up."""
    return sum(_status_kib(pid, "VmHWM") for pid in pids) * 1024


class RssSampler:
    """Samples the summed RSS of a process tree in a thread; `peak` is the largest seen.

    VmHWM alone only says the peak since start; sampling gives a peak per load step.
    """

    def __init__(self, roots: Sequence[int], interval_s: float = 0.2) -> None:
        self._roots = list(roots)
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak = 0

    def _sample(self) -> None:
        self.peak = max(self.peak, rss_bytes(process_tree(self._roots)))

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self._sample()

    def __enter__(self) -> RssSampler:
        if self._roots:
            self._sample()
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
            self._sample()
