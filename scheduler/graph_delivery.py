"""Microsoft Graph delivery (Exchange Online, Teams links): the organizer's calendar sends invites.

One Graph event per meeting UID, in the center mailbox's calendar, created with a Teams meeting.
The event carries two extended properties of ours: the iTIP UID (to find it again with the
documented ``singleValueExtendedProperties/Any(...)`` filter: Graph assigns its own read-only
``iCalUId``, and ``transactionId`` is not documented as filterable) and the SEQUENCE it shows
(so a resend or an older change is a no-op). ``transactionId`` is derived from the UID, so even
a create retried before the first one is searchable is deduplicated by Graph. Exchange sends the
invitations, updates and cancellations; attendees' calendars see Exchange's ``iCalUId``, not ours.

Times go out in the center's zone under its Windows name (the zone set every Graph method
accepts; Graph's extra IANA names are documented as possibly unsupported by create and update),
or in UTC when Windows has no name for it. Free/busy: ``busy``, ``oof`` and ``tentative`` block
a slot (a tentative meeting may well take place); ``free``, ``workingElsewhere`` and ``unknown``
do not.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from email.message import Message
from typing import Annotated, Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from icalendar import Calendar
from pydantic import Field
from tzlocal.windows_tz import tz_win, win_tz

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

GRAPH_URL = "https://graph.microsoft.com/v1.0"
LOGIN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
SCOPE = "https://graph.microsoft.com/.default"
_PROPERTY_SET = "{8f0e3c52-6b1d-4c1e-9a51-3f6c2b7d4e10}"
UID_PROPERTY = f"String {_PROPERTY_SET} Name FastTrackUid"
SEQUENCE_PROPERTY = f"Integer {_PROPERTY_SET} Name FastTrackSequence"
_TRANSACTION_NAMESPACE = uuid.UUID("5b0c8f6e-2f43-4a8e-9d0b-7c1e6a3f9b24")
BLOCKING_STATUSES = frozenset({"busy", "oof", "tentative"})
_TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class GraphSettingsInvalid(DeliverySettingsInvalid):
    """A center's ``delivery`` settings for Graph are incomplete; the message names the key."""


class GraphSettings(BackendSettings):
    """A center's ``delivery`` entry for ``backend: graph``."""

    tenant_id: Annotated[str, Field(min_length=1)]
    client_id: Annotated[str, Field(min_length=1)]
    client_secret_env: Annotated[str, Field(min_length=1)]
    base_url: Annotated[str, Field(min_length=1)] = GRAPH_URL
    token_url: Annotated[str, Field(min_length=1)] | None = None


class GraphThrottled(DeliveryFailed):
    """Graph said 429/503/504; ``retry_after`` seconds when it said how long to wait."""

    def __init__(self, message: str, retry_after: float | None) -> None:
        super().__init__("graph", message, transient=True)
        self.retry_after = retry_after


class GraphDelivery:
    """Invites as Graph events in ``organizer``'s calendar (application permission
    Calendars.ReadWrite); free/busy via getSchedule."""

    name = "graph"
    tells_removed_attendees = True

    def __init__(self, tenant_id: str, client_id: str, client_secret: str, *, organizer: str,
                 base_url: str = GRAPH_URL, token_url: str | None = None,
                 http: httpx.Client | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.organizer = organizer
        self.base_url = base_url.rstrip("/")
        self.token_url = token_url or LOGIN_URL.format(tenant=quote(tenant_id, safe=""))
        self._credentials = {"client_id": client_id, "client_secret": client_secret,
                             "scope": SCOPE, "grant_type": "client_credentials"}
        self._http = http or httpx.Client(timeout=30.0)
        self._clock = clock
        self._token: tuple[str, float] | None = None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], env: Mapping[str, str], *,
                      organizer: str, http: httpx.Client | None = None) -> GraphDelivery:
        """From a center's ``delivery`` settings: ``tenant_id``, ``client_id``,
        ``client_secret_env`` (the NAME of the variable holding the secret), optional
        ``base_url`` and ``token_url``. Graph makes each meeting's Teams link, so a
        ``join_url_template`` here is an error rather than a link no invite would carry."""
        if "join_url_template" in settings:
            raise GraphSettingsInvalid(f"{cls.name}: delivery.join_url_template: Graph makes "
                                       "the Teams link of each meeting; remove the template")
        parsed = parse_settings(GraphSettings, settings, cls.name, invalid=GraphSettingsInvalid)
        secret = secret_from(env, parsed.client_secret_env, cls.name, "client_secret_env",
                             invalid=GraphSettingsInvalid)
        assert secret is not None  # client_secret_env is required
        return cls(parsed.tenant_id, parsed.client_id, secret, organizer=organizer,
                   base_url=parsed.base_url, token_url=parsed.token_url, http=http)

    # -- the delivery port ----------------------------------------------------------------------

    def send(self, invite: Invite) -> DeliveryReceipt:
        """Create, update or cancel the meeting's event; idempotent per (UID, SEQUENCE, METHOD)."""
        if invite.only_specialist:
            raise DeliveryFailed(self.name, "Exchange tells an attendee an update removed; a "
                                 "CANCEL to the specialist alone does not go through it",
                                 transient=False)
        if invite.center.mailbox.lower() != self.organizer.lower():
            raise DeliveryFailed(self.name, f"invite is organized by {invite.center.mailbox}, "
                                 f"this backend sends as {self.organizer}", transient=False)
        event = self._find(invite.meeting.uid)
        if invite.method == "CANCEL":
            if event is not None and not event.get("isCancelled"):
                self._call("POST", f"{self._event_path(event)}/cancel",
                           json={"Comment": _plain_body(invite.email)})
            return DeliveryReceipt(location=self._location(event),
                                   external_id=event["id"] if event else None)
        if event is None:
            event = self._call("POST", f"{self._user}/calendar/events",
                               json=event_body(invite, create=True)).json()
            if not _join_url(event):
                event = self._call("GET", self._event_path(event),
                                   params={"$select": "id,onlineMeeting"}).json()
        elif _sequence(event) < invite.sequence:
            changed = self._call("PATCH", self._event_path(event),
                                 json=event_body(invite, create=False)).json()
            event = {**event, **changed}
        return DeliveryReceipt(location=self._location(event), join_url=_join_url(event),
                               external_id=event["id"])

    # -- the busy-calendar port -----------------------------------------------------------------

    def busy(self, emails: Iterable[str], start: datetime,
             end: datetime) -> dict[str, list[Span]]:
        """Busy spans per address from getSchedule, in UTC, clamped to [start, end)."""
        schedules = list(emails)
        if not schedules:
            return {}
        answer = self._call("POST", f"{self._user}/calendar/getSchedule", json={
            "schedules": schedules, "availabilityViewInterval": 15,
            "startTime": _utc_wall(start), "endTime": _utc_wall(end),
        }, headers={"Prefer": 'outlook.timezone="UTC"'}).json()
        found: dict[str, list[Span]] = {email.lower(): [] for email in schedules}
        for schedule in answer.get("value", []):
            who = str(schedule.get("scheduleId", "")).lower()
            if "error" in schedule:
                error = schedule["error"]
                raise DeliveryFailed(self.name, f"getSchedule {who}: "
                                     f"{error.get('responseCode')}: {error.get('message')}",
                                     transient=False)
            found[who] = [
                (max(span[0], start.astimezone(UTC)), min(span[1], end.astimezone(UTC)))
                for span in map(_span, schedule.get("scheduleItems", []))
                if span[0] < end and span[1] > start and span[2] in BLOCKING_STATUSES]
        return {email: merge_spans(found.get(email.lower(), [])) for email in schedules}

    # -- Graph calls ----------------------------------------------------------------------------

    @property
    def _user(self) -> str:
        return f"/users/{quote(self.organizer, safe='@')}"

    def _event_path(self, event: Mapping[str, Any]) -> str:
        return f"{self._user}/events/{quote(str(event['id']), safe='=-_')}"

    def _location(self, event: Mapping[str, Any] | None) -> str:
        return self.base_url + (self._event_path(event) if event else f"{self._user}/events")

    def _find(self, uid: str) -> dict[str, Any] | None:
        """The event we made for this UID, with the SEQUENCE it shows; None when there is none."""
        value = uid.replace("'", "''")
        events = self._call("GET", f"{self._user}/events", params={
            "$filter": f"singleValueExtendedProperties/Any(ep: ep/id eq '{UID_PROPERTY}' "
                       f"and ep/value eq '{value}')",
            "$select": "id,isCancelled,onlineMeeting",
            "$expand": f"singleValueExtendedProperties($filter=id eq '{SEQUENCE_PROPERTY}')",
        }).json().get("value", [])
        return events[0] if events else None

    def _call(self, method: str, path: str, *, headers: Mapping[str, str] | None = None,
              **kwargs: Any) -> httpx.Response:
        """One Graph request; a 401 refreshes the token and tries once more."""
        for attempt in (1, 2):
            sent = {**(headers or {}), "Authorization": f"Bearer {self._bearer()}"}
            try:
                response = self._http.request(method, self.base_url + path, headers=sent,
                                              **kwargs)
            except httpx.TransportError as exc:
                raise DeliveryFailed(self.name, f"{method} {path}: {exc!r}",
                                     transient=True) from exc
            if response.status_code == 401 and attempt == 1:
                self._token = None
                continue
            if not response.is_success:
                raise _failure(f"{method} {path}", response)
            return response
        raise AssertionError("unreachable")

    def _bearer(self) -> str:
        if self._token and self._clock() < self._token[1]:
            return self._token[0]
        try:
            response = self._http.post(self.token_url, data=self._credentials)
        except httpx.TransportError as exc:
            raise DeliveryFailed(self.name, f"token: {exc!r}", transient=True) from exc
        if not response.is_success:
            raise _failure("token", response)
        token = response.json()
        self._token = (token["access_token"],
                       self._clock() + max(float(token.get("expires_in", 0)) - 300, 0))
        return self._token[0]


def event_body(invite: Invite, *, create: bool) -> dict[str, Any]:
    """The Graph event for an invite: wording in the requester's language, times in the center's
    zone, every ATTENDEE required; on create also the Teams meeting and the idempotency keys."""
    event = Calendar.from_ical(invite.ics).events[0]
    zone_name = tz_win.get(invite.center.timezone)
    zone = invite.center.zone if zone_name else UTC
    body: dict[str, Any] = {
        "subject": str(event["SUMMARY"]),
        "body": {"contentType": "HTML", "content": _html_body(invite.email)},
        "start": _wall(invite.meeting.start, zone, zone_name or "UTC"),
        "end": _wall(invite.meeting.end, zone, zone_name or "UTC"),
        "attendees": [
            {"emailAddress": {"address": str(who).removeprefix("mailto:"),
                              "name": str(who.params.get("CN", ""))}, "type": "required"}
            for who in _as_list(event.get("ATTENDEE"))],
        "singleValueExtendedProperties": [
            {"id": SEQUENCE_PROPERTY, "value": str(invite.sequence)}],
    }
    if create:
        body["singleValueExtendedProperties"].append(
            {"id": UID_PROPERTY, "value": invite.meeting.uid})
        body |= {"isOnlineMeeting": True, "onlineMeetingProvider": "teamsForBusiness",
                 "allowNewTimeProposals": False, "transactionId": transaction_id(invite)}
    return body


def transaction_id(invite: Invite) -> str:
    """Graph's create idempotency key: the same for every attempt at one meeting."""
    return str(uuid.uuid5(_TRANSACTION_NAMESPACE, invite.meeting.uid))


def _failure(what: str, response: httpx.Response) -> DeliveryFailed:
    try:
        error = response.json().get("error", {})
        detail = f"{error.get('code')}: {error.get('message')}"
    except ValueError:
        detail = response.text[:200]
    message = f"{what}: HTTP {response.status_code} {detail}"
    if response.status_code in _TRANSIENT_STATUSES:
        retry_after = response.headers.get("Retry-After")
        seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
        if seconds is not None:
            message += f" (retry after {seconds:g} s)"
        return GraphThrottled(message, seconds)
    return DeliveryFailed("graph", message, transient=False)


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else value if isinstance(value, list) else [value]


def _sequence(event: Mapping[str, Any]) -> int:
    for prop in event.get("singleValueExtendedProperties", []):
        if prop.get("id", "").lower() == SEQUENCE_PROPERTY.lower():
            return int(prop["value"])
    return -1


def _join_url(event: Mapping[str, Any]) -> str | None:
    return (event.get("onlineMeeting") or {}).get("joinUrl")


def _wall(moment: datetime, zone: ZoneInfo | Any, zone_name: str) -> dict[str, str]:
    return {"dateTime": moment.astimezone(zone).replace(tzinfo=None).isoformat(),
            "timeZone": zone_name}


def _utc_wall(moment: datetime) -> dict[str, str]:
    return _wall(moment, UTC, "UTC")


def _span(item: Mapping[str, Any]) -> tuple[datetime, datetime, str]:
    def utc(value: Mapping[str, str]) -> datetime:
        return datetime.fromisoformat(value["dateTime"]).replace(
            tzinfo=_zone(value.get("timeZone", "UTC"))).astimezone(UTC)

    return utc(item["start"]), utc(item["end"]), str(item.get("status", "busy"))


def _zone(name: str) -> Any:
    """Graph answers in UTC when asked, but may name a Windows or an IANA zone."""
    if name.upper() in ("UTC", "ETC/UTC"):
        return UTC
    try:
        return ZoneInfo(win_tz.get(name, name))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise DeliveryFailed("graph", f"unknown time zone {name!r} in a Graph answer",
                             transient=False) from exc


def _html_body(message: Message) -> str:
    return email_body(message, "html")


def _plain_body(message: Message) -> str:
    return email_body(message, "plain").strip()
