"""A specialist's existing calendar events block booking, whatever the backend that reports them."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from consumers.routing import route
from scheduler.booking import book
from scheduler.calendar_ledger import CalendarAwareLedger
from scheduler.delivery import Span, merge_spans
from scheduler.ledger import InMemoryLedger
from schemas.help_request import parse_help_request
from tests.unit.conftest import help_request, make_directory

DIRECTORY = make_directory(only=("taipei",))
TAIPEI = DIRECTORY.center("taipei")


class FakeCalendar:
    """What a CalDAV/EWS/Graph free/busy answer looks like once parsed: spans per email."""

    def __init__(self, busy: dict[str, list[Span]]) -> None:
        self._busy = busy
        self.asked: list[tuple[list[str], datetime, datetime]] = []

    def busy(self, emails: Iterable[str], start: datetime,
             end: datetime) -> dict[str, list[Span]]:
        emails = list(emails)
        self.asked.append((emails, start, end))
        return {e: [s for s in self._busy.get(e, []) if s[0] < end and s[1] > start]
                for e in emails}


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, 23, hour, minute, tzinfo=UTC)


def test_calendar_busy_time_moves_the_booking() -> None:
    # Both Taipei specialists are in other meetings from 13:30 to 15:00 local (05:30-07:00Z).
    emails = [str(s.email) for s in TAIPEI.specialists]
    calendar = FakeCalendar({e: [(at(5, 30), at(7))] for e in emails})
    ledger = CalendarAwareLedger.for_directory(InMemoryLedger(), DIRECTORY, {"taipei": calendar})
    request = parse_help_request(help_request())
    outcome = book(route(request, DIRECTORY, request.submitted_at), DIRECTORY, ledger)
    assert outcome.meeting is not None
    assert outcome.meeting.start == at(7)
    assert sorted(calendar.asked[0][0]) == sorted(emails)


def test_without_calendar_events_the_first_slot_is_booked() -> None:
    calendars = {"taipei": FakeCalendar({})}
    ledger = CalendarAwareLedger.for_directory(InMemoryLedger(), DIRECTORY, calendars)
    request = parse_help_request(help_request())
    outcome = book(route(request, DIRECTORY, request.submitted_at), DIRECTORY, ledger)
    assert outcome.meeting is not None and outcome.meeting.start == at(5, 30)


def test_ledger_meetings_and_calendar_events_are_merged() -> None:
    inner = InMemoryLedger()
    request = parse_help_request(help_request())
    booked = book(route(request, DIRECTORY, request.submitted_at), DIRECTORY, inner).meeting
    assert booked is not None
    person = next(s for s in TAIPEI.specialists if s.id == booked.specialist_id)
    calendar = FakeCalendar({str(person.email): [(booked.end, booked.end + timedelta(hours=1)),
                                                 (booked.start, booked.end)]})
    ledger = CalendarAwareLedger.for_directory(inner, DIRECTORY, {"taipei": calendar})
    spans = ledger.schedules([person.id], at(0), at(23))[person.id]
    assert list(spans) == [(booked.start, booked.end + timedelta(hours=1))]


def test_centers_without_a_calendar_backend_keep_the_plain_ledger() -> None:
    inner = InMemoryLedger()
    assert CalendarAwareLedger.for_directory(inner, DIRECTORY, {}) is inner


def test_merge_spans_unions_overlapping_and_touching_spans() -> None:
    assert merge_spans([(at(9), at(10)), (at(12), at(13)), (at(9, 30), at(11)),
                        (at(11), at(11, 30))]) == [(at(9), at(11, 30)), (at(12), at(13))]


class TransactionLedger(InMemoryLedger):
    """A ledger that, like the SQL one, can join a batch's transaction."""

    def within(self, conn: object) -> InMemoryLedger:
        return self


def test_the_ledger_follows_the_directory_and_its_calendars() -> None:
    inner = TransactionLedger()
    directory, calendars = [DIRECTORY], {}  # as a reload would change them
    ledger = CalendarAwareLedger(inner, lambda: directory[0], calendars.get)
    person = TAIPEI.specialists[0]
    assert getattr(ledger, "within", None) == inner.within  # batches, while none has a calendar
    assert not ledger.schedules([person.id], at(0), at(23))[person.id]

    calendar = FakeCalendar({str(person.email): [(at(5), at(6))]})
    calendars["taipei"] = calendar
    directory[0] = make_directory(only=("taipei",))  # a reload: a new directory object

    assert getattr(ledger, "within", None) is None  # one at a time: calendars are asked
    assert ledger.schedules([person.id], at(0), at(23)) == {person.id: [(at(5), at(6))]}
    assert [emails for emails, _, _ in calendar.asked] == [[str(person.email)]]


def test_a_ledger_without_a_transaction_form_has_none_to_give() -> None:
    ledger = CalendarAwareLedger(InMemoryLedger(), lambda: DIRECTORY, lambda center_id: None)
    assert getattr(ledger, "within", None) is None
