"""A booking ledger that also sees the specialists' own calendars (free/busy).

Wraps any ledger: the schedules the booking policy reads are the ledger's meetings merged with
what each specialist's calendar backend (CalDAV, EWS, Graph) says they are busy with, so a
booked meeting never lands on something already in a specialist's calendar. Recording stays
the ledger's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

from scheduler.delivery import BusyCalendar, merge_spans
from scheduler.directory import CenterDirectory
from scheduler.ledger import BookingLedger, Span
from schemas.events import Meeting


class CalendarAwareLedger:
    """``ledger`` plus busy spans from ``people``: specialist id → (their calendar, email)."""

    def __init__(self, ledger: BookingLedger,
                 people: Mapping[str, tuple[BusyCalendar, str]]) -> None:
        self._ledger = ledger
        self._people = people

    @classmethod
    def for_directory(cls, ledger: BookingLedger, directory: CenterDirectory,
                      calendars: Mapping[str, BusyCalendar]) -> BookingLedger:
        """Wrap ``ledger`` for the centers in ``calendars`` (center id → calendar), if any."""
        people = {s.id: (calendars[c.id], str(s.email))
                  for c in directory.centers if c.id in calendars for s in c.specialists}
        return cls(ledger, people) if people else ledger

    def meeting_for(self, request_id: str) -> Meeting | None:
        return self._ledger.meeting_for(request_id)

    def schedules(self, specialist_ids: Iterable[str], start: datetime,
                  end: datetime) -> Mapping[str, Sequence[Span]]:
        ids = list(specialist_ids)
        booked = self._ledger.schedules(ids, start, end)
        asked: dict[int, tuple[BusyCalendar, dict[str, str]]] = {}
        for specialist_id in ids:
            if specialist_id in self._people:
                calendar, email = self._people[specialist_id]
                asked.setdefault(id(calendar), (calendar, {}))[1][email] = specialist_id
        extra: dict[str, list[Span]] = defaultdict(list)
        for calendar, emails in asked.values():
            for email, spans in calendar.busy(list(emails), start, end).items():
                if email in emails:
                    extra[emails[email]].extend(spans)
        return {sid: merge_spans([*booked.get(sid, ()), *extra[sid]]) if extra.get(sid)
                else booked.get(sid, ()) for sid in ids}

    def record(self, meeting: Meeting) -> Meeting:
        return self._ledger.record(meeting)

    def release(self, request_id: str) -> Meeting | None:
        return self._ledger.release(request_id)
