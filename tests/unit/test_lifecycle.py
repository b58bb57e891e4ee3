"""The pure parts of the meeting lifecycle and the timed work: the command contract, when
reminders are due (DST included), CANCEL sequences, and conditional meeting changes in memory."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from scheduler.jobs import TimedWorkPolicy, reminder_job_id
from scheduler.ledger import InMemoryLedger, SpecialistBusy
from scheduler.lifecycle import cancel_sequence
from scheduler.meeting_changes import InMemoryMeetingChanges, MeetingChanged, next_revision
from scheduler.reminders import DEFAULT_OFFSETS, due_reminders, reminder_times
from schemas.commands import CommandKind, parse_request_command
from schemas.errors import InvalidMessage
from schemas.events import Meeting

SCHEMA = json.loads((files("schemas") / "request_command.v1.json").read_text(encoding="utf-8"))
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=FormatChecker())
BERLIN = ZoneInfo("Europe/Berlin")
LOS_ANGELES = ZoneInfo("America/Los_Angeles")

CANCEL = {"command": "cancel", "request_id": "r-1", "command_id": "c-1",
          "issued_at": "2026-11-23T09:30:00+08:00"}
RESCHEDULE = {**CANCEL, "command": "reschedule",
              "preferred_window": {"earliest": "2026-11-30T00:00:00Z"}}

COMMANDS = [
    pytest.param(CANCEL, True, id="cancel"),
    pytest.param(RESCHEDULE, True, id="reschedule"),
    pytest.param({**RESCHEDULE, "preferred_window": {"latest": "2026-12-01T00:00:00Z"}}, True,
                 id="reschedule-latest-only"),
    pytest.param({**CANCEL, "preferred_window": {"earliest": "2026-11-30T00:00:00Z"}}, False,
                 id="cancel-with-window"),
    pytest.param({k: v for k, v in RESCHEDULE.items() if k != "preferred_window"}, False,
                 id="reschedule-without-window"),
    pytest.param({**RESCHEDULE, "preferred_window": {}}, False, id="empty-window"),
    pytest.param({**CANCEL, "command": "delete"}, False, id="unknown-command"),
    pytest.param({**CANCEL, "extra": 1}, False, id="unknown-field"),
    pytest.param({**CANCEL, "request_id": "has space"}, False, id="bad-request-id"),
    pytest.param({**CANCEL, "command_id": ""}, False, id="empty-command-id"),
    pytest.param({**CANCEL, "issued_at": "2026-11-23T09:30:00"}, False, id="naive-issued-at"),
    pytest.param({k: v for k, v in CANCEL.items() if k != "command_id"}, False,
                 id="no-command-id"),
]


@pytest.mark.parametrize(("message", "valid"), COMMANDS)
def test_the_command_schema_and_model_agree(message: dict[str, Any], valid: bool) -> None:
    schema_says = VALIDATOR.is_valid(message)
    try:
        parse_request_command(message)
        model_says = True
    except InvalidMessage:
        model_says = False
    assert (schema_says, model_says) == (valid, valid)


def test_a_command_error_names_the_field() -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_request_command({**CANCEL, "request_id": "has space"})
    assert [e.field for e in caught.value.errors] == ["request_id"]
    assert parse_request_command(json.dumps(RESCHEDULE)).command is CommandKind.RESCHEDULE


# --- reminders ---------------------------------------------------------------------------------

def test_regression_zoned_start_minus_24h_is_elapsed_time_across_spring_forward() -> None:
    # Monday 2026-03-30 00:30 CEST: 24 elapsed hours earlier is Saturday 23:30 CET, not the
    # wall-clock "00:30 the day before" (zoned datetime arithmetic would give that).
    start = datetime(2026, 3, 30, 0, 30, tzinfo=BERLIN)
    times = reminder_times(start, DEFAULT_OFFSETS)
    assert times["24h"] == start.astimezone(UTC) - timedelta(hours=24)
    assert times["24h"].astimezone(BERLIN).replace(tzinfo=None) == datetime(2026, 3, 28, 23, 30)


@pytest.mark.parametrize("fold", [0, 1])
def test_a_meeting_in_the_repeated_hour_is_reminded_by_its_own_instant(fold: int) -> None:
    start = datetime(2026, 11, 1, 1, 30, fold=fold, tzinfo=LOS_ANGELES)  # PDT, then PST
    one_hour = reminder_times(start, DEFAULT_OFFSETS)["1h"]
    assert start.astimezone(UTC) - one_hour == timedelta(hours=1)
    assert one_hour.astimezone(LOS_ANGELES).replace(tzinfo=None) == (
        datetime(2026, 11, 1, 0, 30) if fold == 0 else datetime(2026, 11, 1, 1, 30))


START = datetime(2026, 3, 30, 9, 0, tzinfo=BERLIN)
DUE = [
    pytest.param(START - timedelta(hours=25), None, (), id="nothing-yet"),
    pytest.param(START - timedelta(hours=24), "24h", (), id="24h-on-time"),
    pytest.param(START - timedelta(hours=2), "24h", (), id="24h-late"),
    pytest.param(START - timedelta(minutes=59), "1h", ("24h",), id="1h-overtakes-24h"),
    pytest.param(START, None, (), id="started"),
]


@pytest.mark.parametrize(("now", "send", "skip"), DUE)
def test_which_reminder_is_due(now: datetime, send: str | None, skip: tuple[str, ...]) -> None:
    plan = due_reminders(START, DEFAULT_OFFSETS, now)
    assert (plan.send, plan.skip) == (send, skip)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        due_reminders(START, DEFAULT_OFFSETS, datetime(2026, 3, 30, 8, 0))


def test_reminder_jobs_are_named_by_request_kind_and_revision() -> None:
    assert reminder_job_id("r-1", "24h", 2) == "reminder:r-1:24h:r2"
    assert reminder_job_id("r-1", "24h", 2) != reminder_job_id("r-1", "24h", 3)


@pytest.mark.parametrize("reminders", [{"": timedelta(hours=1)}, {"1h": timedelta(0)},
                                       {"much-too-long": timedelta(hours=1)}])
def test_invalid_reminder_settings_are_refused(reminders: dict[str, timedelta]) -> None:
    with pytest.raises(ValueError, match="reminders"):
        TimedWorkPolicy(reminders=reminders)


# --- sequences and conditional changes ---------------------------------------------------------

def meeting(revision: int = 1, hour: int = 9, specialist: str = "tpe-01") -> Meeting:
    start = datetime(2026, 11, 24, hour, 0, tzinfo=UTC)
    return Meeting(request_id="r-1", center_id="taipei", specialist_id=specialist,
                   language="en", start=start, end=start + timedelta(hours=1),
                   revision=revision, uid="uid-1@fasttrack.test")


@pytest.mark.parametrize(("revision", "sent", "expected"), [
    pytest.param(1, [0], 1, id="first-invite"),
    pytest.param(3, [0, 1, 2], 3, id="after-two-moves"),
    pytest.param(2, [0, 1, 5], 6, id="above-anything-sent"),
])
def test_a_cancel_goes_above_every_request_sent(revision: int, sent: list[int],
                                                expected: int) -> None:
    assert cancel_sequence(meeting(revision), sent) == expected


def test_a_move_keeps_the_uid_and_bumps_the_revision() -> None:
    moved = next_revision(meeting(1), meeting(1, hour=11).model_copy(update={"uid": "other"}))
    assert (moved.revision, moved.uid) == (2, "uid-1@fasttrack.test")


def test_of_two_changes_on_one_revision_only_the_first_applies() -> None:
    ledger = InMemoryLedger()
    ledger.record(meeting(1))
    changes = InMemoryMeetingChanges(ledger)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def change(n: int) -> None:
        barrier.wait()
        if n % 2:
            results.append("cancel" if changes.cancel("r-1", 1) else "lost")
            return
        try:
            changes.move(meeting(1), meeting(2, hour=10 + n))
            results.append("move")
        except MeetingChanged:
            results.append("lost")

    threads = [threading.Thread(target=change, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results).count("lost") == 7


def test_a_move_onto_a_busy_specialist_keeps_the_old_meeting() -> None:
    ledger = InMemoryLedger()
    ledger.record(meeting(1))
    ledger.record(meeting(1, hour=12).model_copy(update={"request_id": "r-2"}))
    changes = InMemoryMeetingChanges(ledger)
    with pytest.raises(SpecialistBusy):
        changes.move(meeting(1), meeting(2, hour=12))
    assert ledger.meeting_for("r-1") == meeting(1)
