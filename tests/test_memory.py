"""subtitled.memory: freed heap pages go back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import pytest

from subtitled.memory import release_free_memory

PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


@pytest.mark.skipif(sys.platform != "linux", reason="glibc and /proc")
def test_freed_heap_blocks_leave_resident_memory() -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    # 64 KiB blocks come from the heap (below the mmap threshold); the last one stays
    # allocated, so the freed ones cannot be given back by shrinking the heap's top.
    blocks = [libc.malloc(64 * 1024) for _ in range(400)]
    assert all(blocks)
    for block in blocks:
        ctypes.memset(block, 1, 64 * 1024)
    pin = libc.malloc(64)
    for block in blocks[:-1]:
        libc.free(block)
    before = _rss_bytes()
    assert release_free_memory()
    after = _rss_bytes()
    libc.free(blocks[-1])
    libc.free(pin)
    # ~25 MB were freed; most of it must have left the process
    assert before - after > 15 * 1024 * 1024, (before, after)
