"""Timestamps in SQLite: stored as fixed-width UTC text, read back as aware UTC datetimes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    Table,
    create_engine,
    insert,
    select,
    text,
)

from scheduler.db import UtcDateTime

metadata = MetaData()
stamps = Table("stamps", metadata, Column("id", Integer, primary_key=True),
               Column("at", UtcDateTime()))


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def read_all(engine: Engine) -> list[datetime | None]:
    with engine.connect() as conn:
        return [row.at for row in conn.execute(select(stamps).order_by(stamps.c.id))]


def test_an_aware_datetime_reads_back_equal_and_in_utc(engine: Engine) -> None:
    taipei = datetime(2026, 11, 24, 9, 30, 15, 123456, tzinfo=ZoneInfo("Asia/Taipei"))
    with engine.begin() as conn:
        conn.execute(insert(stamps), [{"at": taipei}, {"at": None},
                                      {"at": datetime(2026, 1, 1, tzinfo=UTC)}])
        raw = [r[0] for r in conn.execute(text("SELECT at FROM stamps ORDER BY id"))]
    assert raw == ["2026-11-24T01:30:15.123456Z", None, "2026-01-01T00:00:00.000000Z"]
    first, missing, new_year = read_all(engine)
    assert first == taipei and first.tzinfo is UTC
    assert first.isoformat() == "2026-11-24T01:30:15.123456+00:00"
    assert missing is None
    assert new_year == datetime(2026, 1, 1, tzinfo=UTC) and new_year.tzinfo is UTC


def test_text_in_other_forms_still_reads_as_utc(engine: Engine) -> None:
    with engine.begin() as conn:
        for value in ("2026-11-24 01:30:15", "2026-11-24T01:30:15.5+02:00"):
            conn.execute(text("INSERT INTO stamps (at) VALUES (:v)"), {"v": value})
    naive_as_utc, with_offset = read_all(engine)
    assert naive_as_utc == datetime(2026, 11, 24, 1, 30, 15, tzinfo=UTC)
    assert with_offset == datetime(2026, 11, 23, 23, 30, 15, 500000, tzinfo=UTC)
    assert with_offset.tzinfo is UTC


def test_a_naive_datetime_is_refused(engine: Engine) -> None:
    with engine.begin() as conn, pytest.raises(Exception, match="naive datetime"):
        conn.execute(insert(stamps), [{"at": datetime(2026, 11, 24, 9, 30)}])


@given(st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(9998, 12, 30),
                    timezones=st.sampled_from([UTC, ZoneInfo("America/Sao_Paulo"),
                                               timezone(timedelta(hours=5, minutes=45))])))
def test_every_aware_datetime_round_trips(value: datetime) -> None:
    engine = create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(stamps), [{"at": value}])
    (back,) = read_all(engine)
    engine.dispose()
    # the instant (compared in UTC: a local time in a DST gap never equals another zone's)
    assert back == value.astimezone(UTC) and back is not None and back.tzinfo is UTC
