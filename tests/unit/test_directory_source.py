"""The directory source: re-reads the file when it changes, keeps the last good one on errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from scheduler.directory import DirectoryInvalid
from scheduler.directory_source import DirectorySource
from tests.unit.conftest import directory_data, make_directory


class Ticks:
    """A controlled monotonic clock."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, data: Any, mtime_ns: int) -> None:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data,
                    encoding="utf-8")
    os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def ticks() -> Ticks:
    return Ticks()


@pytest.fixture
def path(tmp_path: Path) -> Path:
    path = tmp_path / "directory.yaml"
    write(path, directory_data(("dublin", "munich")), 1_000_000_000)
    return path


def ids(source: DirectorySource) -> list[str]:
    return [c.id for c in source().centers]


def test_a_changed_file_is_loaded_at_the_next_check(path: Path, ticks: Ticks) -> None:
    source = DirectorySource.watching(path, check_seconds=5, monotonic=ticks)
    first = source()
    write(path, directory_data(("dublin",)), 2_000_000_000)

    ticks.now += 4
    assert source() is first  # not checked again yet
    ticks.now += 1
    assert ids(source) == ["dublin"]
    assert source.last_error is None


def test_an_invalid_file_keeps_the_last_good_directory(path: Path, ticks: Ticks) -> None:
    source = DirectorySource.watching(path, check_seconds=5, monotonic=ticks)
    broken = directory_data(("dublin",))
    broken["centers"][0]["timezone"] = "Mars/Olympus"
    write(path, broken, 2_000_000_000)

    ticks.now += 5
    with capture_logs() as logs:
        assert ids(source) == ["dublin", "munich"]
        ticks.now += 5
        assert ids(source) == ["dublin", "munich"]  # logged once, not at every check
    assert [e["event"] for e in logs] == ["directory_invalid"]
    assert logs[0]["log_level"] == "error" and "Mars/Olympus" in logs[0]["error"]
    assert source.last_error is not None and "Mars/Olympus" in source.last_error

    write(path, directory_data(("munich",)), 3_000_000_000)  # fixed: taken at the next check
    ticks.now += 5
    assert ids(source) == ["munich"]
    assert source.last_error is None


def test_unparsable_yaml_and_a_missing_file_keep_the_last_good_directory(
        path: Path, ticks: Ticks) -> None:
    source = DirectorySource.watching(path, check_seconds=1, monotonic=ticks)
    write(path, "centers: [unclosed", 2_000_000_000)
    ticks.now += 1
    assert ids(source) == ["dublin", "munich"]
    assert source.last_error is not None and "not valid YAML" in source.last_error

    path.unlink()
    ticks.now += 1
    assert ids(source) == ["dublin", "munich"]


def test_an_unchanged_file_is_not_read_again(path: Path, ticks: Ticks,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    source = DirectorySource.watching(path, check_seconds=1, monotonic=ticks)
    first = source()

    def no_reading(_path: Any) -> Any:
        raise AssertionError("the unchanged file was read again")

    monkeypatch.setattr("scheduler.directory_source.load_directory", no_reading)
    for _ in range(3):
        ticks.now += 2
        assert source() is first


def test_an_invalid_file_at_start_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "directory.yaml"
    path.write_text("centers: []\n", encoding="utf-8")
    with pytest.raises(DirectoryInvalid, match="needs at least one center"):
        DirectorySource.watching(path)


def test_a_constant_source_needs_no_file() -> None:
    directory = make_directory(("tokyo",))
    source = DirectorySource.constant(directory)
    assert source() is directory


def test_a_check_sees_the_current_directory_then_each_reload_and_can_refuse_one(
        path: Path, ticks: Ticks) -> None:
    source = DirectorySource.watching(path, check_seconds=5, monotonic=ticks)
    seen: list[list[str]] = []

    def check(directory: Any) -> None:
        seen.append([c.id for c in directory.centers])
        if len(directory.centers) == 1:
            raise ValueError("center dublin: smtp: delivery.host: Field required")

    source.add_check(check)
    assert seen == [["dublin", "munich"]]  # the directory served now, at once

    write(path, directory_data(("dublin",)), 2_000_000_000)
    ticks.now += 5
    assert ids(source) == ["dublin", "munich"]  # refused: the last good one is served on
    assert source.last_error == "center dublin: smtp: delivery.host: Field required"

    write(path, directory_data(("taipei", "dublin")), 3_000_000_000)
    ticks.now += 5
    assert ids(source) == ["taipei", "dublin"]
    assert source.last_error is None
    assert seen[1:] == [["dublin"], ["taipei", "dublin"]]


def test_a_check_that_refuses_the_directory_at_start_raises() -> None:
    source = DirectorySource.constant(make_directory(only=("dublin",)))

    def refuse(directory: Any) -> None:
        raise ValueError("center dublin: graph: delivery.tenant_id: Field required")

    with pytest.raises(ValueError, match="tenant_id"):
        source.add_check(refuse)
