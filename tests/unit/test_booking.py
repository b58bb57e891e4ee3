"""The booking policy (DESIGN §7): slot, specialist, fairness, caps, overflow, escalation."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.routing import route
from scheduler.booking import book, first_choice_specialists, meeting_uid
from scheduler.business_hours import opening_spans
from scheduler.directory import CenterDirectory, parse_directory
from scheduler.ledger import InMemoryLedger, SpecialistBusy
from schemas.events import Meeting
from schemas.help_request import parse_help_request
from tests.unit.conftest import center, directory_data, help_request, make_directory


def book_request(directory: CenterDirectory, ledger: Any, **request: Any) -> Any:
    parsed = parse_help_request(help_request(**request))
    return book(route(parsed, directory, parsed.submitted_at), directory, ledger)


def one_center(specialists: list[dict[str, Any]], **policy: Any) -> CenterDirectory:
    data = directory_data(**policy)
    taipei = center("taipei", "APAC", "Asia/Taipei", "TW", ["zh-Hant", "en"],
                    ["09:00-12:00", "13:00-18:00"])
    taipei["specialists"] = specialists
    data["centers"] = [taipei]
    return parse_directory(data, "<one center>")


def specialist(sid: str, languages: list[str], cap: int = 4) -> dict[str, Any]:
    return {"id": sid, "name": sid, "email": f"{sid}@example.com", "languages": languages,
            "max_meetings_per_day": cap}


def test_books_the_routed_slot_with_a_speaker_of_the_language() -> None:
    directory = one_center([specialist("a-en", ["en"]), specialist("b-zh", ["zh-Hant"])])
    outcome = book_request(directory, InMemoryLedger(), language="zh-TW")
    assert outcome.meeting is not None
    assert (outcome.meeting.center_id, outcome.meeting.specialist_id) == ("taipei", "b-zh")
    assert outcome.meeting.start == datetime(2026, 11, 23, 5, 30, tzinfo=UTC)
    assert outcome.meeting.end - outcome.meeting.start == timedelta(hours=1)
    assert outcome.meeting.uid == meeting_uid("r-1")
    assert outcome.reasons == []


def test_fewest_meetings_that_day_first_then_id() -> None:
    directory = one_center([specialist("s1", ["en"]), specialist("s2", ["en"])])
    ledger = InMemoryLedger()
    picks = [book_request(directory, ledger, request_id=f"r{n}").meeting for n in range(4)]
    # Both free at 13:30: s1 (id); then s2 has fewer that day; then both at one meeting → s1...
    assert [(m.specialist_id, m.start.hour) for m in picks if m] == [
        ("s1", 5), ("s2", 5), ("s1", 6), ("s2", 6)]


def test_daily_cap_moves_to_the_next_working_day() -> None:
    directory = one_center([specialist("s1", ["en"], cap=2)])
    ledger = InMemoryLedger()
    starts = [book_request(directory, ledger, request_id=f"r{n}").meeting.start for n in range(3)]
    assert starts == [datetime(2026, 11, 23, 5, 30, tzinfo=UTC),
                      datetime(2026, 11, 23, 6, 30, tzinfo=UTC),
                      datetime(2026, 11, 24, 1, 0, tzinfo=UTC)]


def test_full_center_overflows_to_the_next_candidate_with_reason_capacity() -> None:
    directory = make_directory(horizon_days=1)
    ledger = InMemoryLedger()
    # The horizon runs from Monday 13:30 to Tuesday 13:30 Taipei time: 2 specialists x cap 4 on
    # Monday afternoon, and again on Tuesday (09:00, 10:00, 11:00, 13:00). Then Taipei is full.
    outcomes = [book_request(directory, ledger, request_id=f"r{n}") for n in range(18)]
    centers = [o.meeting.center_id for o in outcomes]
    assert centers[:16] == ["taipei"] * 16
    assert set(centers[16:]) <= {"tokyo", "sydney", "dublin", "munich", "redmond"}
    assert all(o.reasons == [] for o in outcomes[:16])
    assert all(o.reasons == ["capacity"] for o in outcomes[16:])


def test_first_choice_specialists_are_the_routed_centers_speakers() -> None:
    """What a batch reserves before booking: the specialist of every booking at the routed
    center is among them; an overflow booking's is not."""
    directory = make_directory(horizon_days=1)
    ledger = InMemoryLedger()
    for n in range(18):  # Taipei fills after 16 (see the overflow test above)
        parsed = parse_help_request(help_request(request_id=f"r{n}"))
        decision = route(parsed, directory, parsed.submitted_at)
        reserved = first_choice_specialists([decision], directory)
        outcome = book(decision, directory, ledger)
        assert outcome.meeting is not None
        assert (outcome.meeting.specialist_id in reserved) is (n < 16)
    taipei = directory.center("taipei")
    assert reserved == {s.id for s in taipei.specialists if "en" in s.languages}

    only_chinese = one_center([specialist("a-en", ["en"]), specialist("b-zh", ["zh-Hant"])])
    parsed = parse_help_request(help_request(language="zh-TW"))
    decision = route(parsed, only_chinese, parsed.submitted_at)
    assert first_choice_specialists([decision], only_chinese) == {"b-zh"}
    unroutable = route(parse_help_request(help_request(language="th")), make_directory(),
                       parsed.submitted_at)
    assert first_choice_specialists([unroutable], make_directory()) == set()


def test_nothing_within_the_horizon_escalates_with_no_capacity() -> None:
    directory = one_center([specialist("s1", ["en"], cap=1)], horizon_days=1)
    ledger = InMemoryLedger()
    # Cap 1 a day: one meeting Monday afternoon, one Tuesday morning, then the horizon ends.
    assert book_request(directory, ledger, request_id="first").meeting is not None
    assert book_request(directory, ledger, request_id="second").meeting is not None
    outcome = book_request(directory, ledger, request_id="third")
    assert (outcome.meeting, outcome.reasons) == (None, ["no_capacity"])


def test_unroutable_decisions_escalate_with_the_routing_reasons() -> None:
    outcome = book_request(make_directory(), InMemoryLedger(), language="th")
    assert (outcome.meeting, outcome.reasons) == (None, ["no_center_for_language"])


def test_booking_the_same_request_again_returns_the_same_meeting() -> None:
    directory, ledger = make_directory(), InMemoryLedger()
    first = book_request(directory, ledger)
    again = book_request(directory, ledger)
    assert again.meeting == first.meeting and again.already_booked
    assert len(ledger) == 1


def test_window_latest_is_honoured_then_dropped_with_reason() -> None:
    directory = one_center([specialist("s1", ["en"], cap=1)])
    ledger = InMemoryLedger()
    window = {"latest": "2026-11-23T08:00:00Z"}
    first = book_request(directory, ledger, request_id="a", preferred_window=window)
    second = book_request(directory, ledger, request_id="b", preferred_window=window)
    assert first.meeting.start == datetime(2026, 11, 23, 5, 30, tzinfo=UTC)
    assert second.meeting.start == datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    assert second.reasons == ["window_unavailable"]


class RacingLedger(InMemoryLedger):
    """Another worker takes the first slot between our snapshot and our insert."""

    def __init__(self) -> None:
        super().__init__()
        self.raced = False

    def record(self, meeting: Meeting) -> Meeting:
        if not self.raced:
            self.raced = True
            super().record(meeting.model_copy(update={"request_id": "other-worker"}))
            raise SpecialistBusy(meeting.specialist_id, meeting.start)
        return super().record(meeting)


def test_a_slot_taken_meanwhile_is_searched_again() -> None:
    directory = one_center([specialist("s1", ["en"])])
    ledger = RacingLedger()
    outcome = book_request(directory, ledger)
    assert outcome.meeting.start == datetime(2026, 11, 23, 6, 30, tzinfo=UTC)
    assert ledger.meeting_for("other-worker").start == datetime(2026, 11, 23, 5, 30, tzinfo=UTC)


# --- invariants over arbitrary demand -------------------------------------------------------

DIRECTORY = make_directory(horizon_days=7)
LANGUAGES = ["en", "zh-TW", "zh-CN", "ja", "de", "fr", "pt-BR", "es", "nl"]
COUNTRIES = ["US", "BR", "DE", "IE", "TW", "JP", "AU", "AE"]

demand = st.lists(
    st.tuples(st.integers(0, 60 * 24 * 10), st.sampled_from(LANGUAGES),
              st.sampled_from(COUNTRIES)),
    min_size=1, max_size=60,
)


def run(requests: list[tuple[int, str, str]]) -> list[Meeting | None]:
    ledger = InMemoryLedger()
    base = datetime(2026, 11, 20, tzinfo=UTC)
    results = []
    for n, (minutes, language, country) in enumerate(sorted(requests)):
        stamp = (base + timedelta(minutes=minutes)).isoformat()
        results.append(book_request(DIRECTORY, ledger, request_id=f"r{n}", submitted_at=stamp,
                                    language=language, country=country).meeting)
    return results


@settings(max_examples=60, deadline=None)
@given(demand)
def test_every_booking_respects_hours_overlap_caps_and_language(
        requests: list[tuple[int, str, str]]) -> None:
    meetings = [m for m in run(requests) if m is not None]
    per_day: Counter[tuple[str, object]] = Counter()
    by_specialist: dict[str, list[Meeting]] = {}
    for meeting in meetings:
        venue = DIRECTORY.center(meeting.center_id)
        person = next(s for s in venue.specialists if s.id == meeting.specialist_id)
        local_day = meeting.start.astimezone(venue.zone).date()
        assert any(start <= meeting.start and meeting.end <= end
                   for start, end in opening_spans(venue, local_day)), "outside business hours"
        assert meeting.language in person.languages
        per_day[(person.id, local_day)] += 1
        assert per_day[(person.id, local_day)] <= person.max_meetings_per_day
        by_specialist.setdefault(person.id, []).append(meeting)
    for booked in by_specialist.values():
        booked.sort(key=lambda m: m.start)
        for before, after in itertools.pairwise(booked):
            assert before.end <= after.start, "specialist double-booked"


@settings(max_examples=20, deadline=None)
@given(demand)
def test_same_demand_gives_the_same_bookings(requests: list[tuple[int, str, str]]) -> None:
    assert run(requests) == run(requests)
