"""Children of ``fasttrack up`` and of the benchmark do not outlive a parent killed with SIGKILL.

Each case runs a parent process that starts one child the way the code does (a ``fasttrack``
subcommand under ``up``, the embedded broker, a benchmark worker), prints the child's pid and
waits; the test kills the parent with SIGKILL, which runs no shutdown code, and watches the child.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.child_process import ending_with_this_process

REPO = Path(__file__).resolve().parents[2]
SLEEPER = '[sys.executable, "-c", "import time; time.sleep(120)"]'

PARENTS = {
    "up-child": f"""
        from services.child_process import ChildProcess
        child = ChildProcess("sleeper", {SLEEPER}, dict(os.environ), folder / "child.log")
        pid = child.start().pid
    """,
    "embedded-broker": """
        from services.broker import EmbeddedBroker
        pid = EmbeddedBroker(log_path=folder / "broker.log").start().pid
    """,
    "bench-worker": f"""
        from services import bench
        from services.kafka_config import KafkaSettings
        from services.settings import Settings
        from services.topics import TopicNames
        bench.WORKER_COMMAND = tuple({SLEEPER})
        pipeline = bench._Pipeline(KafkaSettings("127.0.0.1:9"), Settings(), folder,
                                   f"sqlite:///{{folder}}/bench.db", TopicNames("t"), 1)
        pipeline.spawn(1)
        (pid,) = pipeline.pids
    """,
}


def parent_script(body: str, folder: Path) -> str:
    return (f"import os, sys, time\nfrom pathlib import Path\nfolder = Path({str(folder)!r})\n"
            + textwrap.dedent(body) + "\nprint(pid, flush=True)\ntime.sleep(120)\n")


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie nobody reaped has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.fixture
def reaped() -> Iterator[list[int]]:
    """Pids to SIGKILL after the test, whatever it found."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG)")
@pytest.mark.parametrize("kind", sorted(PARENTS))
def test_a_child_ends_when_its_parent_is_killed(kind: str, tmp_path: Path,
                                                reaped: list[int]) -> None:
    parent = subprocess.Popen([sys.executable, "-c", parent_script(PARENTS[kind], tmp_path)],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    reaped.append(parent.pid)
    assert parent.stdout is not None
    line = parent.stdout.readline()
    assert line.strip().isdigit(), f"the parent printed no pid: {line!r} {parent.stderr}"
    child = int(line)
    reaped.append(child)
    assert running(child)

    parent.kill()
    parent.wait(10)
    deadline = time.monotonic() + 15
    while running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(child), f"{kind}: pid {child} outlived its parent"


def test_no_parent_death_signal_is_promised_off_the_main_thread() -> None:
    import threading

    found: list[object] = []
    thread = threading.Thread(target=lambda: found.append(ending_with_this_process()))
    thread.start()
    thread.join()
    assert found == [None]
    if sys.platform.startswith("linux"):
        assert ending_with_this_process() is not None
