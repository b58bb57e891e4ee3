"""``fasttrack worker``: one stream-processing worker; run more to share the partitions.

Each worker also competes for the timed work's leader lock (reminders, the booking SLA,
reconciliation); one of them runs it at a time, and another takes over when it stops.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import os
import sys

import faust
import structlog

from consumers.app import BatchSettings, create_app
from services.bootstrap import build_runtime
from services.logs import configure_logging
from services.settings import Settings
from services.timed_work import KafkaRecordPublisher, TimedWorkService

MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number
#: How often a worker hands the pages glibc holds free back to the system.
TRIM_EVERY_SECONDS = 60.0
log = structlog.get_logger("fasttrack.worker")


def run_worker(settings: Settings, *, loglevel: str = "INFO") -> int:
    """Run the Faust worker in the foreground until SIGTERM/SIGINT; returns its exit code."""
    fewer_malloc_arenas()
    configure_logging(loglevel)
    runtime = build_runtime(settings)
    app = create_app(runtime.stages(), runtime.store, runtime.clock, settings.kafka(),
                     settings.topics, partitions=settings.topic_partitions,
                     datadir=settings.var_dir / "faust",
                     batches=BatchSettings(settings.batch_max_records,
                                           settings.batch_window_ms / 1000))
    trim_heap_periodically(app)
    publisher = KafkaRecordPublisher(settings.kafka(), settings.topics)
    timed = TimedWorkService(runtime.timed_work(publisher), runtime.engine)
    timed.start()
    worker = faust.Worker(app, loglevel=loglevel, quiet=True)
    log.info("startup_heap_frozen", objects=freeze_startup_heap())
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        timed.stop()
        publisher.close()
    return 0


def fewer_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas, as ``MALLOC_ARENA_MAX`` would; True if it did.

    glibc gives threads that allocate at once arenas of their own, up to 8 per core, and each
    keeps the most it ever held. A worker runs the event loop, the stage threads and, while it
    leads, APScheduler's job threads: SQLite's page caches and the timed work's pages were
    spread over many arenas, and the leader's RSS kept rising (+19-26 % over 30 minutes) while
    its Python objects did not (tracemalloc: flat). Call before threads start; an explicit
    ``MALLOC_ARENA_MAX`` in the environment wins, and other C libraries are left alone.
    """
    if "MALLOC_ARENA_MAX" in os.environ or (glibc := _glibc()) is None:
        return False
    return bool(glibc.mallopt(_M_ARENA_MAX, arenas))


def release_free_heap() -> bool:
    """Give the whole pages glibc's malloc holds free back to the system (``malloc_trim(0)``);
    True if there were any, False when there were none or this is not glibc.

    ``free`` only shortens a heap from its top, so memory freed below a block still in use
    stays in the worker's RSS until malloc reuses it. A worker's batches free their
    transient bytes (emails, rows, SQLite's pages) between longer-lived objects, and its RSS
    rose with what it had once held: at minute 8 of a soak, the leader's second arena held
    9.2 MB for 2.1 MB in use, and one ``malloc_trim(0)`` returned 5.6 MB (docs/performance.md,
    round 9).
    """
    glibc = _glibc()
    return glibc is not None and bool(glibc.malloc_trim(0))


def trim_heap_periodically(app: faust.App, every: float = TRIM_EVERY_SECONDS) -> None:
    """Run :func:`release_free_heap` every ``every`` seconds while ``app``'s worker runs, off
    the event loop (a thread that allocates meanwhile waits for its arena, not the loop)."""

    @app.timer(interval=every, name="release_free_heap")
    async def release() -> None:
        await asyncio.to_thread(release_free_heap)


def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (``mallopt`` and ``malloc_trim``), else None."""
    return _load_glibc() if sys.platform.startswith("linux") else None


@functools.cache
def _load_glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
    except (OSError, AttributeError):
        return None
    libc.malloc_trim.argtypes = [ctypes.c_size_t]  # int malloc_trim(size_t pad)
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return libc


def freeze_startup_heap() -> int:
    """Leave what the worker built before its first record out of every later collection.

    Collects first, so no garbage is kept for good, then moves every object the collector
    tracks (the libraries' modules, the directory, the app) to its permanent generation
    (``gc.freeze``); returns how many. A full collection visits every tracked object while
    the whole process waits, the stages and the event loop included. A worker holds about
    214,000 objects at start, ran one every 3-4 s of pipeline work, and each took a median of
    136 ms (20 ms with them frozen; docs/performance.md, round 6). Objects built later are
    collected as before.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
