"""``fasttrack bench --ledger-only``: the booking search on the SQL ledger, as a worker books.

The core benchmark times ``book()`` on the in-memory ledger. A worker books through the SQL
ledger, which first reads each candidate specialist's busy spans from the database. This fills
a fresh SQLite file (or the given PostgreSQL database) with the core benchmark's ledgers, the
same meetings, older days added as the ledger grows, and times ``book()`` for the same
decisions at each size. Each booking runs in a transaction that is rolled back, so every
decision sees the same ledger, and a new batch ledger each time, so every search reads.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select

from scheduler.booking import book
from scheduler.db import create_engine_for, meetings
from scheduler.directory import CenterDirectory
from scheduler.sql_ledger import SqlBookingLedger, insert_meetings
from schemas.events import RoutingDecision
from services.core_bench import (
    DEFAULT_SIZES,
    SEARCH_FROM,
    Timing,
    booking_decisions,
    booking_json,
    booking_table,
    ledger_meetings,
    sample_help_requests,
)
from services.database import upgrade_database

#: Rows per INSERT while filling: one statement per chunk, progress between chunks.
FILL_CHUNK = 20_000


class LedgerNotEmpty(RuntimeError):
    """The database given to fill already holds meetings."""


@dataclass
class LedgerReport:
    database: str
    booking: dict[int, Timing] = field(default_factory=dict)
    fill_seconds: dict[int, float] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        result = {"database": self.database, **booking_json(self.booking)}
        for row in result["booking"]:
            row["fill_seconds"] = round(self.fill_seconds.get(row["ledger_size"], 0.0), 2)
        return result


def run_ledger_bench(directory: CenterDirectory, database_url: str | None = None, *,
                     sizes: tuple[int, ...] = DEFAULT_SIZES, searches: int = 300,
                     progress: Callable[[str], None] | None = None) -> LedgerReport:
    """Fill the ledger to each size in turn and time the booking search at each."""
    say = progress or (lambda text: None)
    with ExitStack() as stack:
        if database_url is None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ledger-")))
            database_url = f"sqlite:///{folder / 'ledger.db'}"
        upgrade_database(database_url)
        engine = create_engine_for(database_url)
        stack.callback(engine.dispose)
        with engine.connect() as conn:
            held = conn.execute(select(func.count()).select_from(meetings)).scalar_one()
        if held:
            raise LedgerNotEmpty(f"--database-url: the database holds {held:,} meetings; "
                                 "give an empty one")
        report = LedgerReport(engine.dialect.name)
        requests = sample_help_requests(searches + 50, SEARCH_FROM)
        warmup, decisions = booking_decisions(requests, directory, searches)
        every = ledger_meetings(directory, max(sizes))
        filled = 0
        for size in sorted(sizes):
            started = time.perf_counter()
            new = every[len(every) - size:len(every) - filled]
            for at in range(0, len(new), FILL_CHUNK):
                with engine.begin() as conn:
                    insert_meetings(conn, new[at:at + FILL_CHUNK], SEARCH_FROM)
                say(f"ledger: {filled + min(at + FILL_CHUNK, len(new)):,} of {size:,} meetings")
            filled = size
            report.fill_seconds[size] = time.perf_counter() - started
            _analyze(engine)
            _time_booking(engine, directory, warmup)  # caches, connections, plans
            report.booking[size] = _time_booking(engine, directory, decisions)
            say(f"ledger of {size:,}: median {report.booking[size].median_us:.0f} µs "
                f"per booking")
        return report


def _analyze(engine: Engine) -> None:
    """PostgreSQL: fresh planner statistics, as autovacuum gives a table that grew this much.
    SQLite: none, as in a worker's database (nothing runs ``ANALYZE`` there)."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE meetings")


def _time_booking(engine: Engine, directory: CenterDirectory,
                  decisions: list[RoutingDecision]) -> Timing:
    ledger = SqlBookingLedger(engine)
    samples = []
    for decision in decisions:
        with engine.connect() as conn:
            transaction = conn.begin()
            started = time.perf_counter_ns()
            book(decision, directory, ledger.within(conn))
            samples.append((time.perf_counter_ns() - started) / 1000)
            transaction.rollback()
    return Timing(samples)


def format_ledger_report(report: LedgerReport) -> str:
    return "\n".join([
        f"booking on the SQL ledger ({report.database}): schedule read + search + insert, "
        "rolled back",
        *booking_table(report.booking, target=False),
        "  (the 1 ms target is for the search alone, on the in-memory ledger: --core-only)",
    ])


def print_ledger_report(report: LedgerReport, json_output: bool) -> None:
    print(json.dumps(report.to_json_dict()) if json_output else format_ledger_report(report))
