"""The waitlist's choice: who gets a cancelled meeting's slot (furthest in the future first),
and which specialist takes it under the booking policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from scheduler.booking import meeting_uid
from scheduler.directory import CenterDirectory, parse_directory
from scheduler.ledger import Span
from scheduler.waitlist import Candidate, choose_beneficiary
from schemas.events import Meeting
from tests.unit.conftest import directory_data

TAIPEI = ZoneInfo("Asia/Taipei")
NOW = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)  # Monday 09:30 in Taipei
HOUR = timedelta(hours=1)


def local(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=TAIPEI).astimezone(UTC)


def meeting(request_id: str, start: datetime, specialist: str = "taipei-01",
            language: str = "en", center: str = "taipei") -> Meeting:
    return Meeting(request_id=request_id, center_id=center, specialist_id=specialist,
                   language=language, start=start, end=start + HOUR,
                   uid=meeting_uid(request_id))


FREED = meeting("r-freed", local(11, 30, 14))  # Monday 14:00, specialist taipei-01
MONDAY = local(11, 30, 9)


def directory(cap: int = 3, closures: tuple[str, ...] = ()) -> CenterDirectory:
    data = directory_data(("taipei", "tokyo"))
    for center in data["centers"]:
        center["closures"] = list(closures)
        for specialist in center["specialists"]:
            specialist["max_meetings_per_day"] = cap
    return parse_directory(data, "<waitlist directory>")


def waiting(request_id: str, start: datetime, *, not_before: datetime = NOW + 4 * HOUR,
            **where: str) -> Candidate:
    return Candidate(meeting(request_id, start, **where), not_before)


def busy(*hours: int, day: datetime = MONDAY) -> list[Span]:
    """Spans on the given local day starting at these hours past 09:00."""
    return [(day + (h - 9) * HOUR, day + (h - 8) * HOUR) for h in hours]


@dataclass(frozen=True)
class Case:
    candidates: list[Candidate]
    chosen: str | None
    specialist: str | None = "taipei-01"
    schedules: dict[str, list[Span]] = field(default_factory=dict)
    cap: int = 3
    closures: tuple[str, ...] = ()
    now: datetime = NOW


CASES = {
    "furthest-in-future-wins": Case(
        [waiting("r-tue", local(12, 1, 10)), waiting("r-wed", local(12, 2, 10)),
         waiting("r-mon", local(11, 30, 16))], "r-wed"),
    "same-start-ties-by-request-id": Case(
        [waiting("r-b", local(12, 2, 10)),
         waiting("r-a", local(12, 2, 10), specialist="taipei-02")], "r-a"),
    "window-earliest-after-the-slot-excludes": Case(
        [waiting("r-late", local(12, 2, 10), not_before=local(12, 1, 9)),
         waiting("r-ok", local(12, 1, 10))], "r-ok"),
    "window-earliest-exactly-the-slot-admits": Case(
        [waiting("r-edge", local(12, 2, 10), not_before=FREED.start)], "r-edge"),
    "another-language-excludes": Case(
        [waiting("r-zh", local(12, 2, 10), language="zh-Hant"),
         waiting("r-en", local(12, 1, 10))], "r-en"),
    "another-center-excludes": Case(
        [waiting("r-tokyo", local(12, 2, 10), center="tokyo", specialist="tokyo-01")], None),
    "nobody-later-gives-none": Case(
        [waiting("r-earlier", local(11, 30, 10)), waiting("r-same", FREED.start,
                                                          specialist="taipei-02")], None),
    "no-candidates-gives-none": Case([], None),
    "the-cap-excludes-when-every-speaker-is-full": Case(
        [waiting("r-wed", local(12, 2, 10))], None, cap=2,
        schedules={"taipei-01": busy(9, 10), "taipei-02": busy(9, 16)}),
    "the-moved-meeting-leaves-its-old-day": Case(
        [waiting("r-mon", local(11, 30, 16))], "r-mon", cap=3,
        schedules={"taipei-01": busy(9, 10, 16), "taipei-02": busy(9, 10, 11)}),
    "the-freed-specialist-keeps-the-slot-over-a-less-busy-one": Case(
        [waiting("r-wed", local(12, 2, 10), specialist="taipei-02")], "r-wed",
        schedules={"taipei-01": busy(9, 10)}),
    "another-speaker-when-the-freed-one-is-taken": Case(
        [waiting("r-wed", local(12, 2, 10))], "r-wed", specialist="taipei-02",
        schedules={"taipei-01": busy(14)}),
    "less-than-the-notice-before-the-slot-gives-none": Case(
        [waiting("r-wed", local(12, 2, 10))], None, now=FREED.start - HOUR),
    "a-slot-now-closed-gives-none": Case(
        [waiting("r-wed", local(12, 2, 10))], None, closures=("2026-11-30",)),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_choose_beneficiary(case: Case) -> None:
    offer = choose_beneficiary(FREED, case.candidates, directory(case.cap, case.closures),
                               case.schedules, case.now)

    assert (offer and offer.candidate.request_id) == case.chosen
    if offer is not None:
        assert offer.meeting.specialist_id == case.specialist


def test_the_offer_is_the_next_revision_of_the_same_booking_in_the_freed_slot() -> None:
    current = waiting("r-wed", local(12, 2, 10), specialist="taipei-02")
    offer = choose_beneficiary(FREED, [current], directory(), {}, NOW)

    assert offer is not None
    moved = offer.meeting
    assert (moved.request_id, moved.uid, moved.revision) == ("r-wed", meeting_uid("r-wed"), 2)
    assert (moved.start, moved.end) == (FREED.start, FREED.end)
    assert (moved.center_id, moved.language) == ("taipei", "en")
