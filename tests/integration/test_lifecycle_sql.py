"""Cancel and reschedule on SQLite and PostgreSQL: invites parsed back, races decided by the
database (exactly one of two simultaneous changes wins), repeats harmless."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from scheduler.db import create_engine_for, meetings
from scheduler.delivery import DeliveryFailed, DeliveryReceipt, Invite
from scheduler.lifecycle import ChangeOutcome, ChangeResult, cancel, reschedule
from scheduler.request_store import RequestState
from schemas.help_request import PreferredWindow
from tests.integration.lifecycle_support import RecordingDelivery, World
from tests.unit.conftest import help_request, make_directory

pytest_plugins = ["tests.integration.db_fixtures"]

DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
NOW = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)  # Monday 09:30 in Taipei
LATER = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
NEXT_WEEK = PreferredWindow(earliest=datetime(2026, 11, 30, 0, 0, tzinfo=UTC))
WEEK_AFTER = PreferredWindow(earliest=datetime(2026, 12, 7, 0, 0, tzinfo=UTC))


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest, new_database: Callable[[str], str]) -> str:
    return new_database(request.param)


@pytest.fixture
def world(engine: Engine) -> World:
    world = World(engine, make_directory(("taipei",)), NOW)
    world.submit(help_request("r-1"))
    world.now = LATER
    return world


def active_meetings(engine: Engine, request_id: str) -> list[int]:
    query = select(meetings.c.revision).where(meetings.c.request_id == request_id,
                                              meetings.c.status == "active")
    with engine.connect() as conn:
        return list(conn.scalars(query))


def test_the_pipeline_invites_first(world: World) -> None:
    (invite,) = world.delivery.parsed()
    assert (invite.method, invite.sequence, invite.status) == ("REQUEST", 0, "CONFIRMED")
    status = world.store.status("r-1")
    assert status is not None and status.status is RequestState.INVITED


def test_meetings_are_read_a_page_at_a_time_each_once_in_start_order(engine: Engine) -> None:
    world = World(engine, make_directory(("taipei", "tokyo")), NOW)
    for n in range(4):  # Taipei and Tokyo open on the same UTC hours: meetings share starts
        world.submit(help_request(f"r-tw-{n}"))
        world.submit(help_request(f"r-jp-{n}", language="ja", country="JP"))
    whole = world.records.meetings_starting(NOW, NOW + timedelta(days=400))
    assert len(whole) == 8
    assert [(m.start, m.request_id) for m in whole] == sorted((m.start, m.request_id)
                                                              for m in whole)
    assert len({m.start for m in whole}) < len(whole)  # the tie-break on request id is used

    for size in (1, 2, 3, 8, 9):
        pages = list(world.records.meeting_pages(NOW, NOW + timedelta(days=400), size))
        assert [len(page) for page in pages] == [len(whole[i:i + size])
                                                 for i in range(0, len(whole), size)]
        assert [m for page in pages for m in page] == whole
    with pytest.raises(ValueError, match="page_size"):
        next(world.records.meeting_pages(NOW, LATER, 0))


def test_cancel_frees_the_slot_and_sends_cancel_with_the_same_uid_and_a_higher_sequence(
        world: World, engine: Engine) -> None:
    outcome = cancel("r-1", world.lifecycle(), LATER)

    assert outcome.result is ChangeResult.CANCELLED
    first, cancelled = world.delivery.parsed()
    assert cancelled.method == "CANCEL" and cancelled.status == "CANCELLED"
    assert cancelled.uid == first.uid and cancelled.sequence > first.sequence
    assert active_meetings(engine, "r-1") == []
    status = world.store.status("r-1")
    assert status is not None and status.status is RequestState.CANCELLED
    assert status.meeting is None


def test_cancelling_twice_is_harmless(world: World) -> None:
    cancel("r-1", world.lifecycle(), LATER)
    again = cancel("r-1", world.lifecycle(), LATER)

    assert again.result is ChangeResult.ALREADY_CANCELLED
    assert [p.method for p in world.delivery.parsed()] == ["REQUEST", "CANCEL"]


def test_a_request_cancelled_before_booking_is_never_booked(engine: Engine) -> None:
    world = World(engine, make_directory(("taipei",)), NOW)
    world.submit(help_request("r-2"), until=1)  # routed; the booker has not run yet

    outcome = cancel("r-2", world.lifecycle(), NOW)
    world.submit(help_request("r-2"))  # redelivery of the whole pipeline

    assert outcome.result is ChangeResult.CANCELLED
    assert active_meetings(engine, "r-2") == []
    assert world.delivery.parsed() == []


def test_reschedule_moves_the_meeting_with_the_same_uid_and_the_next_sequence(
        world: World, engine: Engine) -> None:
    before = world.ledger.meeting_for("r-1")
    outcome = reschedule("r-1", NEXT_WEEK, world.lifecycle(), LATER)

    assert outcome.result is ChangeResult.RESCHEDULED, outcome.detail
    first, update = world.delivery.parsed()
    assert (update.method, update.uid, update.sequence) == ("REQUEST", first.uid, 1)
    assert update.start >= NEXT_WEEK.earliest  # type: ignore[operator]
    after = world.ledger.meeting_for("r-1")
    assert before is not None and after is not None
    assert (after.revision, after.uid) == (2, before.uid)
    assert active_meetings(engine, "r-1") == [2]
    status = world.store.status("r-1")
    assert status is not None and status.status is RequestState.INVITED
    assert status.timeline[-1].detail is not None and "rescheduled" in status.timeline[-1].detail


def test_the_old_slot_is_free_again_after_a_reschedule(world: World) -> None:
    before = world.ledger.meeting_for("r-1")
    assert before is not None
    reschedule("r-1", NEXT_WEEK, world.lifecycle(), LATER)

    spans = world.ledger.schedules([before.specialist_id], before.start, before.end)
    assert (before.start, before.end) not in spans[before.specialist_id]


def test_reschedule_then_cancel_keeps_sequence_strictly_increasing(world: World) -> None:
    lifecycle = world.lifecycle()
    reschedule("r-1", NEXT_WEEK, lifecycle, LATER)
    reschedule("r-1", WEEK_AFTER, lifecycle, LATER)
    cancel("r-1", lifecycle, LATER)

    sent = world.delivery.parsed()
    assert [p.method for p in sent] == ["REQUEST", "REQUEST", "REQUEST", "CANCEL"]
    assert len({p.uid for p in sent}) == 1
    sequences = [p.sequence for p in sent]
    assert sequences == sorted(set(sequences)) == [0, 1, 2, 3]


def test_a_cancelled_request_cannot_be_rescheduled(world: World) -> None:
    cancel("r-1", world.lifecycle(), LATER)
    outcome = reschedule("r-1", NEXT_WEEK, world.lifecycle(), LATER)
    assert outcome.result is ChangeResult.NOT_CHANGEABLE


def test_a_repeated_command_is_applied_once(world: World) -> None:
    lifecycle = world.lifecycle()
    first = reschedule("r-1", NEXT_WEEK, lifecycle, LATER, command_id="c-1")
    again = reschedule("r-1", NEXT_WEEK, lifecycle, LATER, command_id="c-1")
    assert (first.result, again.result) == (ChangeResult.RESCHEDULED, ChangeResult.ALREADY_DONE)
    assert len(world.delivery.parsed()) == 2


# --- races: two changes at once on the same booking ------------------------------------------

Change = Callable[[World, Engine], ChangeOutcome]

CANCEL: Change = lambda w, e: cancel("r-1", w.lifecycle(e), LATER, expected_revision=1)  # noqa: E731
MOVE_1: Change = lambda w, e: reschedule("r-1", NEXT_WEEK, w.lifecycle(e), LATER,  # noqa: E731
                                         expected_revision=1)
MOVE_2: Change = lambda w, e: reschedule("r-1", WEEK_AFTER, w.lifecycle(e), LATER,  # noqa: E731
                                         expected_revision=1)
WINS = {ChangeResult.CANCELLED, ChangeResult.RESCHEDULED}


def race(world: World, database_url: str, changes: list[Change]) -> list[ChangeOutcome]:
    barrier = threading.Barrier(len(changes), timeout=60)
    outcomes: list[ChangeOutcome] = []
    errors: list[BaseException] = []

    def run(change: Change) -> None:
        engine = create_engine_for(database_url)  # each thread is its own "process"
        try:
            barrier.wait()
            outcomes.append(change(world, engine))
        except BaseException as exc:
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=run, args=(c,)) for c in changes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    return outcomes


@pytest.fixture
def pair(request: pytest.FixtureRequest) -> list[Change]:
    return list(request.param)


@pytest.mark.parametrize("changes", [
    pytest.param([CANCEL, CANCEL], id="cancel-cancel"),
    pytest.param([MOVE_1, MOVE_2], id="reschedule-reschedule"),
    pytest.param([CANCEL, MOVE_1], id="cancel-reschedule"),
])
def test_of_two_changes_at_once_exactly_one_wins(world: World, engine: Engine,
                                                 database_url: str,
                                                 changes: list[Change]) -> None:
    outcomes = race(world, database_url, changes)

    results = Counter(o.result for o in outcomes)
    assert sum(results[r] for r in WINS) == 1, outcomes
    assert len(active_meetings(engine, "r-1")) <= 1
    sent = world.delivery.parsed()
    assert len(sent) == 2  # the first invite and the winner's message
    assert len({p.uid for p in sent}) == 1 and sent[1].sequence > sent[0].sequence
    winner = next(o for o in outcomes if o.result in WINS)
    assert sent[1].method == ("CANCEL" if winner.result is ChangeResult.CANCELLED else "REQUEST")


def test_many_unconditional_changes_at_once_leave_one_consistent_booking(
        world: World, engine: Engine, database_url: str) -> None:
    def move(window: PreferredWindow) -> Change:
        return lambda w, e: reschedule("r-1", window, w.lifecycle(e), LATER)

    outcomes = race(world, database_url, [move(NEXT_WEEK), move(WEEK_AFTER)] * 2)

    moved = [o for o in outcomes if o.result is ChangeResult.RESCHEDULED]
    revisions = active_meetings(engine, "r-1")
    assert revisions == [1 + len(moved)]
    sent = world.delivery.parsed()
    # Every SEQUENCE exactly once. Not necessarily in order: two changes that commit one after
    # the other send after their commits, and the later one may send first; receivers keep the
    # highest SEQUENCE (RFC 5546 §2.1.5), and the outbox and CalDAV never step back.
    assert sorted(p.sequence for p in sent) == list(range(len(sent)))
    assert max(p.sequence for p in sent) == revisions[0] - 1
    with engine.connect() as conn:
        total = conn.scalar(select(func.count()).where(meetings.c.request_id == "r-1"))
    assert total == 1 + len(moved)


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    before = threading.active_count()
    yield
    assert threading.active_count() <= before + 1


@dataclass
class Refusing(RecordingDelivery):
    """A backend whose server refuses the next ``refusals`` messages for good (a 550)."""

    refusals: int = 0

    def send(self, invite: Invite) -> DeliveryReceipt:
        if self.refusals:
            self.refusals -= 1
            raise DeliveryFailed(self.name, "550 5.1.1 recipient rejected", transient=False)
        return super().send(invite)


@pytest.mark.parametrize("change", ["reschedule", "cancel"])
def test_a_change_whose_message_fails_stands_and_the_message_is_sent_again(
        engine: Engine, tmp_path: Path, change: str) -> None:
    delivery = Refusing()
    world = World(engine, make_directory(("taipei",)), NOW, delivery)
    world.submit(help_request("r-1"))
    world.now = LATER
    delivery.refusals = 1

    if change == "reschedule":
        outcome = reschedule("r-1", NEXT_WEEK, world.lifecycle(), LATER)
        expected, method = (ChangeResult.RESCHEDULED, RequestState.INVITED), "REQUEST"
    else:
        outcome = cancel("r-1", world.lifecycle(), LATER)
        expected, method = (ChangeResult.CANCELLED, RequestState.CANCELLED), "CANCEL"

    status = world.store.status("r-1")
    assert status is not None and (outcome.result, status.status) == expected
    assert "550 5.1.1" in outcome.detail and "will be retried" in outcome.detail
    uid = delivery.invites[0].meeting.uid
    assert [s.status for s in world.records.sent(uid) if s.method == method][-1] == "failed"

    world.now = LATER + timedelta(minutes=5)
    work = world.timed_work(tmp_path)
    assert work.reconcile()["resent"] == 1
    assert [s.status for s in world.records.sent(uid) if s.method == method][-1] == "delivered"
    assert [p.method for p in delivery.parsed()] == ["REQUEST", method]


def test_a_cancel_cut_short_leaves_the_meeting_and_the_status_as_they_were(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    lifecycle = world.lifecycle()
    record = lifecycle.store.advance_many

    def fails(*args: object, **kwargs: object) -> object:
        raise OSError("connection lost")

    monkeypatch.setattr(lifecycle.store, "advance_many", fails)
    with pytest.raises(OSError):
        cancel("r-1", lifecycle, LATER)
    # Freeing the meeting and recording the cancel are one transaction: neither happened.
    status = world.store.status("r-1")
    assert status is not None and status.status is RequestState.INVITED
    assert world.ledger.meeting_for("r-1") is not None

    monkeypatch.setattr(lifecycle.store, "advance_many", record)
    assert cancel("r-1", lifecycle, LATER).result is ChangeResult.CANCELLED
    status = world.store.status("r-1")
    assert status is not None and status.status is RequestState.CANCELLED
    assert world.ledger.meeting_for("r-1") is None


@pytest.mark.parametrize("change", ["reschedule", "cancel"])
def test_a_failed_message_is_sent_again_through_the_backend_it_was_claimed_for(
        engine: Engine, tmp_path: Path, change: str) -> None:
    """The center's backend changed between the failure and the retry: the retry goes where
    the meeting's invites went (a CANCEL must reach the calendar the REQUEST reached)."""
    first = Refusing()
    world = World(engine, make_directory(("taipei",)), NOW, first)
    world.submit(help_request("r-1"))
    world.now = LATER
    first.refusals = 1
    if change == "reschedule":
        reschedule("r-1", NEXT_WEEK, world.lifecycle(), LATER)
    else:
        cancel("r-1", world.lifecycle(), LATER)
    world.delivery = RecordingDelivery(name="smtp")  # the directory gave the center another

    world.now = LATER + timedelta(minutes=5)
    work = world.timed_work(tmp_path)
    work.lifecycle.earlier_backend = lambda center_id, name: first if name == first.name else None
    assert work.reconcile()["resent"] == 1

    method = "REQUEST" if change == "reschedule" else "CANCEL"
    assert [p.method for p in first.parsed()] == ["REQUEST", method]
    assert world.delivery.invites == []
