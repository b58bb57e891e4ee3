"""The waitlist on SQLite and PostgreSQL: a cancelled meeting's slot goes to the request booked
furthest in the future, moved with the same UID and a higher SEQUENCE; of concurrent offers of
one slot exactly one moves a meeting."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from scheduler.db import create_engine_for, invite_deliveries, meetings
from scheduler.directory import CenterDirectory, parse_directory
from scheduler.lifecycle import ChangeOutcome, ChangeResult, cancel
from scheduler.meeting_changes import MeetingChanges
from scheduler.request_store import RequestState
from scheduler.waitlist import WAITLIST_METHOD, offer_freed_slot
from schemas.events import Meeting, utc_z
from tests.integration.lifecycle_support import World
from tests.unit.conftest import directory_data, help_request

pytest_plugins = ["tests.integration.db_fixtures"]

DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
NOW = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)  # Monday 09:30 in Taipei
LATER = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
FROM_TUESDAY = {"earliest": "2026-11-24T09:00:00+08:00"}
REQUESTS = ("r-1", "r-2", "r-3")
# One specialist: a cap of 4 books consecutive slots on Tuesday, a cap of 1 consecutive days.
LAYOUTS = {"consecutive-slots": 4, "consecutive-days": 1}


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest, new_database: Callable[[str], str]) -> str:
    return new_database(request.param)


def one_specialist(cap: int) -> CenterDirectory:
    data = directory_data(("taipei",))
    (taipei,) = data["centers"]
    taipei["specialists"] = taipei["specialists"][:1]
    taipei["specialists"][0]["max_meetings_per_day"] = cap
    return parse_directory(data, "<one specialist>")


def booked_world(engine: Engine, cap: int = 4, requests: tuple[str, ...] = REQUESTS) -> World:
    world = World(engine, one_specialist(cap), NOW)
    for request_id in requests:
        world.submit(help_request(request_id, preferred_window=FROM_TUESDAY))
    world.now = LATER
    return world


def booked(world: World) -> dict[str, Meeting]:
    found = {r: world.ledger.meeting_for(r) for r in REQUESTS}
    return {r: m for r, m in found.items() if m is not None}


def cancelled_first(world: World) -> Meeting:
    """Cancel r-1 as ``cancel`` does before it offers the slot (release, then record)."""
    freed = world.lifecycle().changes.cancel("r-1", 1)
    assert freed is not None
    world.store.advance("r-1", RequestState.CANCELLED, LATER, {"reason": "requested"})
    return freed


def active_per_request(engine: Engine) -> Counter[str]:
    query = select(meetings.c.request_id).where(meetings.c.status == "active")
    with engine.connect() as conn:
        return Counter(conn.scalars(query))


def overlapping(engine: Engine) -> list[tuple[str, datetime]]:
    query = (select(meetings.c.specialist_id, meetings.c.start_utc, meetings.c.end_utc)
             .where(meetings.c.status == "active"))
    spans: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    with engine.connect() as conn:
        for specialist, start, end in conn.execute(query):
            spans[specialist].append((start, end))
    return [(sid, b[0]) for sid, s in spans.items() for a, b in zip(sorted(s), sorted(s)[1:],
                                                                    strict=False)
            if b[0] < a[1]]


def claim_status(engine: Engine, freed: Meeting) -> str | None:
    c = invite_deliveries.c
    query = select(c.status).where(c.uid == freed.uid, c.method == WAITLIST_METHOD)
    with engine.connect() as conn:
        return conn.scalar(query)


@pytest.mark.parametrize("cap", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_the_request_booked_furthest_in_the_future_takes_the_freed_slot(
        engine: Engine, cap: int) -> None:
    world = booked_world(engine, cap)
    before = booked(world)
    assert before["r-1"].start < before["r-2"].start < before["r-3"].start
    freed = cancelled_first(world)

    outcome = offer_freed_slot(freed, world.lifecycle(), LATER)

    assert outcome is not None and outcome.result is ChangeResult.RESCHEDULED, outcome
    assert (outcome.request_id, outcome.sequence) == ("r-3", 1)
    after = booked(world)
    assert (after["r-3"].start, after["r-3"].end) == (freed.start, freed.end)
    assert (after["r-3"].revision, after["r-3"].uid) == (2, before["r-3"].uid)
    assert after["r-2"] == before["r-2"]
    first, update = world.delivery.parsed("r-3")
    assert (update.method, update.uid, update.sequence) == ("REQUEST", first.uid, 1)
    assert update.start == freed.start
    old = before["r-3"]
    spans = world.ledger.schedules([old.specialist_id], old.start, old.end)
    assert spans[old.specialist_id] == []
    assert active_per_request(engine) == Counter({"r-2": 1, "r-3": 1})
    assert overlapping(engine) == []
    assert claim_status(engine, freed) == "moved"


def test_the_move_is_on_the_moved_requests_timeline(engine: Engine) -> None:
    world = booked_world(engine)
    before = booked(world)
    freed = cancelled_first(world)

    offer_freed_slot(freed, world.lifecycle(), LATER)

    status = world.store.status("r-3")
    assert status is not None and status.meeting is not None
    detail = status.timeline[-1].detail
    assert detail is not None
    assert {k: detail[k] for k in ("waitlist", "from", "to", "freed_by")} == {
        "waitlist": True, "from": utc_z(before["r-3"].start), "to": utc_z(freed.start),
        "freed_by": "r-1"}
    assert (status.meeting.start, status.meeting.sequence) == (freed.start, 1)  # the update


def test_offering_the_same_slot_again_moves_nothing(engine: Engine) -> None:
    world = booked_world(engine)
    freed = cancelled_first(world)
    offer_freed_slot(freed, world.lifecycle(), LATER)
    sent = len(world.delivery.parsed())

    assert offer_freed_slot(freed, world.lifecycle(), LATER) is None
    assert len(world.delivery.parsed()) == sent
    assert booked(world)["r-2"].revision == 1


def test_nobody_booked_later_means_no_move(engine: Engine) -> None:
    world = booked_world(engine, requests=("r-1",))
    freed = cancelled_first(world)

    assert offer_freed_slot(freed, world.lifecycle(), LATER) is None
    assert claim_status(engine, freed) == "skipped"
    assert [p.method for p in world.delivery.parsed()] == ["REQUEST"]


class RescheduledMeanwhile:
    """Meeting changes where the beneficiary moves itself just before the waitlist's move."""

    def __init__(self, changes: MeetingChanges) -> None:
        self._changes = changes
        self.raced: list[str] = []

    def cancel(self, request_id: str, revision: int) -> Meeting | None:
        return self._changes.cancel(request_id, revision)

    def latest(self, request_id: str) -> tuple[Meeting, bool] | None:
        return self._changes.latest(request_id)

    def move(self, current: Meeting, new: Meeting) -> Meeting:
        if not self.raced:
            self.raced.append(current.request_id)
            later = current.start + timedelta(days=7)
            self._changes.move(current, current.model_copy(update={
                "start": later, "end": later + (current.end - current.start),
                "revision": current.revision + 1}))
        return self._changes.move(current, new)


def test_a_candidate_changed_meanwhile_is_passed_over_for_the_next(engine: Engine) -> None:
    world = booked_world(engine)
    freed = cancelled_first(world)
    lifecycle = world.lifecycle()
    changes = RescheduledMeanwhile(lifecycle.changes)
    lifecycle.changes = changes

    outcome = offer_freed_slot(freed, lifecycle, LATER)

    assert changes.raced == ["r-3"]
    assert outcome is not None and outcome.request_id == "r-2"
    assert booked(world)["r-2"].start == freed.start
    assert active_per_request(engine) == Counter({"r-2": 1, "r-3": 1})
    assert overlapping(engine) == []


def test_of_two_offers_of_one_slot_at_once_exactly_one_moves_a_meeting(
        engine: Engine, database_url: str) -> None:
    world = booked_world(engine)
    freed = cancelled_first(world)
    barrier = threading.Barrier(2, timeout=60)
    outcomes: list[ChangeOutcome | None] = []
    errors: list[BaseException] = []

    def offer() -> None:
        own = create_engine_for(database_url)  # each thread is its own "process"
        try:
            barrier.wait()
            outcomes.append(offer_freed_slot(freed, world.lifecycle(own), LATER))
        except BaseException as exc:
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=offer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)

    assert not errors, errors
    assert sorted(o is not None for o in outcomes) == [False, True]
    after = booked(world)
    assert (after["r-3"].start, after["r-3"].revision) == (freed.start, 2)
    assert after["r-2"].revision == 1
    assert [p.sequence for p in world.delivery.parsed("r-3")] == [0, 1]
    assert active_per_request(engine) == Counter({"r-2": 1, "r-3": 1})
    assert overlapping(engine) == []


def test_cancelling_a_meeting_moves_the_latest_booked_request_into_its_slot(
        engine: Engine) -> None:
    world = booked_world(engine)
    freed = world.ledger.meeting_for("r-1")
    assert freed is not None
    assert cancel("r-1", world.lifecycle(), LATER).result is ChangeResult.CANCELLED
    moved = booked(world)["r-3"]
    assert (moved.start, moved.revision) == (freed.start, 2)
    assert [(p.method, p.sequence) for p in world.delivery.parsed("r-3")] == [
        ("REQUEST", 0), ("REQUEST", 1)]
