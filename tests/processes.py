"""Real processes for integration tests: free ports, start, wait until healthy, stop."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

# Re-exported: tests pick ports with the benchmark's helpers (one copy).
from bench.procs import free_port as free_port
from bench.procs import free_ports as free_ports

REPO = Path(__file__).resolve().parent.parent


def start(module: str, env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """`python -m module` with `env` added to a clean copy of ours; output to `log_path`."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("IIIF_")}
    full_env.update(env)
    log = log_path.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", module],
        cwd=REPO,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], timeout_s: float, what: str
) -> None:
    """Poll `ready` until true; fail fast if `proc` dies or `timeout_s` passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before becoming ready")
        try:
            if ready():
                return
        except Exception:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout_s}s")


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 15.0) -> int:
    """SIGTERM, then SIGKILL after `timeout_s`; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode
