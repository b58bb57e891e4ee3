"""The file outbox: atomic, idempotent per (UID, SEQUENCE, METHOD), never moves backwards."""

from __future__ import annotations

import email
import os
import random
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from icalendar import Calendar, Event

from scheduler.outbox import OutboxDelivery, UnsafeUid, delivered_version

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
