"""Changing a booked meeting: cancel it or move it, with the database deciding every race.

Both operations are conditional on the revision the caller read: ``UPDATE ... WHERE
status = 'active' AND revision = :r``. Of two changes to the same booking, the first to commit
wins and the other finds no row, whatever the dialect (PostgreSQL re-checks the WHERE clause
after waiting for the winner's row lock; SQLite runs one writer at a time). A move releases the
old row and inserts the next revision, with the same UID, in one transaction, so there is never
a moment with two active meetings, or none, for a request.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Engine, Row, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from scheduler.db import lock_specialist, meetings, read_connection
from scheduler.ledger import InMemoryLedger, SpecialistBusy
from scheduler.sql_ledger import insert_meeting
from schemas.events import Meeting

_RETRYABLE = {"40P01", "40001"}  # deadlock detected, serialization failure
_ATTEMPTS = 8


class MeetingChanged(RuntimeError):
    """The meeting is no longer active at the revision the change was based on."""

    def __init__(self, request_id: str, revision: int) -> None:
        self.request_id = request_id
        self.revision = revision
        super().__init__(f"meeting of request {request_id} is no longer active at revision "
                         f"{revision}: it was changed or cancelled meanwhile")


class MeetingChanges(Protocol):
    """Conditional changes to a request's active meeting."""

    def cancel(self, request_id: str, revision: int, *,
               also: Callable[[Any], object] | None = None) -> Meeting | None:
        """Release the active meeting if it is still at ``revision``; None if it is not.
        ``also(conn)`` runs in the same transaction when the meeting is released (what must
        be recorded with it, such as the request's cancelled status)."""

    def move(self, current: Meeting, new: Meeting) -> Meeting:
        """Replace ``current`` (still active at its revision) by ``new`` atomically.

        Raise :class:`MeetingChanged` when ``current`` is no longer active at its revision, and
        :class:`SpecialistBusy` when ``new`` overlaps another meeting (``current`` then stays).
        """

    def latest(self, request_id: str) -> tuple[Meeting, bool] | None:
        """The request's newest meeting row, active or not, and whether it is active."""


def next_revision(current: Meeting, new: Meeting) -> Meeting:
    """``new`` as the successor of ``current``: revision + 1 and the same UID."""
    return new.model_copy(update={"revision": current.revision + 1, "uid": current.uid})


class InMemoryMeetingChanges:
    """:class:`MeetingChanges` over an :class:`InMemoryLedger`, serialized by a lock."""

    def __init__(self, ledger: InMemoryLedger) -> None:
        self._ledger = ledger
        self._lock = threading.Lock()
        self._history: dict[str, Meeting] = {}

    def cancel(self, request_id: str, revision: int, *,
               also: Callable[[Any], object] | None = None) -> Meeting | None:
        with self._lock:
            active = self._ledger.meeting_for(request_id)
            if active is None or active.revision != revision:
                return None
            if also is not None:
                also(None)  # no transaction here: nothing to join
            self._history[request_id] = active
            return self._ledger.release(request_id)

    def move(self, current: Meeting, new: Meeting) -> Meeting:
        with self._lock:
            active = self._ledger.meeting_for(current.request_id)
            if active is None or active.revision != current.revision:
                raise MeetingChanged(current.request_id, current.revision)
            self._ledger.release(current.request_id)
            try:
                return self._ledger.record(new)
            except SpecialistBusy:
                self._ledger.record(active)
                raise

    def latest(self, request_id: str) -> tuple[Meeting, bool] | None:
        with self._lock:
            active = self._ledger.meeting_for(request_id)
            if active is not None:
                return active, True
            old = self._history.get(request_id)
            return None if old is None else (old, False)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def meeting_from_row(row: Row[Any]) -> Meeting:
    """A ``meetings`` row as a Meeting."""
    return Meeting(
        request_id=row.request_id, center_id=row.center_id, specialist_id=row.specialist_id,
        language=row.language, start=row.start_utc, end=row.end_utc, revision=row.revision,
        uid=row.uid, join_url=row.join_url,
    )


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)


def _specialist_conflict(exc: IntegrityError) -> bool:
    return _sqlstate(exc) == "23P01" or "specialist_busy" in str(exc.orig)


class SqlMeetingChanges:
    """:class:`MeetingChanges` in SQL; ``clock`` stamps ``updated_at`` only."""

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _utc_now) -> None:
        self._engine = engine
        self._clock = clock

    def cancel(self, request_id: str, revision: int, *,
               also: Callable[[Any], object] | None = None) -> Meeting | None:
        with self._engine.begin() as conn:
            row = conn.execute(self._release(request_id, revision)).first()
            if row is not None and also is not None:
                also(conn)
        return None if row is None else meeting_from_row(row)

    def move(self, current: Meeting, new: Meeting) -> Meeting:
        if new.request_id != current.request_id:
            raise ValueError("a meeting can only move within its own request")
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return self._move_once(current, new)
            except IntegrityError as exc:
                if _specialist_conflict(exc):
                    raise SpecialistBusy(new.specialist_id, new.start) from exc
                raise
            except OperationalError as exc:
                if _sqlstate(exc) not in _RETRYABLE or attempt == _ATTEMPTS:
                    raise
                time.sleep(random.uniform(0, 0.005 * 2 ** attempt))
        raise AssertionError("unreachable")

    def latest(self, request_id: str) -> tuple[Meeting, bool] | None:
        query = (select(meetings).where(meetings.c.request_id == request_id)
                 .order_by(meetings.c.revision.desc(), meetings.c.id.desc()).limit(1))
        with read_connection(self._engine) as conn:
            row = conn.execute(query).first()
        return None if row is None else (meeting_from_row(row), row.status == "active")

    def _move_once(self, current: Meeting, new: Meeting) -> Meeting:
        now = self._clock()
        with self._engine.begin() as conn:
            lock_specialist(conn, new.specialist_id)
            if conn.execute(self._release(current.request_id, current.revision)).first() is None:
                raise MeetingChanged(current.request_id, current.revision)
            insert_meeting(conn, new, now)
        return new

    def _release(self, request_id: str, revision: int) -> Any:
        return (
            update(meetings)
            .where(meetings.c.request_id == request_id, meetings.c.status == "active",
                   meetings.c.revision == revision)
            .values(status="cancelled", updated_at=self._clock())
            .returning(*meetings.c)
        )
