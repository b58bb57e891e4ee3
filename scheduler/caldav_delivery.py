"""CalDAV delivery (RFC 4791): the meeting as an event in the specialist's own calendar.

The event is stored under its UID (``<uid>.ics``) in the calendar that
``calendar_path_template`` names for the specialist's email, created when missing. What is
stored is the invite without METHOD: RFC 4791 §4.1 forbids METHOD in a calendar object resource.

Which version wins. The stored object keeps the highest (SEQUENCE, cancelled) seen, exactly as
the file outbox does: a REQUEST or CANCEL replaces it only when it is later; the same message
again, or an older one arriving late, changes nothing. A CANCEL is stored as the event with
STATUS:CANCELLED rather than deleted, so the record of the highest SEQUENCE survives and a late
REQUEST cannot bring a cancelled meeting back; calendar clients show it as cancelled and
free-busy ignores it. Concurrent writers are kept apart by ``If-None-Match``/``If-Match``.

The backend also reads calendars (:class:`~scheduler.delivery.BusyCalendar`): a time-range
REPORT over each specialist's calendar, recurrences expanded by the client library.
"""

from __future__ import annotations

from collections.abc import Coroutine, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from caldav.collection import Calendar as DavCalendar
from caldav.collection import CalendarSet
from caldav.davclient import DAVClient
from caldav.elements import dav
from caldav.lib import error as dav_error
from icalendar import Calendar
from icalendar import Event as VEvent

from scheduler.delivery import DeliveryFailed, DeliveryReceipt, Invite, Span, merge_spans
from scheduler.delivery_settings import BackendSettings, parse_settings, secret_from

DEFAULT_CALENDAR_PATH = "/{email}/calendar/"
_TRANSIENT_STATUSES = {408, 412, 423, 425, 429}
_T = TypeVar("_T")


class CalendarUnavailable(DeliveryFailed):
    """A calendar could not be read (busy times); ``transient`` as for a delivery."""


class CalDavSettings(BackendSettings):
    """A center's ``delivery`` entry for ``backend: caldav``."""

    url: str
    username: str | None = None
    password_env: str | None = None
    calendar_path_template: str = DEFAULT_CALENDAR_PATH
    timeout: int = 30
    ca_file: str | None = None
    auth_type: Literal["basic", "digest"] | None = None


class CalDavDelivery:
    """Puts invites into specialists' calendars on one CalDAV server, and reads their busy times."""

    name = "caldav"
    tells_removed_attendees = False

    def __init__(self, url: str, username: str | None = None, password: str | None = None, *,
                 calendar_path_template: str = DEFAULT_CALENDAR_PATH, timeout: int = 30,
                 verify: bool | str = True, auth_type: str | None = None) -> None:
        """``calendar_path_template``: the calendar of the specialist whose address replaces
        ``{email}``, relative to ``url``. ``verify``: False, or a CA bundle path, for TLS.
        ``auth_type``: "basic" or "digest" sends credentials at once; None learns the scheme
        from a 401 first, one more round trip per operation (Radicale delays every 401)."""
        if "{email}" not in calendar_path_template or not calendar_path_template.endswith("/"):
            raise ValueError(f"calendar_path_template {calendar_path_template!r} must contain "
                             "{email} and end with '/'")
        self.url = url
        self.username = username
        self.password = password
        self.calendar_path_template = calendar_path_template
        self.timeout = timeout
        self.verify = verify
        self.auth_type = auth_type

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any],
                      env: Mapping[str, str] | None = None) -> CalDavDelivery:
        """Build from a center's ``delivery`` settings (keys as in :class:`CalDavSettings`);
        ``password_env`` names the variable in ``env`` that holds the password."""
        parsed = parse_settings(CalDavSettings, settings, cls.name)
        password = secret_from(env or {}, parsed.password_env, cls.name, "password_env")
        return cls(parsed.url, parsed.username, password,
                   calendar_path_template=parsed.calendar_path_template,
                   timeout=parsed.timeout, verify=parsed.ca_file or True,
                   auth_type=parsed.auth_type)

    def calendar_path(self, email: str) -> str:
        return self.calendar_path_template.format(email=quote(email, safe="+"))

    def send(self, invite: Invite) -> DeliveryReceipt:
        """Create or update the event in the specialist's calendar, unless it holds this
        version of the meeting or a later one. The receipt names the object's URL."""
        email = _specialist_email(invite)
        stored = _without_method(invite.ics)
        incoming = (invite.sequence, invite.method == "CANCEL")
        with self._client("send", DeliveryFailed) as client:
            calendar = self._calendar(client, email)
            try:
                existing = _sync(calendar.get_event_by_uid(invite.meeting.uid))
            except dav_error.NotFoundError:
                created = _sync(calendar.add_event(stored.decode(), no_overwrite=True,
                                                   increase_seqno=False))
                return DeliveryReceipt(location=str(created.url), external_id=invite.meeting.uid)
            if _version(existing.icalendar_component) < incoming:
                existing.data = stored.decode()
                existing.save(increase_seqno=False)
            return DeliveryReceipt(location=str(existing.url), external_id=invite.meeting.uid)

    def busy(self, emails: Iterable[str], start: datetime,
             end: datetime) -> Mapping[str, list[Span]]:
        """Busy spans (UTC, merged, clipped to [start, end)) per specialist email, from the
        events in their calendar; cancelled and transparent events do not count. A specialist
        without a calendar is free. Floating times and all-day dates are read as UTC."""
        start, end = _utc(start), _utc(end)
        busy: dict[str, list[Span]] = {}
        with self._client("busy", CalendarUnavailable) as client:
            for email in emails:
                calendar = client.calendar(url=self.calendar_path(email))
                try:
                    found = calendar.search(start=start, end=end, event=True, expand=True)
                except dav_error.NotFoundError:
                    found = []
                spans = [span for event in found
                         for component in event.icalendar_instance.walk("VEVENT")
                         if (span := _busy_span(component, start, end)) is not None]
                busy[email] = merge_spans(spans)
        return busy

    @contextmanager
    def _client(self, action: str, failure: type[DeliveryFailed]) -> Iterator[DAVClient]:
        """A client for one operation; library and network errors become ``failure``."""
        try:
            with DAVClient(url=self.url, username=self.username, password=self.password,
                                  auth_type=self.auth_type, timeout=self.timeout,
                                  ssl_verify_cert=self.verify) as client:
                yield client
        except dav_error.DAVError as exc:
            status = exc.status
            transient = status is None or status >= 500 or status in _TRANSIENT_STATUSES
            raise failure(self.name, f"{action} at {self.url}: {exc} (HTTP {status})",
                          transient=transient) from exc
        except OSError as exc:  # refused, timed out, TLS: niquests' errors are OSErrors
            raise failure(self.name, f"{action} at {self.url}: {exc}", transient=True) from exc

    def _calendar(self, client: DAVClient, email: str) -> DavCalendar:
        """The specialist's calendar, made (with its parent collection) when missing."""
        path = self.calendar_path(email)
        calendar = client.calendar(url=path)
        try:
            calendar.get_properties([dav.ResourceType()])
            return calendar
        except dav_error.NotFoundError:
            pass
        home, _, name = path.rstrip("/").rpartition("/")
        parent = CalendarSet(client=client, url=home + "/")
        try:
            return _sync(DavCalendar(client=client, parent=parent, id=name).save())
        except dav_error.MkcalendarError as exc:
            if exc.status != 409:  # 409: the parent collection does not exist yet
                raise
        client.mkcol(str(client.url.join(home + "/")), "")
        return _sync(DavCalendar(client=client, parent=parent, id=name).save())


def _sync(result: _T | Coroutine[Any, Any, _T]) -> _T:
    """caldav answers with coroutines for its async client only; ours is the sync one."""
    assert not isinstance(result, Coroutine), "caldav returned a coroutine to a sync client"
    return result


def _specialist_email(invite: Invite) -> str:
    for specialist in invite.center.specialists:
        if specialist.id == invite.meeting.specialist_id:
            return str(specialist.email)
    raise DeliveryFailed("caldav", f"specialist {invite.meeting.specialist_id!r} does not work "
                         f"at center {invite.center.id!r}", transient=False)


def _without_method(ics: bytes) -> bytes:
    calendar = Calendar.from_ical(ics)
    calendar.pop("METHOD", None)
    return bytes(calendar.to_ical())


def _version(event: VEvent) -> tuple[int, bool]:
    """(SEQUENCE, cancelled): the order in which versions of one meeting replace each other."""
    return int(event.get("SEQUENCE", 0)), str(event.get("STATUS", "")).upper() == "CANCELLED"


def _busy_span(event: VEvent, start: datetime, end: datetime) -> Span | None:
    if str(event.get("STATUS", "")).upper() == "CANCELLED":
        return None
    if str(event.get("TRANSP", "OPAQUE")).upper() == "TRANSPARENT":
        return None
    begins, ends = max(_utc(event.start), start), min(_utc(event.end), end)
    return (begins, ends) if begins < ends else None


def _utc(moment: date | datetime) -> datetime:
    if not isinstance(moment, datetime):
        return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
