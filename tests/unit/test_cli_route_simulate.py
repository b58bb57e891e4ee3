"""``fasttrack route`` and ``fasttrack simulate`` as other programs call them (DESIGN §6, §7,
contract): one JSON line per request with exactly the contract's keys, exit 0 for any decision,
exit 2 with each bad line named on stderr while the good ones are still answered."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from io import BytesIO, TextIOWrapper
from pathlib import Path
from typing import Any

import pytest
import yaml

from consumers.routing import route
from scheduler.directory import load_directory
from schemas.help_request import parse_help_request
from services.cli import main
from tests.unit.conftest import directory_data, help_request

ROUTE_KEYS = ["request_id", "center_id", "language", "earliest_start", "reasons", "rejected"]
SIMULATE_KEYS = ["request_id", "center_id", "specialist_id", "start", "end"]


@pytest.fixture
def directory_file(tmp_path: Path) -> Path:
    path = tmp_path / "directory.yaml"
    path.write_text(yaml.safe_dump(directory_data(("taipei", "tokyo"), fallback_language=None)))
    return path


def jsonl(tmp_path: Path, *lines: Any, name: str = "requests.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(b"".join(line if isinstance(line, bytes) else json.dumps(line).encode()
                              + b"\n" for line in lines))
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[Any], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_route_prints_the_contract_line_of_each_request(
        tmp_path: Path, directory_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bodies = [help_request("r-en"), help_request("r-ja", language="ja", country="JP"),
              help_request("r-ko", language="ko", country="KR")]  # no center speaks Korean

    code, lines, err = run(capsys, "route", str(jsonl(tmp_path, *bodies)),
                           "--directory", str(directory_file))

    assert code == 0 and err == ""
    assert [list(line) for line in lines] == [ROUTE_KEYS] * 3
    directory = load_directory(directory_file)
    assert lines == [json.loads(json.dumps(route(request, directory, request.submitted_at)
                                           .contract_dict()))
                     for request in map(parse_help_request, bodies)]
    assert [line["center_id"] for line in lines] == ["taipei", "tokyo", None]
    assert lines[0]["earliest_start"].endswith("Z")


def test_route_reads_one_pretty_printed_request_and_decides_at_the_given_time(
        tmp_path: Path, directory_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "request.json"
    path.write_text(json.dumps(help_request(), indent=2))
    at = "2026-12-01T09:00:00+08:00"

    code, (line,), _ = run(capsys, "route", str(path), "--directory", str(directory_file),
                           "--at", at)

    assert code == 0
    decided = route(parse_help_request(help_request()), load_directory(directory_file),
                    datetime.fromisoformat(at))
    assert line["earliest_start"] == decided.contract_dict()["earliest_start"]
    assert line["earliest_start"] >= "2026-12-01T01:00:00Z"  # not from submitted_at


def test_route_names_each_bad_line_and_still_answers_the_good_ones(
        tmp_path: Path, directory_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = {**help_request("r-bad"), "topic": "astrology"}
    path = jsonl(tmp_path, help_request("r-1"), bad, b"{not json\n", b"\xff\xfe\n",
                 help_request("r-2"))

    code, lines, err = run(capsys, "route", str(path), "--directory", str(directory_file))

    assert code == 2
    assert [line["request_id"] for line in lines] == ["r-1", "r-2"]
    said = err.splitlines()
    assert said[0].startswith(f"fasttrack route: {path}:2: topic: ")
    assert said[1].startswith(f"fasttrack route: {path}:3: ") and "JSON" in said[1]
    assert said[2] == f"fasttrack route: {path}:4: not UTF-8 text: byte 0xff at offset 0"


@pytest.mark.parametrize(("target", "says"), [
    ("missing.jsonl", "no such file"),
    (".", "is a directory"),
])
def test_route_names_a_file_it_cannot_read(
        tmp_path: Path, directory_file: Path, capsys: pytest.CaptureFixture[str],
        target: str, says: str) -> None:
    code, lines, err = run(capsys, "route", str(tmp_path / target), "--directory",
                           str(directory_file))
    assert (code, lines) == (2, [])
    assert err == f"fasttrack route: {tmp_path / target}: {says}" + (
        "; give a JSON or JSON Lines file\n" if says == "is a directory" else "\n")


def test_route_reads_standard_input(directory_file: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    data = (json.dumps(help_request("r-1")) + "\n").encode()
    monkeypatch.setattr(sys, "stdin", TextIOWrapper(BytesIO(data)))
    code, (line,), _ = run(capsys, "route", "-", "--directory", str(directory_file))
    assert code == 0 and line["request_id"] == "r-1"


def test_simulate_books_in_file_order_with_nulls_when_escalated(
        tmp_path: Path, directory_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bodies = [help_request(f"r-{n}", submitted_at="2026-11-23T09:30:00+08:00")
              for n in range(3)] + [help_request("r-ko", language="ko", country="KR")]

    code, lines, err = run(capsys, "simulate", str(jsonl(tmp_path, *bodies)), "--directory",
                           str(directory_file))

    assert code == 0
    assert [list(line) for line in lines] == [SIMULATE_KEYS] * 4
    assert [line["request_id"] for line in lines] == ["r-0", "r-1", "r-2", "r-ko"]
    assert lines[3] == {"request_id": "r-ko", "center_id": None, "specialist_id": None,
                        "start": None, "end": None}
    # Two specialists: the first slot for each (the one with fewer meetings that day), then
    # the next free slot (§7: fewest meetings, then id).
    first = datetime.fromisoformat(lines[0]["start"])
    assert first >= datetime(2026, 11, 23, 1, 30, tzinfo=UTC) + timedelta(minutes=240)
    hour = timedelta(hours=1)
    assert [(line["center_id"], line["specialist_id"], datetime.fromisoformat(line["start"]),
             datetime.fromisoformat(line["end"])) for line in lines[:3]] == [
        ("taipei", "taipei-01", first, first + hour),
        ("taipei", "taipei-02", first, first + hour),
        ("taipei", "taipei-01", first + hour, first + 2 * hour)]
    summary = json.loads(err)
    assert (summary["requests"], summary["booked"], summary["escalated"]) == (4, 3, 1)
    assert summary["escalated_by_reason"] == {"no_center_for_language": 1}


def test_simulate_books_a_repeated_request_once_and_refuses_a_reused_id(
        tmp_path: Path, directory_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = help_request("r-1")
    reused = {**help_request("r-1"), "topic": "data_migration"}
    path = jsonl(tmp_path, first, first, reused, help_request("r-2"))

    code, lines, err = run(capsys, "simulate", str(path), "--directory", str(directory_file))

    assert code == 2  # the reused id is bad input, as the pipeline dead-letters it
    assert [line["request_id"] for line in lines] == ["r-1", "r-2"]
    said, summary = err.split("\n{", 1)
    assert said.splitlines() == [
        "fasttrack simulate: request_id 'r-1' repeats an earlier request; booked once",
        "fasttrack simulate: request_id 'r-1' was given earlier with a different body"]
    totals = json.loads("{" + summary)
    assert (totals["requests"], totals["booked"], totals["duplicates"], totals["invalid"]) == (
        4, 2, 1, 1)
