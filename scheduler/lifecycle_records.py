"""What the lifecycle and the timed work read and claim in the existing tables.

Messages (cancels, reschedules, reminders) are claimed before they are sent: one row per
(UID, SEQUENCE, METHOD) in ``invite_deliveries``, inserted first, so of two processes that would
send the same message only the one whose insert succeeds sends it. Reminders use the same rows
with METHOD ``REMIND-<kind>`` and SEQUENCE = the meeting's revision.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from scheduler.db import invite_deliveries, meetings, read_connection, requests
from scheduler.invites import HANDOVER
from scheduler.meeting_changes import meeting_from_row
from schemas.errors import parse_message
from schemas.events import Meeting
from schemas.help_request import HelpRequest

REMINDER_PREFIX = "REMIND-"
#: A moved meeting's CANCEL in the calendar of the organizer that held it before (another
#: center's, or another backend's), recorded with the SEQUENCE of the move's REQUEST (the
#: revision it cancels). The CANCEL to a handed-over specialist alone is recorded as
#: :data:`scheduler.invites.HANDOVER`, the same way.
MOVED_AWAY = "CANCEL-MOVED"
#: The timed work's escalation event on ``requests.escalated``, claimed before the status
#: changes and settled once published, so reconciliation publishes one that failed. Its UID is
#: :func:`escalation_key` (the request's, apart from any meeting's), its SEQUENCE 0.
ANNOUNCE = "ESCALATED"  # the column holds 16 characters
#: A reminder's claim settled after a transient failure: the next planning sends it again.
RETRYING = "retrying"
MEETING_PAGE = 1000  # meetings read per page when walking a span of time


def escalation_key(request_id: str) -> str:
    """The delivery record's UID for a request's escalation announcement."""
    return f"escalation:{request_id}"


@dataclass(frozen=True, slots=True)
class SentMessage:
    """One row of the delivery record."""

    uid: str
    request_id: str
    sequence: int
    method: str
    backend: str
    status: str
    at: datetime


@dataclass(frozen=True, slots=True)
class DueRequest:
    request_id: str
    status: str
    accepted_at: datetime


class LifecycleRecords:
    """Reads and claims over ``requests``, ``meetings`` and ``invite_deliveries``."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def request(self, request_id: str) -> HelpRequest | None:
        """The stored HelpRequest as it was received."""
        body = self.body(request_id)
        # Checked as received at intake; read with the model, as stored then.
        return None if body is None else parse_message(body, HelpRequest)

    def body(self, request_id: str) -> dict[str, object] | None:
        """The stored request body (the JSON object as received)."""
        query = select(requests.c.body).where(requests.c.request_id == request_id)
        with read_connection(self._engine) as conn:
            text = conn.execute(query).scalar_one_or_none()
        return None if text is None else dict(json.loads(text))

    def sent(self, uid: str) -> list[SentMessage]:
        """The messages recorded for a UID, in the order they were first recorded."""
        c = invite_deliveries.c
        query = select(c.uid, c.request_id, c.sequence, c.method, c.backend, c.status, c.at).where(
            c.uid == uid).order_by(c.id)
        with read_connection(self._engine) as conn:
            return [SentMessage(*row) for row in conn.execute(query)]

    def claim(self, uid: str, request_id: str, sequence: int, method: str, backend: str,
              now: datetime, *, again_if: str | None = None) -> bool:
        """Record that this message is being sent; False if someone already claimed it,
        unless its claim was settled ``again_if`` (a status that asks for another attempt):
        then it is claimed again, one attempt more."""
        try:
            with self._engine.begin() as conn:
                conn.execute(insert(invite_deliveries).values(
                    uid=uid, request_id=request_id, sequence=sequence, method=method,
                    backend=backend, status="sending", detail=None, attempts=1, at=now))
        except IntegrityError:
            if again_if is None:
                return False
            c = invite_deliveries.c
            with self._engine.begin() as conn:
                again = conn.execute(
                    update(invite_deliveries)
                    .where(c.uid == uid, c.sequence == sequence, c.method == method,
                           c.status == again_if)
                    .values(status="sending", backend=backend, attempts=c.attempts + 1, at=now))
            return again.rowcount == 1
        return True

    def settle(self, uid: str, sequence: int, method: str, status: str, now: datetime,
               detail: str | None = None) -> None:
        """Record the outcome of a claimed message (``delivered`` or ``failed``)."""
        c = invite_deliveries.c
        with self._engine.begin() as conn:
            conn.execute(update(invite_deliveries)
                         .where(c.uid == uid, c.sequence == sequence, c.method == method)
                         .values(status=status, detail=detail, at=now))

    def stale_claims(self, older_than: datetime, limit: int = 100) -> list[SentMessage]:
        """Claims still ``sending`` or ``failed`` since before ``older_than``: invites, cancels
        and what a move tells the meeting's previous place (not reminders)."""
        c = invite_deliveries.c
        query = (select(c.uid, c.request_id, c.sequence, c.method, c.backend, c.status, c.at)
                 .where(c.status.in_(["sending", "failed"]), c.at < older_than,
                        c.method.in_(["REQUEST", "CANCEL", HANDOVER, MOVED_AWAY, ANNOUNCE]))
                 .order_by(c.at).limit(limit))
        with read_connection(self._engine) as conn:
            return [SentMessage(*row) for row in conn.execute(query)]

    def claimed(self, uids: list[str], prefix: str = REMINDER_PREFIX) -> set[tuple[str, int, str]]:
        """(uid, sequence, method) of the claimed messages whose method starts with ``prefix``,
        except those settled :data:`RETRYING` (to be attempted again)."""
        c = invite_deliveries.c
        if not uids:
            return set()
        query = select(c.uid, c.sequence, c.method).where(c.uid.in_(uids),
                                                          c.method.startswith(prefix),
                                                          c.status != RETRYING)
        with read_connection(self._engine) as conn:
            return {(row.uid, row.sequence, row.method) for row in conn.execute(query)}

    def unbooked_since(self, accepted_before: datetime, limit: int = 500) -> list[DueRequest]:
        """Requests accepted before the given time that are still not booked."""
        r = requests.c
        query = (select(r.request_id, r.status, r.accepted_at)
                 .where(r.status.in_(["accepted", "routed"]), r.accepted_at <= accepted_before)
                 .order_by(r.accepted_at, r.request_id).limit(limit))
        with read_connection(self._engine) as conn:
            return [DueRequest(*row) for row in conn.execute(query)]

    def meetings_starting(self, start: datetime, end: datetime) -> list[Meeting]:
        """Active meetings of invited requests that start in [start, end), by start."""
        return [meeting for page in self.meeting_pages(start, end) for meeting in page]

    def meeting_pages(self, start: datetime, end: datetime, page_size: int | None = None,
                      changed_since: datetime | None = None) -> Iterator[list[Meeting]]:
        """:meth:`meetings_starting` a page at a time, each page read in its own short
        transaction and continuing after the last (start, request id) of the one before, so
        that walking the coming months holds one page in memory, not every meeting.

        Meetings of requests that are booked or invited: a booked one may be waiting for an
        invite its center or specialist can no longer send.

        ``changed_since``: only the meetings recorded (booked or moved) at or after it, or
        whose request changed status at or after it (stamped ``created_at``, ``updated_at``).
        """
        page_size = MEETING_PAGE if page_size is None else page_size
        if page_size < 1:
            raise ValueError(f"page_size: {page_size} is not positive")
        m, r = meetings.c, requests.c
        query = (select(meetings)
                 .join(requests, r.request_id == m.request_id)
                 .where(m.status == "active", m.start_utc >= start, m.start_utc < end,
                        r.status.in_(["booked", "invited"]))
                 .order_by(m.start_utc, m.request_id).limit(page_size))
        if changed_since is not None:
            query = query.where(or_(m.created_at >= changed_since,
                                    r.updated_at >= changed_since))
        after: tuple[datetime, str] | None = None
        while True:
            page_query = query if after is None else query.where(or_(
                m.start_utc > after[0], and_(m.start_utc == after[0], m.request_id > after[1])))
            with read_connection(self._engine) as conn:
                page = [meeting_from_row(row) for row in conn.execute(page_query)]
            if page:
                yield page
            if len(page) < page_size:
                return
            after = (page[-1].start, page[-1].request_id)

    def meeting_revision(self, request_id: str, revision: int) -> Meeting | None:
        """The request's meeting at ``revision``, active or not (None if it never had one)."""
        query = (select(meetings)
                 .where(meetings.c.request_id == request_id, meetings.c.revision == revision)
                 .order_by(meetings.c.id.desc()).limit(1))
        with read_connection(self._engine) as conn:
            row = conn.execute(query).first()
        return None if row is None else meeting_from_row(row)

    def orphaned_meetings(self, limit: int = 100) -> list[Meeting]:
        """Active meetings of requests that ended without them (cancelled, escalated, ...)."""
        m, r = meetings.c, requests.c
        query = (select(meetings)
                 .join(requests, r.request_id == m.request_id)
                 .where(m.status == "active",
                        r.status.in_(["cancelled", "escalated", "rejected", "deadlettered"]))
                 .limit(limit))
        with read_connection(self._engine) as conn:
            return [meeting_from_row(row) for row in conn.execute(query)]

    def uninvited_moves(self, limit: int = 100) -> list[Meeting]:
        """Active meetings of invited requests whose REQUEST was never recorded (a crash
        between moving a meeting and sending its update)."""
        m, r, d = meetings.c, requests.c, invite_deliveries.c
        sent = and_(d.uid == m.uid, d.sequence == m.revision - 1, d.method == "REQUEST")
        query = (select(meetings)
                 .join(requests, r.request_id == m.request_id)
                 .outerjoin(invite_deliveries, sent)
                 .where(m.status == "active", r.status == "invited", m.revision > 1,
                        d.id.is_(None))
                 .limit(limit))
        with read_connection(self._engine) as conn:
            return [meeting_from_row(row) for row in conn.execute(query)]

