"""Invalid directories fail at load with a message naming the file, the center and the field."""

from __future__ import annotations

import copy
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from scheduler.directory import DirectoryInvalid, load_directory
from scheduler.ledger import MAX_MEETING

CENTER: dict[str, Any] = {
    "id": "taipei",
    "name": "FastTrack Center Taipei",
    "region": "APAC",
    "timezone": "Asia/Taipei",
    "country": "TW",
    "languages": ["zh-Hant", "en"],
    "hours": {"mon": ["09:00-12:00", "13:00-18:00"]},
    "closures": ["2026-12-31"],
    "mailbox": "fasttrack.taipei@example.com",
    "specialists": [{"id": "tpe-01", "name": "Lin Mei", "email": "mei.lin@example.com",
                     "languages": ["zh-Hant", "en"], "max_meetings_per_day": 4}],
}


def write(tmp_path: Path, **center_changes: Any) -> Path:
    center = copy.deepcopy(CENTER)
    for key, value in center_changes.items():
        center[key] = value
    path = tmp_path / "directory.yaml"
    path.write_text(yaml.safe_dump({"policy": {"meeting_minutes": 60}, "centers": [center]}))
    return path


def test_a_valid_directory_loads(tmp_path: Path) -> None:
    directory = load_directory(write(tmp_path))
    center = directory.center("taipei")
    monday = center.hours[next(iter(center.hours))]
    assert [str(i) for i in monday] == ["09:00-12:00", "13:00-18:00"]
    assert directory.policy.slot_step_minutes == 30


@pytest.mark.parametrize(
    ("changes", "field", "says"),
    [
        pytest.param({"timezone": "Asia/Taipie"}, "timezone", "not an IANA time zone", id="zone"),
        pytest.param({"languages": ["zh-TW"]}, "languages", "not one of the supported", id="lang"),
        pytest.param({"hours": {"mon": ["18:00-09:00"]}}, "hours", "ends before it starts",
                     id="inverted-hours"),
        pytest.param({"hours": {"mon": ["9-12"]}}, "hours", "not an interval", id="bad-hours"),
        pytest.param({"hours": {"mon": ["09:00-12:00", "11:00-13:00"]}}, "hours.mon", "overlaps",
                     id="overlapping-hours"),
        pytest.param({"hours": {"funday": ["09:00-12:00"]}}, "hours.funday", "", id="bad-weekday"),
        pytest.param({"country": "XX"}, "", "no public-holiday calendar", id="country"),
        pytest.param({"subdivision": "ZZZ"}, "", "subdivision", id="subdivision"),
        pytest.param({"mailbox": "nobody"}, "mailbox", "email", id="mailbox"),
        pytest.param({"closures": ["2026-02-30"]}, "closures", "", id="closure-date"),
        pytest.param({"region": "LATAM"}, "region", "", id="region"),
        pytest.param({"delivery": {"backend": "fax"}}, "delivery.backend", "", id="backend"),
        pytest.param({"specialists": [{**CENTER["specialists"][0], "languages": ["ja"]}]},
                     "", "not offered by the center", id="specialist-language"),
        pytest.param({"specialists": [{**CENTER["specialists"][0], "max_meetings_per_day": 0}]},
                     "specialists.0.max_meetings_per_day", "", id="specialist-cap"),
        pytest.param({"colour": "blue"}, "colour", "unknown field", id="unknown-field"),
    ],
)
def test_errors_name_file_center_and_field(tmp_path: Path, changes: dict[str, Any], field: str,
                                           says: str) -> None:
    path = write(tmp_path, **changes)
    with pytest.raises(DirectoryInvalid) as caught:
        load_directory(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: center taipei: ")
    assert field in message
    assert says in message


def test_duplicate_center_ids_are_named(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump({"centers": [CENTER, CENTER]}))
    with pytest.raises(DirectoryInvalid, match="center id 'taipei' appears twice"):
        load_directory(path)



@pytest.mark.parametrize(("second", "says"), [
    pytest.param({**CENTER, "id": "taipei-2"},
                 "center taipei-2: specialist id 'tpe-01' appears also in center taipei",
                 id="two-centers"),
    pytest.param(None, "center taipei: specialist id 'tpe-01' appears twice in it",
                 id="one-center"),
])
def test_a_duplicate_specialist_id_names_its_center(tmp_path: Path, second: Any,
                                                     says: str) -> None:
    centers = [CENTER, second] if second else [
        {**CENTER, "specialists": CENTER["specialists"] * 2}]
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump({"centers": centers}))
    with pytest.raises(DirectoryInvalid, match=re.escape(says)):
        load_directory(path)

def test_policy_errors_name_the_policy_field(tmp_path: Path) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump({"policy": {"fallback_language": "tlh"}, "centers": [CENTER]}))
    with pytest.raises(DirectoryInvalid, match=r"policy\.fallback_language: 'tlh' is not one"):
        load_directory(path)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param("centers: [", "not valid YAML", id="yaml-syntax"),
        pytest.param("- just a list", "must be a mapping", id="not-a-mapping"),
    ],
)
def test_unreadable_files_are_named(tmp_path: Path, text: str, says: str) -> None:
    path = tmp_path / "d.yaml"
    path.write_text(text)
    with pytest.raises(DirectoryInvalid, match=f"^{path}: {says}"):
        load_directory(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DirectoryInvalid, match="cannot read the directory"):
        load_directory(tmp_path / "absent.yaml")


@pytest.mark.parametrize(("minutes", "loads"), [
    pytest.param(MAX_MEETING // timedelta(minutes=1), True, id="the-longest-a-ledger-records"),
    pytest.param(MAX_MEETING // timedelta(minutes=1) + 1, False, id="one-minute-longer"),
])
def test_meetings_are_never_longer_than_a_ledger_records(tmp_path: Path, minutes: int,
                                                         loads: bool) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text(yaml.safe_dump({"policy": {"meeting_minutes": minutes}, "centers": [CENTER]}))
    if loads:
        assert load_directory(path).policy.meeting_minutes == minutes
        return
    with pytest.raises(DirectoryInvalid, match="meeting_minutes"):
        load_directory(path)
