"""Real databases for integration tests: a migrated SQLite file per test, and one fresh PostgreSQL
database per session (emptied before each test), dropped at the end.

A pytest plugin: load it with ``pytest_plugins = ["tests.integration.db_fixtures"]`` and
parametrize ``database_url`` (or use ``new_database``) with the dialects::

    DIALECTS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]

    @pytest.mark.parametrize("database_url", DIALECTS, indirect=True)
    def test_something(engine): ...

PostgreSQL is the server on 127.0.0.1:5432 (override with ``FASTTRACK_TEST_POSTGRES_URL``, a URL
of a database to connect to for CREATE/DROP DATABASE). When it is unreachable, PostgreSQL cases
fail if ``CI`` is set and are skipped, loudly, otherwise.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine, make_url, text

from scheduler.db import create_engine_for, metadata
from services.database import upgrade_database

POSTGRES_ADMIN_URL = os.environ.get(
    "FASTTRACK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

def _admin_connection() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=3)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a migrated PostgreSQL database made for this session and dropped after it."""
    admin = make_url(POSTGRES_ADMIN_URL)
    try:
        connection = _admin_connection()
    except psycopg.OperationalError as exc:
        reason = f"PostgreSQL not reachable on {admin.host}:{admin.port or 5432}: {exc}"
        if os.environ.get("CI"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    name = f"fasttrack_test_{uuid.uuid4().hex[:12]}"
    with connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = admin.set(database=name).render_as_string(hide_password=False)
    try:
        upgrade_database(url)
        yield url
    finally:
        with _admin_connection() as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _empty(engine: Engine) -> None:
    tables = ", ".join(table.name for table in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY"))


@pytest.fixture
def new_database(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str], str]:
    """``new_database("sqlite" | "postgresql")``: URL of an empty, migrated database (a new
    SQLite file, or the session's PostgreSQL database emptied)."""

    def make(dialect: str) -> str:
        if dialect == "sqlite":
            url = f"sqlite:///{tmp_path / f'fasttrack-{uuid.uuid4().hex[:8]}.db'}"
            upgrade_database(url)
            return url
        if dialect != "postgresql":
            raise ValueError(f"unknown dialect {dialect!r}")
        url = str(request.getfixturevalue("postgres_url"))
        engine = create_engine_for(url)
        try:
            _empty(engine)
        finally:
            engine.dispose()
        return url

    return make


@pytest.fixture
def database_url(request: pytest.FixtureRequest, new_database: Callable[[str], str]) -> str:
    """An empty, migrated database of the dialect given by indirect parametrization."""
    return new_database(request.param)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on ``database_url``, disposed after the test."""
    engine = create_engine_for(database_url)
    yield engine
    engine.dispose()
