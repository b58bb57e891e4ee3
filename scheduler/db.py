"""Database tables and engines for the ledgers (SQLite by default, PostgreSQL in production).

The tables here describe the schema for queries and for alembic autogenerate. The schema itself is
created by the migrations (``services.database.upgrade_database``), which also add what only one
dialect can express: the PostgreSQL exclusion constraint and the SQLite triggers that keep a
specialist from being double-booked. Do not use ``metadata.create_all`` for a real database.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Connection,
    DateTime,
    Dialect,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.types import TypeDecorator, TypeEngine

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Each connection's page cache, in KiB (SQLite's default is 2,000). In WAL mode a connection
#: drops its cache whenever another connection has committed since its last transaction, which
#: with several stage threads in two workers is nearly every time, so the cache serves little
#: more than one transaction. Yet it stays allocated at its high-water mark, one per pooled
#: connection, and the worker that runs the timed jobs has the most connections: over a 30-minute
#: soak it kept 9 MiB with 256 KiB against 14 MiB with the default (docs/performance.md, round 10).
SQLITE_CACHE_KIB = 256
_SQLITE_BEGIN = "fasttrack_sqlite_begin"  # execution option read by _begin_immediate

# Fixed width, so that SQLite's text comparison orders timestamps correctly (triggers, ranges).
SQLITE_UTC_FORMAT = (
    "%(year)04d-%(month)02d-%(day)02dT%(hour)02d:%(minute)02d:%(second)02d.%(microsecond)06dZ"
)
_SQLITE_UTC_REGEXP = r"(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)\.(\d+)Z"


class _SqliteUtcText(sqlite.DATETIME):
    """SQLite's DATETIME in :data:`SQLITE_UTC_FORMAT`, read back with ``datetime.fromisoformat``.

    The format is ISO 8601 with a ``Z``, which ``fromisoformat`` (C, Python 3.11+) reads as an
    aware UTC datetime in about 0.3 µs. SQLAlchemy's reader matches the regular expression and
    builds the datetime in Python (about 30 times as long); each booking reads the busy spans
    of the coming weeks, two timestamps a row. A value ``fromisoformat`` refuses is read as
    before.
    """

    def result_processor(self, dialect: Dialect, coltype: object,
                         ) -> Callable[[str | None], datetime | None]:
        by_regexp = super().result_processor(dialect, coltype)
        fromisoformat = datetime.fromisoformat

        def process(value: str | None) -> datetime | None:
            if value is None:
                return None
            try:
                return fromisoformat(value)
            except (TypeError, ValueError):
                if by_regexp is None:  # never for a DATETIME with a regexp; never drop a value
                    raise
                return by_regexp(value)

        return process


class UtcDateTime(TypeDecorator[datetime]):
    """An aware datetime stored in UTC: ``timestamptz`` on PostgreSQL, fixed-width text on SQLite.

    SQLite's own DATETIME drops the offset of an aware value, so it is converted to UTC first.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(
                _SqliteUtcText(storage_format=SQLITE_UTC_FORMAT, regexp=_SQLITE_UTC_REGEXP)
            )
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; timestamps must be aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is UTC:
            return value
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

_Id = BigInteger().with_variant(Integer, "sqlite")  # INTEGER PRIMARY KEY is SQLite's rowid

meetings = Table(
    "meetings", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("request_id", String(64), nullable=False),
    Column("center_id", String(100), nullable=False),
    Column("specialist_id", String(100), nullable=False),
    Column("language", String(35), nullable=False),
    Column("start_utc", UtcDateTime(), nullable=False),
    Column("end_utc", UtcDateTime(), nullable=False),
    Column("revision", Integer, nullable=False),
    Column("uid", String(255), nullable=False),
    Column("join_url", Text),
    Column("status", String(16), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    CheckConstraint("status IN ('active', 'cancelled')", name="ck_meetings_status"),
    CheckConstraint("end_utc > start_utc", name="ck_meetings_not_empty"),
    Index("ix_meetings_specialist_start", "specialist_id", "start_utc"),
    Index("ix_meetings_uid", "uid"),
    Index(
        "uq_meetings_active_request", "request_id", unique=True,
        sqlite_where=text("status = 'active'"), postgresql_where=text("status = 'active'"),
    ),
    Index(
        "ix_meetings_active_start", "start_utc", "request_id",
        sqlite_where=text("status = 'active'"), postgresql_where=text("status = 'active'"),
    ),
)

requests = Table(
    "requests", metadata,
    Column("request_id", String(64), primary_key=True),
    Column("body_hash", String(64), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("center_id", String(100)),
    Column("source", String(32), nullable=False),
    Column("partner_id", String(200)),
    Column("tenant_id", String(200), nullable=False),
    Column("submitted_at", UtcDateTime(), nullable=False),
    Column("accepted_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    CheckConstraint(
        "status IN ('accepted', 'routed', 'booked', 'invited', 'escalated', 'cancelled', "
        "'rejected', 'deadlettered')",
        name="ck_requests_status",
    ),
    Index("ix_requests_status_updated", "status", "updated_at"),
)

request_events = Table(
    "request_events", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("request_id", String(64),
           ForeignKey("requests.request_id", ondelete="CASCADE"), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("status", String(16), nullable=False),
    Column("detail", Text),
    # sha256 of status + canonical detail: the same event applied twice is stored once.
    Column("fingerprint", String(64), nullable=False),
    UniqueConstraint("request_id", "fingerprint", name="uq_request_events_fingerprint"),
)

deadletters = Table(
    "deadletters", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("request_id", String(64)),
    Column("origin_topic", String(255)),
    Column("origin_partition", Integer),
    Column("origin_offset", BigInteger),
    Column("error_class", String(255), nullable=False),
    Column("message", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("headers", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("state", String(16), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("record_key", LargeBinary),  # the original Kafka key, so a redrive reproduces it
    UniqueConstraint("origin_topic", "origin_partition", "origin_offset",
                     name="uq_deadletters_origin"),
    CheckConstraint("state IN ('open', 'redriven', 'discarded')", name="ck_deadletters_state"),
    Index("ix_deadletters_state_at", "state", "at"),
    Index("ix_deadletters_request", "request_id"),
)

ops_audit = Table(
    "ops_audit", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime(), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("action", String(32), nullable=False),
    Column("deadletter_id", BigInteger),
    Column("error_class", String(255)),
    Column("target", String(255)),
    Column("detail", Text),
    Index("ix_ops_audit_deadletter", "deadletter_id"),
)

invite_deliveries = Table(
    "invite_deliveries", metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("uid", String(255), nullable=False),
    Column("request_id", String(64), nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("method", String(16), nullable=False),
    Column("backend", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("detail", Text),
    Column("attempts", Integer, nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    UniqueConstraint("uid", "sequence", "method", name="uq_invite_deliveries_message"),
    Index("ix_invite_deliveries_request", "request_id"),
)


held_commands = Table(
    "held_commands", metadata,
    Column("command_id", String(64), primary_key=True),
    Column("request_id", String(64), nullable=False),
    Column("command", String(16), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("record_key", LargeBinary),
    Column("headers", Text, nullable=False),
    Column("origin_topic", String(255), nullable=False),
    Column("origin_partition", Integer, nullable=False),
    Column("origin_offset", BigInteger, nullable=False),
    Column("held_at", UtcDateTime(), nullable=False),
    Index("ix_held_commands_request", "request_id"),
    Index("ix_held_commands_held_at", "held_at"),
)

#: Tables in the same database that other libraries own: APScheduler's job store.
SCHEDULER_JOB_TABLE = "fasttrack_scheduler_jobs"
FOREIGN_TABLES = frozenset({SCHEDULER_JOB_TABLE})


def owned_by_migrations(obj: Any, name: str | None, type_: str, reflected: bool,
                        compare_to: Any) -> bool:
    """Alembic's ``include_object``: leave tables that other libraries create alone."""
    table = obj.table.name if type_ in ("index", "column", "unique_constraint") else name
    return not (reflected and table in FOREIGN_TABLES)


def lock_specialist(conn: Connection, specialist_id: str) -> None:
    """Queue this transaction behind others booking the same specialist (PostgreSQL).

    Concurrent inserts that check the exclusion constraint against each other's uncommitted
    rows deadlock, and PostgreSQL takes a second to notice; under load the retries piled up.
    A transaction-scoped advisory lock per specialist makes them wait their turn instead; the
    constraint still decides who gets the slot. SQLite already serialises writers.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))"),
                     {"key": _specialist_key(specialist_id)})


def lock_specialists(conn: Connection, specialist_ids: Iterable[str]) -> list[str]:
    """:func:`lock_specialist` for several in one statement, in ascending id order; returns
    that order. Transactions that wait for these locks only in ascending order cannot
    deadlock on them (PostgreSQL would take a second to notice)."""
    ordered = sorted(set(specialist_ids))
    if ordered and conn.dialect.name == "postgresql":
        # A function scan yields the array in order, and the aggregate takes each lock as
        # its row arrives.
        conn.execute(text("SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) "
                          "FROM unnest(CAST(:keys AS text[])) AS k"),
                     {"keys": [_specialist_key(sid) for sid in ordered]})
    return ordered



def lock_requests(conn: Connection, request_ids: Iterable[str]) -> None:
    """Queue this transaction behind others that accept, or hold a command for, the same
    requests (PostgreSQL; SQLite already serialises writers), in ascending id order.

    Under READ COMMITTED, a transaction that accepts a request and then reads the commands
    held for it, and one that holds a command after finding no request, can each miss the
    other's uncommitted row (scheduler.held_commands); with the lock, the second to come sees
    what the first committed.
    """
    ordered = sorted(set(request_ids))
    if ordered and conn.dialect.name == "postgresql":
        conn.execute(text("SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0))) "
                          "FROM unnest(CAST(:keys AS text[])) AS k"),
                     {"keys": [f"fasttrack.request:{rid}" for rid in ordered]})

def try_lock_specialist(conn: Connection, specialist_id: str) -> bool:
    """:func:`lock_specialist` if no other transaction holds it; False instead of waiting."""
    if conn.dialect.name != "postgresql":
        return True
    return bool(conn.execute(
        text("SELECT pg_try_advisory_xact_lock(hashtextextended(:key, 0))"),
        {"key": _specialist_key(specialist_id)}).scalar_one())


def _specialist_key(specialist_id: str) -> str:
    return f"fasttrack.specialist:{specialist_id}"


def create_engine_for(url: str) -> Engine:
    """An engine for ``sqlite:///PATH`` or ``postgresql://...`` (psycopg 3), set up for the ledgers.

    SQLite: WAL, a busy timeout, foreign keys, a small page cache (:data:`SQLITE_CACHE_KIB`), and
    BEGIN IMMEDIATE so that concurrent writers queue for the write lock instead of failing when a
    read transaction tries to upgrade.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(parsed, pool_pre_ping=True)
    if backend != "sqlite":
        raise ValueError(f"unsupported database URL {parsed!r}: use sqlite:/// or postgresql://")
    database = parsed.database
    connect_args: dict[str, Any] = {}
    if database and database != ":memory:" and not database.startswith("file:"):
        connect_args["factory"] = _gated_connection_class(f"{database}.writers.lock")
    engine = create_engine(parsed, connect_args=connect_args)
    event.listen(engine, "connect", _configure_sqlite_connection)
    event.listen(engine, "begin", _begin_immediate)
    return engine


class _GatedConnection(sqlite3.Connection):
    """A sqlite3 connection whose write transactions queue at a gate before ``BEGIN IMMEDIATE``.

    SQLite makes a second writer wait in its busy handler, which sleeps and polls (1, 2, 5, 10 …
    100 ms), so the lock can sit free while every waiter sleeps: with several stage threads in
    two processes, small transactions waited tens of milliseconds each. The gate is an exclusive
    ``flock`` on a file beside the database, one open file per connection, so writers in any
    thread or process block in the kernel and the next one wakes as soon as the lock is given
    up; the operating system drops it when a process dies. It is released after COMMIT or
    ROLLBACK. A thread that already holds the gate through another connection does not take it
    again (that nested writer then meets SQLite's own lock, as without the gate).
    """

    lock_path: str  # set by _gated_connection_class
    _gate_fd: int | None = None  # the lock file, opened by this connection's first writer
    _gate_holders: set[str] | None = None  # while held: the holding thread's gates

    def take_gate(self) -> None:
        holders = _gate_holders.paths
        if self._gate_holders is not None or self.lock_path in holders:
            return
        if self._gate_fd is None:
            self._gate_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self._gate_fd, fcntl.LOCK_EX)  # blocks without the GIL
        self._gate_holders = holders
        holders.add(self.lock_path)

    def give_gate(self) -> None:
        holders, self._gate_holders = self._gate_holders, None
        if holders is not None and self._gate_fd is not None:
            holders.discard(self.lock_path)
            fcntl.flock(self._gate_fd, fcntl.LOCK_UN)

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.give_gate()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.give_gate()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.give_gate()
            fd, self._gate_fd = self._gate_fd, None
            if fd is not None:
                os.close(fd)


class _GateHolders(threading.local):
    """The gates (lock paths) the current thread holds."""

    def __init__(self) -> None:
        self.paths: set[str] = set()


_gate_holders = _GateHolders()


@cache
def _gated_connection_class(lock_path: str) -> type[_GatedConnection]:
    """The sqlite3 connection factory for one database file's gate."""
    return type("GatedConnection", (_GatedConnection,), {"lock_path": lock_path})


def _configure_sqlite_connection(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy emits BEGIN itself (see _begin_immediate); the sqlite3 driver must not.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
    finally:
        cursor.close()


def _begin_immediate(connection: Connection) -> None:
    mode = connection.get_execution_options().get(_SQLITE_BEGIN, "IMMEDIATE")
    dbapi = connection.connection.dbapi_connection
    gate = dbapi if mode != "DEFERRED" and isinstance(dbapi, _GatedConnection) else None
    if gate is not None:
        gate.take_gate()
    try:
        connection.exec_driver_sql(f"BEGIN {mode}")
    except BaseException:
        if gate is not None:
            gate.give_gate()
        raise


def read_connection(engine: Engine) -> Connection:
    """A connection for reads only: on SQLite its transactions begin DEFERRED, so readers run
    beside the writer (WAL) instead of queueing for the write lock. Use as a context manager."""
    return engine.connect().execution_options(**{_SQLITE_BEGIN: "DEFERRED"})
