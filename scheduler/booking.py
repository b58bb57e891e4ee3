"""The booking policy (DESIGN §7): a slot and a specialist at the routed center, or the next one.

The search runs over a snapshot of the specialists' schedules read from the ledger; the ledger
then records the meeting and is the arbiter when another worker took the slot meanwhile
(:class:`SpecialistBusy`), in which case the search goes on from that slot with a fresh snapshot.
"""

from __future__ import annotations

import uuid
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from scheduler.business_hours import slots_on
from scheduler.directory import Center, CenterDirectory, Specialist
from scheduler.ledger import BookingLedger, RequestAlreadyBooked, Span, SpecialistBusy
from schemas.events import Meeting, Reason, RoutingDecision

_ONE_DAY = timedelta(days=1)
_UID_NAMESPACE = uuid.UUID("6f2b8e0c-3c1a-4f57-9a43-0d3c7f1b2a55")
MAX_CONFLICT_RETRIES = 50


class BookingConflictStorm(RuntimeError):
    """The ledger kept refusing slots the snapshot showed free; another writer is racing hard."""


@dataclass(frozen=True, slots=True)
class BookingOutcome:
    """A meeting, or None with the reasons nothing could be booked."""

    meeting: Meeting | None
    reasons: list[Reason] = field(default_factory=list)
    already_booked: bool = False


def meeting_uid(request_id: str) -> str:
    """One stable iCalendar UID per request: a replay or reschedule keeps it."""
    return f"{uuid.uuid5(_UID_NAMESPACE, request_id)}@fasttrack.example.com"


class FullDays:
    """Days with nothing left to offer, per (center, language): every speaker at the cap, or closed.

    Adding meetings only ever fills days, so the memo stays true while nothing is released and
    the directory is unchanged; offline simulation passes one. It maps each such day to the next
    day worth looking at, with path compression, so a run of full days is crossed in one step.
    """

    def __init__(self) -> None:
        self._next: dict[tuple[str, str, date], date] = {}

    def first_open(self, center_id: str, language: str, day: date) -> date:
        """The first day on or after ``day`` not known to be full."""
        path = []
        while (key := (center_id, language, day)) in self._next:
            path.append(key)
            day = self._next[key]
        for key in path:
            self._next[key] = day
        return day

    def mark_full(self, center_id: str, language: str, day: date) -> None:
        self._next[(center_id, language, day)] = day + _ONE_DAY


JoinUrl = Callable[[Center, str], str | None]


def no_join_url(center: Center, uid: str) -> str | None:
    return None


def book(decision: RoutingDecision, directory: CenterDirectory, ledger: BookingLedger,
         full_days: FullDays | None = None, join_url: JoinUrl = no_join_url, *,
         earliest: datetime | None = None) -> BookingOutcome:
    """Book the routed request; try the other candidates by (earliest start, id) when full.

    ``join_url(center, uid)`` gives the online meeting link recorded with the booking.
    ``earliest``: the first start the booker's clock allows (now + the minimum notice). A
    decision routed earlier (a backlog, a redelivery, a redrive) searches from there, never
    from a start that has passed.
    """
    existing = ledger.meeting_for(decision.request_id)
    if existing is not None:
        return BookingOutcome(existing, already_booked=True)
    if decision.center_id is None or decision.language is None or decision.not_before is None:
        return BookingOutcome(None, list(decision.reasons))
    not_before = decision.not_before
    if earliest is not None and earliest > not_before:
        not_before = earliest
        decision = decision.model_copy(update={"not_before": earliest})

    order = _centers_to_try(decision)
    policy = directory.policy
    until = not_before + timedelta(days=policy.horizon_days)
    windows = [decision.not_after] if decision.not_after is None else [decision.not_after, None]
    for not_after in windows:
        for rank, center_id in enumerate(order):
            try:
                meeting = _book_at(decision, directory, directory.center(center_id),
                                   until, not_after, ledger, full_days, join_url)
            except RequestAlreadyBooked as exc:
                return BookingOutcome(exc.existing, already_booked=True)
            if meeting is not None:
                reasons = [] if rank == 0 else [Reason.CAPACITY]
                if not_after is None and decision.not_after is not None:
                    reasons.append(Reason.WINDOW_UNAVAILABLE)
                return BookingOutcome(meeting, reasons)
    return BookingOutcome(None, [Reason.NO_CAPACITY])


def first_choice_specialists(decisions: Iterable[RoutingDecision],
                             directory: CenterDirectory) -> set[str]:
    """Whom :func:`book` tries first for these decisions: the speakers of each decision's
    language at its routed center. A batch reserves them before booking (see
    ``BatchLedger.reserve``); the other candidates' speakers are needed only on overflow."""
    found: set[str] = set()
    for decision in decisions:
        if decision.center_id is None or decision.language is None:
            continue
        center = directory.by_id.get(decision.center_id)
        if center is not None:
            found.update(s.id for s in center.specialists if decision.language in s.languages)
    return found


def _centers_to_try(decision: RoutingDecision) -> list[str]:
    """The routed center, then the other candidates in the decision's order."""
    assert decision.center_id is not None
    others = [c for c in decision.candidates if c.center_id != decision.center_id]
    return [decision.center_id, *(c.center_id for c in others)]


def _book_at(decision: RoutingDecision, directory: CenterDirectory, center: Center,
             until: datetime, not_after: datetime | None, ledger: BookingLedger,
             full_days: FullDays | None, join_url: JoinUrl) -> Meeting | None:
    assert decision.language is not None and decision.not_before is not None
    speakers = [s for s in center.specialists if decision.language in s.languages]
    if not speakers:
        return None
    length = timedelta(minutes=directory.policy.meeting_minutes)
    start_from = decision.not_before
    for _ in range(MAX_CONFLICT_RETRIES):
        schedule = _Schedule.read(ledger, center, speakers, start_from, until + length)
        for start in _open_slots(center, directory, schedule, decision.language, start_from,
                                 until, full_days):
            if not_after is not None and start > not_after:
                return None
            specialist = schedule.pick(start, start + length)
            if specialist is None:
                continue
            uid = meeting_uid(decision.request_id)
            meeting = Meeting(
                request_id=decision.request_id, center_id=center.id,
                specialist_id=specialist.id, language=decision.language,
                start=start, end=start + length, uid=uid, join_url=join_url(center, uid),
            )
            try:
                return ledger.record(meeting)
            except SpecialistBusy:
                start_from = start
                break
        else:
            return None
    raise BookingConflictStorm(
        f"request {decision.request_id}: {MAX_CONFLICT_RETRIES} slots at {center.id} were taken "
        "between reading the schedule and recording the meeting")


def _open_slots(center: Center, directory: CenterDirectory, schedule: _Schedule,
                language: str, start_from: datetime, until: datetime,
                full_days: FullDays | None) -> Iterator[datetime]:
    """Slot starts in [start_from, until) on days when some speaker is still under the cap.

    Full days are skipped whole (and remembered in ``full_days`` when given): a busy center's
    near days are usually full, so a search that ends in escalation stays cheap.
    """
    zone, policy = center.zone, directory.policy
    day, last = start_from.astimezone(zone).date(), until.astimezone(zone).date()
    while day <= last:
        if full_days is not None:
            day = full_days.first_open(center.id, language, day)
            if day > last:
                return
        slots = slots_on(center, policy, day)
        if not slots or schedule.day_full(day):
            if full_days is not None:
                full_days.mark_full(center.id, language, day)
        else:
            for start in slots[bisect_left(slots, start_from):]:
                if start >= until:
                    return
                yield start
        day += _ONE_DAY


@lru_cache(maxsize=1 << 10)  # (zone, date) keys: business_hours' bound for (center, date)
def _day_bounds(zone: ZoneInfo, day: date) -> tuple[tuple[datetime], tuple[datetime]]:
    """A local date's [midnight, next midnight) in UTC, as bisect keys for span tuples."""
    low = datetime.combine(day, time(), zone).astimezone(UTC)
    high = datetime.combine(day + timedelta(days=1), time(), zone).astimezone(UTC)
    return (low,), (high,)


@dataclass
class _Schedule:
    """The speakers' busy spans (sorted, non-overlapping) with O(log n) overlap and day counts."""

    center: Center
    speakers: list[Specialist]
    spans: Mapping[str, Sequence[Span]]
    _counts: dict[tuple[str, date], int] = field(default_factory=dict)

    @classmethod
    def read(cls, ledger: BookingLedger, center: Center, speakers: Iterable[Specialist],
             start: datetime, end: datetime) -> _Schedule:
        speakers = list(speakers)
        # From local midnight, so the day's meeting count is complete for the per-day cap.
        local = start.astimezone(center.zone)
        day_start = local.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(hours=3)
        return cls(center, speakers, ledger.schedules([s.id for s in speakers], day_start, end))

    def _count(self, specialist_id: str, day: date) -> int:
        key = (specialist_id, day)
        count = self._counts.get(key)
        if count is None:
            low, high = _day_bounds(self.center.zone, day)
            spans = self.spans.get(specialist_id, ())
            count = self._counts[key] = bisect_left(spans, high) - bisect_left(spans, low)
        return count

    def _overlaps(self, specialist_id: str, start: datetime, end: datetime) -> bool:
        spans = self.spans.get(specialist_id, ())
        i = bisect_left(spans, (end,))  # first span starting at or after ``end``
        return i > 0 and spans[i - 1][1] > start

    def day_full(self, day: date) -> bool:
        return all(self._count(s.id, day) >= s.max_meetings_per_day for s in self.speakers)

    def pick(self, start: datetime, end: datetime) -> Specialist | None:
        """Free and under the day's cap; fewest meetings that day first, then id."""
        day = start.astimezone(self.center.zone).date()
        best: tuple[int, str, Specialist] | None = None
        for specialist in self.speakers:
            count = self._count(specialist.id, day)
            if count >= specialist.max_meetings_per_day or self._overlaps(specialist.id, start,
                                                                          end):
                continue
            if best is None or (count, specialist.id) < best[:2]:
                best = (count, specialist.id, specialist)
        return best[2] if best else None
