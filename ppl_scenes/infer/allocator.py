"""Keeping freed memory in the process while training, so that large tensors are not paged in again.

glibc's ``malloc`` adapts two thresholds as a program runs: blocks above the *mmap threshold* are
mapped fresh from the kernel, and free memory above the *trim threshold* at the top of the heap is
handed back to it. A training step makes and frees tensors of megabytes (SPAIR's drawn objects,
their gradients); with the adaptive thresholds a step may map many of them afresh, the kernel
zero-filling their pages on first touch: thousands of minor page faults a step of SPAIR's
defaults (48x48, batch 32), depending on where the adaptive thresholds settle in the process
(BENCHMARKS.md, step profiles, issue 36).
Scenes generated batch by batch make it worse, their many small objects landing between the large
tensors so that the heap is trimmed and regrown each step (254 ms a step against 185 ms with the
thresholds fixed, SPAIR's 5-digit scenes with 8-px cells, ``experiments/spair_stream_speed.py``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["keep_freed_memory"]

#: ``mallopt`` parameter numbers of glibc's ``malloc.h``.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def keep_freed_memory(limit_bytes: int = 2**30) -> bool:
    """Fix glibc's trim and mmap thresholds at ``limit_bytes`` for the rest of the process.

    Freed blocks up to ``limit_bytes`` then stay in the heap for the next step instead of going back
    to the kernel (the process keeps at most that much unused memory). Does nothing, and returns
    False, where the C library is not glibc (macOS, Windows, musl) or refuses; returns True once the
    thresholds are set (later calls are no-ops that return True).

    Raises:
        ValueError: ``limit_bytes`` not a positive int that fits glibc's ``int`` parameter.
    """
    global _done
    if isinstance(limit_bytes, bool) or not isinstance(limit_bytes, int) or not 0 < limit_bytes < 2**31:
        raise ValueError(f"limit_bytes must be an int in (0, 2**31), got {limit_bytes!r}")
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _done = bool(mallopt(_M_MMAP_THRESHOLD, limit_bytes)) and bool(mallopt(_M_TRIM_THRESHOLD, limit_bytes))
    return _done
