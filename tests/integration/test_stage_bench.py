"""``fasttrack bench --stages-only`` runs real requests through the real stages on a fresh
SQLite file and outbox per batch size, and reports CPU per stage (no timing claims)."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services import cli
from services.settings import Settings
from services.stage_bench import StageReport, format_stage_report, run_stage_bench

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def test_every_request_goes_through_every_stage_at_each_batch_size(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    said: list[str] = []
    settings = Settings(var_dir=tmp_path / "var")
    report = run_stage_bench(settings, NOW, requests=30, batch_sizes=(1, 7),
                             progress=said.append)
    assert sorted(report.cpu_ms) == [1, 7]
    for stages in report.cpu_ms.values():
        assert list(stages) == ["intake", "booker", "notifier"]
        assert all(ms > 0 for ms in stages.values())
    assert [line.split(":")[0] for line in said] == ["batches of 1", "batches of 7"]
    result = report.to_json_dict()
    assert result["requests"] == 30 and result["database"] == "sqlite"
    assert [b["batch_size"] for b in result["batches"]] == [1, 7]
    first = result["batches"][0]["cpu_ms_per_request"]
    assert first["total"] == pytest.approx(sum(v for k, v in first.items() if k != "total"),
                                           abs=0.01)
    table = format_stage_report(report)
    assert "batch size" in table and "notifier" in table
    assert "host, before the run: a fixed Python loop " in table
    # each batch size ran on its own database and outbox, in a temporary folder now gone,
    # not in the settings' var folder
    assert list(scratch.iterdir()) == []
    assert not (tmp_path / "var").exists()


def test_a_stage_that_fails_a_request_stops_the_benchmark(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A benchmark that hid a failed request would time less work than it reports."""
    from consumers import stages

    def refuse(self: object, records: object) -> list[Exception]:
        return [RuntimeError("the ledger is down")] * len(records)  # type: ignore[arg-type]

    monkeypatch.setattr(stages.Booking, "handle_batch", refuse)
    with pytest.raises(Exception, match="booker: RuntimeError"):
        run_stage_bench(Settings(var_dir=tmp_path), NOW, requests=5, batch_sizes=(1,))


def test_the_cli_prints_the_json(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTTRACK_VAR_DIR", str(tmp_path))
    assert cli.main(["bench", "--stages-only", "--requests", "10", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [b["batch_size"] for b in result["batches"]] == [1, 10, 50]
    assert StageReport(10).to_json_dict()["batches"] == []


def test_stages_only_refuses_a_database_url(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", "--stages-only", "--database-url",
                     "postgresql://postgres@127.0.0.1/x"]) == cli.EXIT_INVALID
    assert "--stages-only runs on a fresh SQLite file" in capsys.readouterr().err
