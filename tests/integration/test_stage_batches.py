"""Stages take a fetched batch at a time: the batch path must do exactly what one record at a
time does (same emits, same rows), take the fast path for new records, and set aside the rest.

The reference is always the one-by-one path (``handle``) on SQLite; the batch path
(``handle_batch``) runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError
from structlog.testing import capture_logs

from consumers.envelope import MAX_RECORD_BYTES, Emit, Origin, Unprocessable
from consumers.stages import Booking, Invitation, Outcome, Submission
from scheduler.db import create_engine_for, invite_deliveries, meetings, request_events, requests
from scheduler.delivery import DeliveryReceipt, Invite
from scheduler.directory import default_directory
from scheduler.directory_source import DirectorySource
from scheduler.invite_log import InviteLog
from scheduler.outbox import OutboxDelivery
from scheduler.request_store import RequestState, RequestStore, canonical_body_hash
from scheduler.sql_ledger import LockedElsewhere, SqlBookingLedger
from schemas.help_request import parse_help_request
from services.bootstrap import join_url
from services.sample_requests import sample_requests

pytest_plugins = ["tests.integration.db_fixtures"]
pytestmark = pytest.mark.integration

DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
NOW = datetime(2026, 11, 23, 1, 30, tzinfo=UTC)  # Monday: Asia open, Europe about to


@pytest.fixture(params=DIALECTS)
def database_url(request: pytest.FixtureRequest, new_database: Callable[[str], str]) -> str:
    return new_database(request.param)


@dataclass
class Line:
    """The three pipeline stages on one database, outbox and fixed clock, counting how many
    records each stage had to take one by one."""

    engine: Engine
    outbox: Path
    delivery: Any = None
    one_by_one: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.store = RequestStore(self.engine)
        feed = DirectorySource.constant(default_directory())
        ledger = SqlBookingLedger(self.engine, clock=lambda: NOW)
        delivery = self.delivery or OutboxDelivery(self.outbox)
        self.submission = Submission(self.store, feed, lambda: NOW)
        self.booking = Booking(self.store, feed, ledger, lambda: NOW, join_url)
        self.invitation = Invitation(self.store, feed, lambda _center: delivery,
                                     InviteLog(self.engine), ledger, lambda: NOW)
        for name in ("submission", "booking", "invitation"):
            stage = getattr(self, name)
            self.one_by_one[name] = 0
            stage.handle = self._counting(name, stage.handle)

    def _counting(self, name: str, handle: Callable[[bytes, Origin], list[Emit]],
                  ) -> Callable[[bytes, Origin], list[Emit]]:
        def counted(value: bytes, origin: Origin) -> list[Emit]:
            self.one_by_one[name] += 1
            return handle(value, origin)
        return counted

    def run(self, values: Sequence[bytes], *, batch: bool) -> list[list[Emit]]:
        """Every stage in turn over the previous stage's output; the emits of each stage."""
        emitted = []
        for name in ("submission", "booking", "invitation"):
            stage = getattr(self, name)
            records = [(v, Origin(name, 0, n)) for n, v in enumerate(values)]
            outcomes: list[Outcome] = (stage.handle_batch(records) if batch else
                                       [stage.handle(v, o) for v, o in records])
            emits = [e for outcome in outcomes for e in _emits(outcome)]
            emitted.append(emits)
            values = [e.value for e in emits if e.topic in ("requests_routed", "meetings_booked")]
        return emitted


def _emits(outcome: Outcome) -> list[Emit]:
    assert not isinstance(outcome, Exception), repr(outcome)
    return outcome


def mix(count: int, prefix: str = "b") -> list[bytes]:
    return [json.dumps(r).encode() for r in sample_requests(
        count, NOW - timedelta(minutes=30), per_hour=3600, seed=5, prefix=prefix)]


def database_state(engine: Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {name: sorted(tuple(row) for row in conn.execute(query)) for name, query in {
            "requests": (select(
                requests.c.request_id, requests.c.status, requests.c.center_id)),
            "meetings": select(
                meetings.c.request_id, meetings.c.specialist_id, meetings.c.start_utc,
                meetings.c.uid, meetings.c.join_url, meetings.c.status),
            "timeline": select(
                request_events.c.request_id, request_events.c.status,
                request_events.c.fingerprint),
            "invites": select(
                invite_deliveries.c.uid, invite_deliveries.c.sequence,
                invite_deliveries.c.method, invite_deliveries.c.status,
                invite_deliveries.c.attempts),
        }.items()}


def normalized(emits: list[Emit], outbox: Path) -> list[tuple[str, bytes | None, bytes]]:
    return [(e.topic, e.key, e.value.replace(str(outbox).encode(), b"<outbox>"))
            for e in emits]


@pytest.fixture
def reference(tmp_path: Path, new_database: Callable[[str], str]) -> Line:
    engine = create_engine_for(new_database("sqlite"))
    yield Line(engine, tmp_path / "reference-outbox")
    engine.dispose()


def test_a_batch_does_exactly_what_one_record_at_a_time_does(
        engine: Engine, reference: Line, tmp_path: Path) -> None:
    values = mix(120)
    expected = reference.run(values, batch=False)
    line = Line(engine, tmp_path / "outbox")

    emitted = line.run(values, batch=True)

    for stage, (got, want) in enumerate(zip(emitted, expected, strict=True)):
        assert normalized(got, line.outbox) == normalized(want, reference.outbox), stage
    assert database_state(engine) == database_state(reference.engine)
    assert sorted(p.name for p in line.outbox.iterdir()) == \
        sorted(p.name for p in reference.outbox.iterdir())
    # Not a single record needed the one-by-one path: the whole batch went through at once.
    assert line.one_by_one == {"submission": 0, "booking": 0, "invitation": 0}
    statuses = {row[1] for row in database_state(engine)["requests"]}
    assert statuses <= {"invited", "escalated"} and "invited" in statuses


def test_requests_the_gateway_stored_are_routed_in_the_batch(
        engine: Engine, reference: Line, tmp_path: Path) -> None:
    """The gateway stores a request as accepted, then publishes it: the intake routes those
    in its batch too, exactly as one at a time (one transaction for the lot, not two a
    record)."""
    values = mix(40, prefix="gw")
    line = Line(engine, tmp_path / "outbox")
    for store in (reference.store, line.store):
        for value in values:
            body = json.loads(value)
            store.accept(parse_help_request(body), canonical_body_hash(body), NOW, body)

    expected = reference.run(values, batch=False)
    emitted = line.run(values, batch=True)

    for stage, (got, want) in enumerate(zip(emitted, expected, strict=True)):
        assert normalized(got, line.outbox) == normalized(want, reference.outbox), stage
    assert database_state(engine) == database_state(reference.engine)
    assert line.one_by_one == {"submission": 0, "booking": 0, "invitation": 0}
    assert reference.one_by_one["submission"] == 40


def test_what_is_not_new_is_set_aside_and_answered_as_before(engine: Engine,
                                                              tmp_path: Path) -> None:
    line = Line(engine, tmp_path / "outbox")
    earlier, a, b = mix(3)
    (routed_earlier,) = line.submission.handle(earlier, Origin("t", 0, 0))
    b_changed = json.dumps({**json.loads(b), "notes": "changed"}).encode()
    records = [a, b"{not json", a, b, b_changed, b" " * (MAX_RECORD_BYTES + 1), earlier]
    line.one_by_one["submission"] = 0

    outcomes = line.submission.handle_batch([(v, Origin("t", 0, n))
                                             for n, v in enumerate(records)])

    routed_a, bad_json, again_a, routed_b, conflict, oversize, again_earlier = outcomes
    assert [e.topic for e in _emits(routed_a)] == ["requests_routed"]
    assert _emits(again_a) == _emits(routed_a)  # the same record again: the same answer
    assert [e.topic for e in _emits(routed_b)] == ["requests_routed"]
    assert _emits(again_earlier) == [routed_earlier]
    for failure, words in ((bad_json, "not a valid HelpRequest"), (conflict, "different body"),
                           (oversize, "is over")):
        assert isinstance(failure, Unprocessable) and words in str(failure)
    # a again, b changed, earlier: the three records that were not new
    assert line.one_by_one["submission"] == 3
    b_id = json.loads(b)["request_id"]
    status = line.store.status(b_id)
    assert status is not None and status.status is RequestState.ROUTED


def test_a_record_the_checks_did_not_expect_is_refused_alone(engine: Engine,
                                                             tmp_path: Path) -> None:
    line = Line(engine, tmp_path / "outbox")
    good, other = mix(2)
    line.submission.handle(good, Origin("t", 0, 0))
    body = json.loads(good)
    odd = json.dumps({**body, "tenant": {**body["tenant"], "country": ["TW"]}}).encode()
    line.one_by_one["submission"] = 0

    outcomes = line.submission.handle_batch([(odd, Origin("t", 0, 1)),
                                             (other, Origin("t", 0, 2))])

    refused, routed_other = outcomes
    assert isinstance(refused, Unprocessable) and "tenant.country" in str(refused)
    assert not refused.marks_request  # the good request with that id is not touched
    assert [e.topic for e in _emits(routed_other)] == ["requests_routed"]
    status = line.store.status(body["request_id"])
    assert status is not None and status.status is RequestState.ROUTED


def test_a_failing_batch_transaction_is_retried_one_record_at_a_time(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    line = Line(engine, tmp_path / "outbox")
    values = mix(5)
    real = line.store.advance_many
    calls = {"n": 0}

    def fail_once(conn: Any, changes: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("UPDATE requests", {}, Exception("database is locked"))
        return real(conn, changes, **kwargs)

    monkeypatch.setattr(line.store, "advance_many", fail_once)
    outcomes = line.submission.handle_batch([(v, Origin("t", 0, n))
                                             for n, v in enumerate(values)])

    assert [[e.topic for e in _emits(o)] for o in outcomes] == [["requests_routed"]] * 5
    assert line.one_by_one["submission"] == 5
    # The failed batch left nothing behind: each request was accepted once, routed once.
    state = database_state(engine)
    assert [s for _, s, _ in state["requests"]] == ["routed"] * 5
    assert len(state["timeline"]) == 10


def test_the_booker_skips_what_changed_and_re_emits_a_redelivered_booking(
        engine: Engine, tmp_path: Path) -> None:
    line = Line(engine, tmp_path / "outbox")
    values = mix(3)
    routed = [e.value for v in values for e in line.submission.handle(v, Origin("t", 0, 0))]
    first = line.booking.handle_batch([(routed[0], Origin("r", 0, 0))])
    cancelled_id = json.loads(routed[1])["request"]["request_id"]
    line.store.advance(cancelled_id, RequestState.CANCELLED, NOW, {"by": "test"})
    line.one_by_one["booking"] = 0

    again, skipped, fresh = line.booking.handle_batch(
        [(v, Origin("r", 0, n)) for n, v in enumerate(routed)])

    assert _emits(again) == _emits(first[0])  # redelivered: the same booking, not a new one
    assert _emits(skipped) == []
    assert [e.topic for e in _emits(fresh)] == ["meetings_booked"]
    assert line.one_by_one["booking"] == 1
    with engine.connect() as conn:
        assert conn.execute(select(meetings.c.request_id)
                            .where(meetings.c.status == "active")).scalars().all().__len__() == 2


def test_a_booking_that_meets_another_batchs_lock_is_booked_alone_after_the_batch(
        engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``LockedElsewhere`` (an overflow center's specialist held by another worker's batch)
    sets that record aside; the rest of the batch commits, then it is booked on its own."""
    line = Line(engine, tmp_path / "outbox")
    routed = [e.value for v in mix(4) for e in line.submission.handle(v, Origin("t", 0, 0))]
    held_up = json.loads(routed[1])["request"]["request_id"]
    real_within = SqlBookingLedger.within

    def within(ledger: SqlBookingLedger, conn: Any) -> Any:
        batch = real_within(ledger, conn)
        real_record = batch.record

        def record(meeting: Any) -> Any:
            if meeting.request_id == held_up:
                raise LockedElsewhere(meeting.specialist_id)
            return real_record(meeting)

        batch.record = record
        return batch

    monkeypatch.setattr(SqlBookingLedger, "within", within)
    line.one_by_one["booking"] = 0

    with capture_logs() as logs:
        outcomes = line.booking.handle_batch([(v, Origin("r", 0, n))
                                              for n, v in enumerate(routed)])

    assert [[e.topic for e in _emits(o)] for o in outcomes] == [["meetings_booked"]] * 4
    assert line.one_by_one["booking"] == 1
    assert [log for log in logs if log["event"] == "bookings_set_aside"] == [
        {"event": "bookings_set_aside", "stage": "booker", "records": 1,
         "reason": "locked_elsewhere", "log_level": "info"}]
    state = database_state(engine)
    assert [status for _, status, _ in state["requests"]] == ["booked"] * 4
    assert len([m for m in state["meetings"] if m[-1] == "active"]) == 4


@dataclass
class FlakyBatchDelivery:
    """A backend that takes invites in batches and fails the first try of one UID."""

    fail_uid: str
    name: str = "flaky"
    tells_removed_attendees: bool = False
    sent: list[str] = field(default_factory=list)
    failed: bool = False

    def send(self, invite: Invite) -> DeliveryReceipt:
        self.sent.append(invite.meeting.uid)
        return DeliveryReceipt(location=f"memory:{invite.meeting.uid}")

    def send_many(self, invites: Sequence[Invite]) -> list[DeliveryReceipt | Exception]:
        results: list[DeliveryReceipt | Exception] = []
        for invite in invites:
            if invite.meeting.uid == self.fail_uid and not self.failed:
                self.failed = True
                results.append(OSError("disk full"))
            else:
                results.append(self.send(invite))
        return results


def test_an_invite_that_failed_in_its_batch_is_retried_alone(engine: Engine,
                                                            tmp_path: Path) -> None:
    probe = Line(engine, tmp_path / "probe")
    booked = []
    for value in mix(4):
        for routed in probe.submission.handle(value, Origin("t", 0, 0)):
            booked += [e.value for e in probe.booking.handle(routed.value, Origin("r", 0, 0))]
    uids = [json.loads(v)["meeting"]["uid"] for v in booked]
    delivery = FlakyBatchDelivery(fail_uid=uids[1])
    line = Line(engine, tmp_path / "outbox", delivery=delivery)

    outcomes = line.invitation.handle_batch([(v, Origin("b", 0, n))
                                             for n, v in enumerate(booked)])

    assert [[e.topic for e in _emits(o)] for o in outcomes] == [["invites_delivered"]] * 4
    assert line.one_by_one["invitation"] == 1
    assert sorted(delivery.sent) == sorted(uids)
    for request_id in (json.loads(v)["request"]["request_id"] for v in booked):
        status = line.store.status(request_id)
        assert status is not None and status.status is RequestState.INVITED
