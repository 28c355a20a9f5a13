"""Process settings made at start (flowsd.ops.limits), each in a fresh interpreter so that
no earlier allocation of the test process decides the outcome."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

# After a 1 MiB block is freed, is a 256 KiB block served by mmap (True) or from the heap?
# glibc's own account (mallinfo2's hblkhd: bytes in mmapped blocks) answers.
_PROBE = """
import ctypes, sys
from flowsd.ops.limits import keep_large_blocks_mapped

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
if sys.argv[1] == "set":
    assert keep_large_blocks_mapped()
libc.free(libc.malloc(1 << 20))  # glibc raises its threshold to 1 MiB here, unless fixed
before = libc.mallinfo2().hblkhd
block = libc.malloc(256 << 10)
print(libc.mallinfo2().hblkhd - before >= 256 << 10)
libc.free(block)
"""


def _mapped_after_a_free(setting: str) -> bool:
    answer = subprocess.run(
        [sys.executable, "-c", _PROBE, setting], capture_output=True, text=True, check=True
    )
    return answer.stdout.strip() == "True"


def test_large_blocks_stay_mapped_after_a_larger_one_was_freed() -> None:
    if not hasattr(ctypes.CDLL(None), "mallinfo2"):
        pytest.skip("the C library is not glibc 2.33 or newer")
    assert not _mapped_after_a_free("unset")  # glibc's own rule: the threshold moved up
    assert _mapped_after_a_free("set")
