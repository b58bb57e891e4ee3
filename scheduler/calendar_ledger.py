"""A booking ledger that also sees the specialists' own calendars (free/busy).

Wraps any ledger: the schedules the booking policy reads are the ledger's meetings merged with
what the center's calendar backend says each specialist is busy with, so a booked meeting never
lands on top of something already in a specialist's calendar. Recording stays the ledger's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from scheduler.delivery import BusyCalendar, merge_spans
from scheduler.directory import Center
from scheduler.ledger import BookingLedger, Span
from schemas.events import Meeting


class CalendarAwareLedger:
    """``ledger`` plus ``calendar``'s busy spans for the specialists of ``center``."""

    def __init__(self, ledger: BookingLedger, calendar: BusyCalendar, center: Center) -> None:
        self._ledger = ledger
        self._calendar = calendar
        self._emails = {s.id: str(s.email) for s in center.specialists}

    def meeting_for(self, request_id: str) -> Meeting | None:
        return self._ledger.meeting_for(request_id)

    def schedules(self, specialist_ids: Iterable[str], start: datetime,
                  end: datetime) -> Mapping[str, Sequence[Span]]:
        ids = list(specialist_ids)
        booked = self._ledger.schedules(ids, start, end)
        emails = {self._emails[i]: i for i in ids if i in self._emails}
        busy = self._calendar.busy(list(emails), start, end)
        merged: dict[str, Sequence[Span]] = {}
        for specialist_id in ids:
            email = self._emails.get(specialist_id)
            extra = busy.get(email, []) if email else []
            own = booked.get(specialist_id, ())
            merged[specialist_id] = merge_spans([*own, *extra]) if extra else own
        return merged

    def record(self, meeting: Meeting) -> Meeting:
        return self._ledger.record(meeting)

    def release(self, request_id: str) -> Meeting | None:
        return self._ledger.release(request_id)
