"""Migration 0004: the schema refuses an active meeting longer than 8 hours, and SQLite's
overlap check, now bounded by that, still refuses every overlap, however long the meetings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

from scheduler.db import create_engine_for
from scheduler.ledger import MAX_MEETING
from services.database import downgrade_database, upgrade_database

pytest_plugins = ["tests.integration.db_fixtures"]
pytestmark = pytest.mark.integration

DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

INSERT = text(
    "INSERT INTO meetings (request_id, center_id, specialist_id, language, start_utc, end_utc,"
    " revision, uid, status, created_at, updated_at) VALUES (:request_id, 'taipei', 'tpe-01',"
    " 'en', :start, :end, 1, :request_id, :status, :start, :start)"
)


def stamp(engine: Engine, day: int, hhmmss: str) -> str:
    """2026-03-``day`` at ``hhmmss`` UTC, as a hand-written INSERT gives it."""
    if engine.dialect.name == "sqlite":
        return f"2026-03-{day:02d}T{hhmmss}.000000Z"
    return f"2026-03-{day:02d}T{hhmmss}Z"


def insert(engine: Engine, request_id: str, start: tuple[int, str], end: tuple[int, str],
           status: str = "active") -> None:
    with engine.begin() as conn:
        conn.execute(INSERT, {"request_id": request_id, "status": status,
                              "start": stamp(engine, *start), "end": stamp(engine, *end)})


@pytest.fixture
def engine(request: pytest.FixtureRequest,
           new_database: Callable[[str], str]) -> Iterator[Engine]:
    engine = create_engine_for(new_database(request.param))
    yield engine
    engine.dispose()


def test_the_longest_meeting_is_what_the_ledger_allows() -> None:
    assert MAX_MEETING.total_seconds() == 8 * 3600  # the migration's constant


@pytest.mark.parametrize("engine", DIALECTS, indirect=True)
def test_an_active_meeting_longer_than_8_hours_is_refused(engine: Engine) -> None:
    insert(engine, "eight", (2, "08:00:00"), (2, "16:00:00"))
    with pytest.raises(IntegrityError, match=r"meeting_too_long|ck_meetings_at_most_8_hours"):
        insert(engine, "longer", (3, "08:00:00"), (3, "16:00:01"))
    insert(engine, "cancelled", (4, "08:00:00"), (4, "20:00:00"), status="cancelled")
    with pytest.raises(IntegrityError, match=r"meeting_too_long|ck_meetings_at_most_8_hours"), \
            engine.begin() as conn:
        conn.execute(text("UPDATE meetings SET status = 'active' WHERE request_id = 'cancelled'"))


@pytest.mark.parametrize("engine", DIALECTS, indirect=True)
@pytest.mark.parametrize(("start", "end"), [
    pytest.param((2, "15:59:00"), (2, "17:00:00"), id="in-the-last-minute-of-8-hours"),
    pytest.param((2, "07:00:00"), (2, "08:00:01"), id="across-its-start"),
    pytest.param((2, "00:00:01"), (2, "08:00:01"), id="eight-hours-into-its-first-second"),
])
def test_an_overlap_with_the_longest_meeting_is_refused(
        engine: Engine, start: tuple[int, str], end: tuple[int, str]) -> None:
    insert(engine, "eight", (2, "08:00:00"), (2, "16:00:00"))
    with pytest.raises(IntegrityError, match=r"specialist_busy|ex_meetings_specialist_overlap"):
        insert(engine, "late", start, end)


@pytest.mark.parametrize("engine", DIALECTS, indirect=True)
def test_moving_a_meeting_onto_the_longest_one_is_refused(engine: Engine) -> None:
    insert(engine, "eight", (2, "08:00:00"), (2, "16:00:00"))
    insert(engine, "next", (2, "16:00:00"), (2, "17:00:00"))
    with pytest.raises(IntegrityError, match=r"specialist_busy|ex_meetings_specialist_overlap"), \
            engine.begin() as conn:
        conn.execute(text("UPDATE meetings SET start_utc = :start WHERE request_id = 'next'"),
                     {"start": stamp(engine, 2, "15:59:59")})


def test_sqlite_downgrade_restores_the_triggers_of_0001(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/schema.db"
    upgrade_database(url, "0003")
    engine = create_engine_for(url)
    triggers = text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger' ORDER BY name")
    with engine.connect() as conn:
        original = conn.execute(triggers).all()
    upgrade_database(url)
    with engine.connect() as conn:
        bounded = conn.execute(triggers).all()
    downgrade_database(url, "0003")
    with engine.connect() as conn:
        assert conn.execute(triggers).all() == original
    engine.dispose()
    assert [name for name, _ in bounded] == [name for name, _ in original]
    assert all("-9 hours" in sql and "meeting_too_long" in sql for _, sql in bounded)


def test_sqlite_upgrade_names_the_meetings_it_cannot_take(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/schema.db"
    upgrade_database(url, "0003")
    engine = create_engine_for(url)
    insert(engine, "nine", (2, "08:00:00"), (2, "17:00:00"))
    engine.dispose()
    with pytest.raises(RuntimeError, match=r"1 active meeting.* longer than 8 hours"):
        upgrade_database(url)


@pytest.mark.postgres
def test_postgresql_downgrade_drops_the_rule_and_upgrade_restores_it(
        new_database: Callable[[str], str]) -> None:
    url = new_database("postgresql")
    engine = create_engine_for(url)
    try:
        try:
            downgrade_database(url, "0003")
            insert(engine, "nine", (2, "08:00:00"), (2, "17:00:00"))
            with pytest.raises(IntegrityError, match="ck_meetings_at_most_8_hours"):
                upgrade_database(url)
            with engine.begin() as conn:
                conn.execute(text("DELETE FROM meetings"))
        finally:
            upgrade_database(url)  # the session's database, for the tests that follow
        with pytest.raises(IntegrityError, match="ck_meetings_at_most_8_hours"):
            insert(engine, "nine", (2, "08:00:00"), (2, "17:00:00"))
    finally:
        engine.dispose()
