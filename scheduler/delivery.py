"""The invite delivery port: one interface for every backend (outbox, SMTP, CalDAV, EWS, Graph).

A backend receives an :class:`Invite` (the meeting, who it is for, and the rendered iTIP message
and iMIP email) and puts it in front of the recipients, idempotently: the same (UID, SEQUENCE,
METHOD) twice is delivered once, by the UID/SEQUENCE pair or by the backend's own idempotency
key. A backend that can read calendars also implements :class:`BusyCalendar`, so meetings
already in a specialist's calendar block booking.
"""

from __future__ import annotations

import email
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage, Message
from email.policy import default
from typing import Literal, Protocol, runtime_checkable

from scheduler.directory import Center
from schemas.events import Meeting
from schemas.help_request import HelpRequest

Method = Literal["REQUEST", "CANCEL"]
Span = tuple[datetime, datetime]


@dataclass(frozen=True)
class Invite:
    """One iTIP message about one meeting: what every backend is given.

    ``only_specialist``: the CANCEL that takes the meeting out of the calendar of the
    specialist who held it, after it was handed over to another; it is addressed to them
    alone, and is not the meeting's own state (which the REQUEST to the others carries).
    """

    meeting: Meeting
    request: HelpRequest
    center: Center
    sequence: int
    method: Method
    ics: bytes
    email: Message
    only_specialist: bool = False


def parsed_email(message: Message) -> EmailMessage:
    """The email as a receiver reads it: its bytes parsed back with ``email.policy.default``,
    for a backend that needs its parts or addresses (the invite email is built with
    ``compat32``, which has neither ``get_body`` nor address headers)."""
    parsed = email.message_from_bytes(message.as_bytes(), policy=default)
    assert isinstance(parsed, EmailMessage)  # what policy.default's message factory makes
    return parsed


def email_body(message: Message, subtype: str) -> str:
    """The text of the email's ``text/<subtype>`` body ("" if it has none), decoded."""
    part = parsed_email(message).get_body(preferencelist=(subtype,))
    return "" if part is None else str(part.get_content())


@dataclass(frozen=True)
class DeliveryReceipt:
    """Where the invite went; ``join_url`` when the backend made the online meeting (Teams)."""

    location: str
    join_url: str | None = None
    external_id: str | None = None


class DeliveryFailed(RuntimeError):
    """The backend did not take the invite. ``transient``: worth retrying later."""

    def __init__(self, backend: str, message: str, *, transient: bool) -> None:
        super().__init__(f"{backend}: {message}")
        self.backend = backend
        self.transient = transient


class InviteDelivery(Protocol):
    """A delivery backend.

    ``tells_removed_attendees``: True when the backend keeps the meeting in the organizer's
    calendar and its server tells an attendee removed by an update (Exchange, through EWS or
    Graph); False when a removed specialist must be sent a CANCEL of their own
    (:attr:`Invite.only_specialist`), because the backend sends email or writes each
    attendee's calendar.
    """

    name: str
    tells_removed_attendees: bool

    def send(self, invite: Invite) -> DeliveryReceipt:
        """Deliver idempotently; raise DeliveryFailed (transient or not) when it cannot."""


@runtime_checkable
class BusyCalendar(Protocol):
    """Read access to people's calendars: their busy spans, so booking avoids them."""

    def busy(self, emails: Iterable[str], start: datetime,
             end: datetime) -> Mapping[str, list[Span]]:
        """Busy spans (UTC, sorted, merged) per email address within [start, end)."""


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Sorted, non-overlapping union of spans (touching spans are merged)."""
    merged: list[Span] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged
