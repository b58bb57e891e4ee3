"""``fasttrack worker``: one stream-processing worker; run more to share the partitions.

Each worker also competes for the timed work's leader lock (reminders, the booking SLA,
reconciliation); one of them runs it at a time, and another takes over when it stops.
"""

from __future__ import annotations

import ctypes
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
    if not sys.platform.startswith("linux") or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return bool(mallopt(_M_ARENA_MAX, arenas))


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
