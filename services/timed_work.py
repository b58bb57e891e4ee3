"""The timed work on APScheduler 3: one active scheduler per job store, behind a leader lock.

Jobs live in a SQLAlchemy job store in the service's own database (table
``fasttrack_scheduler_jobs``), so they survive restarts. Every process that may run the timed
work starts a :class:`TimedWorkService`; only the one holding the leader lock (PostgreSQL: a
session advisory lock on a dedicated connection; SQLite: ``flock`` on a file next to the
database) runs a scheduler, the others wait to take over. The stored jobs name module-level
functions here and carry only ids; they act through the leader's :class:`TimedWork`.
"""

from __future__ import annotations

import fcntl
import hashlib
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import structlog
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from kafka import KafkaProducer
from sqlalchemy import Connection, Engine, make_url, text

from scheduler.db import SCHEDULER_JOB_TABLE
from scheduler.jobs import TimedWork
from services.kafka_config import KafkaSettings, kafka_python_producer_kwargs
from services.topics import TopicNames

JOB_TABLE = SCHEDULER_JOB_TABLE
RECURRING_SECONDS = {"reconcile": 60, "sla_sweep": 60, "plan_reminders": 60,
                     "revalidate_bookings": 60}
#: Jobs at once. The four recurring jobs run one instance each and reminders take a few
#: milliseconds; APScheduler's default of 10 threads only spread memory over more arenas.
JOB_THREADS = 4
log = structlog.get_logger("fasttrack.timed_work")

_leader_work: TimedWork | None = None
_leader_guard = threading.Lock()


class NoLeader(RuntimeError):
    """A job ran in a process that is not (or no longer) the leader."""


def _work() -> TimedWork:
    work = _leader_work
    if work is None:
        raise NoLeader("timed work ran without a leading TimedWorkService in this process")
    return work


# --- the stored jobs: module-level, ids only -----------------------------------------------


def send_reminder_job(request_id: str, kind: str, revision: int) -> None:
    _work().send_reminder(request_id, kind, revision)


def sla_sweep_job() -> None:
    _work().sla_sweep()


def reconcile_job() -> None:
    _work().reconcile()


def revalidate_bookings_job() -> None:
    _work().revalidate_bookings()


def plan_reminders_job() -> None:
    service = _leading_service
    if service is not None:
        service.plan_reminders()


_leading_service: TimedWorkService | None = None


# --- the leader lock -------------------------------------------------------------------------


class LeaderLock(Protocol):
    def acquire(self) -> bool:
        """Take the lock without waiting; True if this process holds it now."""

    def held(self) -> bool:
        """Whether the lock is still held (a PostgreSQL session can be lost)."""

    def release(self) -> None:
        """Give the lock up (no-op when not held)."""


class FileLeaderLock:
    """``flock`` on a lock file: exclusive per open file, so also between threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None

    def acquire(self) -> bool:
        if self._file is not None:
            return True
        handle = self.path.open("a+b")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        handle, self._file = self._file, None
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()


class PostgresLeaderLock:
    """``pg_try_advisory_lock`` on a connection kept only for it; lost with the session."""

    def __init__(self, engine: Engine, name: str) -> None:
        self._engine = engine
        self._key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big",
                                   signed=True)
        self._conn: Connection | None = None

    def acquire(self) -> bool:
        if self._conn is not None:
            return self.held()
        conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        if conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": self._key}):
            self._conn = conn
            return True
        conn.close()
        return False

    def held(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.scalar(text("SELECT 1"))
        except Exception:
            self._conn = None
            return False
        return True

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.scalar(text("SELECT pg_advisory_unlock(:k)"), {"k": self._key})
            finally:
                conn.close()


def leader_lock_for(engine: Engine, table: str = JOB_TABLE) -> LeaderLock:
    """The lock that fits the database: advisory on PostgreSQL, a file beside SQLite's."""
    url = make_url(str(engine.url))
    if url.get_backend_name() == "postgresql":
        return PostgresLeaderLock(engine, f"fasttrack:{table}")
    database = url.database
    if not database or database == ":memory:":
        raise ValueError("the timed work needs a database file or PostgreSQL, not :memory:")
    return FileLeaderLock(Path(f"{database}.{table}.lock"))


# --- the service -------------------------------------------------------------------------------


class TimedWorkService:
    """Competes for the leader lock and, while it holds it, runs the scheduler."""

    def __init__(self, work: TimedWork, engine: Engine, *, lock: LeaderLock | None = None,
                 table: str = JOB_TABLE, poll_seconds: float = 5.0,
                 recurring: dict[str, int] | None = None) -> None:
        self.work = work
        self._engine = engine
        self._lock = lock or leader_lock_for(engine, table)
        self._table = table
        self._poll = poll_seconds
        self._recurring = RECURRING_SECONDS if recurring is None else recurring
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.scheduler: BackgroundScheduler | None = None

    @property
    def leading(self) -> bool:
        return self.scheduler is not None

    def start(self) -> None:
        """Start competing for leadership in a background thread."""
        self._thread = threading.Thread(target=self._run, name="timed-work", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the scheduler (waiting for running jobs) and give up the lock."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(60)
        self._step_down()

    def plan_reminders(self) -> None:
        """Make sure each due reminder has its one-off job (ids make this idempotent)."""
        scheduler = self.scheduler
        if scheduler is None:
            return
        for job in self.work.plan_reminders():
            if scheduler.get_job(job.id) is None:
                scheduler.add_job(send_reminder_job, "date", run_date=job.run_at, args=job.args,
                                  id=job.id, replace_existing=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.scheduler is None:
                if self._lock.acquire():
                    self._lead()
            elif not self._lock.held():
                log.warning("leadership_lost")
                self._step_down(release=False)
            self._stop.wait(self._poll)

    def _lead(self) -> None:
        global _leader_work, _leading_service
        with _leader_guard:
            _leader_work, _leading_service = self.work, self
        scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self._engine,
                                                     tablename=self._table)},
            executors={"default": ThreadPoolExecutor(JOB_THREADS)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
            timezone=UTC)
        scheduler.start()
        functions = {"reconcile": reconcile_job, "sla_sweep": sla_sweep_job,
                     "plan_reminders": plan_reminders_job,
                     "revalidate_bookings": revalidate_bookings_job}
        for name, seconds in self._recurring.items():
            scheduler.add_job(functions[name], "interval", seconds=seconds, id=name,
                              replace_existing=True, next_run_time=datetime.now(UTC))
        self.scheduler = scheduler
        log.info("leading", table=self._table)

    def _step_down(self, release: bool = True) -> None:
        global _leader_work, _leading_service
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None:
            scheduler.shutdown(wait=True)
            with _leader_guard:
                if _leading_service is self:
                    _leader_work, _leading_service = None, None
        if release:
            self._lock.release()


class KafkaRecordPublisher:
    """The timed work's :data:`~scheduler.jobs.Publish` over a kafka-python producer
    (synchronous: jobs run in the scheduler's threads); waits for the broker's ack."""

    def __init__(self, kafka: KafkaSettings, topics: TopicNames, timeout: float = 10.0) -> None:
        self._producer = KafkaProducer(**kafka_python_producer_kwargs(kafka))
        self._topics = topics
        self._timeout = timeout

    def __call__(self, topic: str, key: bytes, value: bytes,
                 headers: Mapping[str, bytes] | None = None) -> None:
        name = getattr(self._topics, topic)
        self._producer.send(name, key=key, value=value,
                            headers=list((headers or {}).items())).get(timeout=self._timeout)

    def close(self) -> None:
        self._producer.close()

