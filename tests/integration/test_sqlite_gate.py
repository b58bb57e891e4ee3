"""SQLite writers queue at a gate (an flock beside the database) instead of SQLite's sleeping
busy handler: held from BEGIN IMMEDIATE to COMMIT or ROLLBACK, never by readers, given back
when a transaction fails, and shared by every connection of every engine on the file."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from scheduler.db import create_engine_for, read_connection


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[Engine, Path]]:
    path = tmp_path / "gate.db"
    engine = create_engine_for(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (n INTEGER)"))
    yield engine, Path(f"{path}.writers.lock")
    engine.dispose()


def gate_is_free(lock: Path) -> bool:
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # closing the file gives the lock up
    return True


def test_a_write_transaction_holds_the_gate_until_commit(database: tuple[Engine, Path]) -> None:
    engine, lock = database
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        assert not gate_is_free(lock)
    assert gate_is_free(lock)


def test_a_failed_transaction_gives_the_gate_back(database: tuple[Engine, Path]) -> None:
    engine, lock = database
    with pytest.raises(ZeroDivisionError), engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        1 / 0  # noqa: B018
    assert gate_is_free(lock)
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM t")) == 0


def test_readers_do_not_take_the_gate(database: tuple[Engine, Path]) -> None:
    engine, lock = database
    with read_connection(engine) as conn, conn.begin():
        conn.execute(text("SELECT count(*) FROM t"))
        assert gate_is_free(lock)


def test_a_writer_of_another_engine_waits_at_the_gate_and_goes_on_once_it_opens(
        database: tuple[Engine, Path], tmp_path: Path) -> None:
    engine, lock = database
    other = create_engine_for(f"sqlite:///{tmp_path / 'gate.db'}")  # like another process
    order: list[str] = []

    def second_writer() -> None:
        with other.begin() as conn:
            order.append("second begins")
            conn.execute(text("INSERT INTO t VALUES (2)"))

    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
            thread = threading.Thread(target=second_writer)
            thread.start()
            time.sleep(0.2)  # long enough for the second writer to reach the gate
            order.append("first commits")
        thread.join(10)
        assert not thread.is_alive()
        assert order == ["first commits", "second begins"]
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT count(*) FROM t")) == 2
        assert gate_is_free(lock)
    finally:
        other.dispose()


def test_a_nested_writer_in_the_same_thread_meets_sqlites_lock_not_a_deadlock(
        database: tuple[Engine, Path], tmp_path: Path) -> None:
    engine, _ = database
    impatient = create_engine_for(f"sqlite:///{tmp_path / 'gate.db'}")
    with impatient.connect() as conn:
        conn.exec_driver_sql("PRAGMA busy_timeout = 100")
    try:
        with engine.begin() as outer:
            outer.execute(text("INSERT INTO t VALUES (1)"))
            with pytest.raises(Exception, match="database is locked"), impatient.begin() as inner:
                inner.execute(text("INSERT INTO t VALUES (2)"))
    finally:
        impatient.dispose()
