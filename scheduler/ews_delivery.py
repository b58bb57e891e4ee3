"""Exchange Web Services delivery (on-premises Exchange only, DESIGN §8) through exchangelib.

The meeting is a calendar item in the center mailbox's calendar with the iTIP UID as its
``UID``, so attendees' calendars match it with the iMIP copies. Two extended properties of ours
find it again (EWS cannot search on ``UID``) and record the SEQUENCE it shows: the same or an
older SEQUENCE again changes nothing. Exchange sends the invitations (SendToAllAndSaveCopy),
the updates and the cancellation. Times are sent in UTC with the center's zone as the item's
zone. Free/busy: ``Busy``, ``OOF`` and ``Tentative`` block a slot; ``Free`` and ``NoData`` do not.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from email.message import Message
from typing import Annotated, Any, Literal

import requests
from exchangelib import (
    DELEGATE,
    NTLM,
    Account,
    Attendee,
    CalendarItem,
    Configuration,
    Credentials,
    EWSTimeZone,
    ExtendedProperty,
    HTMLBody,
    Mailbox,
)
from exchangelib.errors import (
    ErrorConnectionFailedTransientError,
    ErrorInternalServerTransientError,
    ErrorMailboxStoreUnavailable,
    ErrorServerBusy,
    ErrorTimeoutExpired,
    ErrorTooManyObjectsOpened,
    EWSError,
    RateLimitError,
)
from exchangelib.items import SEND_TO_ALL_AND_SAVE_COPY
from exchangelib.version import EXCHANGE_2016, Build, Version
from icalendar import Calendar
from pydantic import Field

from scheduler.delivery import (
    DeliveryFailed,
    DeliveryReceipt,
    Invite,
    Span,
    email_body,
    merge_spans,
)
from scheduler.delivery_settings import (
    BackendSettings,
    DeliverySettingsInvalid,
    parse_settings,
    secret_from,
)

BLOCKING_BUSY_TYPES = frozenset({"Busy", "OOF", "Tentative"})
_TRANSIENT = (ErrorServerBusy, ErrorTimeoutExpired, ErrorTooManyObjectsOpened,
              ErrorMailboxStoreUnavailable, ErrorInternalServerTransientError,
              ErrorConnectionFailedTransientError, RateLimitError,
              requests.ConnectionError, requests.Timeout)
_UPDATED_FIELDS = ["subject", "body", "start", "end", "location", "required_attendees",
                   "fasttrack_sequence"]


class FastTrackUid(ExtendedProperty):
    """The iTIP UID, searchable (the item's own ``UID`` is not)."""

    distinguished_property_set_id = "PublicStrings"
    property_name = "FastTrackUid"
    property_type = "String"


class FastTrackSequence(ExtendedProperty):
    """The SEQUENCE of the last invite the item shows."""

    distinguished_property_set_id = "PublicStrings"
    property_name = "FastTrackSequence"
    property_type = "Integer"


class EwsSettingsInvalid(DeliverySettingsInvalid):
    """A center's ``delivery`` settings for EWS are incomplete; the message names the key."""


class EwsSettings(BackendSettings):
    """A center's ``delivery`` entry for ``backend: ews``."""

    service_endpoint: Annotated[str, Field(min_length=1)]
    username: Annotated[str, Field(min_length=1)]
    password_env: Annotated[str, Field(min_length=1)]
    auth_type: Literal["NTLM", "basic"] = NTLM


def _register_properties() -> None:
    for name, prop in (("fasttrack_uid", FastTrackUid), ("fasttrack_sequence", FastTrackSequence)):
        if name not in CalendarItem.FIELDS:
            CalendarItem.register(name, prop)


class EwsDelivery:
    """Invites as meetings organized by ``organizer`` on an on-premises Exchange server."""

    name = "ews"
    tells_removed_attendees = True

    def __init__(self, service_endpoint: str, username: str, password: str, *, organizer: str,
                 version: Build = EXCHANGE_2016, auth_type: str = NTLM) -> None:
        self.service_endpoint = service_endpoint
        self.organizer = organizer
        self._config = Configuration(
            service_endpoint=service_endpoint, auth_type=auth_type,
            credentials=Credentials(username, password), version=Version(build=version))
        self._account: Account | None = None
        _register_properties()

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], env: Mapping[str, str], *,
                      organizer: str) -> EwsDelivery:
        """From a center's ``delivery`` settings: ``service_endpoint``, ``username``,
        ``password_env`` (the NAME of the variable holding the password), optional
        ``auth_type`` (``NTLM`` or ``basic``)."""
        parsed = parse_settings(EwsSettings, settings, cls.name, invalid=EwsSettingsInvalid)
        password = secret_from(env, parsed.password_env, cls.name, "password_env",
                               invalid=EwsSettingsInvalid)
        assert password is not None  # password_env is required
        return cls(parsed.service_endpoint, parsed.username, password, organizer=organizer,
                   auth_type=parsed.auth_type)

    @property
    def account(self) -> Account:
        if self._account is None:
            self._account = Account(self.organizer, config=self._config, autodiscover=False,
                                    access_type=DELEGATE, default_timezone=EWSTimeZone("UTC"))
        return self._account

    def send(self, invite: Invite) -> DeliveryReceipt:
        """Create, update or cancel the meeting; idempotent per (UID, SEQUENCE, METHOD)."""
        if invite.only_specialist:
            raise DeliveryFailed(self.name, "Exchange tells an attendee an update removed; a "
                                 "CANCEL to the specialist alone does not go through it",
                                 transient=False)
        if invite.center.mailbox.lower() != self.organizer.lower():
            raise DeliveryFailed(self.name, f"invite is organized by {invite.center.mailbox}, "
                                 f"this backend sends as {self.organizer}", transient=False)
        try:
            item = self._find(invite.meeting.uid)
            if invite.method == "CANCEL":
                if item is not None and not item.is_cancelled:
                    item.cancel(new_body=_body(invite.email, "plain"))
            elif item is None:
                item = CalendarItem(account=self.account, folder=self.account.calendar,
                                    uid=invite.meeting.uid, fasttrack_uid=invite.meeting.uid,
                                    legacy_free_busy_status="Busy", **_fields(invite))
                item.save(send_meeting_invitations=SEND_TO_ALL_AND_SAVE_COPY)
            elif (item.fasttrack_sequence or 0) < invite.sequence:
                for name, value in _fields(invite).items():
                    setattr(item, name, value)
                item.save(update_fields=_UPDATED_FIELDS,
                          send_meeting_invitations=SEND_TO_ALL_AND_SAVE_COPY)
        except _TRANSIENT as exc:
            raise DeliveryFailed(self.name, f"{type(exc).__name__}: {exc}",
                                 transient=True) from exc
        except EWSError as exc:
            raise DeliveryFailed(self.name, f"{type(exc).__name__}: {exc}",
                                 transient=False) from exc
        return DeliveryReceipt(location=self.service_endpoint,
                               join_url=invite.meeting.join_url,
                               external_id=item.id if item is not None else None)

    def busy(self, emails: Iterable[str], start: datetime,
             end: datetime) -> dict[str, list[Span]]:
        """Busy spans per address from GetUserAvailability, in UTC, clamped to [start, end)."""
        people = list(emails)
        if not people:
            return {}
        utc = EWSTimeZone("UTC")
        window = [moment.astimezone(utc) for moment in (start, end)]
        try:
            views = list(self.account.protocol.get_free_busy_info(
                accounts=[(email, "Required", False) for email in people],
                start=window[0], end=window[1], requested_view="FreeBusy"))
        except _TRANSIENT as exc:
            raise DeliveryFailed(self.name, f"free/busy: {exc}", transient=True) from exc
        except EWSError as exc:
            raise DeliveryFailed(self.name, f"free/busy: {exc}", transient=False) from exc
        found: dict[str, list[Span]] = {}
        for email, view in zip(people, views, strict=True):
            if isinstance(view, Exception):
                raise DeliveryFailed(self.name, f"free/busy {email}: {view}", transient=False)
            found[email] = merge_spans(
                (max(_utc(e.start), start.astimezone(UTC)), min(_utc(e.end), end.astimezone(UTC)))
                for e in view.calendar_events or []
                if e.busy_type in BLOCKING_BUSY_TYPES and e.start < end and e.end > start)
        return found

    def _find(self, uid: str) -> CalendarItem | None:
        found = self.account.calendar.filter(fasttrack_uid=uid).only(
            "fasttrack_sequence", "is_cancelled")
        return next(iter(found), None)


def _fields(invite: Invite) -> dict[str, Any]:
    """Wording in the requester's language (from the invite), times in the center's zone."""
    event = Calendar.from_ical(invite.ics).events[0]
    zone = EWSTimeZone(invite.center.timezone)
    attendees = event.get("ATTENDEE")
    attendees = attendees if isinstance(attendees, list) else [attendees]
    return {
        "subject": str(event["SUMMARY"]),
        "body": HTMLBody(_body(invite.email, "html")),
        "start": invite.meeting.start.astimezone(zone),
        "end": invite.meeting.end.astimezone(zone),
        "location": invite.meeting.join_url,
        "required_attendees": [
            Attendee(mailbox=Mailbox(email_address=str(who).removeprefix("mailto:"),
                                     name=str(who.params.get("CN", ""))),
                     response_type="Unknown")
            for who in attendees],
        "fasttrack_sequence": invite.sequence,
    }


def _utc(moment: datetime) -> datetime:
    """A plain UTC datetime (EWSDateTime.astimezone only takes EWSTimeZone)."""
    return datetime.fromtimestamp(moment.timestamp(), tz=UTC)


def _body(message: Message, subtype: str) -> str:
    return email_body(message, subtype).strip()
