"""The request ledger on SQLite and PostgreSQL: acceptance, the status timeline, dead letters."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select
from sqlalchemy import event as sql_event

from scheduler.db import create_engine_for, requests
from scheduler.request_store import (
    Acceptance,
    Advance,
    RequestState,
    RequestStore,
    UnknownRequest,
    canonical_body_hash,
)
from scheduler.sql_ledger import SqlBookingLedger
from schemas.events import Meeting
from schemas.help_request import HelpRequest, parse_help_request

pytest_plugins = ["tests.integration.db_fixtures"]
pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)


def minutes(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


def body(request_id: str = "req-1", **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "request_id": request_id,
        "submitted_at": "2026-03-02T09:00:00+08:00",
        "source": "partner",
        "tenant": {"id": "t-42", "name": "Contoso 台灣", "country": "TW"},
        "requester": {"name": "Lin Mei", "email": "mei@example.com", "language": "zh-TW"},
        "partner": {"id": "p-7", "name": "Fabrikam", "email": "ops@example.com"},
        "topic": "core_onboarding",
    }
    return data | changes


def parsed(data: dict[str, Any]) -> HelpRequest:
    return parse_help_request(data)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, new_database: Callable[[str], str]) -> str:
    """Every test that touches the database runs on each dialect."""
    return new_database(request.param)


@pytest.fixture
def store(engine: Engine) -> RequestStore:
    return RequestStore(engine)


@pytest.fixture
def accepted(store: RequestStore) -> Iterator[str]:
    data = body()
    store.accept(parsed(data), canonical_body_hash(data), T0)
    yield data["request_id"]


# --- acceptance ---------------------------------------------------------------------------

def test_a_new_request_is_accepted_with_its_first_timeline_entry(store: RequestStore) -> None:
    data = body()
    outcome = store.accept(parsed(data), canonical_body_hash(data), T0)

    assert (outcome.kind, outcome.request_id, outcome.status) == (
        Acceptance.CREATED, "req-1", RequestState.ACCEPTED)
    status = store.status("req-1")
    assert status is not None
    assert status.to_json_dict() == {
        "request_id": "req-1", "status": "accepted", "center_id": None, "meeting": None,
        "timeline": [{"status": "accepted", "at": "2026-03-02T01:00:00Z", "detail": None}],
    }


def test_the_same_body_again_is_a_duplicate_and_stores_nothing(store: RequestStore,
                                                               accepted: str) -> None:
    store.advance(accepted, "routed", minutes(1), center_id="taipei")
    reordered = dict(reversed(list(body().items())))  # same JSON, other key order

    outcome = store.accept(parsed(reordered), canonical_body_hash(reordered), minutes(2))

    assert (outcome.kind, outcome.status) == (Acceptance.DUPLICATE, RequestState.ROUTED)
    status = store.status(accepted)
    assert status is not None and [e.status for e in status.timeline] == ["accepted", "routed"]


def test_the_same_id_with_another_body_is_a_conflict(store: RequestStore, accepted: str) -> None:
    other = body(topic="data_migration")
    outcome = store.accept(parsed(other), canonical_body_hash(other), minutes(1))
    assert (outcome.kind, outcome.status) == (Acceptance.CONFLICT, RequestState.ACCEPTED)


def test_concurrent_submissions_of_one_request_create_it_once(database_url: str,
                                                              store: RequestStore) -> None:
    data, barrier = body(), threading.Barrier(6, timeout=60)
    outcomes: list[Acceptance] = []

    def submit() -> None:
        engine = create_engine_for(database_url)
        try:
            barrier.wait()
            outcomes.append(RequestStore(engine).accept(parsed(data),
                                                        canonical_body_hash(data), T0).kind)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [Acceptance.CREATED] + [Acceptance.DUPLICATE] * 5
    status = store.status("req-1")
    assert status is not None and len(status.timeline) == 1


def test_canonical_body_hash_ignores_key_order_and_keeps_unicode() -> None:
    assert canonical_body_hash({"a": 1, "b": "台"}) == canonical_body_hash({"b": "台", "a": 1})
    assert canonical_body_hash({"a": 1}) != canonical_body_hash({"a": 2})
    # the UTF-8 of the compact, sorted form, not of a \\u-escaped one
    expected = hashlib.sha256('{"a":"台","b":[1,2]}'.encode()).hexdigest()
    assert canonical_body_hash({"b": [1, 2], "a": "台"}) == expected


# --- the status timeline ------------------------------------------------------------------

def test_the_happy_path_builds_an_ordered_timeline(store: RequestStore, accepted: str) -> None:
    reasons = {"reasons": ["in_region"]}
    assert store.advance(accepted, "routed", minutes(1), reasons, "taipei") == "routed"
    assert store.advance(accepted, "booked", minutes(2), {"specialist_id": "tpe-01"}) == "booked"
    assert store.advance(accepted, "invited", minutes(3), {"sequence": 0}) == "invited"

    status = store.status(accepted)
    assert status is not None
    assert (status.status, status.center_id) == (RequestState.INVITED, "taipei")
    assert [(e.status, e.at, e.detail) for e in status.timeline] == [
        ("accepted", T0, None),
        ("routed", minutes(1), reasons),
        ("booked", minutes(2), {"specialist_id": "tpe-01"}),
        ("invited", minutes(3), {"sequence": 0}),
    ]


def test_a_late_earlier_stage_event_joins_the_timeline_but_does_not_regress(
    store: RequestStore, accepted: str
) -> None:
    store.advance(accepted, "booked", minutes(2), center_id="osaka")
    store.advance(accepted, "invited", minutes(3))

    after = store.advance(accepted, "routed", minutes(1), {"reasons": ["in_region"]}, "taipei")

    status = store.status(accepted)
    assert status is not None
    assert after == status.status == RequestState.INVITED
    assert status.center_id == "osaka"
    assert [e.status for e in status.timeline] == ["accepted", "routed", "booked", "invited"]


@pytest.mark.parametrize(("events", "final"), [
    pytest.param(["routed", "escalated", "booked"], "escalated", id="escalated-stays"),
    pytest.param(["booked", "cancelled", "invited"], "cancelled", id="cancelled-stays"),
    pytest.param(["escalated", "cancelled"], "escalated", id="first-final-wins"),
    pytest.param(["deadlettered", "routed"], "deadlettered", id="deadlettered-stays"),
    pytest.param(["routed", "routed", "booked"], "booked", id="same-stage-again"),
    pytest.param(["invited", "booked", "routed"], "invited", id="stages-never-go-back"),
    pytest.param(["invited", "cancelled"], "cancelled", id="invited-can-be-cancelled"),
])
def test_status_moves_forward_only(store: RequestStore, accepted: str, events: list[str],
                                   final: str) -> None:
    for n, event in enumerate(events, start=1):
        store.advance(accepted, event, minutes(n), {"n": n})
    status = store.status(accepted)
    assert status is not None and status.status == final
    assert len(status.timeline) == len(events) + 1


def test_the_same_event_twice_is_recorded_once(store: RequestStore, accepted: str) -> None:
    store.advance(accepted, "routed", minutes(1), {"reasons": ["in_region"], "center": "x"})
    store.advance(accepted, "routed", minutes(5), {"center": "x", "reasons": ["in_region"]})
    store.advance(accepted, "routed", minutes(6), {"reasons": ["capacity"]})
    status = store.status(accepted)
    assert status is not None
    assert [(e.status, e.at) for e in status.timeline] == [
        ("accepted", T0), ("routed", minutes(1)), ("routed", minutes(6))]


def test_advancing_an_unknown_request_or_to_an_unknown_status_is_refused(
    store: RequestStore, accepted: str
) -> None:
    with pytest.raises(UnknownRequest, match="nope"):
        store.advance("nope", "routed", minutes(1))
    with pytest.raises(ValueError, match="shipped"):
        store.advance(accepted, "shipped", minutes(1))
    assert store.status("nope") is None


def test_the_status_shows_the_active_meeting(engine: Engine, store: RequestStore,
                                             accepted: str) -> None:
    ledger = SqlBookingLedger(engine)
    ledger.record(Meeting(
        request_id=accepted, center_id="taipei", specialist_id="tpe-01", language="zh-Hant",
        start=datetime(2026, 3, 3, 1, 0, tzinfo=UTC), end=datetime(2026, 3, 3, 2, 0, tzinfo=UTC),
        revision=2, uid="req-1@fasttrack.example.com", join_url="https://meet.example.com/1",
    ))
    status = store.status(accepted)
    assert status is not None
    assert status.to_json_dict()["meeting"] == {
        "start": "2026-03-03T01:00:00Z", "end": "2026-03-03T02:00:00Z",
        "specialist_id": "tpe-01", "join_url": "https://meet.example.com/1",
        "uid": "req-1@fasttrack.example.com", "sequence": 1,  # revision 2's invite
    }
    ledger.release(accepted)
    released = store.status(accepted)
    assert released is not None and released.meeting is None


def test_non_final_lists_stale_requests_in_flight(store: RequestStore) -> None:
    for request_id, events in [("a", []), ("b", ["routed"]), ("c", ["booked"]),
                               ("d", ["invited"]), ("e", ["escalated"]), ("f", ["routed"])]:
        data = body(request_id)
        store.accept(parsed(data), canonical_body_hash(data), T0)
        for event in events:
            store.advance(request_id, event, minutes(30 if request_id == "f" else 1))

    stale = store.non_final(older_than=minutes(10))

    assert [(p.request_id, p.status) for p in stale] == [
        ("a", "accepted"), ("b", "routed"), ("c", "booked")]
    assert stale[1].updated_at == minutes(1)


# --- dead letters -------------------------------------------------------------------------

def test_dead_letters_are_recorded_once_listed_and_resolved(store: RequestStore) -> None:
    origin: dict[str, Any] = {"origin_topic": "fasttrack.requests.submitted",
                              "origin_partition": 3, "origin_offset": 41}
    payload = b"\xff\xfe not json"
    first = store.record_deadletter(
        request_id=None, **origin, error_class="InvalidMessage", message="not valid UTF-8 JSON",
        payload=payload, headers={"attempts": "1"}, now=T0,
    )
    again = store.record_deadletter(
        request_id=None, **origin, error_class="InvalidMessage", message="redelivered",
        payload=payload, headers={}, now=minutes(1),
    )
    other = store.record_deadletter(
        request_id="req-9", origin_topic=None, origin_partition=None, origin_offset=None,
        error_class="CalendarUnavailable", message="smtp down", payload=b"{}",
        headers={}, now=minutes(2), attempts=5,
    )

    assert again == first != other
    listed = store.list_deadletters()
    assert [(d.id, d.payload, d.headers, d.at, d.state) for d in listed] == [
        (first, payload, {"attempts": "1"}, T0, "open"),
        (other, b"{}", {}, minutes(2), "open"),
    ]
    assert listed[1].attempts == 5 and listed[0].origin_offset == 41
    assert store.set_deadletter_state(first, "redriven", minutes(3))
    assert not store.set_deadletter_state(10_000, "discarded", minutes(3))
    assert [d.id for d in store.list_deadletters()] == [other]
    assert [d.state for d in store.list_deadletters(state=None)] == ["redriven", "open"]
    assert [d.id for d in store.list_deadletters(state=None, request_id="req-9")] == [other]


def test_stored_body_reproduces_the_hash_when_defaults_were_sent(store: RequestStore,
                                                                  engine: Engine) -> None:
    """Regression: the model's wire form drops ``"services": []``, so storing it instead of the
    body as received made a republished request hash differently and look like a conflict."""
    data = body("req-defaults", services=[], submitted_at="2026-03-02T01:00:00Z")
    store.accept(parsed(data), canonical_body_hash(data), T0, data)
    with engine.connect() as conn:
        stored = json.loads(conn.execute(
            select(requests.c.body).where(requests.c.request_id == "req-defaults")).scalar_one())
    assert canonical_body_hash(stored) == canonical_body_hash(data)
    again = store.accept(parsed(stored), canonical_body_hash(stored), T0, stored)
    assert again.kind is Acceptance.DUPLICATE


# --- batches -------------------------------------------------------------------------------

_STATES = [RequestState.ROUTED, RequestState.BOOKED, RequestState.INVITED,
           RequestState.ESCALATED, RequestState.CANCELLED]
_change = st.tuples(st.integers(0, 3), st.sampled_from(_STATES), st.integers(0, 1),
                    st.integers(1, 30), st.sampled_from([None, "taipei", "dublin"]))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(_change, max_size=12))
def test_advance_many_is_advance_for_each_change_in_order(
        changes: list[tuple[int, RequestState, int, int, str | None]],
        new_database: Callable[[str], str]) -> None:
    """Request 3 is never accepted; details repeat, so some changes are the same event twice."""
    one, many = (create_engine_for(new_database("sqlite")) for _ in range(2))
    try:
        stores = RequestStore(one), RequestStore(many)
        for store in stores:
            for n in range(3):
                data = body(f"req-{n}")
                store.accept(parsed(data), canonical_body_hash(data), T0)
        batch = [Advance(f"req-{n}", status, minutes(m), {"try": detail}, center)
                 for n, status, detail, m, center in changes]
        for change in batch:
            with contextlib.suppress(UnknownRequest):
                stores[0].advance(change.request_id, change.status, change.now,
                                  change.detail, change.center_id)
        with stores[1].transaction() as conn:
            after = stores[1].advance_many(conn, batch)
        for n in range(4):
            first, second = (s.status(f"req-{n}") for s in stores)
            assert first == second
            if first is not None and any(c.request_id == f"req-{n}" for c in batch):
                assert after[f"req-{n}"] is first.status
        assert "req-3" not in after
    finally:
        one.dispose()
        many.dispose()


def test_advance_many_reads_only_the_statuses_it_is_not_given(database_url: str) -> None:
    """``locked`` statuses (read FOR UPDATE earlier in the transaction) are not read again;
    the others are, and the outcome is what reading them all gives."""
    engine = create_engine_for(database_url)
    try:
        store = RequestStore(engine)
        for n in range(3):
            data = body(f"req-{n}")
            store.accept(parsed(data), canonical_body_hash(data), T0)
        store.advance("req-2", RequestState.CANCELLED, minutes(1))
        reads: list[str] = []

        def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if statement.startswith("SELECT requests.request_id, requests.status"):
                reads.append(statement)

        sql_event.listen(engine, "before_cursor_execute", count)
        with store.transaction() as conn:
            locked = store.statuses(conn, ["req-0", "req-1"], lock=True)
            del reads[:]
            after = store.advance_many(conn, [
                Advance("req-0", RequestState.ROUTED, minutes(2), {}, "taipei"),
                Advance("req-1", RequestState.ROUTED, minutes(2), {}, "dublin")], locked=locked)
            assert reads == []
            after |= store.advance_many(conn, [
                Advance("req-1", RequestState.BOOKED, minutes(3)),
                Advance("req-2", RequestState.ROUTED, minutes(3)),  # read: cancelled stays
                Advance("req-9", RequestState.ROUTED, minutes(3))], locked=locked)
            assert len(reads) == 1
        sql_event.remove(engine, "before_cursor_execute", count)
        assert after == {"req-0": RequestState.ROUTED, "req-1": RequestState.BOOKED,
                         "req-2": RequestState.CANCELLED}
        assert [(n, s.status, s.center_id) for n in range(3)
                if (s := store.status(f"req-{n}")) is not None] == [
            (0, RequestState.ROUTED, "taipei"), (1, RequestState.BOOKED, "dublin"),
            (2, RequestState.CANCELLED, None)]
    finally:
        engine.dispose()
