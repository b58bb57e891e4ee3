"""A moved meeting's previous place is told: the specialist a meeting was handed over from gets
a CANCEL addressed to them alone (RFC 5546 §3.2.5), on SQLite and PostgreSQL, after a reschedule
or a waitlist move, and again after a failed send; a backend whose server tells removed
attendees itself (Exchange) is not sent one; a meeting that leaves an Exchange organizer's
calendar is cancelled there. Then the same against the backends that run here: the SMTP sink,
Radicale and the outbox."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from icalendar import Calendar
from sqlalchemy import Engine

from scheduler.delivery import DeliveryFailed, DeliveryReceipt, Invite
from scheduler.directory import CenterDirectory, parse_directory
from scheduler.lifecycle import ChangeResult, cancel, reschedule
from scheduler.outbox import OutboxDelivery
from scheduler.smtp_delivery import SmtpDelivery
from schemas.help_request import PreferredWindow
from tests.integration.delivery_servers import Radicale, running_mail_sink, running_radicale
from tests.integration.lifecycle_support import RecordingDelivery, World
from tests.unit.conftest import directory_data, help_request, make_directory

pytest_plugins = ["tests.integration.db_fixtures"]

DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
NOW = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)  # Monday 09:30 in Taipei
LATER = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
NEXT_WEEK = PreferredWindow(earliest=datetime(2026, 11, 30, 0, 0, tzinfo=UTC))
FIRST, SECOND = "taipei1@example.com", "taipei2@example.com"
REQUESTER = "alex@contoso.example.com"


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest, new_database: Callable[[str], str]) -> str:
    return new_database(request.param)


def two_booked(engine: Engine, delivery: object | None = None,
               directory: CenterDirectory | None = None) -> World:
    """r-1 with the first specialist and r-2 with the second, at the same hour today."""
    world = World(engine, directory or make_directory(("taipei",)), NOW)
    if delivery is not None:
        world.delivery = delivery  # type: ignore[assignment]
    world.submit(help_request("r-1"))
    world.submit(help_request("r-2"))
    world.now = LATER
    return world


@dataclass(frozen=True)
class Message:
    """One message a backend was given, as its recipients read it."""

    method: str
    sequence: int
    to: list[str]
    attendees: list[str]
    start: datetime
    alone: bool
    message_id: str


def messages(delivery: RecordingDelivery, request_id: str) -> list[Message]:
    found = []
    for invite in delivery.invites:
        if invite.meeting.request_id != request_id:
            continue
        calendar = Calendar.from_ical(invite.ics)
        (event,) = calendar.events
        attendees = event.get("ATTENDEE")
        attendees = attendees if isinstance(attendees, list) else [attendees]
        found.append(Message(
            str(calendar["METHOD"]), event.sequence,
            [a.strip().rpartition("<")[2].rstrip(">") for a in invite.email["To"].split(",")],
            [str(a).removeprefix("mailto:") for a in attendees], event.decoded("DTSTART"),
            invite.only_specialist, invite.email["Message-ID"]))
    return found


def methods_recorded(world: World, request_id: str) -> list[tuple[str, int, str]]:
    meeting = world.ledger.meeting_for(request_id)
    assert meeting is not None
    return [(s.method, s.sequence, s.status) for s in world.records.sent(meeting.uid)]


def test_a_meeting_handed_to_another_specialist_is_cancelled_for_the_first_alone(
        engine: Engine) -> None:
    world = two_booked(engine)
    (invited,) = messages(world.delivery, "r-2")
    assert invited.to == [REQUESTER, SECOND]

    outcome = reschedule("r-2", NEXT_WEEK, world.lifecycle(), LATER)

    assert outcome.result is ChangeResult.RESCHEDULED and outcome.meeting is not None
    assert outcome.meeting.specialist_id == "taipei-01"  # the emptier day's first specialist
    _, update, handover = messages(world.delivery, "r-2")
    assert (update.method, update.sequence, update.to) == ("REQUEST", 1, [REQUESTER, FIRST])
    assert (handover.method, handover.sequence, handover.alone) == ("CANCEL", 1, True)
    assert handover.to == handover.attendees == [SECOND]
    assert handover.start == invited.start  # the meeting as the second specialist had it
    assert handover.message_id not in (invited.message_id, update.message_id)
    assert methods_recorded(world, "r-2") == [("REQUEST", 0, "delivered"),
                                              ("CANCEL-HANDOVER", 1, "delivered"),
                                              ("REQUEST", 1, "delivered")]

    cancel("r-2", world.lifecycle(), LATER)
    cancelled = messages(world.delivery, "r-2")[-1]
    assert (cancelled.method, cancelled.sequence, cancelled.to) == ("CANCEL", 2,
                                                                     [REQUESTER, FIRST])


def test_a_move_that_keeps_the_specialist_sends_the_update_alone(engine: Engine) -> None:
    world = two_booked(engine)

    reschedule("r-1", NEXT_WEEK, world.lifecycle(), LATER)

    assert [(m.method, m.sequence, m.to) for m in messages(world.delivery, "r-1")] == [
        ("REQUEST", 0, [REQUESTER, FIRST]), ("REQUEST", 1, [REQUESTER, FIRST])]


def test_exchange_tells_a_removed_specialist_itself(engine: Engine) -> None:
    world = two_booked(engine, RecordingDelivery(name="graph", tells_removed_attendees=True))

    reschedule("r-2", NEXT_WEEK, world.lifecycle(), LATER)

    assert [(m.method, m.sequence, m.to) for m in messages(world.delivery, "r-2")] == [
        ("REQUEST", 0, [REQUESTER, SECOND]), ("REQUEST", 1, [REQUESTER, FIRST])]


def test_a_meeting_that_leaves_an_exchange_organizer_is_cancelled_in_its_calendar(
        engine: Engine) -> None:
    delivery = RecordingDelivery(name="graph", tells_removed_attendees=True)
    world = World(engine, make_directory(("taipei", "tokyo")), NOW, delivery)
    world.submit(help_request("r-1"))
    # Monday 09:00-10:00 in Tokyo is 08:00-09:00 in Taipei: only Tokyo is open.
    before_taipei = PreferredWindow(earliest=datetime(2026, 11, 30, 0, 0, tzinfo=UTC),
                                    latest=datetime(2026, 11, 30, 1, 0, tzinfo=UTC))

    outcome = reschedule("r-1", before_taipei, world.lifecycle(), LATER)

    assert outcome.meeting is not None and outcome.meeting.center_id == "tokyo"
    update, cancelled = delivery.invites[1:]
    assert (update.method, update.center.id, update.sequence) == ("REQUEST", "tokyo", 1)
    assert (cancelled.method, cancelled.center.id, cancelled.sequence) == ("CANCEL", "taipei", 1)
    assert not cancelled.only_specialist and cancelled.meeting.center_id == "taipei"
    assert methods_recorded(world, "r-1")[1:] == [("CANCEL-MOVED", 1, "delivered"),
                                                  ("REQUEST", 1, "delivered")]


def test_the_waitlist_tells_the_specialist_a_meeting_moves_away_from(engine: Engine) -> None:
    data = directory_data(("taipei",))
    for specialist in data["centers"][0]["specialists"][:2]:
        specialist["max_meetings_per_day"] = 1
    data["centers"][0]["specialists"] = data["centers"][0]["specialists"][:2]
    world = two_booked(engine, directory=parse_directory(data, "<two specialists, one a day>"))
    world.now = NOW  # as submitted with the others: it could have had today's slot
    world.submit(help_request("r-3"))  # both specialists are full today: tomorrow, the first
    third = world.ledger.meeting_for("r-3")
    assert third is not None and third.specialist_id == "taipei-01"

    # At once (the slot is still far enough ahead), r-2 frees the second specialist's slot.
    cancel("r-2", world.lifecycle(), NOW)

    moved = world.ledger.meeting_for("r-3")
    assert moved is not None and (moved.specialist_id, moved.revision) == ("taipei-02", 2)
    _, update, handover = messages(world.delivery, "r-3")
    assert (update.method, update.sequence, update.to) == ("REQUEST", 1, [REQUESTER, SECOND])
    assert (handover.method, handover.sequence, handover.to) == ("CANCEL", 1, [FIRST])
    assert handover.start == third.start


@dataclass
class RefusesHandovers(RecordingDelivery):
    """Takes every message but the first ``refusals`` CANCELs to a specialist alone."""

    refusals: int = 1

    def send(self, invite: Invite) -> DeliveryReceipt:
        if invite.only_specialist and self.refusals:
            self.refusals -= 1
            raise DeliveryFailed(self.name, "451 4.3.0 try again later", transient=True)
        return super().send(invite)


def test_a_handover_that_failed_is_sent_again_by_reconciliation(engine: Engine,
                                                               tmp_path: Path) -> None:
    world = two_booked(engine, RefusesHandovers())

    outcome = reschedule("r-2", NEXT_WEEK, world.lifecycle(), LATER)

    assert outcome.result is ChangeResult.RESCHEDULED  # the move stands, its REQUEST went
    assert methods_recorded(world, "r-2")[1:] == [("CANCEL-HANDOVER", 1, "failed"),
                                                  ("REQUEST", 1, "delivered")]
    assert [m.alone for m in messages(world.delivery, "r-2")] == [False, False]

    world.now = LATER + timedelta(minutes=5)
    work = world.timed_work(tmp_path)
    assert work.reconcile()["resent"] == 1

    assert methods_recorded(world, "r-2")[1] == ("CANCEL-HANDOVER", 1, "delivered")
    handover = messages(world.delivery, "r-2")[-1]
    assert (handover.method, handover.sequence, handover.to, handover.alone) == (
        "CANCEL", 1, [SECOND], True)
    assert work.reconcile()["resent"] == 0


# -- the backends that run here (SQLite) -----------------------------------------------------------


@pytest.fixture
def engine_sqlite(new_database: Callable[[str], str]) -> Iterator[Engine]:
    from scheduler.db import create_engine_for

    engine = create_engine_for(new_database("sqlite"))
    yield engine
    engine.dispose()


def test_by_smtp_the_first_specialist_alone_receives_the_cancel(engine_sqlite: Engine) -> None:
    with running_mail_sink() as sink:
        world = two_booked(engine_sqlite, SmtpDelivery(sink.host, sink.port, starttls=False,
                                                       timeout=5))
        reschedule("r-2", NEXT_WEEK, world.lifecycle(), LATER)

    envelopes = [(sorted(r.recipients), r.message["Subject"]) for r in sink.received[2:]]
    assert envelopes == [
        (sorted([REQUESTER, FIRST]), "Updated invitation: Microsoft 365 FastTrack: Core "
                                     "onboarding (Nov 30, 2026)"),
        ([SECOND], "Reassigned: Microsoft 365 FastTrack: Core onboarding (Nov 23, 2026)")]
    handover = sink.received[-1].message
    body = handover.get_body(preferencelist=("plain",)).get_content()
    assert body.startswith("Hello Specialist 2,")
    assert "has moved to another specialist" in body and "r-2" in body
    (calendar_part,) = [p for p in handover.walk() if p.get_content_type() == "text/calendar"]
    assert calendar_part.get_param("method") == "CANCEL"


@pytest.fixture(scope="module")
def radicale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Radicale]:
    with running_radicale(tmp_path_factory.mktemp("radicale")) as server:
        yield server


def test_in_caldav_the_first_specialist_is_free_again_at_the_old_time(
        engine_sqlite: Engine, radicale: Radicale) -> None:
    delivery = radicale.delivery()
    world = two_booked(engine_sqlite, delivery)
    before = world.ledger.meeting_for("r-2")
    assert before is not None
    day = (before.start - timedelta(hours=12), before.start + timedelta(days=14))
    assert delivery.busy([SECOND], *day)[SECOND] == [(before.start, before.end)]

    reschedule("r-2", NEXT_WEEK, world.lifecycle(), LATER)

    after = world.ledger.meeting_for("r-2")
    assert after is not None
    busy = delivery.busy([FIRST, SECOND], *day)
    assert busy[SECOND] == []  # its copy is CANCELLED at SEQUENCE 1
    assert (after.start, after.end) in busy[FIRST]


def test_the_outbox_keeps_the_meeting_and_files_the_handover_apart(engine_sqlite: Engine,
                                                                   tmp_path: Path) -> None:
    outbox = OutboxDelivery(tmp_path / "outbox")
    world = two_booked(engine_sqlite, outbox)

    reschedule("r-2", NEXT_WEEK, world.lifecycle(), LATER)

    meeting = world.ledger.meeting_for("r-2")
    assert meeting is not None
    held = Calendar.from_ical((tmp_path / "outbox" / f"{meeting.uid}.ics").read_bytes())
    assert (str(held["METHOD"]), held.events[0].sequence) == ("REQUEST", 1)
    handovers = tmp_path / "outbox" / "handovers"
    filed = Calendar.from_ical((handovers / f"{meeting.uid}-s1.ics").read_bytes())
    assert (str(filed["METHOD"]), filed.events[0].sequence) == ("CANCEL", 1)
    assert str(filed.events[0]["ATTENDEE"]) == f"mailto:{SECOND}"
    assert b"To: Specialist 2 <taipei2@example.com>" in (
        handovers / f"{meeting.uid}-s1.eml").read_bytes()
