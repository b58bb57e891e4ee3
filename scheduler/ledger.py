"""The booking ledger port and its in-memory adapter.

The booking policy reads a snapshot of the specialists' schedules, searches in memory, then asks
the ledger to record the meeting. The ledger is the arbiter: a slot that another worker took in
the meantime raises :class:`SpecialistBusy` (the SQL ledger lets the database constraint decide),
and the policy searches again.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Protocol

from schemas.events import Meeting

Span = tuple[datetime, datetime]

#: The longest meeting a ledger records (the directory's longest ``meeting_minutes``). The SQL
#: ledger's schedule read relies on it: a meeting that overlaps a window starting at S started
#: after S - MAX_MEETING, so the read walks the specialist's index from there, not from the
#: first meeting they ever had. The schema holds the same rule (migration 0004, whose SQLite
#: overlap triggers rely on it too): changing it takes a migration.
MAX_MEETING = timedelta(hours=8)


class SpecialistBusy(RuntimeError):
    """The specialist already has a meeting overlapping the one being booked."""

    def __init__(self, specialist_id: str, start: datetime) -> None:
        self.specialist_id = specialist_id
        self.start = start
        super().__init__(f"specialist {specialist_id} is already booked at {start.isoformat()}")


class RequestAlreadyBooked(RuntimeError):
    """The request already has a meeting; ``existing`` is it."""

    def __init__(self, existing: Meeting) -> None:
        self.existing = existing
        super().__init__(f"request {existing.request_id} is already booked")


class MeetingTooLong(ValueError):
    """The meeting lasts longer than :data:`MAX_MEETING`."""

    def __init__(self, meeting: Meeting) -> None:
        self.meeting = meeting
        super().__init__(f"meeting.end: {meeting.end.isoformat()} is {meeting.end - meeting.start} "
                         f"after its start; a meeting lasts at most {MAX_MEETING}")


def check_length(meeting: Meeting) -> Meeting:
    """``meeting``, if it lasts at most :data:`MAX_MEETING`; else :class:`MeetingTooLong`."""
    if meeting.end - meeting.start > MAX_MEETING:
        raise MeetingTooLong(meeting)
    return meeting


class BookingLedger(Protocol):
    """Where meetings are recorded. Implementations: in-memory here, SQL in ``sql_ledger``."""

    def meeting_for(self, request_id: str) -> Meeting | None:
        """The active meeting of a request, if any."""

    def schedules(self, specialist_ids: Iterable[str], start: datetime,
                  end: datetime) -> Mapping[str, Sequence[Span]]:
        """Each specialist's busy spans, sorted and non-overlapping, read-only.

        At least every span overlapping [start, end); an adapter may return more (the in-memory
        one hands out its live index rather than copying it).
        """

    def record(self, meeting: Meeting) -> Meeting:
        """Record a meeting; raise SpecialistBusy or RequestAlreadyBooked if it conflicts, and
        MeetingTooLong if it lasts longer than MAX_MEETING."""

    def release(self, request_id: str) -> Meeting | None:
        """Free the request's meeting (cancel); return what was freed."""


class MeetingLinks(Protocol):
    """Where the online meeting link a delivery backend made (Teams) is recorded."""

    def set_join_url(self, request_id: str, join_url: str) -> Meeting | None:
        """Attach ``join_url`` to the request's active meeting; None if there is none."""


class InMemoryLedger:
    """A ledger in dictionaries with sorted spans per specialist: O(log n) per lookup."""

    def __init__(self) -> None:
        self._meetings: dict[str, Meeting] = {}
        self._spans: dict[str, list[Span]] = {}

    def __len__(self) -> int:
        return len(self._meetings)

    def meeting_for(self, request_id: str) -> Meeting | None:
        return self._meetings.get(request_id)

    def schedules(self, specialist_ids: Iterable[str], start: datetime,
                  end: datetime) -> dict[str, Sequence[Span]]:
        return {sid: self._spans.get(sid, ()) for sid in specialist_ids}

    def record(self, meeting: Meeting) -> Meeting:
        check_length(meeting)
        existing = self._meetings.get(meeting.request_id)
        if existing is not None:
            raise RequestAlreadyBooked(existing)
        spans = self._spans.setdefault(meeting.specialist_id, [])
        i = bisect_left(spans, (meeting.start, meeting.end))
        neighbours = spans[max(i - 1, 0): i + 1]
        if any(s < meeting.end and meeting.start < e for s, e in neighbours):
            raise SpecialistBusy(meeting.specialist_id, meeting.start)
        insort(spans, (meeting.start, meeting.end))
        self._meetings[meeting.request_id] = meeting
        return meeting

    def set_join_url(self, request_id: str, join_url: str) -> Meeting | None:
        meeting = self._meetings.get(request_id)
        if meeting is not None:
            meeting = self._meetings[request_id] = meeting.model_copy(
                update={"join_url": join_url})
        return meeting

    def release(self, request_id: str) -> Meeting | None:
        meeting = self._meetings.pop(request_id, None)
        if meeting is not None:
            spans = self._spans[meeting.specialist_id]
            del spans[bisect_left(spans, (meeting.start, meeting.end))]  # O(log n) to find
        return meeting
