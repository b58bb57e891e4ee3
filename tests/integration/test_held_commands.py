"""A command read before its request was accepted is held, not dead-lettered: the intake applies a
held cancel as it accepts the request (nobody is booked or invited), and the timed work applies
what a race left held or dead-letters a command whose request never came."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from consumers.envelope import Origin
from consumers.stages import Commands
from scheduler.db import deadletters, held_commands
from scheduler.held_commands import HeldCommand, HeldCommands, take
from scheduler.lifecycle import Lifecycle
from scheduler.request_store import RequestState, RequestStatus, RequestStore
from tests.integration.lifecycle_support import World
from tests.unit.conftest import help_request, make_directory

pytest_plugins = ["tests.integration.db_fixtures"]

DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
NOW = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)
WINDOW = {"earliest": "2026-11-24T09:00:00+08:00"}
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


def test_requests_without_held_commands_are_routed_in_the_same_batch(world: World) -> None:
    commands_stage(world).handle(command(request_id="r-2", command_id="c-2"), COMMAND_ORIGIN)
    submission = world.stages[0]

    outcomes = submission.handle_batch([request_record("r-1"), request_record("r-2"),
                                        request_record("r-3")])

    assert [[e.topic for e in o] for o in outcomes] == [  # type: ignore[union-attr]
        ["requests_routed"], [], ["requests_routed"]]
    assert [status(world, r).status for r in ("r-1", "r-2", "r-3")] == [
        RequestState.ROUTED, RequestState.CANCELLED, RequestState.ROUTED]


def test_a_held_reschedule_leaves_the_request_to_be_routed(world: World) -> None:
    window = {"earliest": "2026-12-01T09:00:00+08:00"}
    commands_stage(world).handle(command("reschedule", preferred_window=window),
                                 COMMAND_ORIGIN)

    (outcome,) = world.stages[0].handle_batch([request_record()])

    # As for any reschedule of a request not booked yet: there is no meeting to move.
    assert [e.topic for e in outcome] == ["requests_routed"]  # type: ignore[union-attr]
    assert status(world).status is RequestState.ROUTED and held(world.engine) == []


class AcceptedMeanwhile(RequestStore):
    """A store whose first status read finds nothing: the request is accepted between the
    commands stage's attempt and its hold."""

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


def test_a_request_accepted_while_its_command_was_held_is_cancelled_by_the_stage(
        world: World) -> None:
    def accept() -> None:  # as the intake would, had it run just then
        world.stages[0].handle(*request_record())

    lifecycle = world.lifecycle()
    lifecycle.store = AcceptedMeanwhile(world.engine, accept)
    assert commands_stage(world, lifecycle).handle(command(), COMMAND_ORIGIN) == []

    after = status(world)
    assert after.status is RequestState.CANCELLED and held(world.engine) == []
    assert after.timeline[-1].detail == {"reason": "command", "command_id": "c-1"}


def test_reconciliation_applies_a_command_still_held_for_a_known_request(
        world: World, tmp_path: Path) -> None:
    world.submit(help_request("r-1", preferred_window=WINDOW))  # booked and invited
    HeldCommands(world.engine).hold(HeldCommand(  # what a race between two workers can leave
        "c-1", "r-1", "cancel", command(), b"r-1", {}, "t.requests.commands", 0, 5, NOW))
    work = world.timed_work(tmp_path)

    assert work.reconcile()["commands_applied"] == 0  # younger than stale_after: left alone
    world.now += timedelta(minutes=3)
    assert work.reconcile()["commands_applied"] == 1

    assert status(world).status is RequestState.CANCELLED and held(world.engine) == []
    assert world.ledger.meeting_for("r-1") is None
    assert [p.method for p in world.delivery.parsed("r-1")] == ["REQUEST", "CANCEL"]


def test_a_command_whose_request_never_comes_is_dead_lettered_after_the_hold(
        world: World, tmp_path: Path) -> None:
    value = command()
    commands_stage(world).handle(value, COMMAND_ORIGIN)
    published: list[tuple[Any, ...]] = []
    work = world.timed_work(tmp_path, lambda *record: published.append(record),
                            hold_commands_for=timedelta(minutes=30))

    world.now += timedelta(minutes=29)
    assert work.reconcile()["commands_expired"] == 0 and held(world.engine) == ["c-1"]
    world.now += timedelta(minutes=1)
    assert work.reconcile()["commands_expired"] == 1

    assert held(world.engine) == []
    ((topic, key, payload, headers),) = published
    assert (topic, key, payload) == ("requests_deadletter", b"r-1", value)
    assert headers["error_class"] == b"UnknownRequest"
    assert headers["traceparent"] == b"00-abc"  # the record's own headers are kept
    assert (headers["origin_topic"], headers["origin_partition"], headers["origin_offset"]) == (
        b"t.requests.commands", b"2", b"41")
    assert b"not accepted within 30 minutes" in headers["error_message"]
    with world.engine.connect() as conn:
        (row,) = conn.execute(select(deadletters.c.request_id, deadletters.c.error_class,
                                     deadletters.c.payload, deadletters.c.record_key,
                                     deadletters.c.origin_offset))
    assert tuple(row) == ("r-1", "UnknownRequest", value, b"r-1", 41)
    assert world.store.status("r-1") is None  # a dead letter marks no request it never had


def test_a_dead_letter_that_cannot_be_published_stays_held_for_the_next_run(
        world: World, tmp_path: Path) -> None:
    commands_stage(world).handle(command(), COMMAND_ORIGIN)

    def refuse(*record: Any) -> None:
        raise ConnectionError("broker down")

    world.now += timedelta(hours=2)
    assert world.timed_work(tmp_path, refuse).reconcile()["commands_expired"] == 0
    assert held(world.engine) == ["c-1"]
    published: list[tuple[Any, ...]] = []
    assert world.timed_work(tmp_path, lambda *r: published.append(r)).reconcile()[
        "commands_expired"] == 1
    assert len(published) == 1 and held(world.engine) == []
    with world.engine.connect() as conn:  # recorded once, however many runs tried
        assert conn.execute(select(func.count()).select_from(deadletters)).scalar() == 1


def test_the_intake_takes_each_held_command_once(world: World) -> None:
    """Two takes of the same request (two workers on PostgreSQL, or a redelivery): the
    command goes to one of them."""
    commands_stage(world).handle(command(), COMMAND_ORIGIN)

    with world.store.transaction() as conn:
        first = take(conn, ["r-1", "r-2"])
    with world.store.transaction() as conn:
        second = take(conn, ["r-1"])

    assert [c.command_id for c in first] == ["c-1"] and second == []
    assert first[0].payload == command() and first[0].key == b"r-1"
    assert first[0].headers == {"traceparent": "00-abc"}
    assert first[0].held_at == NOW

