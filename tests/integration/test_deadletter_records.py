"""Dead letters: what one holds reaches the database as text it takes (PostgreSQL refuses NUL
in text, and a record's key or its error can hold one), and a redrive after its meeting was
freed books the request again instead of inviting anyone to the freed slot."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from consumers.app import _Runner
from consumers.envelope import Origin
from scheduler.db import deadletters
from scheduler.delivery import DeliveryFailed
from scheduler.request_store import RequestState, RequestStore
from services.ops_deadletters import DeadLetterDesk
from tests.integration.lifecycle_support import ORIGIN, World
from tests.unit.conftest import help_request, make_directory
from tests.unit.test_batch_runner import Event, Message, Stage, Topic

pytest_plugins = ["tests.integration.db_fixtures"]

DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest, new_database: Callable[[str], str]) -> str:
    return new_database(request.param)


def test_a_key_with_nul_is_dead_lettered_and_recorded(engine: Engine) -> None:
    out, dead = Topic(), Topic()
    runner = _Runner({"out": out, "requests_deadletter": dead}, RequestStore(engine),
                     lambda: datetime(2026, 11, 23, tzinfo=UTC))  # type: ignore[arg-type]
    events = [Event(Message(b"bad", 0, key=b"poison\x00key")), Event(Message(b"a", 1))]

    asyncio.run(runner.process(Stage(batch_breaks=False), events))  # type: ignore[arg-type]

    assert dead.sent == [(b"poison\x00key", b"bad")] and out.sent == [(None, b"a")]
    with engine.connect() as conn:
        (row,) = conn.execute(select(deadletters.c.request_id, deadletters.c.record_key,
                                     deadletters.c.payload))
    assert row == ("poison\ufffdkey", b"poison\x00key", b"bad")


class Sink:
    """The record sink of the dead-letter desk: keeps what it produces."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes]] = []

    def produce(self, topic: str, partition: int | None, key: bytes | None, value: bytes,
                headers: list[tuple[str, bytes]]) -> tuple[int, int]:
        self.records.append((topic, key, value))
        return 0, len(self.records)


def test_a_redrive_after_the_meeting_was_freed_books_again_and_invites_nobody_to_the_old(
        engine: Engine, tmp_path: Path) -> None:
    world = World(engine, make_directory(("taipei",)), datetime(2026, 11, 23, 1, 30, tzinfo=UTC))
    submission, booking, invitation = world.stages
    window = {"earliest": "2026-11-24T09:00:00+08:00"}
    (routed,) = [e.value for e in submission.handle(json.dumps(help_request(
        "r-1", preferred_window=window)).encode(), ORIGIN) if e.topic == "requests_routed"]
    (booked,) = [e.value for e in booking.handle(routed, ORIGIN) if e.topic == "meetings_booked"]
    freed = world.ledger.meeting_for("r-1")
    assert freed is not None
    # The notifier's backend refused it for good: dead-lettered, then freed by reconciliation.
    runner = _Runner({}, world.store, world.clock)  # type: ignore[arg-type]
    asyncio.run(runner._deadletter(booked, Origin("t.meetings.booked", 0, 7, b"r-1"),
                                   DeliveryFailed("smtp", "550 no such user", transient=False), 1))
    world.now += timedelta(minutes=5)
    published: list[tuple[str, bytes, bytes]] = []
    work = world.timed_work(tmp_path, lambda *record: published.append(record))
    assert work.reconcile()["orphans"] == 1 and world.ledger.meeting_for("r-1") is None

    sink = Sink()
    (letter,) = DeadLetterDesk(engine, sink, world.clock).browse()
    DeadLetterDesk(engine, sink, world.clock).redrive(letter.id, "ops")
    ((topic, key, value),) = sink.records

    assert invitation.handle(value, Origin(topic, 0, 8, key)) == []  # not to the freed slot
    assert world.delivery.invites == []
    status = world.store.status("r-1")
    assert status is not None and status.status is RequestState.ROUTED

    world.now += timedelta(minutes=5)  # reconciliation re-drives what is stuck in flight
    assert work.reconcile()["redriven"] == 1
    ((_, _, rerouted),) = [p for p in published if p[0] == "requests_routed"]
    (rebooked,) = [e.value for e in booking.handle(rerouted, ORIGIN)
                   if e.topic == "meetings_booked"]
    invitation.handle(rebooked, ORIGIN)
    status = world.store.status("r-1")
    assert status is not None and status.status is RequestState.INVITED
    assert status.meeting is not None
    assert [i.meeting for i in world.delivery.invites] == [world.ledger.meeting_for("r-1")]
