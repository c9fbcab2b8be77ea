"""How a training process takes memory from the OS: freed blocks kept for reuse, huge pages.

A training step frees and re-allocates the same large activations every step. By default glibc
returns big freed blocks to the OS (munmap, heap trimming) and the next step pays a page fault per
4 KiB page to get them back, zero-filled; keeping freed blocks in the heap avoids that. Huge pages
(PyTorch's ``THP_MEM_ALLOC_ENABLE``, 2 MiB pages for tensors of 2 MiB and more) cut the faults
that remain. Both change speed only, never results; what they bring is measured in
docs/performance.md.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

log = logging.getLogger(__name__)

# mallopt(3) parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
# Blocks below this come from the heap, so freeing them keeps them for the next step. 32 MiB is
# the largest value glibc accepts on 64-bit; larger tensors still map and unmap.
MMAP_THRESHOLD = 32 << 20
# Free memory the heap keeps rather than hand back: well above one step's activations.
TRIM_THRESHOLD = 1 << 30

_tuned: dict[str, bool] | None = None


def tune_allocator() -> dict[str, bool]:
    """Keep freed blocks in the heap and ask for huge pages; idempotent; returns what was set.

    Call it before the first tensor is allocated for huge pages to apply (PyTorch reads
    ``THP_MEM_ALLOC_ENABLE`` once, on its first allocation); the heap settings apply from the
    call on. A no-op where the C library is not glibc. A user's own ``THP_MEM_ALLOC_ENABLE`` wins.
    """
    global _tuned
    if _tuned is not None:
        return _tuned
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    heap = False
    if platform.libc_ver()[0] == "glibc":
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already runs on
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        # mallopt returns 1 on success; setting either turns off glibc's sliding thresholds.
        heap = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
            mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
        )
    _tuned = {"heap_keeps_freed": heap, "huge_pages": os.environ["THP_MEM_ALLOC_ENABLE"] == "1"}
    log.debug("allocator: %s", _tuned)
    return _tuned
