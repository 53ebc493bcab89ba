"""decoder/allocator.py: fixed glibc thresholds keep freed memory for reuse.

Each case runs in a fresh interpreter, since the thresholds are process-wide
and glibc adjusts its own as a process allocates. The allocation pattern is
a join's: a few megabyte-sized blocks alive together, then all freed.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap

import pytest

from decoder.allocator import keep_freed_memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

_PATTERN = textwrap.dedent(
    """
    import ctypes, resource, sys
    from decoder.allocator import keep_freed_memory

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)
    keep = int(sys.argv[1])
    applied = keep_freed_memory(keep << 20) if keep else False

    def cycle():
        blocks = [libc.malloc(1 << 20) for _ in range(4)]
        for block in blocks:
            ctypes.memset(block, 1, 1 << 20)
        for block in blocks:
            libc.free(block)

    cycle(); cycle()  # let glibc settle its own thresholds first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        cycle()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    print(applied, (after - before) / 20)
    """
)


def faults_per_cycle(keep_mb: int) -> tuple[bool, float]:
    """(whether the thresholds were set, page faults per cycle of 4 MiB)."""
    out = subprocess.run(
        [sys.executable, "-c", _PATTERN, str(keep_mb)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()  # fmt: skip
    return out[0] == "True", float(out[1])


def glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "gnu_get_libc_version")
    except OSError:
        return False


@pytest.mark.skipif(not glibc(), reason="glibc only")
def test_default_thresholds_hand_the_blocks_back_every_time() -> None:
    # 4 MiB freed at the top of the heap is past glibc's own trim threshold
    # (twice the largest block seen), so each cycle faults its pages again.
    applied, faults = faults_per_cycle(0)
    assert not applied
    assert faults > 500


@pytest.mark.skipif(not glibc(), reason="glibc only")
def test_kept_memory_is_reused_without_faults() -> None:
    applied, faults = faults_per_cycle(8)
    assert applied
    assert faults < 10


@pytest.mark.skipif(not glibc(), reason="glibc only")
def test_blocks_of_half_the_setting_still_go_back_to_the_kernel() -> None:
    # 2 MiB: blocks of 1 MiB are mapped and unmapped on their own, as documented.
    applied, faults = faults_per_cycle(2)
    assert applied
    assert faults > 500


def test_zero_leaves_the_allocator_alone() -> None:
    assert keep_freed_memory(0) is False
