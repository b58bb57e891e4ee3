"""What a dead letter holds reaches the database as text it takes: PostgreSQL refuses NUL in
text, and a record's key or its error can hold one (a producer's bytes, not ours)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select

from consumers.app import _Runner
from scheduler.db import deadletters
from scheduler.request_store import RequestStore
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
