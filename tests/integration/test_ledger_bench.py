"""``fasttrack bench --ledger-only`` fills a real database and times real bookings on it,
leaving the ledger as it filled it (no timing claims)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from scheduler.db import create_engine_for, meetings
from scheduler.directory import default_directory
from scheduler.sql_ledger import SqlBookingLedger
from services import cli
from services.ledger_bench import LedgerNotEmpty, format_ledger_report, run_ledger_bench
from tests.integration.test_sql_ledger import DIALECTS, at, meeting

pytest_plugins = ["tests.integration.db_fixtures"]
pytestmark = pytest.mark.integration


def _meetings_held(url: str) -> tuple[int, int]:
    """(meetings, distinct request ids) in the database at ``url``."""
    engine = create_engine_for(url)
    with engine.connect() as conn:
        held = conn.execute(select(func.count(), func.count(meetings.c.request_id.distinct()))
                            .select_from(meetings)).one()
    engine.dispose()
    return held[0], held[1]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_tiny_run_books_on_each_size_and_keeps_none_of_its_bookings(
        dialect: str, new_database: Callable[[str], str]) -> None:
    url = new_database(dialect)
    said: list[str] = []
    report = run_ledger_bench(default_directory(), url, sizes=(300, 3000), searches=15,
                              progress=said.append)
    result = report.to_json_dict()

    assert json.loads(json.dumps(result)) == result
    assert result["database"] == ("sqlite" if dialect == "sqlite" else "postgresql")
    assert [row["ledger_size"] for row in result["booking"]] == [300, 3000]
    assert all(row["searches"] == 15 and row["median_us"] > 0 for row in result["booking"])
    assert isinstance(result["grows_logarithmically"], bool)
    assert _meetings_held(url) == (3000, 3000)  # the fill, and not one timed booking
    assert "ledger: 3,000 of 3,000 meetings" in said
    text = format_ledger_report(report)
    assert "SQL ledger" in text and "3,000" in text and "log(size)" in text
    assert "target: slot search" not in text  # that verdict belongs to --core-only


def test_a_database_that_holds_meetings_is_refused(
        new_database: Callable[[str], str]) -> None:
    url = new_database("sqlite")
    engine = create_engine_for(url)
    SqlBookingLedger(engine).record(meeting("r1", at("10:00"), at("11:00")))
    engine.dispose()

    with pytest.raises(LedgerNotEmpty, match="--database-url: the database holds 1 meetings"):
        run_ledger_bench(default_directory(), url, sizes=(100,), searches=5)
    assert _meetings_held(url) == (1, 1)


@pytest.mark.parametrize("options", [["--core-only", "--ledger-only"],
                                     ["--ledger-only", "--stages-only"],
                                     ["--core-only", "--stages-only"]])
def test_the_partial_benchmarks_are_one_at_a_time(
        options: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", *options]) == cli.EXIT_INVALID
    assert "--core-only, --ledger-only and --stages-only: choose one" in capsys.readouterr().err
