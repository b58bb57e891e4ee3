"""The worker caps glibc's malloc arenas unless the environment already says how many, gives
the pages malloc holds free back, and leaves its startup heap out of later garbage collections."""

from __future__ import annotations

import ctypes
import gc
import os
import sys
import weakref
from collections.abc import Iterator

import pytest

from services.worker import fewer_malloc_arenas, freeze_startup_heap, release_free_heap

glibc = pytest.mark.skipif(not sys.platform.startswith("linux")
                           or not hasattr(ctypes.CDLL(None), "gnu_get_libc_version"),
                           reason="glibc only: elsewhere fewer_malloc_arenas does nothing")


@glibc
def test_the_arenas_are_capped_on_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert fewer_malloc_arenas() is True


def test_an_explicit_malloc_arena_max_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert fewer_malloc_arenas() is False


def test_elsewhere_it_does_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert fewer_malloc_arenas() is False


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@glibc
def test_memory_freed_between_live_blocks_goes_back_to_the_system() -> None:
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    block, count = 64 * 1024, 512  # blocks malloc keeps in its heap (not mmap)
    blocks = [libc.malloc(block) for _ in range(count)]
    try:
        for address in blocks:
            ctypes.memset(address, 1, block)  # touched, so resident
        for address in blocks[::2]:  # 16 MiB, each block between two still in use:
            libc.free(address)  # free() can neither merge them nor shorten the heap
        held = _rss_bytes()
        assert release_free_heap() is True
        assert held - _rss_bytes() > 8 * 1024 * 1024
    finally:
        for address in blocks[1::2]:
            libc.free(address)


def test_elsewhere_nothing_is_released(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "darwin")
    assert release_free_heap() is False


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Give the frozen objects back to the collector after the test (pytest keeps running)."""
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.usefixtures("unfrozen")
def test_the_startup_heap_is_left_out_of_later_collections() -> None:
    built_at_start = [[n] for n in range(2000)]  # containers the collector tracks
    frozen = freeze_startup_heap()
    assert frozen >= len(built_at_start)
    assert gc.get_freeze_count() == frozen
    tracked = {id(o) for o in gc.get_objects()}
    assert id(built_at_start) not in tracked
    assert not any(id(item) in tracked for item in built_at_start)
    built_later = [[n] for n in range(10)]
    assert id(built_later) in {id(o) for o in gc.get_objects()}


@pytest.mark.usefixtures("unfrozen")
def test_garbage_from_before_the_freeze_is_collected_not_kept_for_good() -> None:
    first, second = _Node(), _Node()
    first.other, second.other = second, first  # a cycle: only the collector frees it
    alive = weakref.ref(first)
    del first, second
    freeze_startup_heap()
    assert alive() is None


@pytest.mark.usefixtures("unfrozen")
def test_cycles_built_after_the_freeze_are_still_collected() -> None:
    freeze_startup_heap()
    first, second = _Node(), _Node()
    first.other, second.other = second, first
    alive = weakref.ref(first)
    del first, second
    gc.collect()
    assert alive() is None
