"""The periodic status line of ``fasttrack up``: requests by status and new problems in the logs."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from services.child_process import ChildProcess
from services.demo_feed import DemoFeed
from services.settings import Settings
from services.up_banner import Console

STATUS_EVERY = 30.0

_PROBLEM_LINE = re.compile(r"\b(ERROR|CRITICAL)\b|^Traceback ")


class LogWatch:
    """New ERROR/CRITICAL/Traceback lines in a child's log since the last look."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = path.stat().st_size if path.exists() else 0

    def new_problems(self) -> list[str]:
        try:
            with self.path.open("rb") as log:
                log.seek(self._offset)
                chunk = log.read()
        except OSError:
            return []
        end = chunk.rfind(b"\n") + 1  # leave a half-written line for next time
        self._offset += end
        lines = chunk[:end].decode("utf-8", errors="replace").splitlines()
        return [f"{self.path.name}: {line.strip()[:200]}" for line in lines
                if _PROBLEM_LINE.search(line)]


class StatusReport:
    """Requests by status (from the request ledger) and the newest problems, now and then."""

    def __init__(self, settings: Settings, children: Sequence[ChildProcess], console: Console,
                 demo: DemoFeed | None, every: float = STATUS_EVERY) -> None:
        from scheduler.db import create_engine_for

        self._engine = create_engine_for(settings.resolved_database_url)
        self._watches = [LogWatch(child.log_path) for child in children]
        self._console = console
        self._demo = demo
        self._every = every
        self._next = time.monotonic() + every
        self._last: str | None = None
        self._demo_problems_seen = 0

    def maybe_report(self) -> None:
        if time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self._every
        problems = [line for watch in self._watches for line in watch.new_problems()]
        if self._demo is not None:
            problems += self._demo.problems[self._demo_problems_seen:]
            self._demo_problems_seen = len(self._demo.problems)
        line = f"status: {self._requests_by_status()}"
        if line == self._last and not problems:
            return
        self._last = line
        self._console.line(line + (f" | {len(problems)} new problem(s)" if problems else ""))
        for problem in problems[-3:]:
            self._console.line(f"  problem: {problem}")

    def close(self) -> None:
        self._engine.dispose()

    def _requests_by_status(self) -> str:
        from sqlalchemy import func, select

        from scheduler.db import deadletters, read_connection, requests

        try:
            with read_connection(self._engine) as conn:
                rows = conn.execute(
                    select(requests.c.status, func.count()).group_by(requests.c.status))
                counts: dict[str, int] = {status: count for status, count in rows}
                open_letters = conn.execute(select(func.count()).select_from(deadletters)
                                            .where(deadletters.c.state == "open")).scalar_one()
        except SQLAlchemyError as exc:
            return f"(request ledger unreadable: {exc.__class__.__name__})"
        order = ("accepted", "routed", "booked", "invited", "escalated", "cancelled",
                 "rejected", "deadlettered")
        shown = [f"{status} {counts[status]}" for status in order if counts.get(status)]
        total = sum(counts.values())
        return (f"{total} request(s): {', '.join(shown) or 'none yet'}; "
                f"open dead letters {open_letters}")
