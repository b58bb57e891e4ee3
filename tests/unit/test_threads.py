"""The stage threads: named so that a worker's CPU can be split by what its threads do."""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
from pathlib import Path

import pytest

from consumers.threads import STAGE_THREAD_NAME, in_stage_thread
from services.bench import THREAD_ROLES, thread_cpu_seconds, thread_role

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(),
                                reason="native thread names are read from Linux /proc")

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id")


def _native_name() -> str:
    return Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()


def test_stage_work_runs_on_a_named_thread_with_the_callers_context() -> None:
    def work(suffix: str) -> tuple[str, str, int]:
        return _native_name(), request_id.get() + suffix, threading.get_native_id()

    async def main() -> tuple[str, str, int]:
        request_id.set("req-1")
        return await in_stage_thread(work, "/a")

    name, seen, tid = asyncio.run(main())
    assert name == STAGE_THREAD_NAME
    assert seen == "req-1/a"
    assert tid != threading.get_native_id()


def test_a_workers_cpu_is_split_by_what_its_threads_do() -> None:
    assert thread_role(100, 100, "python") == "faust loop"
    assert thread_role(100, 101, STAGE_THREAD_NAME) == "stages"
    assert thread_role(100, 101, "python") == "other threads"

    stop = threading.Event()

    async def burn() -> None:
        def spin() -> None:
            while not stop.is_set():
                sum(range(1000))
        await in_stage_thread(spin)

    runner = threading.Thread(target=asyncio.run, args=(burn(),))
    before = thread_cpu_seconds(os.getpid())
    runner.start()
    deadline = time.monotonic() + 10
    try:
        while thread_cpu_seconds(os.getpid())["stages"] - before["stages"] < 0.2:
            assert time.monotonic() < deadline, "the stage thread's CPU was never counted"
            time.sleep(0.05)
    finally:
        stop.set()
        runner.join()
    after = thread_cpu_seconds(os.getpid())
    assert set(after) <= set(THREAD_ROLES)
    assert after["faust loop"] > 0  # this test's own (main) thread
