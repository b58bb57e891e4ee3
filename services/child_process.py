"""The child processes of ``fasttrack up``: one ``fasttrack`` subcommand each, in a session of its
own with its output in a log file, stopped with SIGTERM and, after a deadline, SIGKILL.

Their own sessions keep a Ctrl-C in the terminal away from them, so the shutdown order stays ours.
That would also let them outlive a ``fasttrack up`` killed with SIGKILL, which runs no shutdown at
all: so each child asks the kernel for a SIGTERM when its parent ends
(:func:`ending_with_this_process`, Linux), as do the benchmark's workers and the embedded broker.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from datetime import UTC, datetime
from functools import cache, partial
from pathlib import Path

STOP_TIMEOUT = 10.0
#: prctl(2)'s option for the signal a process receives when its parent thread ends.
_PR_SET_PDEATHSIG = 1


def ending_with_this_process() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child is sent SIGTERM when this process
    ends, however it ends (a SIGKILL included), so that it cannot be left running without it.

    None where that cannot be promised: off Linux, and off the main thread, because the kernel
    signals the child when the *thread* that started it ends, not the process.
    """
    if _prctl() is None or threading.current_thread() is not threading.main_thread():
        return None
    return partial(end_with, os.getpid())


def end_with(parent: int) -> None:
    """In a child of ``parent``: be sent SIGTERM when ``parent`` ends (Linux; elsewhere nothing).
    If it has already ended (before this call), SIGTERM now."""
    prctl = _prctl()
    if prctl is None:
        return
    prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


@cache
def _prctl() -> Callable[..., int] | None:
    """The C library's ``prctl``, its argument types declared; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
    prctl.restype = ctypes.c_int
    return prctl  # type: ignore[no-any-return]


class ChildProcess:
    """One `fasttrack` subcommand in a child process of its own session, output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str],
                 log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.killed = False
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def exit_code(self) -> int | None:
        """None while it runs (or before it started)."""
        return self._process.poll() if self._process else None

    @property
    def crashed(self) -> bool:
        """It exited when not asked to, or did not stop cleanly when asked."""
        code = self.exit_code
        if code is None:
            return False
        return self.killed or not (self._stopping and code in (0, -signal.SIGTERM, 143))

    def start(self) -> ChildProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- {datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ} {self.name}: "
                      f"{' '.join(self.argv)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=ending_with_this_process(),
            )
        return self

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM to its process group); `wait` collects it."""
        self._stopping = True
        if self.exit_code is None:
            self._signal_group(signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        """Wait until `deadline` (monotonic), then SIGKILL whatever of its group is left."""
        if self._process is None:
            return
        try:
            self._process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            self.killed = True
            self._signal_group(signal.SIGKILL)
            self._process.wait()
        self._signal_group(signal.SIGKILL)  # grandchildren it left behind, if any

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_bytes()[-16_000:].decode("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def exit_report(self) -> str:
        """How it exited, and the end of its log."""
        return (f"{self.name} exited with code {self.exit_code}; end of {self.log_path}:\n"
                f"{self.log_tail()}")

    def _signal_group(self, signum: int) -> None:
        if self._process is None:
            return
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(self._process.pid, signum)

    def __repr__(self) -> str:
        return f"<ChildProcess {self.name} pid={self.pid} exit={self.exit_code}>"


def stop_children(children: Sequence[ChildProcess], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM all of them at once, then wait for each; SIGKILL those still running at timeout."""
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout
    for child in children:
        child.wait(deadline)


def fasttrack_command(subcommand: str) -> list[str]:
    """The argv that runs ``fasttrack SUBCOMMAND`` with this interpreter."""
    return [sys.executable, "-m", "services.cli", subcommand]

