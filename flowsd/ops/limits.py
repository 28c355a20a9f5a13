"""Process settings made at start: the open-files limit and glibc's large-block threshold.

The daemon holds a connection per meter in flight and the simulator a listening socket per
meter, so both raise the soft open-files limit.

glibc serves a block of 128 KiB or more with its own ``mmap`` and returns it on ``free``, but
after the first such free it raises that threshold to the block's size (up to 32 MiB), and
blocks under it come from the heap from then on. The daemon's COPY buffers, database reads and
fleet-sized tables are such blocks, made and freed every second among long-lived per-meter
objects: on the heap they leave holes glibc cannot give back, and the daemon's RSS grew by
about 10 MB of free heap over a fleet's first pass. Setting the threshold fixes it at 128 KiB
(the setting also turns the raising off), at the cost of an mmap/munmap pair per large block.
"""

from __future__ import annotations

import ctypes
import resource

_M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
LARGE_BLOCK_BYTES = 128 * 1024


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; return the new (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft, hard


def keep_large_blocks_mapped() -> bool:
    """Fix glibc's mmap threshold at :data:`LARGE_BLOCK_BYTES` (see the module docstring);
    False where the C library is not glibc (nothing is changed there)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES))
