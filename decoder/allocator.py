"""How the C allocator hands memory back to the kernel (glibc only).

glibc returns a freed block of 128 KiB or more to the kernel at once, then
raises that threshold as it sees larger blocks freed, and trims the top of
each thread's heap whenever more than twice that is free there. A decoder
thread allocates and frees a megabyte or two per stored-tile join (libjpeg's
coefficient arrays, the output buffer), so those pages went back to the
kernel after each call and were faulted in, zeroed and charged to the cgroup
again on the next: 357 page faults per 512 px join, a fifth of the call's
CPU. Fixed thresholds keep that memory for reuse.

What this keeps is bounded: at most `trim_bytes` of free memory at the top
of each heap (glibc makes at most eight per core), and blocks of half that
or more still go straight to the kernel when freed.
"""

from __future__ import annotations

import ctypes
import sys

# From glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(trim_bytes: int) -> bool:
    """Fix glibc's thresholds: blocks under ``trim_bytes // 2`` come from
    the heap, and up to ``trim_bytes`` of free memory stays at each heap's
    top. Returns False (and changes nothing) when ``trim_bytes`` is 0 or the
    C library is not glibc."""
    if trim_bytes <= 0 or not sys.platform.startswith("linux"):
        return False
    # The process's own symbols include its C library's, with no search
    # (ctypes.util.find_library runs ldconfig in a subprocess).
    libc = ctypes.CDLL(None)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or not hasattr(libc, "gnu_get_libc_version"):
        return False  # musl and others: no such knobs
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # glibc caps the mmap threshold at 32 MiB (64-bit).
    threshold = min(trim_bytes // 2, 32 << 20)
    return bool(mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_bytes)
    )
