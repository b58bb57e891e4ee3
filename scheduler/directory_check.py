"""Which booked meetings a changed directory no longer allows, and why (pure; time passed in)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from scheduler.business_hours import opening_spans
from scheduler.directory import CenterDirectory
from schemas.events import Meeting


class Invalidity(StrEnum):
    CENTER_REMOVED = "center_removed"
    SPECIALIST_REMOVED = "specialist_removed"
    LANGUAGE_REMOVED = "language_removed"  # the specialist no longer speaks the meeting's
    CLOSED_THAT_DAY = "closed_that_day"  # closure, holiday, or no hours that weekday any more
    OUTSIDE_HOURS = "outside_hours"  # open that day, but not for the whole meeting


class InvalidMeeting(NamedTuple):
    meeting: Meeting
    reason: Invalidity


def invalid_meetings(directory: CenterDirectory, meetings: Iterable[Meeting],
                     now: datetime) -> list[InvalidMeeting]:
    """The meetings starting after ``now`` that ``directory`` no longer allows, in input order.

    A meeting is allowed while its center and specialist are in the directory, the specialist
    speaks its language, and ``[start, end)`` lies inside one opening span of its local date.
    """
    found = []
    for meeting in meetings:
        if meeting.start > now:
            reason = invalidity(directory, meeting)
            if reason is not None:
                found.append(InvalidMeeting(meeting, reason))
    return found


def invalidity(directory: CenterDirectory, meeting: Meeting) -> Invalidity | None:
    """Why ``directory`` does not allow ``meeting``, or None when it does."""
    center = directory.by_id.get(meeting.center_id)
    if center is None:
        return Invalidity.CENTER_REMOVED
    specialist = next((s for s in center.specialists if s.id == meeting.specialist_id), None)
    if specialist is None:
        return Invalidity.SPECIALIST_REMOVED
    if meeting.language not in specialist.languages:
        return Invalidity.LANGUAGE_REMOVED
    spans = opening_spans(center, meeting.start.astimezone(center.zone).date())
    if not spans:
        return Invalidity.CLOSED_THAT_DAY
    if not any(opens <= meeting.start and meeting.end <= closes for opens, closes in spans):
        return Invalidity.OUTSIDE_HOURS
    return None
