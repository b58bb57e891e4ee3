"""The threads the stages' blocking work runs in (SQL, rendering, delivery).

A pool of its own, not asyncio's default executor, so that its threads carry a native name
(:data:`STAGE_THREAD_NAME`, what ``top -H``, ``ps -L`` and ``/proc/<pid>/task/<tid>/comm``
show) and can be told from Faust's event loop (the main thread) and aiokafka's consumer thread:
``fasttrack bench`` splits a worker's CPU that way.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from setproctitle import setthreadtitle

#: The native name of the stage threads (Linux keeps 15 bytes of it).
STAGE_THREAD_NAME = "ft-stage"
#: As many threads as asyncio's default executor would have; one pool per process, like it.
_stage_threads = ThreadPoolExecutor(thread_name_prefix=STAGE_THREAD_NAME,
                                    initializer=setthreadtitle, initargs=(STAGE_THREAD_NAME,))

_Result = TypeVar("_Result")


async def in_stage_thread(function: Callable[..., _Result], /, *args: Any) -> _Result:
    """``asyncio.to_thread`` on the stage threads: ``function(*args)`` with this task's
    context variables (structlog's among them)."""
    call = functools.partial(contextvars.copy_context().run, function, *args)
    return await asyncio.get_running_loop().run_in_executor(_stage_threads, call)
