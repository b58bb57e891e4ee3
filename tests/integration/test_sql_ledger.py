"""The booking ledger contract, run against every ledger: in memory, SQLite and PostgreSQL.

The concurrency and raw-SQL tests show that the database itself refuses a double booking
(DESIGN §7), not the code in front of it.
"""

from __future__ import annotations

import multiprocessing
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event, func, select, text
from sqlalchemy.exc import IntegrityError, StatementError

from scheduler.db import (
    SQLITE_BUSY_TIMEOUT_MS,
    SQLITE_CACHE_KIB,
    create_engine_for,
    meetings,
    metadata,
    owned_by_migrations,
)
from scheduler.ledger import (
    MAX_MEETING,
    BookingLedger,
    InMemoryLedger,
    MeetingTooLong,
    RequestAlreadyBooked,
    Span,
    SpecialistBusy,
)
from scheduler.sql_ledger import LockedElsewhere, SqlBookingLedger
from schemas.events import Meeting

pytest_plugins = ["tests.integration.db_fixtures"]
pytestmark = pytest.mark.integration

DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

DAY = datetime(2026, 3, 2, tzinfo=UTC)
TAIPEI = timezone(timedelta(hours=8))


def at(hhmm: str, tz: timezone = UTC) -> datetime:
    """``hh:mm`` on 2026-03-02 in ``tz``."""
    hours, minutes = map(int, hhmm.split(":"))
    return datetime(2026, 3, 2, hours, minutes, tzinfo=tz)


def meeting(request_id: str, start: datetime, end: datetime,
            specialist_id: str = "tpe-01") -> Meeting:
    return Meeting(request_id=request_id, center_id="taipei", specialist_id=specialist_id,
                   language="zh-Hant", start=start, end=end, uid=f"{request_id}@fasttrack.test")


def busy(ledger: BookingLedger, specialist_ids: list[str], start: datetime,
         end: datetime) -> dict[str, list[Span]]:
    """``ledger.schedules`` cut to [start, end): the protocol lets a ledger return more spans.

    Also checks what the protocol promises of every list: sorted and non-overlapping.
    """
    schedules = ledger.schedules(iter(specialist_ids), start, end)
    assert set(schedules) == set(specialist_ids)
    for spans in schedules.values():
        assert all(a[1] <= b[0] for a, b in pairwise(spans))
    return {sid: [s for s in spans if s[0] < end and start < s[1]]
            for sid, spans in schedules.items()}


BATCH_DIALECTS = [pytest.param("sqlite-batch", id="sqlite-batch"),
                  pytest.param("postgresql-batch", marks=pytest.mark.postgres,
                               id="postgresql-batch")]


@pytest.fixture(params=[pytest.param("memory", id="memory"), *DIALECTS, *BATCH_DIALECTS])
def ledger(request: pytest.FixtureRequest,
           new_database: Callable[[str], str]) -> Iterator[BookingLedger]:
    """Each ledger in turn, empty; ``-batch``: the SQL ledger inside one open transaction, as
    the booker uses it for a batch of records."""
    if request.param == "memory":
        yield InMemoryLedger()
        return
    dialect, _, batch = request.param.partition("-")
    engine = create_engine_for(new_database(dialect))
    if batch:
        with engine.begin() as conn:
            yield SqlBookingLedger(engine).within(conn)
    else:
        yield SqlBookingLedger(engine)
    engine.dispose()


@contextmanager
def meeting_selects(engine: Engine) -> Iterator[list[str]]:
    """The SELECTs from the meetings table the engine runs inside the block."""
    selects: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM meetings" in statement:
            selects.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        yield selects
    finally:
        event.remove(engine, "before_cursor_execute", count)


@pytest.mark.parametrize("database_url", DIALECTS, indirect=True)
def test_a_batch_reads_each_schedule_once_and_sees_its_own_meetings(engine: Engine) -> None:
    with engine.begin() as conn:
        batch = SqlBookingLedger(engine).within(conn)
        with meeting_selects(engine) as selects:
            assert busy(batch, ["tpe-01", "tpe-02"], at("00:00"), at("23:00")) == \
                {"tpe-01": [], "tpe-02": []}
            batch.record(meeting("r1", at("09:00"), at("10:00")))
            batch.record(meeting("r2", at("09:00"), at("10:00"), "tpe-02"))
            reads_after_first = len(selects)
            assert busy(batch, ["tpe-01", "tpe-02"], at("08:00"), at("12:00")) == {
                "tpe-01": [(at("09:00"), at("10:00"))], "tpe-02": [(at("09:00"), at("10:00"))]}
            assert len(selects) == reads_after_first  # served from the batch's own copy
            busy(batch, ["tpe-01", "tpe-02"], at("10:00"), at("23:00") + timedelta(hours=12))
            assert len(selects) == reads_after_first  # a later window, within the read-ahead
            busy(batch, ["tpe-01"], at("00:00"), DAY + timedelta(days=2))  # wider: read again
            assert len(selects) == reads_after_first + 1
    assert busy(SqlBookingLedger(engine), ["tpe-01"], at("00:00"), at("23:00")) == \
        {"tpe-01": [(at("09:00"), at("10:00"))]}


@pytest.mark.parametrize("database_url", DIALECTS, indirect=True)
def test_a_batch_reads_its_requests_meetings_once_and_keeps_them_current(
        engine: Engine) -> None:
    SqlBookingLedger(engine).record(meeting("r0", at("08:00"), at("09:00")))
    with engine.begin() as conn:
        batch = SqlBookingLedger(engine).within(conn)
        with meeting_selects(engine) as selects:
            batch.read_meetings(["r0", "r1", "r2"])
            assert len(selects) == 1
            r0 = batch.meeting_for("r0")
            assert r0 is not None and r0.start == at("08:00")
            assert batch.meeting_for("r1") is None
            r1 = batch.record(meeting("r1", at("09:00"), at("10:00")))
            assert batch.meeting_for("r1") == r1
            batch.set_join_url("r1", "https://meet.example.com/r1")
            assert batch.meeting_for("r1").join_url == "https://meet.example.com/r1"
            assert batch.release("r0") is not None
            assert batch.meeting_for("r0") is None
            assert len(selects) == 1  # every answer from memory
            assert batch.meeting_for("elsewhere") is None
            assert len(selects) == 2  # a request it did not read: asked


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.postgres
def test_a_request_booked_elsewhere_after_the_read_is_refused_with_that_meeting(
        engine: Engine) -> None:
    with engine.begin() as conn:
        batch = SqlBookingLedger(engine).within(conn)
        batch.read_meetings(["r1"])
        elsewhere = SqlBookingLedger(engine).record(
            meeting("r1", at("09:00"), at("10:00"), "tpe-02"))
        assert batch.meeting_for("r1") is None  # as read
        with pytest.raises(RequestAlreadyBooked) as refused:
            batch.record(meeting("r1", at("11:00"), at("12:00")))
        assert refused.value.existing == elsewhere
        assert batch.meeting_for("r1") == elsewhere  # read again after the refusal


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.postgres
def test_a_batch_that_loses_a_slot_to_another_worker_reads_again(engine: Engine) -> None:
    statements: list[str] = []

    def keep(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    with engine.begin() as conn:
        batch = SqlBookingLedger(engine).within(conn)
        assert busy(batch, ["tpe-01"], at("00:00"), at("23:00")) == {"tpe-01": []}
        SqlBookingLedger(engine).record(meeting("elsewhere", at("09:00"), at("10:00")))
        event.listen(engine, "before_cursor_execute", keep)
        try:
            with pytest.raises(SpecialistBusy):
                batch.record(meeting("r1", at("09:30"), at("10:30")))
            # the refused insert left the batch usable, and its copy of tpe-01 fresh
            assert busy(batch, ["tpe-01"], at("00:00"), at("23:00")) == \
                {"tpe-01": [(at("09:00"), at("10:00"))]}
            batch.record(meeting("r1", at("10:00"), at("11:00")))
        finally:
            event.remove(engine, "before_cursor_execute", keep)
    assert SqlBookingLedger(engine).meeting_for("r1") is not None
    # ON CONFLICT DO NOTHING, not a savepoint per insert
    assert [s for s in statements if "SAVEPOINT" in s.upper()] == []
    assert sum("ON CONFLICT DO NOTHING" in s for s in statements) == 2


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.postgres
def test_batches_that_may_book_the_same_specialists_take_turns(engine: Engine) -> None:
    """Two workers' batches reserve their specialists up front, so the second waits for the
    first to commit and then sees its meetings, in whatever order each books them."""
    first_holds, second_reserved = threading.Event(), threading.Event()
    outcomes: list[str] = []

    def second_worker() -> None:
        with engine.begin() as conn:
            batch = SqlBookingLedger(engine).within(conn)
            first_holds.wait(5)
            batch.reserve(["tpe-02", "tpe-01"])  # waits for the first batch to commit
            second_reserved.set()
            try:
                batch.record(meeting("b1", at("09:00"), at("10:00"), "tpe-01"))
            except SpecialistBusy:
                outcomes.append("busy")
            batch.record(meeting("b2", at("10:00"), at("11:00"), "tpe-02"))
            outcomes.append("committed")

    with engine.begin() as conn:
        batch = SqlBookingLedger(engine).within(conn)
        batch.reserve(["tpe-01", "tpe-02"])
        other = threading.Thread(target=second_worker)
        other.start()
        first_holds.set()
        assert not second_reserved.wait(0.3)  # still waiting for this batch's locks
        batch.record(meeting("a2", at("09:00"), at("10:00"), "tpe-02"))
        batch.record(meeting("a1", at("09:00"), at("10:00"), "tpe-01"))
    other.join(10)
    assert outcomes == ["busy", "committed"]
    assert {m.request_id for m in map(SqlBookingLedger(engine).meeting_for,
                                      ["a1", "a2", "b1", "b2"]) if m} == {"a1", "a2", "b2"}


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
@pytest.mark.postgres
def test_a_batch_gives_up_rather_than_wait_for_a_lock_out_of_order(engine: Engine) -> None:
    """Locks taken as the batches book, crossing: the batch that would wait for an earlier
    specialist than one it holds refuses that meeting at once, instead of the two deadlocking
    (which PostgreSQL notices only after ``deadlock_timeout``), and can still commit the
    rest."""
    second_holds, first_done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def second_worker() -> None:
        try:
            with engine.begin() as conn:
                batch = SqlBookingLedger(engine).within(conn)
                batch.record(meeting("b1", at("09:00"), at("10:00"), "tpe-01"))
                second_holds.set()
                first_done.wait(5)
                batch.record(meeting("b2", at("11:00"), at("12:00"), "tpe-02"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    other = threading.Thread(target=second_worker)
    with engine.begin() as conn:
        batch = SqlBookingLedger(engine).within(conn)
        batch.record(meeting("a2", at("09:00"), at("10:00"), "tpe-02"))
        other.start()
        assert second_holds.wait(5)
        try:
            with pytest.raises(LockedElsewhere, match="'tpe-01'"):
                batch.record(meeting("a1", at("10:00"), at("11:00"), "tpe-01"))
            batch.record(meeting("a3", at("12:00"), at("13:00"), "tpe-02"))
        finally:
            first_done.set()
    other.join(10)
    assert errors == []
    booked = SqlBookingLedger(engine)
    assert [booked.meeting_for(r) is not None for r in ("a1", "a2", "a3", "b1", "b2")] == \
        [False, True, True, True, True]


def test_a_refusal_on_sqlite_undoes_its_insert_alone_and_the_batch_commits(
        new_database: Callable[[str], str]) -> None:
    """No savepoint per insert on SQLite: the trigger's and the unique index's refusals undo
    their own statement, and the batch's other bookings commit."""
    engine = create_engine_for(new_database("sqlite"))
    statements: list[str] = []

    def keep(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", keep)
    with engine.begin() as conn:
        batch = SqlBookingLedger(engine).within(conn)
        first = batch.record(meeting("r1", at("10:00"), at("11:00")))
        with pytest.raises(SpecialistBusy):  # the overlap trigger
            batch.record(meeting("r2", at("10:30"), at("11:30")))
        with pytest.raises(RequestAlreadyBooked):  # the partial unique index
            batch.record(meeting("r1", at("14:00"), at("15:00"), "tpe-02"))
        third = batch.record(meeting("r3", at("11:00"), at("12:00")))
    event.remove(engine, "before_cursor_execute", keep)
    ledger = SqlBookingLedger(engine)
    assert [ledger.meeting_for(r) for r in ("r1", "r2", "r3")] == [first, None, third]
    assert [s for s in statements if "SAVEPOINT" in s.upper()] == []
    engine.dispose()


def test_reserving_on_sqlite_takes_no_lock_and_never_refuses(
        new_database: Callable[[str], str]) -> None:
    """SQLite serialises writers itself: reserving takes no lock there and never refuses."""
    engine = create_engine_for(new_database("sqlite"))
    with engine.begin() as conn:
        batch = SqlBookingLedger(engine).within(conn)
        batch.record(meeting("r2", at("09:00"), at("10:00"), "tpe-02"))
        batch.reserve(["tpe-01", "tpe-02"])  # out of order after tpe-02: tried, and free
        batch.record(meeting("r1", at("09:00"), at("10:00"), "tpe-01"))
    assert SqlBookingLedger(engine).meeting_for("r1") is not None
    engine.dispose()


# --- the protocol -------------------------------------------------------------------------

def test_a_recorded_meeting_is_the_requests_meeting(ledger: BookingLedger) -> None:
    booked = meeting("r1", at("18:00", TAIPEI), at("19:00", TAIPEI))
    assert ledger.record(booked) == booked
    found = ledger.meeting_for("r1")
    assert found == booked
    assert found is not None and found.start == at("10:00") and found.start.tzinfo == UTC
    assert ledger.meeting_for("unknown") is None


@pytest.mark.parametrize(("start", "end", "specialist_id", "busy"), [
    pytest.param(at("10:00"), at("11:00"), "tpe-01", True, id="same-slot"),
    pytest.param(at("18:00", TAIPEI), at("19:00", TAIPEI), "tpe-01", True,
                 id="same-slot-other-offset"),
    pytest.param(at("10:30"), at("11:30"), "tpe-01", True, id="overlaps-end"),
    pytest.param(at("09:30"), at("10:30"), "tpe-01", True, id="overlaps-start"),
    pytest.param(at("10:15"), at("10:45"), "tpe-01", True, id="inside"),
    pytest.param(at("09:00"), at("12:00"), "tpe-01", True, id="around"),
    pytest.param(at("10:59"), at("11:59"), "tpe-01", True, id="one-minute-overlap"),
    pytest.param(at("11:00"), at("12:00"), "tpe-01", False, id="touching-after"),
    pytest.param(at("09:00"), at("10:00"), "tpe-01", False, id="touching-before"),
    pytest.param(at("19:00", TAIPEI), at("20:00", TAIPEI), "tpe-01", False,
                 id="touching-after-other-offset"),
    pytest.param(at("10:00"), at("11:00"), "tpe-02", False, id="other-specialist"),
])
def test_overlap_rules(ledger: BookingLedger, start: datetime, end: datetime,
                       specialist_id: str, busy: bool) -> None:
    ledger.record(meeting("r1", at("10:00"), at("11:00")))
    candidate = meeting("r2", start, end, specialist_id)
    if busy:
        with pytest.raises(SpecialistBusy) as raised:
            ledger.record(candidate)
        assert raised.value.specialist_id == specialist_id
        assert ledger.meeting_for("r2") is None
    else:
        assert ledger.record(candidate) == candidate
        assert ledger.meeting_for("r2") == candidate


def test_one_active_meeting_per_request(ledger: BookingLedger) -> None:
    first = ledger.record(meeting("r1", at("10:00"), at("11:00")))
    with pytest.raises(RequestAlreadyBooked) as raised:
        ledger.record(meeting("r1", at("14:00"), at("15:00"), "tpe-02"))
    assert raised.value.existing == first


def test_an_already_booked_request_wins_over_a_busy_specialist(ledger: BookingLedger) -> None:
    first = ledger.record(meeting("r1", at("10:00"), at("11:00")))
    with pytest.raises(RequestAlreadyBooked) as raised:
        ledger.record(first)  # a redelivery of the same booking
    assert raised.value.existing == first


def test_release_frees_the_slot_and_the_request(ledger: BookingLedger) -> None:
    first = ledger.record(meeting("r1", at("10:00"), at("11:00")))
    assert ledger.release("r1") == first
    assert ledger.meeting_for("r1") is None
    assert ledger.release("r1") is None
    assert ledger.release("never-booked") is None
    other = meeting("r2", at("10:00"), at("11:00"))
    assert ledger.record(other) == other
    rebooked = meeting("r1", at("11:00"), at("12:00"))
    assert ledger.record(rebooked) == rebooked
    assert busy(ledger, ["tpe-01"], at("00:00"), at("23:00")) == {
        "tpe-01": [(at("10:00"), at("11:00")), (at("11:00"), at("12:00"))],
    }


def test_schedules_lists_overlapping_spans_per_specialist_sorted(ledger: BookingLedger) -> None:
    ledger.record(meeting("a3", at("15:00"), at("16:00"), "a"))
    ledger.record(meeting("a1", at("08:00"), at("09:00"), "a"))  # ends at the window start
    ledger.record(meeting("a2", at("09:30"), at("11:30"), "a"))
    ledger.record(meeting("a4", at("17:00"), at("18:00"), "a"))  # starts at the window end
    ledger.record(meeting("b1", at("12:00"), at("13:00"), "b"))
    ledger.record(meeting("b2", at("13:00"), at("14:00"), "b"))
    ledger.record(meeting("c1", at("12:00"), at("13:00"), "c"))
    ledger.release("b2")

    assert busy(ledger, ["a", "b", "nobody"], at("09:00"), at("17:00")) == {
        "a": [(at("09:30"), at("11:30")), (at("15:00"), at("16:00"))],
        "b": [(at("12:00"), at("13:00"))],
        "nobody": [],
    }
    assert ledger.schedules([], at("09:00"), at("17:00")) == {}


def test_timestamps_order_across_days_years_and_offsets(ledger: BookingLedger) -> None:
    new_year = datetime(2027, 1, 1, tzinfo=UTC)
    late = meeting("y1", new_year - timedelta(hours=1), new_year)
    ledger.record(late)
    ledger.record(meeting("y2", new_year, new_year + timedelta(hours=1)))
    with pytest.raises(SpecialistBusy):  # 07:30+08:00 on Jan 1 is 23:30Z on Dec 31
        ledger.record(meeting("y3", datetime(2027, 1, 1, 7, 30, tzinfo=TAIPEI),
                              datetime(2027, 1, 1, 8, 15, tzinfo=TAIPEI)))
    window = busy(ledger, ["tpe-01"], new_year - timedelta(minutes=30),
                  new_year + timedelta(microseconds=1))
    assert window == {"tpe-01": [(late.start, late.end), (new_year, new_year + timedelta(hours=1))]}



def test_a_meeting_longer_than_a_ledger_takes_is_refused_and_changes_nothing(
        ledger: BookingLedger) -> None:
    too_long = meeting("r1", at("08:00"), at("08:00") + MAX_MEETING + timedelta(minutes=1))
    with pytest.raises(MeetingTooLong, match=r"^meeting\.end: .* at most 8:00:00"):
        ledger.record(too_long)
    assert ledger.meeting_for("r1") is None
    assert busy(ledger, ["tpe-01"], at("00:00"), at("23:00")) == {"tpe-01": []}
    longest = meeting("r1", at("08:00"), at("08:00") + MAX_MEETING)
    assert ledger.record(longest) == longest


def test_the_longest_meeting_is_seen_from_a_window_that_opens_in_its_last_minute(
        ledger: BookingLedger) -> None:
    """The schedule read starts its index walk MAX_MEETING before the window: no earlier, or
    it walks all history; no later, or it misses a long meeting still running."""
    longest = meeting("r1", at("08:00"), at("08:00") + MAX_MEETING)
    ledger.record(longest)
    ledger.record(meeting("r0", at("00:00"), at("01:00")))  # long over when the window opens
    window = busy(ledger, ["tpe-01"], longest.end - timedelta(minutes=1), at("23:00"))
    assert window == {"tpe-01": [(longest.start, longest.end)]}
    assert busy(ledger, ["tpe-01"], longest.end, at("23:00")) == {"tpe-01": []}

Action = tuple[str, str, str, int, int]  # (record|release, request, specialist, start, minutes)

actions = st.lists(
    st.tuples(
        st.sampled_from(["record", "record", "record", "release"]),
        st.sampled_from(["r1", "r2", "r3", "r4", "r5"]),
        st.sampled_from(["a", "b"]),
        st.integers(0, 16),  # quarter hours after 09:00
        st.sampled_from([15, 30, 45, 60, 90]),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=actions, offset_hours=st.integers(-11, 13))
def test_every_ledger_agrees_with_the_in_memory_model(
    ledger: BookingLedger, script: list[Action], offset_hours: int
) -> None:
    """Any sequence of bookings and releases has the outcome the in-memory ledger gives it."""
    model = InMemoryLedger()
    prefix = uuid.uuid4().hex[:8]  # the ledger fixture outlives examples: keep them apart
    zone = timezone(timedelta(hours=offset_hours))
    for verb, request_id, specialist_id, quarter, minutes in script:
        rid, sid = f"{prefix}-{request_id}", f"{prefix}-{specialist_id}"
        if verb == "release":
            assert ledger.release(rid) == model.release(rid)
            continue
        start = (at("09:00") + timedelta(minutes=15 * quarter)).astimezone(zone)
        candidate = meeting(rid, start, start + timedelta(minutes=minutes), sid)
        assert _outcome(ledger, candidate) == _outcome(model, candidate)
    ids = [f"{prefix}-a", f"{prefix}-b"]
    assert busy(ledger, ids, at("00:00"), at("23:00")) == busy(
        model, ids, at("00:00"), at("23:00"))


def _outcome(ledger: BookingLedger, candidate: Meeting) -> str:
    try:
        ledger.record(candidate)
    except SpecialistBusy:
        return "busy"
    except RequestAlreadyBooked as exc:
        return f"already:{exc.existing.start.isoformat()}"
    return "recorded"


# --- the database is the arbiter ----------------------------------------------------------

THREADS = 8
SLOTS = 4


@pytest.mark.parametrize("database_url", DIALECTS, indirect=True)
def test_concurrent_workers_never_double_book(database_url: str, engine: Engine) -> None:
    """Each thread, with its own engine, sees a free schedule and then races to book it."""
    barrier = threading.Barrier(THREADS, timeout=60)
    wins: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        engine = create_engine_for(database_url)
        ledger = SqlBookingLedger(engine)
        try:
            for slot in range(SLOTS):
                start = at("10:00") + timedelta(hours=2 * slot, minutes=5 * n)  # all overlap
                candidate = meeting(f"t{n}-s{slot}", start, start + timedelta(hours=1))
                assert busy(ledger, ["tpe-01"], start, candidate.end) == {"tpe-01": []}
                barrier.wait()
                try:
                    ledger.record(candidate)
                    wins.append((slot, candidate.request_id))
                except SpecialistBusy:
                    pass
                barrier.wait()
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()
        finally:
            engine.dispose()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(slot for slot, _ in wins) == list(range(SLOTS))
    assert _active_meetings(engine) == SLOTS


def _book_in_process(url: str, n: int, barrier: threading.Barrier,
                     results: multiprocessing.Queue[tuple[int, str]]) -> None:
    engine = create_engine_for(url)
    try:
        start = at("10:00") + timedelta(minutes=10 * n)
        barrier.wait()
        SqlBookingLedger(engine).record(meeting(f"p{n}", start, start + timedelta(hours=1)))
        results.put((n, "won"))
    except SpecialistBusy:
        results.put((n, "busy"))
    except BaseException as exc:  # tell the parent now rather than let it time out
        barrier.abort()
        results.put((n, f"error: {exc!r}"))
    finally:
        engine.dispose()


@pytest.mark.slow
@pytest.mark.parametrize("database_url", DIALECTS, indirect=True)
def test_concurrent_processes_never_double_book(database_url: str, engine: Engine) -> None:
    processes_n = 4
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(processes_n, timeout=120)
    results: multiprocessing.Queue[tuple[int, str]] = spawn.Queue()
    processes = [
        spawn.Process(target=_book_in_process, args=(database_url, n, barrier, results))
        for n in range(processes_n)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0

    assert sorted(outcome for _, outcome in outcomes) == ["busy"] * (processes_n - 1) + ["won"]
    assert _active_meetings(engine) == 1


def _active_meetings(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(
            select(func.count()).select_from(meetings).where(meetings.c.status == "active")
        ).scalar_one())


RAW_INSERT = text(
    "INSERT INTO meetings (request_id, center_id, specialist_id, language, start_utc, end_utc,"
    " revision, uid, status, created_at, updated_at) VALUES (:request_id, 'taipei', :specialist,"
    " 'en', :start, :end, 1, :request_id, :status, :start, :start)"
)


def _stamp(engine: Engine, hhmm: str) -> str:
    """A literal timestamp as a hand-written INSERT would give it, in the schema's format."""
    if engine.dialect.name == "sqlite":
        return f"2026-03-02T{hhmm}:00.000000Z"
    return f"2026-03-02T{hhmm}:00Z"


@pytest.mark.parametrize("database_url", DIALECTS, indirect=True)
def test_raw_sql_that_bypasses_the_ledger_cannot_double_book(engine: Engine) -> None:
    SqlBookingLedger(engine).record(meeting("r1", at("10:00"), at("11:00")))

    def insert(request_id: str, start: str, end: str, status: str = "active",
               specialist: str = "tpe-01") -> None:
        with engine.begin() as conn:
            conn.execute(RAW_INSERT, {
                "request_id": request_id, "specialist": specialist, "status": status,
                "start": _stamp(engine, start), "end": _stamp(engine, end),
            })

    with pytest.raises(IntegrityError):
        insert("r2", "10:30", "11:30")
    with pytest.raises(IntegrityError):
        insert("r1", "14:00", "15:00", specialist="tpe-02")  # a second active meeting for r1
    insert("r3", "11:00", "12:00")  # touching is fine
    insert("r4", "10:30", "11:30", status="cancelled")  # cancelled meetings hold no slot
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE meetings SET status = 'active' WHERE request_id = 'r4'"))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE meetings SET specialist_id = 'tpe-01', start_utc = :start"
                          " WHERE request_id = 'r3'"), {"start": _stamp(engine, "10:45")})
    assert _active_meetings(engine) == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_refuses_timestamps_that_would_not_sort(engine: Engine) -> None:
    """Text comparison is only time order for the fixed-width UTC form the schema stores."""
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(RAW_INSERT, {"request_id": "r1", "specialist": "tpe-01", "status": "active",
                                  "start": "2026-03-02 10:00:00", "end": "2026-03-02 11:00:00"})



@pytest.mark.parametrize("database_url", DIALECTS, indirect=True)
def test_the_schedule_read_walks_the_index_from_the_window_not_from_history(
        engine: Engine) -> None:
    """Both bounds of the read are index conditions, so its cost does not grow with the
    specialist's past meetings (it did: the lower bound was only a filter on ``end_utc``).
    The plan is the planner's own, on a table with a specialist's ten months of history."""
    with engine.begin() as conn:
        history = SqlBookingLedger(engine).within(conn)
        for day in range(1, 300):
            for hour in (1, 3, 5, 7):
                start = at("00:00") - timedelta(days=day, hours=-hour)
                history.record(meeting(f"h{day}-{hour}", start, start + timedelta(hours=1)))
        if engine.dialect.name == "postgresql":  # as autovacuum would; no worker analyzes SQLite
            conn.exec_driver_sql("ANALYZE meetings")
    ran: list[tuple[str, object]] = []

    def keep(conn: object, cursor: object, statement: str, parameters: object,
             *args: object) -> None:
        ran.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", keep)
    SqlBookingLedger(engine).schedules(["tpe-01", "tpe-02"], at("09:00"), at("17:00"))
    event.remove(engine, "before_cursor_execute", keep)
    ((statement, parameters),) = [(s, p) for s, p in ran if "FROM meetings" in s]
    explain = "EXPLAIN QUERY PLAN" if engine.dialect.name == "sqlite" else "EXPLAIN"
    with engine.connect() as conn:
        plan = " ".join(str(row[-1]) for row in conn.exec_driver_sql(
            f"{explain} {statement}", parameters))
    if engine.dialect.name == "sqlite":
        assert "USING INDEX" in plan and "start_utc>? AND start_utc<?" in plan, plan
    else:  # an index on start_utc: the specialist's, or the active meetings'
        condition = re.search(r"Index Cond: (.*?)(?:Filter|$)", plan)
        assert condition and "start_utc >" in condition[1] and "start_utc <" in condition[1], plan

# --- engine and schema --------------------------------------------------------------------

@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_sqlite_engine_uses_wal_busy_timeout_foreign_keys_small_cache(engine: Engine) -> None:
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == SQLITE_BUSY_TIMEOUT_MS
        assert conn.exec_driver_sql("PRAGMA cache_size").scalar() == -SQLITE_CACHE_KIB


@pytest.mark.parametrize("database_url", DIALECTS, indirect=True)
def test_migrations_create_what_the_metadata_describes(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": owned_by_migrations})
        assert compare_metadata(context, metadata) == []


@pytest.mark.parametrize("database_url", DIALECTS, indirect=True)
def test_naive_datetimes_are_refused(engine: Engine) -> None:
    with pytest.raises(StatementError, match="naive datetime"), engine.begin() as conn:
        conn.execute(meetings.insert().values(
            request_id="r1", center_id="taipei", specialist_id="tpe-01", language="en",
            start_utc=datetime(2026, 3, 2, 10), end_utc=at("11:00"), revision=1, uid="u",
            status="active", created_at=at("09:00"), updated_at=at("09:00"),
        ))


def test_a_backend_made_join_url_is_attached_to_the_active_meeting(
        ledger: InMemoryLedger | SqlBookingLedger) -> None:
    """Graph makes the Teams link only when it creates the event; the ledger keeps it."""
    booked = meeting("req-teams", at("10:00"), at("11:00"))
    ledger.record(booked)
    url = "https://teams.microsoft.com/l/meetup-join/19%3ameeting_abc%40thread.v2/0"
    assert ledger.set_join_url("req-teams", url).join_url == url
    assert ledger.meeting_for("req-teams").join_url == url
    assert ledger.set_join_url("req-unknown", url) is None
