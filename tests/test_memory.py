"""subtitled.memory: freed heap pages go back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import pytest

from subtitled.memory import limit_malloc_arenas, release_free_memory

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


_COUNT_HEAPS = """
import ctypes, ctypes.util, re, sys, tempfile, threading
from subtitled.memory import limit_malloc_arenas
if sys.argv[1] == "limit":
    assert limit_malloc_arenas(1)
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
start = threading.Barrier(6)
def work():
    start.wait()  # all threads alive and allocating at once
    blocks = [libc.malloc(4096) for _ in range(200)]
    start.wait()
threads = [threading.Thread(target=work) for _ in range(5)]
for t in threads: t.start()
start.wait(); start.wait()
for t in threads: t.join()
with tempfile.NamedTemporaryFile(suffix=".xml") as f:
    fp = libc.fopen(f.name.encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    print(len(re.findall(r"<heap nr=", open(f.name).read())))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc_info")
def test_the_arena_limit_keeps_every_thread_on_one_heap() -> None:
    import subprocess

    def heaps(mode: str) -> int:
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
        done = subprocess.run(
            [sys.executable, "-c", _COUNT_HEAPS, mode],
            capture_output=True, text=True, check=True, timeout=60, env=env,
        )
        return int(done.stdout.strip())

    assert heaps("default") > 1  # glibc's default: concurrent threads get arenas of their own
    assert heaps("limit") == 1


def test_the_users_malloc_arena_max_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert not limit_malloc_arenas()
