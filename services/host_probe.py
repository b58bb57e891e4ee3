"""How fast this host is, right now, at the two things a request's cost moves with.

The benchmark's machines are shared virtual machines whose speed moves between sessions and
within one (docs/performance.md: the same code cost 4.5–6.5 ms of worker CPU a request in one
session's floods). Two costs move: the Python the stages run, and the kernel's work for each
durable file the outbox writes (created, written, fsynced and renamed: 130–180 µs of CPU in some
minutes of one session, and 200–800 µs for the creation alone in others). ``fasttrack bench``
prints both, measured just before its run, so that reports from different runs can be read
against each other.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from scheduler.outbox import replace_file

#: Repeats of the Python loop; the fastest is reported (the least disturbed by other work).
PYTHON_REPEATS = 5
#: JSON round trips in one repeat of the Python loop.
PYTHON_ROUND_TRIPS = 5000
#: Durable files written by the file probe.
FILES = 100
#: About the size of an invite's .ics.
FILE_BYTES = 3 * 1024


@dataclass(frozen=True)
class HostSpeed:
    #: CPU milliseconds of a fixed Python loop (JSON round trips of a request), the fastest repeat
    python_ms: float
    #: CPU microseconds a durable file costs this process, the kernel's work included
    file_cpu_us: float
    #: wall-clock microseconds a durable file takes, the waits for the disk included
    file_wall_us: float

    def describe(self) -> str:
        return (f"a fixed Python loop {self.python_ms:.1f} ms of CPU; a durable file (create, "
                f"write, fsync, rename) {self.file_cpu_us:.0f} µs of CPU, "
                f"{self.file_wall_us:.0f} µs in all")


def probe_host(folder: Path, *, files: int = FILES) -> HostSpeed:
    """Measure both costs; the probe's files are left in ``folder`` (created if needed)."""
    return HostSpeed(python_ms=_python_ms(), **_file_costs(folder, files))


def _python_ms() -> float:
    request = {"request_id": "probe-0001", "source": "admin_center",
               "tenant": {"id": "tenant-contoso", "name": "Contoso", "country": "DE"},
               "requester": {"name": "Alex Wilber", "email": "alex@contoso.example.com",
                             "language": "de-DE"},
               "topic": "core_onboarding", "submitted_at": "2026-11-24T09:00:00+00:00"}
    fastest = float("inf")
    for _ in range(PYTHON_REPEATS):
        started = time.process_time()
        for n in range(PYTHON_ROUND_TRIPS):
            request["request_id"] = f"probe-{n:04d}"
            request = json.loads(json.dumps(request))
        fastest = min(fastest, time.process_time() - started)
    return fastest * 1000


def _file_costs(folder: Path, files: int) -> dict[str, float]:
    folder.mkdir(parents=True, exist_ok=True)
    data = b"x" * FILE_BYTES
    cpu, wall = time.process_time(), time.perf_counter()
    for n in range(files):
        replace_file(folder / f"{n:04d}.probe", data)  # as the outbox writes each of its files
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"file_cpu_us": cpu * 1e6 / files, "file_wall_us": wall * 1e6 / files}
