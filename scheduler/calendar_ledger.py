"""A booking ledger that also sees the specialists' own calendars (free/busy).

Wraps any ledger: the schedules the booking policy reads are the ledger's meetings merged with
what each specialist's calendar backend (CalDAV, EWS, Graph) says they are busy with, so a
booked meeting never lands on something already in a specialist's calendar. Recording stays
the ledger's.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from scheduler.delivery import BusyCalendar, merge_spans
from scheduler.directory import CenterDirectory
from scheduler.ledger import BookingLedger, Span
from schemas.events import Meeting


class CalendarAwareLedger:
    """``ledger`` plus busy spans from the specialists' calendars.

    ``directory`` is read for each schedule, so specialists and centers added (or backends
    changed) by a directory reload are asked too; ``calendar_of(center_id)`` is the center's
    calendar backend, or None when its backend reads no calendars.
    """

    def __init__(self, ledger: BookingLedger, directory: Callable[[], CenterDirectory],
                 calendar_of: Callable[[str], BusyCalendar | None]) -> None:
        self._ledger = ledger
        self._directory = directory
        self._calendar_of = calendar_of
        self._people_of: tuple[CenterDirectory, dict[str, tuple[BusyCalendar, str]]] | None = None

    @classmethod
    def for_directory(cls, ledger: BookingLedger, directory: CenterDirectory,
                      calendars: Mapping[str, BusyCalendar]) -> BookingLedger:
        """Wrap ``ledger`` for the centers in ``calendars`` (center id → calendar) of a
        directory that does not change; ``ledger`` itself when none of its centers has one."""
        if not any(center.id in calendars for center in directory.centers):
            return ledger
        return cls(ledger, lambda: directory, calendars.get)

    def _people(self) -> Mapping[str, tuple[BusyCalendar, str]]:
        """Specialist id → (their calendar, email), for the directory as it is now."""
        directory = self._directory()
        if self._people_of is None or self._people_of[0] is not directory:
            people = {s.id: (calendar, str(s.email)) for c in directory.centers
                      if (calendar := self._calendar_of(c.id)) is not None
                      for s in c.specialists}
            self._people_of = (directory, people)
        return self._people_of[1]

    @property
    def within(self) -> Callable[..., Any]:
        """The wrapped ledger's transaction-bound form, while no specialist has a calendar to
        ask: a batch's transaction must not wait on a calendar server. AttributeError (so
        ``getattr(ledger, "within", None)`` is None) otherwise, or when the ledger has none."""
        if self._people():
            raise AttributeError("within: specialists' calendars are asked over the network")
        within: Callable[..., Any] = getattr(self._ledger, "within")  # noqa: B009
        return within

    def meeting_for(self, request_id: str) -> Meeting | None:
        return self._ledger.meeting_for(request_id)

    def schedules(self, specialist_ids: Iterable[str], start: datetime,
                  end: datetime) -> Mapping[str, Sequence[Span]]:
        ids = list(specialist_ids)
        booked = self._ledger.schedules(ids, start, end)
        asked: dict[int, tuple[BusyCalendar, dict[str, str]]] = {}
        people = self._people()
        for specialist_id in ids:
            if specialist_id in people:
                calendar, email = people[specialist_id]
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
