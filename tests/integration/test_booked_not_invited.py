"""A directory reload that removes the center (or the specialist) of a meeting that is booked
but not yet invited: the notifier leaves the record alone instead of dead-lettering it (which
showed the request as rejected), and the leader's revalidation moves the meeting under the same
policy, whose REQUEST is then the first invite, or escalates it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from consumers.stages import Invitation
from scheduler.invite_log import InviteLog
from scheduler.request_store import RequestState
from tests.integration.lifecycle_support import ORIGIN, World
from tests.unit.conftest import help_request, make_directory

pytest_plugins = ["tests.integration.db_fixtures"]

DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
NOW = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)  # Monday 09:30 in Taipei


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest, new_database: Callable[[str], str]) -> str:
    return new_database(request.param)


def booked_record(world: World, request_id: str) -> bytes:
    submission, booking, _ = world.stages
    (routed,) = [e.value for e in submission.handle(json.dumps(help_request(request_id)).encode(),
                                                    ORIGIN) if e.topic == "requests_routed"]
    (booked,) = [e.value for e in booking.handle(routed, ORIGIN)
                 if e.topic == "meetings_booked"]
    return booked


@pytest.mark.parametrize(("left", "ends"), [(("tokyo",), RequestState.INVITED),
                                            (("sao-paulo",), RequestState.ESCALATED)],
                         ids=["another-center-takes-it", "nobody-speaks-english"])
def test_a_booked_meeting_whose_center_is_gone_is_moved_or_escalated(
        engine: Engine, tmp_path: Path, left: tuple[str, ...], ends: RequestState) -> None:
    world = World(engine, make_directory(("taipei", "tokyo")), NOW)
    record = booked_record(world, "r-1")
    meeting = world.ledger.meeting_for("r-1")
    assert meeting is not None and meeting.center_id == "taipei"
    world.directory = make_directory(left)  # the reload: Taipei is gone

    notifier = Invitation(world.store, lambda: world.directory, lambda _center: world.delivery,
                          InviteLog(engine), world.ledger, world.clock)  # reads the reload
    assert notifier.handle(record, ORIGIN) == []  # not dead-lettered, not invited
    assert notifier.handle_batch([(record, ORIGIN)]) == [[]]
    status = world.store.status("r-1")
    assert status is not None and status.status is RequestState.BOOKED

    world.now = NOW + timedelta(minutes=1)
    work = world.timed_work(tmp_path)
    counts = work.revalidate_bookings()

    status = world.store.status("r-1")
    assert status is not None and status.status is ends
    if ends is RequestState.INVITED:
        assert counts["rescheduled"] == 1 and status.center_id == "tokyo"
        (invite,) = world.delivery.invites  # the first invite, from the center that took it
        assert (invite.method, invite.center.id) == ("REQUEST", "tokyo")
    else:
        assert counts["escalated"] == 1 and world.ledger.meeting_for("r-1") is None
        assert world.delivery.invites == []
