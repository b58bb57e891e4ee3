"""Directory changes without a restart: the worker re-reads the directory file, and the timed
work moves the meetings a change makes invalid (same UID, higher SEQUENCE) or escalates them.

Requests are taken to ``invited`` by the pipeline's own stages, in process, on SQLite; invites
go to the outbox and are parsed back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from icalendar import Calendar

from consumers.envelope import Origin
from scheduler import lifecycle_records
from scheduler.directory import default_directory_path
from scheduler.directory_source import DirectorySource
from scheduler.jobs import TimedWork
from services.bootstrap import Runtime, build_runtime
from services.settings import Settings

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # a Monday


class Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Service:
    runtime: Runtime
    path: Path
    ticks: Ticks
    outbox: Path
    published: list[tuple[str, bytes, bytes]]

    def invited(self, request_id: str) -> tuple[str, datetime]:
        """Take a German request to ``invited``; return its UID and meeting start."""
        value = json.dumps({
            "request_id": request_id, "submitted_at": (NOW - timedelta(minutes=1)).isoformat(),
            "source": "admin_center", "topic": "data_migration",
            "tenant": {"id": "t-1", "name": "Contoso", "country": "DE"},
            "requester": {"name": "Alex", "email": "alex@contoso.example.com",
                          "language": "de-DE"},
        }).encode()
        stages = self.runtime.stages()
        for stage in (stages.submission, stages.booking, stages.invitation):
            (emit,) = stage.handle(value, Origin("test", 0, 0))
            value = emit.value
        status = self.runtime.store.status(request_id)
        assert status is not None and status.meeting is not None
        assert str(status.status) == "invited"
        return status.meeting.uid, status.meeting.start

    def close(self, center_id: str, *days: date) -> None:
        """Write the directory file again with ``days`` closed at ``center_id``."""
        data = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        (center,) = [c for c in data["centers"] if c["id"] == center_id]
        center["closures"] = sorted({*center.get("closures", []), *days})
        self.path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
        stamp = os.stat(self.path).st_mtime_ns + 1_000_000_000  # a visibly newer file
        os.utime(self.path, ns=(stamp, stamp))
        self.ticks.now += 10  # past the source's check interval

    def timed_work(self) -> TimedWork:
        return self.runtime.timed_work(lambda *record: self.published.append(record))

    def invite(self, uid: str) -> tuple[str, int, str, datetime]:
        calendar = Calendar.from_ical((self.outbox / f"{uid}.ics").read_bytes())
        (event,) = calendar.events
        return (str(calendar["METHOD"]), int(event["SEQUENCE"]), str(event["UID"]),
                event.decoded("DTSTART"))


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    path = tmp_path / "directory.yaml"
    path.write_bytes(default_directory_path().read_bytes())
    settings = Settings(var_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'ft.db'}",
                        directory=path)
    ticks = Ticks()
    runtime = dataclasses.replace(
        build_runtime(settings),
        directory_source=DirectorySource.watching(path, check_seconds=5, monotonic=ticks),
        clock=lambda: NOW)
    yield Service(runtime, path, ticks, tmp_path / "outbox", [])
    runtime.engine.dispose()


def local_date(runtime: Runtime, center_id: str, instant: datetime) -> date:
    return instant.astimezone(runtime.directory.center(center_id).zone).date()


def test_a_new_closure_moves_the_meeting_to_another_day_with_an_update(
        service: Service) -> None:
    uid, start = service.invited("reload-move")
    assert service.invite(uid)[:3] == ("REQUEST", 0, uid)
    assert service.timed_work().revalidate_bookings() == {"rescheduled": 0, "escalated": 0}

    day = local_date(service.runtime, "munich", start)
    service.close("munich", day)
    assert day in service.runtime.directory.center("munich").closures  # no restart needed

    assert service.timed_work().revalidate_bookings() == {"rescheduled": 1, "escalated": 0}
    status = service.runtime.store.status("reload-move")
    assert status is not None and status.meeting is not None
    assert str(status.status) == "invited"
    moved = status.meeting
    assert moved.uid == uid and local_date(service.runtime, "munich", moved.start) != day
    method, sequence, same_uid, new_start = service.invite(uid)
    assert (method, sequence, same_uid) == ("REQUEST", 1, uid)
    assert new_start == moved.start

    assert service.timed_work().revalidate_bookings() == {"rescheduled": 0, "escalated": 0}


def test_revalidation_reads_every_page_of_meetings(service: Service,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lifecycle_records, "MEETING_PAGE", 1)
    starts = [service.invited(f"reload-page-{n}")[1] for n in range(3)]
    service.close("munich", *{local_date(service.runtime, "munich", s) for s in starts})

    assert service.timed_work().revalidate_bookings() == {"rescheduled": 3, "escalated": 0}
    assert service.timed_work().revalidate_bookings() == {"rescheduled": 0, "escalated": 0}


def test_a_meeting_no_slot_can_take_is_escalated_and_cancelled(service: Service) -> None:
    uid, _ = service.invited("reload-escalate")
    first = local_date(service.runtime, "munich", NOW)
    service.close("munich", *(first + timedelta(days=n) for n in range(60)))

    assert service.timed_work().revalidate_bookings() == {"rescheduled": 0, "escalated": 1}
    status = service.runtime.store.status("reload-escalate")
    assert status is not None and str(status.status) == "escalated"
    assert status.timeline[-1].detail is not None
    assert status.timeline[-1].detail["reasons"][0] == "closed_that_day"
    assert [topic for topic, _, _ in service.published] == ["requests_escalated"]
    assert service.invite(uid)[:3] == ("CANCEL", 1, uid)


def test_an_invalid_directory_file_changes_nothing(service: Service) -> None:
    uid, _ = service.invited("reload-invalid")
    service.path.write_text("centers: []\n", encoding="utf-8")
    service.ticks.now += 10

    assert [c.id for c in service.runtime.directory.centers][:1] == ["redmond"]
    assert service.runtime.directory_source.last_error is not None
    assert service.timed_work().revalidate_bookings() == {"rescheduled": 0, "escalated": 0}
    assert service.invite(uid)[:2] == ("REQUEST", 0)
