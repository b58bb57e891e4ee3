"""The file outbox: atomic, idempotent per (UID, SEQUENCE, METHOD), never moves backwards;
one by one or in batches (``send_many``)."""

from __future__ import annotations

import email
import fcntl
import os
import random
import stat
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from icalendar import Calendar, Event

import scheduler.outbox as outbox_module
from scheduler.delivery import DeliveryReceipt, Invite
from scheduler.directory import Center
from scheduler.outbox import OutboxDelivery, UnsafeUid, delivered_version
from scheduler.reminders import OutboxReminders, Reminder
from schemas.events import Meeting
from schemas.help_request import HelpRequest

UID = "6f2b8e0c-3c1a-4f57-9a43-0d3c7f1b2a55@fasttrack.example.com"
NOW = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def invite(sequence: int, method: str = "REQUEST", *, uid: str = UID,
           stamp: datetime = NOW) -> tuple[bytes, EmailMessage]:
    """A minimal invite and its email; the outbox only reads UID, SEQUENCE and METHOD."""
    event = Event()
    event.add("uid", uid)
    event.add("dtstamp", stamp)
    event.add("sequence", sequence)
    event.add("dtstart", datetime(2026, 3, 9, 16, 0, tzinfo=UTC))
    event.add("dtend", datetime(2026, 3, 9, 17, 0, tzinfo=UTC))
    calendar = Calendar()
    calendar.add("prodid", "-//FastTrack//Outbox test//EN")
    calendar.add("version", "2.0")
    calendar.add("method", method)
    calendar.add_component(event)
    ics = bytes(calendar.to_ical())
    message = EmailMessage(policy=policy.SMTP)
    message["Subject"] = f"{method} {sequence}"
    message.set_content(f"{method} {sequence} at {stamp:%H:%M:%S}\n")
    message.add_alternative(ics, maintype="text", subtype="calendar", params={"method": method})
    return ics, message


def deliver(outbox: OutboxDelivery, sequence: int, method: str = "REQUEST", **kwargs: object
            ) -> Path:
    ics, message = invite(sequence, method, **kwargs)  # type: ignore[arg-type]
    return outbox.deliver(ics, message, UID, sequence, method)


def held(directory: Path) -> tuple[int, str]:
    calendar = Calendar.from_ical((directory / f"{UID}.ics").read_bytes())
    return calendar.events[0].sequence, str(calendar["METHOD"])


def test_writes_the_invite_and_the_email(tmp_path: Path) -> None:
    outbox = OutboxDelivery(tmp_path / "outbox")
    ics, message = invite(0)
    path = outbox.deliver(ics, message, UID, 0, "REQUEST")
    assert path == tmp_path / "outbox" / f"{UID}.ics"
    assert path.read_bytes() == ics
    eml = (tmp_path / "outbox" / f"{UID}.eml").read_bytes()
    assert eml == message.as_bytes()
    assert email.message_from_bytes(eml, policy=policy.default)["Subject"] == "REQUEST 0"


def test_the_same_message_again_changes_nothing(tmp_path: Path) -> None:
    outbox = OutboxDelivery(tmp_path)
    deliver(outbox, 1)
    files = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    # a retry renders again, so DTSTAMP and the email differ: still the same message
    deliver(outbox, 1, stamp=NOW + timedelta(minutes=5))
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == files


@pytest.mark.parametrize("first,then,expected", [
    ((0, "REQUEST"), (1, "REQUEST"), (1, "REQUEST")),
    ((2, "REQUEST"), (1, "REQUEST"), (2, "REQUEST")),
    ((1, "REQUEST"), (1, "CANCEL"), (1, "CANCEL")),
    ((1, "CANCEL"), (1, "REQUEST"), (1, "CANCEL")),
    ((2, "CANCEL"), (3, "REQUEST"), (3, "REQUEST")),
    ((3, "REQUEST"), (2, "CANCEL"), (3, "REQUEST")),
], ids=["newer-replaces", "older-never-replaces", "cancel-replaces-same-sequence",
        "request-never-replaces-same-sequence-cancel", "rebooked-after-cancel",
        "late-cancel-ignored"])
def test_only_a_later_message_replaces_the_one_held(tmp_path: Path, first: tuple[int, str],
                                                    then: tuple[int, str],
                                                    expected: tuple[int, str]) -> None:
    outbox = OutboxDelivery(tmp_path)
    deliver(outbox, *first)
    deliver(outbox, *then)
    assert held(tmp_path) == expected
    eml = email.message_from_bytes((tmp_path / f"{UID}.eml").read_bytes(), policy=policy.default)
    assert eml["Subject"] == f"{expected[1]} {expected[0]}"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["REQUEST", "CANCEL"])),
                min_size=1, max_size=12))
def test_whatever_the_order_the_latest_message_wins(
        deliveries: list[tuple[int, str]]) -> None:
    rank = {"REQUEST": 0, "CANCEL": 1}
    with tempfile.TemporaryDirectory() as directory:
        outbox = OutboxDelivery(Path(directory))
        for sequence, method in deliveries:
            deliver(outbox, sequence, method)
        assert held(Path(directory)) == max(deliveries, key=lambda d: (d[0], rank[d[1]]))


def test_concurrent_deliveries_keep_the_highest_sequence(tmp_path: Path) -> None:
    outbox = OutboxDelivery(tmp_path)
    sequences = list(range(30)) * 2
    random.Random(7).shuffle(sequences)
    threads = [threading.Thread(target=deliver, args=(outbox, s)) for s in sequences]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert held(tmp_path) == (29, "REQUEST")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", f"{UID}.eml", f"{UID}.ics"]


def test_a_failed_write_leaves_the_old_files_and_no_temporary(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    outbox = OutboxDelivery(tmp_path)
    deliver(outbox, 0)
    before = (tmp_path / f"{UID}.ics").read_bytes()

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space"):
        deliver(outbox, 1)
    assert (tmp_path / f"{UID}.ics").read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_an_email_written_before_a_crash_is_rewritten_on_retry(tmp_path: Path) -> None:
    """The .ics is the record: a crash between the two writes leaves the old one, so the
    retry sees an older SEQUENCE and writes both again."""
    outbox = OutboxDelivery(tmp_path)
    deliver(outbox, 0)
    (tmp_path / f"{UID}.eml").write_bytes(b"half-delivered")
    deliver(outbox, 1)
    assert held(tmp_path) == (1, "REQUEST")
    assert (tmp_path / f"{UID}.eml").read_bytes() != b"half-delivered"


def test_delivered_version_is_none_before_the_first_delivery(tmp_path: Path) -> None:
    assert delivered_version(tmp_path / "nothing.ics") is None


@pytest.mark.parametrize("uid", [
    "", "../escape", "a/b", "a\\b", ".hidden", "a\x00b", "a\nb", "x" * 201, "..", "/etc/passwd",
    "uid with space",
], ids=["empty", "parent", "slash", "backslash", "dot-first", "nul", "newline", "too-long",
        "dotdot", "absolute", "space"])
def test_an_unsafe_uid_is_refused(tmp_path: Path, uid: str) -> None:
    outbox = OutboxDelivery(tmp_path / "outbox")
    ics, message = invite(0, uid="whatever@example.com")
    with pytest.raises(UnsafeUid):
        outbox.deliver(ics, message, uid, 0, "REQUEST")
    assert not (tmp_path / "outbox").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_an_unknown_method_is_refused(tmp_path: Path) -> None:
    ics, message = invite(0)
    with pytest.raises(ValueError, match="PUBLISH"):
        OutboxDelivery(tmp_path).deliver(ics, message, UID, 0, "PUBLISH")


# -- durability: how many fsyncs, in which order ------------------------------------------------


class DiskCalls:
    """Records the fsyncs (of a file or of a directory), renames and locks the outbox makes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str]] = []
        real_fsync, real_replace, real_flock = os.fsync, os.replace, fcntl.flock

        def fsync(fd: int) -> None:
            kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
            self.calls.append(("fsync", kind))
            real_fsync(fd)

        def replace(source: str, target: str | Path) -> None:
            self.calls.append(("replace", Path(target).suffix))
            real_replace(source, target)

        def flock(fd: Any, operation: int) -> None:
            if operation == fcntl.LOCK_EX:
                self.calls.append(("lock", ""))
            real_flock(fd, operation)

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        monkeypatch.setattr(fcntl, "flock", flock)

    def count(self, call: tuple[str, str]) -> int:
        return self.calls.count(call)


def test_a_delivery_fsyncs_both_files_before_their_renames_then_the_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deliver(OutboxDelivery(tmp_path), 0)  # the directory and the lock file exist
    disk = DiskCalls(monkeypatch)
    deliver(OutboxDelivery(tmp_path), 1)
    assert disk.calls == [("lock", ""), ("fsync", "file"), ("fsync", "file"),
                          ("replace", ".eml"), ("replace", ".ics"), ("fsync", "dir")]


def test_a_reminder_is_on_disk_before_it_is_reported_sent(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """The timed work records a reminder as delivered once ``send`` returns, and never sends
    it again: its file's contents and its rename are both fsynced by then."""
    meeting = Meeting(request_id="req-1", center_id="taipei", specialist_id="tw-01",
                      language="en", start=NOW + timedelta(days=1),
                      end=NOW + timedelta(days=1, hours=1), revision=2, uid=UID)
    message = invite(1)[1]
    reminder = Reminder(meeting, None, None, "24h", message)  # type: ignore[arg-type]
    outbox = OutboxReminders(tmp_path)
    disk = DiskCalls(monkeypatch)
    where = Path(outbox.send(reminder))
    assert disk.calls == [("fsync", "file"), ("replace", ".eml"), ("fsync", "dir")]
    assert where == tmp_path / "reminders" / f"{UID}-r2-24h.eml"
    assert where.read_bytes() == message.as_bytes()
    assert [p.name for p in where.parent.iterdir()] == [where.name]  # no temporary left


def test_a_delivery_already_held_writes_and_fsyncs_nothing(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    deliver(OutboxDelivery(tmp_path), 1)
    disk = DiskCalls(monkeypatch)
    deliver(OutboxDelivery(tmp_path), 1)
    deliver(OutboxDelivery(tmp_path), 0)
    assert disk.calls == [("lock", ""), ("lock", "")]


# -- send_many ----------------------------------------------------------------------------------


def port_invite(sequence: int, method: str = "REQUEST", *, uid: str = UID) -> Invite:
    """An Invite for the delivery port; the outbox reads only the UID, SEQUENCE, METHOD and
    the two renderings."""
    ics, message = invite(sequence, method, uid=uid)
    return Invite(meeting=Meeting.model_construct(uid=uid), request=HelpRequest.model_construct(),
                  center=Center.model_construct(), sequence=sequence,
                  method=method,  # type: ignore[arg-type]
                  ics=ics, email=message)


def outbox_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.name != ".lock"}


OTHER = "1b7d0f6e-2f0e-4c36-8d4a-5a4fd7f2c0e1@fasttrack.example.com"


def test_send_many_reports_each_invite_and_writes_the_good_ones(tmp_path: Path) -> None:
    outbox = OutboxDelivery(tmp_path)
    invites = [port_invite(0), port_invite(0, uid="../escape"), port_invite(3, uid=OTHER),
               port_invite(0, "PUBLISH", uid="third@fasttrack.example.com")]
    results = outbox.send_many(invites)
    assert len(results) == 4
    assert results[0] == DeliveryReceipt(location=str(tmp_path / f"{UID}.ics"))
    assert isinstance(results[1], UnsafeUid)
    assert results[2] == DeliveryReceipt(location=str(tmp_path / f"{OTHER}.ics"))
    assert isinstance(results[3], ValueError) and "PUBLISH" in str(results[3])
    assert sorted(outbox_files(tmp_path)) == sorted(
        [f"{UID}.eml", f"{UID}.ics", f"{OTHER}.eml", f"{OTHER}.ics"])
    assert (tmp_path / f"{OTHER}.ics").read_bytes() == invites[2].ics
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_send_many_of_only_refused_invites_creates_nothing(tmp_path: Path) -> None:
    outbox = OutboxDelivery(tmp_path / "outbox")
    results = outbox.send_many([port_invite(0, uid=".hidden"), port_invite(0, uid="a/b")])
    assert [type(r) for r in results] == [UnsafeUid, UnsafeUid]
    assert not (tmp_path / "outbox").exists()
    assert OutboxDelivery(tmp_path).send_many([]) == []


@pytest.mark.parametrize("batch,expected", [
    ([(0, "REQUEST"), (1, "REQUEST")], (1, "REQUEST")),
    ([(1, "REQUEST"), (0, "REQUEST")], (1, "REQUEST")),
    ([(1, "REQUEST"), (1, "CANCEL")], (1, "CANCEL")),
    ([(1, "CANCEL"), (1, "REQUEST")], (1, "CANCEL")),
    ([(2, "REQUEST"), (2, "REQUEST")], (2, "REQUEST")),
], ids=["newer-second", "older-second", "cancel-second", "request-after-cancel", "same-twice"])
def test_send_many_orders_the_same_uid_within_the_batch(tmp_path: Path,
                                                        batch: list[tuple[int, str]],
                                                        expected: tuple[int, str]) -> None:
    results = OutboxDelivery(tmp_path).send_many([port_invite(s, m) for s, m in batch])
    assert all(isinstance(r, DeliveryReceipt) for r in results)
    assert held(tmp_path) == expected
    eml = email.message_from_bytes((tmp_path / f"{UID}.eml").read_bytes(), policy=policy.default)
    assert eml["Subject"] == f"{expected[1]} {expected[0]}"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([UID, OTHER, "bad uid"]), st.integers(0, 3),
                          st.sampled_from(["REQUEST", "CANCEL"])), min_size=1, max_size=10),
       st.lists(st.tuples(st.sampled_from([UID, OTHER]), st.integers(0, 3),
                          st.sampled_from(["REQUEST", "CANCEL"])), max_size=3))
def test_a_batch_leaves_the_same_files_as_the_same_sends_one_by_one(
        batch: list[tuple[str, int, str]], before: list[tuple[str, int, str]]) -> None:
    with tempfile.TemporaryDirectory() as one_by_one, tempfile.TemporaryDirectory() as at_once:
        singles, many = OutboxDelivery(Path(one_by_one)), OutboxDelivery(Path(at_once))
        for uid, sequence, method in before:  # what the outboxes already hold
            held_already = port_invite(sequence, method, uid=uid)
            singles.send(held_already)
            many.send(held_already)
        # the same objects for both: the email's MIME boundary is chosen when first written
        invites = [port_invite(sequence, method, uid=uid) for uid, sequence, method in batch]
        expected: list[DeliveryReceipt | type[Exception]] = []
        for item in invites:
            try:
                expected.append(singles.send(item))
            except UnsafeUid:
                expected.append(UnsafeUid)
        results = many.send_many(invites)
        assert [r if isinstance(r, DeliveryReceipt) else type(r) for r in results] == [
            DeliveryReceipt(location=r.location.replace(one_by_one, at_once))
            if isinstance(r, DeliveryReceipt) else r for r in expected]
        assert outbox_files(Path(at_once)) == outbox_files(Path(one_by_one))


def test_send_many_locks_once_and_fsyncs_the_directory_once(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    outbox = OutboxDelivery(tmp_path)
    outbox.send(port_invite(5, uid=OTHER))  # held: the batch's older one is not written
    disk = DiskCalls(monkeypatch)
    results = outbox.send_many([port_invite(0), port_invite(1), port_invite(0, uid=".bad"),
                                port_invite(4, uid=OTHER)])
    assert [type(r) for r in results] == [DeliveryReceipt, DeliveryReceipt, UnsafeUid,
                                          DeliveryReceipt]
    # the same UID twice: the second is checked once the first is written
    one_invite = [("fsync", "file"), ("fsync", "file"), ("replace", ".eml"), ("replace", ".ics")]
    assert disk.calls == [("lock", ""), *one_invite, *one_invite, ("fsync", "dir")]


def test_a_batch_fsyncs_every_file_before_the_first_rename(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    uids = [f"batch-{n}@fasttrack.example.com" for n in range(3)]
    disk = DiskCalls(monkeypatch)
    results = OutboxDelivery(tmp_path).send_many([port_invite(0, uid=uid) for uid in uids])
    assert all(isinstance(r, DeliveryReceipt) for r in results)
    assert disk.calls == [("lock", ""), *[("fsync", "file")] * 6,
                          *[("replace", suffix) for _ in uids for suffix in (".eml", ".ics")],
                          ("fsync", "dir")]
    assert sorted(outbox_files(tmp_path)) == sorted(f"{uid}.{kind}" for uid in uids
                                                    for kind in ("eml", "ics"))


def test_a_batch_larger_than_the_files_kept_open_writes_every_invite(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outbox_module, "STAGED_INVITES", 2)
    invites = [port_invite(1, uid=f"many-{n}@fasttrack.example.com") for n in range(5)]
    results = OutboxDelivery(tmp_path).send_many(invites)
    assert all(isinstance(r, DeliveryReceipt) for r in results)
    assert {name: data for name, data in outbox_files(tmp_path).items()
            if name.endswith(".ics")} == {f"{i.meeting.uid}.ics": i.ics for i in invites}


def test_a_failed_fsync_stops_that_invite_alone(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync
    seen: list[int] = []

    def second_file_fails(fd: int) -> None:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            seen.append(fd)
            if len(seen) == 2:  # the .ics of the first invite
                raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", second_file_fails)
    results = OutboxDelivery(tmp_path).send_many([port_invite(0, uid=OTHER), port_invite(0)])
    assert isinstance(results[0], OSError)
    assert results[1] == DeliveryReceipt(location=str(tmp_path / f"{UID}.ics"))
    assert sorted(outbox_files(tmp_path)) == [f"{UID}.eml", f"{UID}.ics"]  # nothing of OTHER
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_send_many_reports_a_failed_write_and_writes_the_rest(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    real_replace = os.replace

    def disk_full_for_other(source: str, target: str | Path) -> None:
        if Path(target).name.startswith(OTHER):
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", disk_full_for_other)
    invites = [port_invite(0, uid=OTHER), port_invite(0), port_invite(1, uid=OTHER)]
    results = OutboxDelivery(tmp_path).send_many(invites)
    assert isinstance(results[0], OSError) and isinstance(results[2], OSError)
    assert results[1] == DeliveryReceipt(location=str(tmp_path / f"{UID}.ics"))
    assert sorted(outbox_files(tmp_path)) == [f"{UID}.eml", f"{UID}.ics"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_send_many_reports_a_failed_directory_fsync_for_every_invite(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def failing_directory_fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_directory_fsync)
    results = OutboxDelivery(tmp_path).send_many(
        [port_invite(0), port_invite(0, uid="x/y"), port_invite(0, uid=OTHER)])
    assert isinstance(results[0], OSError) and "Input/output" in str(results[0])
    assert isinstance(results[1], UnsafeUid)
    assert results[2] is results[0]
