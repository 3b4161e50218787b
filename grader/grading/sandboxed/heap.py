"""The sandbox child keeps the memory it frees, for the next batch.

glibc hands a freed block of 128 KiB or more back to the kernel (`munmap`, or a trim of the
heap's top), so every batch maps its activations afresh and faults each of their pages in
again: on a 2-core AVX2 host, ~300 000 minor faults in one grading and 1.5x the run time of a
plan without oneDNN Graph fusion (BENCHMARKS.md, "The run's contest, and freed memory"). A
child grades one model and exits, so it keeps what it frees instead: no block gets a mapping
of its own and the heap's top is never trimmed. The address-space cap (RLIMIT_AS) counts the
heap as it counted those mappings.
"""

from __future__ import annotations

import ctypes

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER = 2**31 - 1  # mallopt takes an int: trim only past 2 GiB of free memory at the top


def keep_freed_memory() -> bool:
    """False where the C library has no glibc `mallopt` (musl): nothing changes there."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER))
