"""Directory changes without a restart: the worker re-reads the directory file, and the timed
work moves the meetings a change makes invalid (same UID, higher SEQUENCE) or escalates them.

Requests are taken to ``invited`` by the pipeline's own stages, in process, on SQLite; invites
go to the outbox and are parsed back.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from icalendar import Calendar

from consumers.envelope import Origin
from scheduler import jobs, lifecycle_records
from scheduler.directory import CenterDirectory, default_directory_path
from scheduler.directory_check import InvalidMeeting, invalid_meetings
from scheduler.directory_source import DirectorySource
from scheduler.jobs import TimedWork
from scheduler.lifecycle import cancel, reschedule
from schemas.events import Meeting
from schemas.help_request import PreferredWindow
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

    def booked(self, request_id: str) -> bytes:
        """Take a German request to ``booked``; return the MeetingBooked event's value."""
        value = json.dumps({
            "request_id": request_id, "submitted_at": (NOW - timedelta(minutes=1)).isoformat(),
            "source": "admin_center", "topic": "data_migration",
            "tenant": {"id": "t-1", "name": "Contoso", "country": "DE"},
            "requester": {"name": "Alex", "email": "alex@contoso.example.com",
                          "language": "de-DE"},
        }).encode()
        stages = self.runtime.stages()
        for stage in (stages.submission, stages.booking):
            (emit,) = stage.handle(value, Origin("test", 0, 0))
            value = emit.value
        return value

    def invited(self, request_id: str, booked: bytes | None = None) -> tuple[str, datetime]:
        """Take a German request (or one already ``booked``) to ``invited``; return its UID
        and meeting start."""
        value = self.booked(request_id) if booked is None else booked
        self.runtime.stages().invitation.handle(value, Origin("test", 0, 0))
        status = self.runtime.store.status(request_id)
        assert status is not None and status.meeting is not None
        assert str(status.status) == "invited"
        return status.meeting.uid, status.meeting.start

    def close(self, center_id: str, *days: date) -> None:
        """Write the directory file again with ``days`` closed at ``center_id``."""
        def closing(center: dict[str, Any]) -> None:
            center["closures"] = sorted({*center.get("closures", []), *days})
        self.edit(center_id, closing)

    def edit(self, center_id: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Write the directory file again with ``change`` made to ``center_id``'s entry."""
        data = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        (center,) = [c for c in data["centers"] if c["id"] == center_id]
        change(center)
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


def test_a_center_a_reload_adds_gets_its_invites(service: Service) -> None:
    service.invited("reload-before")

    def renamed(center: dict[str, Any]) -> None:  # Munich becomes a new center, Munich-2
        center["id"] = "munich-2"
        for specialist in center["specialists"]:
            specialist["id"] = specialist["id"].replace("muc-", "m2-")
    service.edit("munich", renamed)

    uid, _ = service.invited("reload-after")
    status = service.runtime.store.status("reload-after")
    assert status is not None and status.center_id == "munich-2"
    assert service.invite(uid)[:3] == ("REQUEST", 0, uid)


def test_a_reload_changes_a_centers_backend_and_its_calendar(service: Service) -> None:
    assert service.runtime.deliveries("munich").name == "outbox"
    assert service.runtime.deliveries.calendar("munich") is None

    service.edit("munich", lambda center: center.update(
        delivery={"backend": "caldav", "url": "https://calendar.example.com/"}))

    assert service.runtime.directory.center("munich").delivery.backend == "caldav"
    assert service.runtime.deliveries("munich").name == "caldav"
    assert service.runtime.deliveries.calendar("munich") is service.runtime.deliveries("munich")
    assert service.runtime.deliveries("paris").name == "outbox"


def test_a_meeting_is_cancelled_where_it_was_invited_after_its_centers_backend_changed(
        service: Service) -> None:
    uid, _ = service.invited("reload-cancel")
    service.edit("munich", lambda center: center.update(  # a server nobody runs: never asked
        delivery={"backend": "caldav", "url": "https://calendar.invalid/"}))
    assert service.runtime.deliveries("munich").name == "caldav"

    outcome = cancel("reload-cancel", service.runtime.lifecycle(), NOW)

    assert outcome.sequence == 1
    assert service.invite(uid)[:3] == ("CANCEL", 1, uid)  # the outbox that had the REQUEST


def test_a_reload_with_an_unusable_delivery_block_is_refused(service: Service) -> None:
    service.edit("munich", lambda center: center.update(
        delivery={"backend": "smtp", "hots": "mail.example.com"}))

    assert service.runtime.directory.center("munich").delivery.backend == "outbox"
    error = service.runtime.directory_source.last_error
    assert error is not None
    assert error.startswith("center munich: smtp: delivery.host: Field required; "
                            "delivery.hots: not a setting of the smtp backend")
    uid, _ = service.invited("reload-refused")
    assert service.invite(uid)[:3] == ("REQUEST", 0, uid)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_with_the_directory_unchanged_only_what_changed_since_the_last_run_is_checked(
        service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(NOW)
    service.runtime = dataclasses.replace(service.runtime, clock=clock)
    checked: list[list[str]] = []

    def spy(directory: CenterDirectory, page: Iterable[Meeting],
            now: datetime) -> list[InvalidMeeting]:
        meetings = list(page)
        checked[-1].extend(m.request_id for m in meetings)
        return invalid_meetings(directory, meetings, now)

    monkeypatch.setattr(jobs, "invalid_meetings", spy)
    work = service.timed_work()  # one leader, across runs

    def run(minutes: int) -> dict[str, int]:
        clock.now = NOW + timedelta(minutes=minutes)
        checked.append([])
        return work.revalidate_bookings()

    def at(minutes: int) -> None:
        clock.now = NOW + timedelta(minutes=minutes)

    service.invited("since-a")  # booked and invited at minute 0
    assert run(5) == {"rescheduled": 0, "escalated": 0}
    assert checked[-1] == ["since-a"]  # the first run checks every meeting
    assert run(10) == {"rescheduled": 0, "escalated": 0}
    assert checked[-1] == []  # nothing booked, moved or invited since minute 4

    at(12)
    service.invited("since-b")
    assert run(15) == {"rescheduled": 0, "escalated": 0}
    assert checked[-1] == ["since-b"]

    at(20)
    booked = service.booked("since-c")
    assert run(25) == {"rescheduled": 0, "escalated": 0}
    assert checked[-1] == ["since-c"]  # booked, not yet invited: its invite may wait on it
    at(30)
    service.invited("since-c", booked)  # checked at minute 25: the invitation is new
    assert run(35) == {"rescheduled": 0, "escalated": 0}
    assert checked[-1] == ["since-c"]

    at(35)  # moved by its customer: a new meeting row; the request stays invited
    moved = reschedule("since-a", PreferredWindow(earliest=NOW + timedelta(days=3)),
                       service.runtime.lifecycle(), clock.now)
    assert str(moved.result) == "rescheduled"
    assert run(37) == {"rescheduled": 0, "escalated": 0}
    assert checked[-1] == ["since-a"]

    at(39)  # moved, and the worker stopped before it recorded the invitation
    lifecycle = service.runtime.lifecycle()
    current = lifecycle.ledger.meeting_for("since-b")
    assert current is not None
    lifecycle.changes.move(current, current.model_copy(update={
        "start": current.start + timedelta(days=7), "end": current.end + timedelta(days=7)}))
    run(39)
    assert checked[-1] == ["since-b"]

    # The directory file closes Munich for the booking horizon and more.
    old = service.runtime.directory
    first = local_date(service.runtime, "munich", NOW)
    closed_days = [first + timedelta(days=n) for n in range(60)]
    service.close("munich", *closed_days)
    assert run(41) == {"rescheduled": 0, "escalated": 3}  # a new directory: every meeting
    assert sorted(checked[-1]) == ["since-a", "since-b", "since-c"]

    at(43)  # a worker that has not read the new directory yet books a closed day
    leader = service.runtime
    service.runtime = dataclasses.replace(leader, directory_source=DirectorySource.constant(old))
    _, start = service.invited("since-d")
    service.runtime = leader
    assert local_date(service.runtime, "munich", start) in closed_days
    assert run(45) == {"rescheduled": 0, "escalated": 1}
    assert checked[-1] == ["since-d"]
    assert run(50) == {"rescheduled": 0, "escalated": 0}
    assert checked[-1] == []
