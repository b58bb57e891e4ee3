"""A command its request cannot take yet is held, not dead-lettered: the intake applies a held
cancel as it accepts the request (nobody is booked or invited), reconciliation applies a held
reschedule once the request is booked and whatever a race left held, and dead-letters a command
that waited in vain. Holding and accepting exclude each other per request."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select

from consumers.envelope import Origin, Unprocessable
from consumers.stages import Commands, Submission
from scheduler.db import deadletters, held_commands
from scheduler.held_commands import HeldCommands, take_cancels
from scheduler.lifecycle import Lifecycle
from scheduler.request_store import RequestState, RequestStatus, RequestStore
from tests.integration.lifecycle_support import World
from tests.unit.conftest import help_request, make_directory

pytest_plugins = ["tests.integration.db_fixtures"]

DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
NOW = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)
WINDOW = {"earliest": "2026-11-24T09:00:00+08:00"}
NEXT_WEEK = {"earliest": "2026-11-30T09:00:00+08:00", "latest": "2026-12-04T18:00:00+08:00"}
COMMAND_ORIGIN = Origin("t.requests.commands", 2, 41, b"r-1", {"traceparent": b"00-abc"})


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest, new_database: Callable[[str], str]) -> str:
    return new_database(request.param)


@pytest.fixture
def world(engine: Engine) -> World:
    return World(engine, make_directory(("taipei",)), NOW)


def command(kind: str = "cancel", request_id: str = "r-1", command_id: str = "c-1",
            **extra: Any) -> bytes:
    return json.dumps({"command": kind, "request_id": request_id, "command_id": command_id,
                       "issued_at": "2026-11-23T01:29:00Z", **extra}).encode()


def commands_stage(world: World, lifecycle: Lifecycle | None = None) -> Commands:
    return Commands(lifecycle or world.lifecycle(), world.clock, HeldCommands(world.engine))


def request_record(request_id: str = "r-1") -> tuple[bytes, Origin]:
    body = help_request(request_id, preferred_window=WINDOW)
    return json.dumps(body).encode(), Origin("t.requests.submitted", 0, 1, request_id.encode())


def leave_held(engine: Engine, request_id: str, command_id: str, value: bytes,
               held_at: datetime = NOW) -> None:
    """A held row as a race (or a crash) can leave it, whatever the request's state."""
    with engine.begin() as conn:
        conn.execute(insert(held_commands).values(
            command_id=command_id, request_id=request_id, command="cancel", payload=value,
            record_key=request_id.encode(), headers="{}", origin_topic="t.requests.commands",
            origin_partition=0, origin_offset=hash(command_id) % 10_000, held_at=held_at))


def held(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(held_commands.c.command_id)
                                 .order_by(held_commands.c.command_id)).scalars())


def status(world: World, request_id: str = "r-1") -> RequestStatus:
    found = world.store.status(request_id)
    assert found is not None
    return found


@pytest.mark.parametrize("path", ["batch", "one_by_one"])
def test_a_cancel_read_before_its_request_cancels_it_as_it_is_accepted(
        world: World, path: str) -> None:
    stage = commands_stage(world)

    assert stage.handle(command(), COMMAND_ORIGIN) == []  # held, not refused
    assert held(world.engine) == ["c-1"] and world.store.status("r-1") is None

    submission = world.stages[0]
    record = request_record()
    outcome = (submission.handle_batch([record])[0] if path == "batch"
               else submission.handle(*record))

    assert outcome == []  # not routed: nobody is booked or invited
    after = status(world)
    assert after.status is RequestState.CANCELLED and after.meeting is None
    assert [(e.status, e.detail) for e in after.timeline] == [
        (RequestState.ACCEPTED, None),
        (RequestState.CANCELLED, {"reason": "command", "command_id": "c-1",
                                  "held_since": "2026-11-23T01:30:00Z"})]
    assert held(world.engine) == []
    # The command redelivered: applied before, so nothing changes and nothing is held again.
    assert stage.handle(command(), COMMAND_ORIGIN) == []
    assert held(world.engine) == [] and len(status(world).timeline) == 2


def test_requests_without_held_cancels_are_routed_in_the_same_batch(world: World) -> None:
    commands_stage(world).handle(command(request_id="r-2", command_id="c-2"), COMMAND_ORIGIN)
    submission = world.stages[0]

    outcomes = submission.handle_batch([request_record("r-1"), request_record("r-2"),
                                        request_record("r-3")])

    assert [[e.topic for e in o] for o in outcomes] == [  # type: ignore[union-attr]
        ["requests_routed"], [], ["requests_routed"]]
    assert [status(world, r).status for r in ("r-1", "r-2", "r-3")] == [
        RequestState.ROUTED, RequestState.CANCELLED, RequestState.ROUTED]


@pytest.mark.parametrize("read", ["before_acceptance", "while_routed"])
def test_a_reschedule_read_before_the_booking_moves_the_meeting_once_it_is_booked(
        world: World, tmp_path: Path, read: str) -> None:
    stage = commands_stage(world)
    value = command("reschedule", preferred_window=NEXT_WEEK)
    if read == "while_routed":
        world.submit(help_request("r-1", preferred_window=WINDOW), until=1)
    assert stage.handle(value, COMMAND_ORIGIN) == []
    assert held(world.engine) == ["c-1"]  # nothing to move yet

    world.submit(help_request("r-1", preferred_window=WINDOW))  # (again:) booked and invited
    first = status(world).meeting
    assert first is not None and held(world.engine) == ["c-1"]  # not the intake's to take
    world.now += timedelta(minutes=3)
    assert world.timed_work(tmp_path).reconcile()["commands_applied"] == 1

    after = status(world)
    assert after.meeting is not None and after.meeting.start >= datetime(
        2026, 11, 30, 1, tzinfo=UTC)
    assert (after.meeting.uid, after.meeting.sequence) == (first.uid, 1)  # the update
    assert held(world.engine) == []
    assert [p.sequence for p in world.delivery.parsed("r-1")] == [0, 1]
    assert stage.handle(value, COMMAND_ORIGIN) == []  # redelivered: applied before
    assert status(world).meeting == after.meeting and held(world.engine) == []


class AcceptedMeanwhile(RequestStore):
    """A store whose first status read finds nothing: the request is accepted between the
    commands stage's first look and its hold."""

    def __init__(self, engine: Engine, accept: Callable[[], None]) -> None:
        super().__init__(engine)
        self._accept: Callable[[], None] | None = accept

    def status(self, request_id: str) -> RequestStatus | None:
        if self._accept is not None:
            accept, self._accept = self._accept, None
            found = super().status(request_id)
            accept()
            return found
        return super().status(request_id)


def test_a_request_accepted_before_the_hold_is_cancelled_by_the_stage(world: World) -> None:
    def accept() -> None:  # as the intake would, had it run just then
        world.stages[0].handle(*request_record())

    lifecycle = world.lifecycle()
    lifecycle.store = AcceptedMeanwhile(world.engine, accept)
    assert commands_stage(world, lifecycle).handle(command(), COMMAND_ORIGIN) == []

    after = status(world)
    assert after.status is RequestState.CANCELLED and held(world.engine) == []
    assert after.timeline[-1].detail == {"reason": "command", "command_id": "c-1"}


def test_a_cancel_read_while_the_intake_accepts_its_request_is_not_missed(world: World) -> None:
    """The intake's batch transaction has accepted the request and read the held cancels
    (none) but not committed; the commands stage finds no request. Without the request's lock
    the cancel would be held after the intake looked, and the request booked and invited."""
    recording, go_on = threading.Event(), threading.Event()

    class SlowToRecord(RequestStore):
        def advance_many(self, *args: Any, **kwargs: Any) -> Any:  # after the held cancels
            recording.set()
            assert go_on.wait(10)
            return super().advance_many(*args, **kwargs)

    intake = Submission(SlowToRecord(world.engine), lambda: world.directory, world.clock)
    outcomes: list[Any] = []
    accepting = threading.Thread(target=lambda: outcomes.extend(
        intake.handle_batch([request_record()])))
    accepting.start()
    assert recording.wait(10)
    reading = threading.Thread(target=commands_stage(world).handle,
                               args=(command(), COMMAND_ORIGIN))
    reading.start()
    reading.join(0.5)
    assert reading.is_alive()  # waits for the intake's transaction
    go_on.set()
    accepting.join(10)
    reading.join(10)

    assert [e.topic for e in outcomes[0]] == ["requests_routed"]
    after = status(world)
    assert after.status is RequestState.CANCELLED and held(world.engine) == []
    assert after.timeline[-1].detail == {"reason": "command", "command_id": "c-1"}


def test_reconciliation_applies_a_cancel_a_race_left_held(world: World, tmp_path: Path) -> None:
    world.submit(help_request("r-1", preferred_window=WINDOW))  # booked and invited
    leave_held(world.engine, "r-1", "c-1", command())
    work = world.timed_work(tmp_path)

    assert work.reconcile()["commands_applied"] == 0  # younger than stale_after: left alone
    world.now += timedelta(minutes=3)
    assert work.reconcile()["commands_applied"] == 1

    assert status(world).status is RequestState.CANCELLED and held(world.engine) == []
    assert world.ledger.meeting_for("r-1") is None
    assert [p.method for p in world.delivery.parsed("r-1")] == ["REQUEST", "CANCEL"]


def test_commands_waiting_in_vain_never_hold_back_one_that_is_ready(
        world: World, tmp_path: Path) -> None:
    for n in range(105):  # older than the ready one, and more than a run reads at once
        leave_held(world.engine, f"r-never-{n}", f"c-never-{n:03d}",
                   command(request_id=f"r-never-{n}"), NOW - timedelta(minutes=10))
    world.submit(help_request("r-1", preferred_window=WINDOW))
    leave_held(world.engine, "r-1", "c-1", command())
    world.now += timedelta(minutes=3)

    assert world.timed_work(tmp_path).reconcile()["commands_applied"] == 1
    assert status(world).status is RequestState.CANCELLED


def test_a_held_command_that_fails_is_left_held_and_the_rest_go_on(
        world: World, tmp_path: Path) -> None:
    for request_id in ("r-1", "r-2"):
        world.submit(help_request(request_id, preferred_window=WINDOW), until=1)
    leave_held(world.engine, "r-1", "c-bad", b'{"command": "cancel"}')  # no longer parses
    leave_held(world.engine, "r-2", "c-2", command(request_id="r-2", command_id="c-2"))
    world.now += timedelta(minutes=3)

    counts = world.timed_work(tmp_path).reconcile()

    assert counts["commands_applied"] == 1 and held(world.engine) == ["c-bad"]
    assert status(world, "r-2").status is RequestState.CANCELLED


def test_a_command_id_reused_for_another_request_is_refused(world: World) -> None:
    stage = commands_stage(world)
    stage.handle(command(), COMMAND_ORIGIN)

    with pytest.raises(Unprocessable, match="'c-1' is already held for the cancel of request "
                                            "'r-1'"):
        stage.handle(command(request_id="r-9"), COMMAND_ORIGIN)
    assert held(world.engine) == ["c-1"]


@pytest.mark.parametrize(("accepted", "error_class", "says"), [
    (False, "UnknownRequest", "not accepted within 30 minutes"),
    (True, "RequestNotBooked", "not booked within 30 minutes"),
])
def test_a_command_that_waits_in_vain_is_dead_lettered(
        world: World, tmp_path: Path, accepted: bool, error_class: str, says: str) -> None:
    value = command("reschedule", preferred_window=NEXT_WEEK)
    if accepted:  # routed, and the booker never came to it
        world.submit(help_request("r-1", preferred_window=WINDOW), until=1)
    commands_stage(world).handle(value, COMMAND_ORIGIN)
    published: list[tuple[Any, ...]] = []
    work = world.timed_work(tmp_path, lambda *record: published.append(record),
                            hold_commands_for=timedelta(minutes=30))

    world.now += timedelta(minutes=29)
    assert work.reconcile()["commands_expired"] == 0 and held(world.engine) == ["c-1"]
    world.now += timedelta(minutes=1)
    assert work.reconcile()["commands_expired"] == 1

    assert held(world.engine) == []
    # (reconciliation also re-drives the routed request the booker never came to)
    ((topic, key, payload, headers),) = [p for p in published if p[0] == "requests_deadletter"]
    assert (topic, key, payload) == ("requests_deadletter", b"r-1", value)
    assert headers["error_class"] == error_class.encode()
    assert headers["traceparent"] == b"00-abc"  # the record's own headers are kept
    assert (headers["origin_topic"], headers["origin_partition"], headers["origin_offset"]) == (
        b"t.requests.commands", b"2", b"41")
    assert says.encode() in headers["error_message"]
    with world.engine.connect() as conn:
        (row,) = conn.execute(select(deadletters.c.request_id, deadletters.c.error_class,
                                     deadletters.c.payload, deadletters.c.record_key,
                                     deadletters.c.origin_offset))
    assert tuple(row) == ("r-1", error_class, value, b"r-1", 41)
    # A command's dead letter never marks its request.
    assert (world.store.status("r-1") is None) is not accepted
    if accepted:
        assert status(world).status is RequestState.ROUTED


def test_a_dead_letter_the_topic_refuses_is_still_in_the_table(
        world: World, tmp_path: Path) -> None:
    commands_stage(world).handle(command(), COMMAND_ORIGIN)

    def refuse(*record: Any) -> None:
        raise ConnectionError("broker down")

    world.now += timedelta(hours=2)
    assert world.timed_work(tmp_path, refuse).reconcile()["commands_expired"] == 1
    assert held(world.engine) == []
    with world.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(deadletters)).scalar() == 1


def test_an_expiry_loses_to_the_intake_that_took_the_command(world: World) -> None:
    commands_stage(world).handle(command(), COMMAND_ORIGIN)
    with world.store.transaction() as conn:  # the intake, accepting the request just now
        assert len(take_cancels(conn, ["r-1"])) == 1
    recorded: list[Any] = []

    assert not HeldCommands(world.engine).expire("c-1", recorded.append)
    assert recorded == []


def test_the_intake_takes_each_held_cancel_once(world: World) -> None:
    commands_stage(world).handle(command(), COMMAND_ORIGIN)

    with world.store.transaction() as conn:
        first = take_cancels(conn, ["r-1", "r-2"])
    with world.store.transaction() as conn:
        second = take_cancels(conn, ["r-1"])

    assert [c.command_id for c in first] == ["c-1"] and second == []
    assert first[0].payload == command() and first[0].key == b"r-1"
    assert first[0].headers == {"traceparent": "00-abc"}
    assert first[0].held_at == NOW

