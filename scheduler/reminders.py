"""Meeting reminders: when they are due, what they say, and the port that sends them.

A reminder is an email to the requester (and partner) and the specialist, in the meeting's
language (the requester's, resolved), with the time in the requester's zone. It reuses the
invite catalogs and Babel: the "in 1 day" / "in 1 hour" phrase is CLDR's relative time.
Times are aware and in UTC throughout, so a DST change never moves or repeats a reminder:
"24 h before" is 24 elapsed hours before the start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage, Message
from email.policy import SMTP
from email.utils import format_datetime as rfc5322_date
from pathlib import Path
from typing import Protocol, runtime_checkable

from babel.dates import format_timedelta

from scheduler.delivery import DeliveryReceipt
from scheduler.directory import Center
from scheduler.invite_addressing import address_message, meeting_specialist, message_id
from scheduler.invite_locales import Translator, babel_locale, requester_zone
from scheduler.invite_values import header_text, one_line
from scheduler.invite_wording import format_when, topic_title
from scheduler.outbox import fsync_directory, replace_file
from schemas.events import Meeting
from schemas.help_request import HelpRequest

DEFAULT_OFFSETS: Mapping[str, timedelta] = {"24h": timedelta(hours=24), "1h": timedelta(hours=1)}
MAX_KIND_LENGTH = 9  # METHOD column: "REMIND-" + kind fits in 16 characters


@dataclass(frozen=True, slots=True)
class ReminderPlan:
    """Which reminder of a meeting to send now, and which were overtaken by a later one."""

    send: str | None
    skip: tuple[str, ...] = ()


def reminder_times(start: datetime, offsets: Mapping[str, timedelta]) -> dict[str, datetime]:
    """When each kind of reminder is due: ``start - offset``, in UTC."""
    if start.tzinfo is None:
        raise ValueError("start must be an aware datetime")
    # In UTC first: arithmetic on a zoned datetime is wall-clock time and would be an hour off
    # across a DST change.
    start = start.astimezone(UTC)
    return {kind: start - offset for kind, offset in offsets.items()}


def due_reminders(start: datetime, offsets: Mapping[str, timedelta],
                  now: datetime) -> ReminderPlan:
    """At ``now``, the reminder to send (the closest to the start among those due) and the
    ones it overtakes; nothing once the meeting has started."""
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    if now >= start:
        return ReminderPlan(None)
    due = sorted((offsets[kind], kind) for kind, at in reminder_times(start, offsets).items()
                 if at <= now)
    if not due:
        return ReminderPlan(None)
    return ReminderPlan(due[0][1], tuple(kind for _, kind in due[1:]))


@dataclass(frozen=True)
class Reminder:
    meeting: Meeting
    request: HelpRequest
    center: Center
    kind: str
    email: EmailMessage


class ReminderSender(Protocol):
    """Where reminders go: :class:`CenterReminders` (SMTP where a center sends email, else
    the outbox) or :class:`OutboxReminders`."""

    def backend_for(self, center: Center) -> str:
        """The name of the backend that sends ``center``'s reminders (recorded with each)."""

    def send(self, reminder: Reminder) -> str:
        """Deliver the reminder; return where it went."""


@runtime_checkable
class EmailSender(Protocol):
    """A delivery backend that sends plain email too (SMTP)."""

    name: str

    def send_email(self, message: Message) -> DeliveryReceipt:
        """Send the email to its ``To`` recipients; DeliveryFailed when it cannot."""


def build_reminder(meeting: Meeting, request: HelpRequest, center: Center, kind: str, *,
                   now: datetime) -> EmailMessage:
    """The reminder email, worded in the meeting's language, dated ``now``."""
    locale = babel_locale(meeting.language)
    _ = Translator(meeting.language)
    summary = _("Microsoft 365 FastTrack: %(topic)s", topic=topic_title(request.topic, _))
    soon = format_timedelta(meeting.start - now, add_direction=True, locale=locale)
    lines = [
        _("Hello %(name)s,", name=one_line(request.requester.name)), "",
        f"{summary} ({soon})",
        _("Your time: %(when)s", when=format_when(meeting, requester_zone(request))),
        _("Specialist: %(name)s", name=one_line(meeting_specialist(meeting, center).name)),
    ]
    if meeting.join_url:
        lines.append(_("Join the online meeting: %(url)s", url=meeting.join_url))
    lines += [_("Meeting reference: %(reference)s", reference=meeting.request_id), "",
              _("Kind regards,"), _("The FastTrack team")]
    message = EmailMessage(policy=SMTP)
    address_message(message, meeting, request, center)
    message["Subject"] = header_text(f"{summary} ({soon})")
    message["Date"] = rfc5322_date(now.astimezone(UTC))
    message["Message-ID"] = message_id(meeting.uid, meeting.revision, f"REMIND-{kind}",
                                       center.mailbox)
    message.set_content("\n".join(lines) + "\n", charset="utf-8")
    message["Content-Language"] = meeting.language
    return message


class OutboxReminders:
    """Reminders as ``reminders/<uid>-r<revision>-<kind>.eml`` files, written as the invite
    outbox writes its files: atomically, contents and rename fsynced."""

    name = "outbox"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory) / "reminders"

    def backend_for(self, center: Center) -> str:
        return self.name

    def send(self, reminder: Reminder) -> str:
        """Write the reminder's file and make it durable before saying where it went: the
        caller records the reminder as delivered then, and never sends it again."""
        self.directory.mkdir(parents=True, exist_ok=True)
        meeting = reminder.meeting
        path = self.directory / f"{meeting.uid}-r{meeting.revision}-{reminder.kind}.eml"
        replace_file(path, reminder.email.as_bytes())
        fsync_directory(self.directory)
        return str(path)


class CenterReminders:
    """Each center's reminders by email through its invite backend when that sends email
    (SMTP), and to the outbox otherwise: CalDAV, Exchange and Graph put the meeting in the
    attendees' calendars, which remind them themselves, and the outbox keeps the record.

    ``deliveries(center_id)`` is the center's invite backend as it is now (a directory
    reload can change it).
    """

    def __init__(self, outbox: OutboxReminders,
                 deliveries: Callable[[str], object]) -> None:
        self.outbox = outbox
        self._deliveries = deliveries

    def _email(self, center_id: str) -> EmailSender | None:
        backend = self._deliveries(center_id)
        return backend if isinstance(backend, EmailSender) else None

    def backend_for(self, center: Center) -> str:
        sender = self._email(center.id)
        return self.outbox.name if sender is None else sender.name

    def send(self, reminder: Reminder) -> str:
        """Send it by the center's email backend (DeliveryFailed when that fails), else
        write it to the outbox; return where it went."""
        sender = self._email(reminder.center.id)
        if sender is None:
            return self.outbox.send(reminder)
        receipt = sender.send_email(reminder.email)
        return f"{receipt.location} {receipt.external_id}"
