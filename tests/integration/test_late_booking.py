"""A routed request booked late (a backlog, a redelivery, a redrive) is booked from the booker's
own clock: never into a slot that has passed, nor closer than the minimum notice."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from scheduler.request_store import RequestState
from tests.integration.lifecycle_support import World
from tests.unit.conftest import help_request, make_directory

pytest_plugins = ["tests.integration.db_fixtures"]

DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
ROUTED_AT = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)  # Monday 09:30 in Taipei


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest, new_database: Callable[[str], str]) -> str:
    return new_database(request.param)


@pytest.mark.parametrize("late", [timedelta(0), timedelta(hours=6), timedelta(days=3)])
def test_a_request_booked_late_starts_after_now_and_the_notice(engine: Engine,
                                                               late: timedelta) -> None:
    directory = make_directory(("taipei",))
    world = World(engine, directory, ROUTED_AT)
    world.submit(help_request("r-1"), until=1)  # routed at 09:30
    status = world.store.status("r-1")
    assert status is not None and status.status is RequestState.ROUTED

    world.now = ROUTED_AT + late  # the routed record is read this much later
    world.submit(help_request("r-1"))

    meeting = world.ledger.meeting_for("r-1")
    assert meeting is not None
    notice = timedelta(minutes=directory.policy.min_notice_minutes)
    assert meeting.start >= world.now + notice
    if not late:  # on time: the first slot the routing found, 13:30 the same day
        assert meeting.start == datetime(2026, 11, 23, 5, 30, tzinfo=UTC)
