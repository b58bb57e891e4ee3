"""The booking ledger in SQL (SQLite or PostgreSQL), with the database as the arbiter.

``record`` does not look before it leaps: it inserts, and the schema refuses a second active
meeting for a request (partial unique index) or an overlapping active meeting for a specialist
(exclusion constraint on PostgreSQL, trigger on SQLite). Their errors become the protocol's
:class:`SpecialistBusy` and :class:`RequestAlreadyBooked`, so concurrent workers cannot double-book.
"""

from __future__ import annotations

import random
import time
from bisect import insort
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, Engine, Row, Select, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from scheduler.db import (
    lock_specialist,
    lock_specialists,
    meetings,
    read_connection,
    try_lock_specialist,
)
from scheduler.ledger import (
    MAX_MEETING,
    RequestAlreadyBooked,
    Span,
    SpecialistBusy,
    check_length,
)
from schemas.events import Meeting

_REQUEST_INDEX = "uq_meetings_active_request"
_EXCLUSION_VIOLATION = "23P01"  # PostgreSQL SQLSTATE
_UNIQUE_VIOLATION = "23505"
_RETRYABLE = {"40P01", "40001"}  # deadlock detected, serialization failure
_ATTEMPTS = 16
#: How far past the asked window a batch reads a schedule (see ``BatchLedger.schedules``).
READ_AHEAD = timedelta(days=1)

# The statements a booking runs, built once. Built for each booking (``insert(...).values(row)``,
# a new ``select``), each was constructed and keyed for the compiled cache again: the meeting
# insert alone was 3.8 % of a worker's CPU in the flood (round 6).
_INSERT_MEETING = insert(meetings)
_ACTIVE_MEETINGS = select(meetings).where(
    meetings.c.request_id.in_(bindparam("request_ids", expanding=True)),
    meetings.c.status == "active")
_INSERT_MEETING_UNLESS_TAKEN = (
    postgresql.insert(meetings).on_conflict_do_nothing().returning(meetings.c.id))
_SCHEDULES = (
    select(meetings.c.specialist_id, meetings.c.start_utc, meetings.c.end_utc)
    .where(
        meetings.c.specialist_id.in_(bindparam("specialist_ids", expanding=True)),
        meetings.c.status == "active",
        # Both ends of the index range: a meeting lasts at most MAX_MEETING, so one that ends
        # after the window's start began after ``earliest``. With the upper bound alone, every
        # read walked each specialist's whole history (all past meetings, active or not).
        meetings.c.start_utc > bindparam("earliest"),
        meetings.c.start_utc < bindparam("end"),
        meetings.c.end_utc > bindparam("start"),
    )
    .order_by(meetings.c.specialist_id, meetings.c.start_utc)
)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _sqlstate(exc: DBAPIError) -> str | None:
    return getattr(exc.orig, "sqlstate", None)  # psycopg has it; sqlite3 does not


def _conflict(exc: IntegrityError) -> Literal["request", "specialist"] | None:
    """Which booking rule the database refused, or None for any other integrity error."""
    orig: Any = exc.orig
    sqlstate = _sqlstate(exc)
    if sqlstate is not None:
        constraint = getattr(getattr(orig, "diag", None), "constraint_name", None)
        if sqlstate == _EXCLUSION_VIOLATION:
            return "specialist"
        if sqlstate == _UNIQUE_VIOLATION and constraint == _REQUEST_INDEX:
            return "request"
        return None
    message = str(orig)  # sqlite3 carries no constraint name beyond the message
    if "specialist_busy" in message:
        return "specialist"
    if "UNIQUE constraint failed: meetings.request_id" in message:
        return "request"
    return None


class LockedElsewhere(Exception):
    """A batch needs a specialist it did not reserve, which another transaction holds.

    Waiting could deadlock (the batch already holds a later specialist in the lock order), so
    the insert is refused before anything is written; the batch's transaction stays usable,
    and the booker books that record alone once the batch has committed.
    """

    def __init__(self, specialist_id: str) -> None:
        super().__init__(f"specialist {specialist_id!r} is being booked by another transaction "
                         "and was not reserved by this batch")
        self.specialist_id = specialist_id


class _Retry(Exception):
    """The request's meeting was released between the refused insert and the look: retry."""


def _refusal(exc: IntegrityError, meeting: Meeting, meeting_for: Callable[[str], Meeting | None],
             ) -> RequestAlreadyBooked | SpecialistBusy | _Retry | None:
    """What a refused insert of ``meeting`` means under the ledger protocol; None when the
    database refused it for another reason. A request that already has a meeting wins over a
    busy specialist when both apply, as in the in-memory ledger."""
    conflict = _conflict(exc)
    if conflict is None:
        return None
    existing = meeting_for(meeting.request_id)
    if existing is not None:
        return RequestAlreadyBooked(existing)
    if conflict == "specialist":
        return SpecialistBusy(meeting.specialist_id, meeting.start)
    return _Retry()


def _meeting(row: Row[Any]) -> Meeting:
    return Meeting(
        request_id=row.request_id, center_id=row.center_id, specialist_id=row.specialist_id,
        language=row.language, start=row.start_utc, end=row.end_utc, revision=row.revision,
        uid=row.uid, join_url=row.join_url,
    )


class SqlBookingLedger:
    """:class:`scheduler.ledger.BookingLedger` on a SQLAlchemy engine; one transaction per call.

    ``clock`` stamps ``created_at``/``updated_at`` only; booking decisions never read it.
    """

    def __init__(self, engine: Engine, clock: Callable[[], datetime] = _utc_now) -> None:
        self._engine = engine
        self._clock = clock

    def meeting_for(self, request_id: str) -> Meeting | None:
        """The active meeting of a request, if any."""
        with read_connection(self._engine) as conn:
            row = conn.execute(_active_meeting(request_id)).first()
        return None if row is None else _meeting(row)

    def schedules(self, specialist_ids: Iterable[str], start: datetime,
                  end: datetime) -> dict[str, list[Span]]:
        """Each specialist's busy spans that overlap [start, end), sorted by start; one query."""
        with read_connection(self._engine) as conn:
            return _read_schedules(conn, specialist_ids, start, end)

    def within(self, conn: Connection) -> BatchLedger:
        """This ledger inside the caller's write transaction, for a batch of bookings."""
        return BatchLedger(conn, self._clock)

    def record(self, meeting: Meeting) -> Meeting:
        """Record a meeting; raise SpecialistBusy or RequestAlreadyBooked if it conflicts.

        As in the in-memory ledger, a request that already has a meeting wins over a busy
        specialist when both apply.
        """
        if meeting.end <= meeting.start:
            raise ValueError(f"meeting for {meeting.request_id} ends before it starts")
        attempt = 1
        while True:
            try:
                self._insert(meeting)
                return meeting
            except IntegrityError as exc:
                refusal = _refusal(exc, meeting, self.meeting_for)
                if refusal is None:
                    raise
                if not isinstance(refusal, _Retry):
                    raise refusal from exc
                # The request's meeting was released since our insert failed: try again.
                if attempt == _ATTEMPTS:
                    raise
            except OperationalError as exc:
                # Concurrent inserts checking the exclusion constraint against each other's
                # uncommitted rows can deadlock; PostgreSQL aborts one, which tries again and
                # then sees the winner's row (SpecialistBusy) or a free slot.
                if _sqlstate(exc) not in _RETRYABLE or attempt == _ATTEMPTS:
                    raise
                # Jittered backoff, or the same contenders deadlock again in lockstep.
                time.sleep(random.uniform(0, min(0.005 * 2 ** attempt, 0.25)))
            attempt += 1

    def release(self, request_id: str) -> Meeting | None:
        """Cancel the request's active meeting (the row stays as history); return what was freed."""
        statement = (
            update(meetings)
            .where(meetings.c.request_id == request_id, meetings.c.status == "active")
            .values(status="cancelled", updated_at=self._clock())
            .returning(*meetings.c)
        )
        with self._engine.begin() as conn:
            row = conn.execute(statement).first()
        return None if row is None else _meeting(row)

    def set_join_url(self, request_id: str, join_url: str) -> Meeting | None:
        """Attach the online meeting link a backend made (Teams) to the active meeting."""
        statement = (
            update(meetings)
            .where(meetings.c.request_id == request_id, meetings.c.status == "active")
            .values(join_url=join_url, updated_at=self._clock())
            .returning(*meetings.c)
        )
        with self._engine.begin() as conn:
            row = conn.execute(statement).first()
        return None if row is None else _meeting(row)

    def _insert(self, meeting: Meeting) -> None:
        with self._engine.begin() as conn:
            lock_specialist(conn, meeting.specialist_id)
            insert_meeting(conn, meeting, self._clock())


class BatchLedger:
    """The booking ledger on one open write transaction: a batch of bookings, one commit.

    Reads see the batch's own inserts. Each specialist's schedule is read once per batch and
    then kept in memory, with every meeting the batch records added to it; a conflict (another
    worker took the slot, PostgreSQL) drops that specialist's copy, so the next read is fresh.
    A refused insert leaves the batch's transaction usable (PostgreSQL: ``ON CONFLICT DO
    NOTHING``; SQLite: the refused statement alone is undone).
    The caller commits or rolls back the transaction; nothing here does.
    """

    def __init__(self, conn: Connection, clock: Callable[[], datetime] = _utc_now) -> None:
        self._conn = conn
        self._clock = clock
        self._spans: dict[str, list[Span]] = {}
        self._covered: dict[str, tuple[datetime, datetime]] = {}
        self._locked: set[str] = set()
        self._last_locked = ""  # the highest id in ``_locked``
        self._meetings: dict[str, Meeting | None] = {}  # request id -> active meeting, as read

    def read_meetings(self, request_ids: Iterable[str]) -> None:
        """Read the active meetings of these requests in one query; :meth:`meeting_for` then
        answers them from memory (one round trip per batch, not per booking). The batch's own
        records and releases keep the answers current; another transaction booking one of
        them meanwhile is refused by the database, and that refusal reads again."""
        ids = [rid for rid in request_ids if rid not in self._meetings]
        if not ids:
            return
        found = {row.request_id: _meeting(row)
                 for row in self._conn.execute(_ACTIVE_MEETINGS, {"request_ids": ids})}
        self._meetings.update((rid, found.get(rid)) for rid in ids)

    def reserve(self, specialist_ids: Iterable[str]) -> None:
        """Take these specialists' booking locks now, in ascending id order.

        PostgreSQL: a batch holds each specialist's lock until it commits. Taken one by one as
        the batch booked, two workers' batches took them in different orders (one worker's
        overflow center is another's own) and deadlocked, and PostgreSQL only noticed after
        ``deadlock_timeout`` (1 s): a whole batch late. The booker reserves the specialists
        its batch tries first (its own centers'); any other it needs later is waited for only
        in the same order, else taken only if free (see :meth:`record`).
        """
        wanted = [sid for sid in specialist_ids if sid not in self._locked]
        if not wanted:
            return
        if self._locked and min(wanted) < self._last_locked:
            for specialist_id in sorted(wanted):  # out of order: never wait
                self._lock(specialist_id)
            return
        ordered = lock_specialists(self._conn, wanted)
        self._locked.update(ordered)
        self._last_locked = max(self._last_locked, ordered[-1])

    def meeting_for(self, request_id: str) -> Meeting | None:
        if request_id in self._meetings:
            return self._meetings[request_id]
        return self._read_meeting(request_id)

    def _read_meeting(self, request_id: str) -> Meeting | None:
        row = self._conn.execute(_active_meeting(request_id)).first()
        return None if row is None else _meeting(row)

    def schedules(self, specialist_ids: Iterable[str], start: datetime,
                  end: datetime) -> dict[str, list[Span]]:
        """Busy spans of each specialist; at least all that overlap [start, end), sorted.

        A read reaches :data:`READ_AHEAD` past ``end``: the batch's next requests search
        windows a little later than this one's, and then need no read of their own.
        """
        ids = list(specialist_ids)
        missing = [sid for sid in ids if not self._covers(sid, start, end)]
        if missing:
            low = min([start, *(self._covered[s][0] for s in missing if s in self._covered)])
            high = max([end + READ_AHEAD,
                        *(self._covered[s][1] for s in missing if s in self._covered)])
            self._spans.update(_read_schedules(self._conn, missing, low, high))
            self._covered.update((sid, (low, high)) for sid in missing)
        return {sid: self._spans[sid] for sid in ids}

    def record(self, meeting: Meeting) -> Meeting:
        """As the protocol says; also raise :class:`LockedElsewhere`, having changed nothing,
        when the specialist was not reserved and another transaction holds it."""
        if meeting.end <= meeting.start:
            raise ValueError(f"meeting for {meeting.request_id} ends before it starts")
        check_length(meeting)  # before the lock: a refused meeting changes nothing
        self._lock(meeting.specialist_id)  # held to the commit, whatever the insert does
        if self._conn.dialect.name == "postgresql":
            self._insert_unless_taken(meeting)
        else:
            self._insert_or_refuse(meeting)
        if meeting.specialist_id in self._spans:
            insort(self._spans[meeting.specialist_id], (meeting.start, meeting.end))
        if meeting.request_id in self._meetings:
            self._meetings[meeting.request_id] = meeting
        return meeting

    def _insert_unless_taken(self, meeting: Meeting) -> None:
        """PostgreSQL: ``INSERT ... ON CONFLICT DO NOTHING``, no savepoint (two round trips
        fewer per booking). The conflict arbiters are the booking rules, the partial unique
        index (one active meeting per request) and the exclusion constraint (no overlap per
        specialist); a conflicting row another transaction has not committed yet is waited
        for. Nothing inserted: the request's meeting, if it has one, else the specialist."""
        inserted = self._conn.execute(_INSERT_MEETING_UNLESS_TAKEN,
                                      _meeting_row(meeting, self._clock())).first()
        if inserted is not None:
            return
        self._meetings.pop(meeting.request_id, None)  # what the database holds now
        existing = self._read_meeting(meeting.request_id)
        if existing is not None:
            raise RequestAlreadyBooked(existing)
        self._forget(meeting.specialist_id)
        raise SpecialistBusy(meeting.specialist_id, meeting.start)

    def _insert_or_refuse(self, meeting: Meeting) -> None:
        """SQLite: a plain insert, no savepoint. The overlap rule is a trigger, which
        ``ON CONFLICT`` does not cover, but a refusal (the trigger's ``RAISE(ABORT)``, the
        partial unique index) undoes that statement alone and the transaction goes on
        (SQLite's ABORT resolution), so the batch stays usable without one."""
        try:
            insert_meeting(self._conn, meeting, self._clock())
        except IntegrityError as exc:
            self._meetings.pop(meeting.request_id, None)  # what the database holds now
            refusal = _refusal(exc, meeting, self._read_meeting)
            if refusal is None or isinstance(refusal, _Retry):
                raise
            if isinstance(refusal, SpecialistBusy):
                self._forget(meeting.specialist_id)
            raise refusal from exc

    def release(self, request_id: str) -> Meeting | None:
        row = self._conn.execute(
            update(meetings)
            .where(meetings.c.request_id == request_id, meetings.c.status == "active")
            .values(status="cancelled", updated_at=self._clock())
            .returning(*meetings.c)).first()
        if request_id in self._meetings:
            self._meetings[request_id] = None
        if row is None:
            return None
        self._forget(row.specialist_id)
        return _meeting(row)

    def set_join_url(self, request_id: str, join_url: str) -> Meeting | None:
        row = self._conn.execute(
            update(meetings)
            .where(meetings.c.request_id == request_id, meetings.c.status == "active")
            .values(join_url=join_url, updated_at=self._clock())
            .returning(*meetings.c)).first()
        meeting = None if row is None else _meeting(row)
        if request_id in self._meetings:
            self._meetings[request_id] = meeting
        return meeting

    def _covers(self, specialist_id: str, start: datetime, end: datetime) -> bool:
        covered = self._covered.get(specialist_id)
        return covered is not None and covered[0] <= start and end <= covered[1]

    def _lock(self, specialist_id: str) -> None:
        """The specialist's lock: wait for it only after every lock held (the order
        :meth:`reserve` uses); before that, take it only if it is free."""
        if specialist_id in self._locked:
            return
        if specialist_id > self._last_locked:
            lock_specialist(self._conn, specialist_id)
            self._last_locked = specialist_id
        elif not try_lock_specialist(self._conn, specialist_id):
            raise LockedElsewhere(specialist_id)
        self._locked.add(specialist_id)

    def _forget(self, specialist_id: str) -> None:
        self._spans.pop(specialist_id, None)
        self._covered.pop(specialist_id, None)


def _active_meeting(request_id: str) -> Select[Any]:
    return select(meetings).where(meetings.c.request_id == request_id,
                                  meetings.c.status == "active")


def _read_schedules(conn: Connection, specialist_ids: Iterable[str], start: datetime,
                    end: datetime) -> dict[str, list[Span]]:
    result: dict[str, list[Span]] = {sid: [] for sid in specialist_ids}
    if not result:
        return result
    parameters = {"specialist_ids": list(result), "start": start, "end": end,
                  "earliest": start - MAX_MEETING}
    for specialist_id, span_start, span_end in conn.execute(_SCHEDULES, parameters):
        result[specialist_id].append((span_start, span_end))
    return result


def insert_meeting(conn: Connection, meeting: Meeting, now: datetime) -> None:
    """Insert the meeting; the caller holds the specialist's lock. MeetingTooLong if it lasts
    longer than MAX_MEETING (the schedule read relies on it)."""
    conn.execute(_INSERT_MEETING, _meeting_row(meeting, now))


def insert_meetings(conn: Connection, many: Iterable[Meeting], now: datetime) -> None:
    """Insert meetings in one statement (an import, a benchmark's ledger): no lock is taken,
    and the schema still refuses an overlap or a second meeting for a request."""
    rows = [_meeting_row(meeting, now) for meeting in many]
    if rows:
        conn.execute(_INSERT_MEETING, rows)


def _meeting_row(meeting: Meeting, now: datetime) -> dict[str, Any]:
    check_length(meeting)  # every insert comes through here
    return {
        "request_id": meeting.request_id, "center_id": meeting.center_id,
        "specialist_id": meeting.specialist_id, "language": meeting.language,
        "start_utc": meeting.start, "end_utc": meeting.end, "revision": meeting.revision,
        "uid": meeting.uid, "join_url": meeting.join_url, "status": "active",
        "created_at": now, "updated_at": now,
    }
