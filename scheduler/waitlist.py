"""The waitlist: a cancelled meeting's slot goes to the request booked furthest in the future
that could take it, which is moved earlier with an updated invite.

:func:`choose_beneficiary` is the pure choice. A candidate is an invited meeting at the same
center, in the same language, starting after the freed slot, whose request's search window
admits the freed start: ``not_before <= start``. (A latest bound never excludes one: a meeting
inside it starts after the freed slot, so the freed slot is inside it too; a meeting past it
was booked after the bound had to be dropped.) It also needs a specialist under the booking
policy at the freed slot: the freed slot's own specialist when still possible, else the speaker
of the language who is free then and under the day's cap with the fewest meetings that day, then
id (the moved meeting no longer counts where it was). The slot must still be on the grid and
at least the policy's notice away. Of the candidates the latest start wins, ties by request_id.

:func:`offer_freed_slot` claims the freed meeting's offer in the delivery record first (METHOD
``WAITLIST``, SEQUENCE = its revision), so however many processes offer it, at most one moves a
meeting. The move is the reschedule's: conditional on the candidate's revision, old row released
and revision + 1 with the same UID inserted in one transaction; a candidate that changed meanwhile
is passed over for the next. Then the timeline records the move and METHOD:REQUEST goes out with
SEQUENCE = revision - 1.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

import structlog

from scheduler.business_hours import slots_on
from scheduler.directory import Center, CenterDirectory, Specialist
from scheduler.ledger import Span, SpecialistBusy
from scheduler.lifecycle import ChangeOutcome, ChangeResult, Lifecycle, send_update
from scheduler.meeting_changes import MeetingChanged, next_revision
from scheduler.request_store import RequestState, TimelineEntry
from schemas.events import Meeting, RoutingDecision, utc_z
from schemas.help_request import PreferredWindow

WAITLIST_METHOD = "WAITLIST"
MAX_ATTEMPTS = 5
log = structlog.get_logger("fasttrack.waitlist")


@dataclass(frozen=True, slots=True)
class Candidate:
    """An active meeting that might move earlier, and the earliest start its request allows."""

    meeting: Meeting
    not_before: datetime

    @property
    def request_id(self) -> str:
        return self.meeting.request_id


@dataclass(frozen=True, slots=True)
class Offer:
    """The chosen candidate and the meeting it becomes (revision + 1, same UID)."""

    candidate: Candidate
    meeting: Meeting


def choose_beneficiary(freed: Meeting, candidates: Iterable[Candidate],
                       directory: CenterDirectory, schedules: Mapping[str, Sequence[Span]],
                       now: datetime) -> Offer | None:
    """Who gets the freed slot, or None. ``schedules`` are the busy spans of the center's
    specialists over the freed slot's local date (the freed meeting no longer among them)."""
    center = directory.by_id.get(freed.center_id)
    policy = directory.policy
    if center is None or freed.start < now + timedelta(minutes=policy.min_notice_minutes):
        return None
    day = freed.start.astimezone(center.zone).date()
    if freed.start not in slots_on(center, policy, day):
        return None
    end = freed.start + timedelta(minutes=policy.meeting_minutes)
    speakers = [s for s in center.specialists if freed.language in s.languages]
    ordered = sorted(candidates, key=lambda c: (-c.meeting.start.timestamp(), c.request_id))
    for candidate in ordered:
        if not _admits(candidate, freed):
            continue
        specialist = _pick(speakers, freed, end, _local_day(center, day), schedules,
                           candidate.meeting)
        if specialist is not None:
            current = candidate.meeting
            moved = current.model_copy(update={"specialist_id": specialist.id,
                                               "start": freed.start, "end": end})
            return Offer(candidate, next_revision(current, moved))
    return None


def _admits(candidate: Candidate, freed: Meeting) -> bool:
    current = candidate.meeting
    if (current.request_id == freed.request_id or current.center_id != freed.center_id
            or current.language != freed.language or current.start <= freed.start):
        return False
    return freed.start >= candidate.not_before


def _local_day(center: Center, day: date) -> Span:
    return (datetime.combine(day, time(), center.zone),
            datetime.combine(day + timedelta(days=1), time(), center.zone))


def _pick(speakers: list[Specialist], freed: Meeting, end: datetime, day: Span,
          schedules: Mapping[str, Sequence[Span]], own: Meeting) -> Specialist | None:
    """The freed slot's specialist if still possible, else fewest meetings that day, then id."""
    able: list[tuple[int, str, Specialist]] = []
    for specialist in speakers:
        spans = [s for s in schedules.get(specialist.id, ())
                 if not (specialist.id == own.specialist_id and s == (own.start, own.end))]
        count = sum(1 for start, _ in spans if day[0] <= start < day[1])
        busy = any(start < end and freed.start < stop for start, stop in spans)
        if busy or count >= specialist.max_meetings_per_day:
            continue
        if specialist.id == freed.specialist_id:
            return specialist
        able.append((count, specialist.id, specialist))
    return min(able, key=lambda a: a[:2])[2] if able else None


def offer_freed_slot(freed: Meeting, lc: Lifecycle, now: datetime) -> ChangeOutcome | None:
    """Move the best waiting meeting into ``freed``'s slot; None when nobody moved.

    Call it once the freed meeting is released; a repeated or concurrent call does nothing.
    """
    if not lc.records.claim(freed.uid, freed.request_id, freed.revision, WAITLIST_METHOD,
                            "none", now):
        return None
    passed: set[str] = set()
    for _ in range(MAX_ATTEMPTS):
        offer = _best_offer(freed, lc, now, passed)
        if offer is None:
            break
        current = offer.candidate.meeting
        try:
            moved = lc.changes.move(current, offer.meeting)
        except MeetingChanged:
            passed.add(current.request_id)  # changed or cancelled meanwhile: the next one
            continue
        except SpecialistBusy:
            continue  # the slot was booked meanwhile: read the schedules again
        return _announce(freed, current, moved, lc, now)
    lc.records.settle(freed.uid, freed.revision, WAITLIST_METHOD, "skipped", now,
                      "nobody waiting could take the slot")
    return None


def _best_offer(freed: Meeting, lc: Lifecycle, now: datetime,
                passed: set[str]) -> Offer | None:
    """The offer over today's data, reading candidates a day at a time from the latest: a
    candidate starts before its ``not_before`` + horizon, so within the horizon of ``freed``."""
    directory = lc.directory()
    center = directory.by_id.get(freed.center_id)
    if center is None:
        return None
    day = _local_day(center, freed.start.astimezone(center.zone).date())
    speakers = [s.id for s in center.specialists if freed.language in s.languages]
    schedules = lc.ledger.schedules(speakers, day[0], day[1])
    for low, high in _days_backwards(freed.start, directory.policy.horizon_days):
        waiting = [m for m in lc.records.meetings_starting(low, high)
                   if m.center_id == freed.center_id and m.language == freed.language
                   and m.start > freed.start and m.request_id not in passed]
        offer = choose_beneficiary(freed, _candidates(waiting, lc, directory), directory,
                                   schedules, now)
        if offer is not None:
            return offer
    return None


def _days_backwards(start: datetime, days: int) -> Iterator[Span]:
    for k in range(days - 1, -1, -1):
        yield start + timedelta(days=k), start + timedelta(days=k + 1)


def _candidates(waiting: list[Meeting], lc: Lifecycle,
                directory: CenterDirectory) -> list[Candidate]:
    found = []
    for meeting in waiting:
        status = lc.store.status(meeting.request_id)
        not_before = None if status is None else _not_before(meeting.request_id,
                                                             status.timeline, lc, directory)
        if not_before is not None:
            found.append(Candidate(meeting, not_before))
    return found


def _not_before(request_id: str, timeline: list[TimelineEntry], lc: Lifecycle,
                directory: CenterDirectory) -> datetime | None:
    """The earliest start of the request's latest routing: the routed decision's, or the one
    the routing policy gives the window of its latest reschedule, as of that reschedule."""
    for entry in reversed(timeline):
        detail: dict[str, Any] = entry.detail or {}
        if entry.status is RequestState.ROUTED and "decision" in detail:
            decision = RoutingDecision.model_validate(detail["decision"])
            break
        moved = detail.get("rescheduled")
        if entry.status is RequestState.INVITED and isinstance(moved, dict) and "window" in moved:
            request = lc.records.request(request_id)
            if request is None:
                return None
            window = PreferredWindow.model_validate(moved["window"])
            decision = lc.router(request.model_copy(update={"preferred_window": window}),
                                 directory, entry.at)
            break
    else:
        return None
    return decision.not_before


def _announce(freed: Meeting, current: Meeting, moved: Meeting, lc: Lifecycle,
              now: datetime) -> ChangeOutcome:
    """Record the move on the moved request's timeline and send its updated invite."""
    sequence = moved.revision - 1
    lc.store.advance(moved.request_id, RequestState.INVITED, now, {
        "waitlist": True, "from": utc_z(current.start), "to": utc_z(moved.start),
        "freed_by": freed.request_id, "specialist_id": moved.specialist_id,
        "revision": moved.revision, "uid": moved.uid, "sequence": sequence,
    }, moved.center_id)
    lc.records.settle(freed.uid, freed.revision, WAITLIST_METHOD, "moved", now,
                      moved.request_id)
    detail = f"moved up from {utc_z(current.start)} to {utc_z(moved.start)}"
    try:
        send_update(moved, lc, now)
    except Exception as exc:
        # The move stands and the claim is recorded as failed: reconciliation resends it.
        log.warning("waitlist_update_failed", request_id=moved.request_id, uid=moved.uid,
                    sequence=sequence, error=str(exc))
        detail += "; sending the update failed and will be retried"
    return ChangeOutcome(ChangeResult.RESCHEDULED, moved.request_id, detail, moved, sequence,
                         ["waitlist"])
