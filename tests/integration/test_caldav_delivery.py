"""CalDAV delivery against a real CalDAV server (Radicale): the specialist's calendar holds the
latest version of each meeting, once, and their own events block booking."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from caldav.davclient import DAVClient
from icalendar import Calendar, Event

from scheduler.caldav_delivery import CalDavDelivery, CalendarUnavailable
from scheduler.delivery import DeliveryFailed
from scheduler.delivery_settings import DeliverySettingsInvalid
from tests.integration.delivery_servers import (
    NOW,
    SERVICE_PASSWORD,
    SERVICE_USER,
    SPECIALIST,
    SPECIALIST_PASSWORD,
    START,
    Radicale,
    free_port,
    make_invite,
    running_radicale,
)

UID = "8d1c4d0e@fasttrack.example.com"


@pytest.fixture(scope="module")
def radicale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Radicale]:
    with running_radicale(tmp_path_factory.mktemp("radicale")) as server:
        yield server


@pytest.fixture
def delivery(radicale: Radicale) -> CalDavDelivery:
    return radicale.delivery()


def specialist_client(radicale: Radicale) -> DAVClient:
    return DAVClient(url=radicale.url, username=SPECIALIST, password=SPECIALIST_PASSWORD)


def stored(radicale: Radicale, delivery: CalDavDelivery) -> list[bytes]:
    """What the specialist's calendar holds, read by the specialist's own client."""
    with specialist_client(radicale) as client:
        calendar = client.calendar(url=delivery.calendar_path(SPECIALIST))
        return [event.data.encode() for event in calendar.get_events()]


def the_event(radicale: Radicale, delivery: CalDavDelivery) -> Event:
    (data,) = stored(radicale, delivery)
    calendar = Calendar.from_ical(data)
    assert "METHOD" not in calendar, "RFC 4791 §4.1: no METHOD in a stored calendar object"
    (event,) = calendar.events
    return event


def test_a_request_creates_the_event_in_the_specialists_calendar(
        radicale: Radicale, delivery: CalDavDelivery) -> None:
    receipt = delivery.send(make_invite(0))
    event = the_event(radicale, delivery)
    assert (str(event["UID"]), event.sequence, event.start) == (UID, 0, START)
    assert event["STATUS"] == "CONFIRMED"
    assert receipt.location.startswith(radicale.url.rstrip("/"))
    assert receipt.location.endswith(".ics") and receipt.external_id == UID


def test_a_later_request_updates_the_event(radicale: Radicale, delivery: CalDavDelivery) -> None:
    delivery.send(make_invite(0))
    delivery.send(make_invite(1, start=START + timedelta(days=1)))
    event = the_event(radicale, delivery)
    assert (event.sequence, event.start) == (1, START + timedelta(days=1))


def test_an_older_request_never_replaces_a_newer_one(radicale: Radicale,
                                                     delivery: CalDavDelivery) -> None:
    delivery.send(make_invite(2, start=START + timedelta(days=2)))
    delivery.send(make_invite(1, start=START + timedelta(days=1)))
    event = the_event(radicale, delivery)
    assert (event.sequence, event.start) == (2, START + timedelta(days=2))


def test_a_cancel_marks_the_event_cancelled_for_good(radicale: Radicale,
                                                     delivery: CalDavDelivery) -> None:
    delivery.send(make_invite(0))
    delivery.send(make_invite(1, "CANCEL"))
    delivery.send(make_invite(1))  # a late REQUEST of the same SEQUENCE does not revive it
    delivery.send(make_invite(0))
    event = the_event(radicale, delivery)
    assert (event["STATUS"], event.sequence) == ("CANCELLED", 1)


def test_a_resend_changes_nothing(radicale: Radicale, delivery: CalDavDelivery) -> None:
    first = delivery.send(make_invite(0))
    before = stored(radicale, delivery)
    again = delivery.send(make_invite(0, now=NOW + timedelta(minutes=5)))  # a new DTSTAMP
    assert stored(radicale, delivery) == before
    assert again == first


def test_a_first_delivery_makes_the_calendar_and_its_home(radicale: Radicale) -> None:
    delivery = CalDavDelivery(radicale.url, SERVICE_USER, SERVICE_PASSWORD,
                              calendar_path_template="/new-{email}/calendar/")
    delivery.send(make_invite(0))
    with specialist_client(radicale) as client:
        calendar = client.calendar(url=delivery.calendar_path(SPECIALIST))
        assert [e.icalendar_component["UID"] for e in calendar.get_events()] == [UID]


# -- busy times ---------------------------------------------------------------------------------


def own_event(radicale: Radicale, delivery: CalDavDelivery, uid: str, start: datetime,
              hours: float = 1, **properties: str) -> None:
    """An event the specialist put in their calendar themselves, with their own client."""
    event = Event()
    event.add("uid", uid)
    event.add("dtstamp", NOW)
    event.add("dtstart", start)
    event.add("dtend", start + timedelta(hours=hours))
    event.add("summary", "Dentist")
    for name, value in properties.items():
        event.add(name, value)
    calendar = Calendar()
    calendar.add("prodid", "-//Specialist//Phone//EN")
    calendar.add("version", "2.0")
    calendar.add_component(event)
    with specialist_client(radicale) as client:
        client.calendar(url=delivery.calendar_path(SPECIALIST)).add_event(
            calendar.to_ical().decode(), increase_seqno=False)


def test_busy_reads_the_specialists_own_events(radicale: Radicale,
                                               delivery: CalDavDelivery) -> None:
    delivery.send(make_invite(0))  # 01:00-02:00 UTC, makes the calendar
    own_event(radicale, delivery, "dentist@phone", START + timedelta(hours=5))
    own_event(radicale, delivery, "lunch@phone", START + timedelta(hours=6), hours=0.5)
    own_event(radicale, delivery, "gone@phone", START + timedelta(hours=8), STATUS="CANCELLED")
    own_event(radicale, delivery, "reminder@phone", START + timedelta(hours=9),
              TRANSP="TRANSPARENT")
    own_event(radicale, delivery, "daily@phone", START + timedelta(hours=10),
              RRULE="FREQ=DAILY;COUNT=3")
    own_event(radicale, delivery, "next-week@phone", START + timedelta(days=7))

    day = START.replace(hour=0)
    busy = delivery.busy([SPECIALIST, "nobody@example.com"], day, day + timedelta(days=2))

    assert busy == {
        SPECIALIST: [
            (START, START + timedelta(hours=1)),
            (START + timedelta(hours=5), START + timedelta(hours=6, minutes=30)),
            (START + timedelta(hours=10), START + timedelta(hours=11)),
            (START + timedelta(days=1, hours=10), START + timedelta(days=1, hours=11)),
        ],
        "nobody@example.com": [],
    }
    assert all(begin.utcoffset() == timedelta(0) for begin, _ in busy[SPECIALIST])


def test_busy_clips_spans_to_the_window_and_skips_cancelled_meetings(
        radicale: Radicale, delivery: CalDavDelivery) -> None:
    delivery.send(make_invite(0, uid="kept@fasttrack.example.com"))
    delivery.send(make_invite(0, uid="dropped@fasttrack.example.com",
                              start=START + timedelta(hours=3)))
    delivery.send(make_invite(1, "CANCEL", uid="dropped@fasttrack.example.com",
                              start=START + timedelta(hours=3)))
    window = (START + timedelta(minutes=30), START + timedelta(hours=5))
    assert delivery.busy([SPECIALIST], *window) == {
        SPECIALIST: [(START + timedelta(minutes=30), START + timedelta(hours=1))]}


# -- failures and settings ----------------------------------------------------------------------


def test_a_wrong_password_is_permanent(radicale: Radicale) -> None:
    delivery = CalDavDelivery(radicale.url, SERVICE_USER, "wrong")
    with pytest.raises(DeliveryFailed, match="401") as failed:
        delivery.send(make_invite(0))
    assert failed.value.transient is False


def test_an_unreachable_server_is_transient() -> None:
    delivery = CalDavDelivery(f"http://127.0.0.1:{free_port()}/", SERVICE_USER, "x", timeout=2)
    with pytest.raises(DeliveryFailed) as failed:
        delivery.send(make_invite(0))
    assert failed.value.transient is True
    with pytest.raises(CalendarUnavailable) as unreadable:
        delivery.busy([SPECIALIST], START, START + timedelta(hours=1))
    assert unreadable.value.transient is True


def test_from_settings_reads_the_password_from_the_named_variable(radicale: Radicale) -> None:
    settings = {"backend": "caldav", "url": radicale.url, "username": SERVICE_USER,
                "password_env": "TAIPEI_CALDAV_PASSWORD",
                "calendar_path_template": "/{email}/from-settings/", "auth_type": "basic"}
    delivery = CalDavDelivery.from_settings(settings, {"TAIPEI_CALDAV_PASSWORD":
                                                       SERVICE_PASSWORD})
    delivery.send(make_invite(0))
    assert str(the_event(radicale, delivery)["UID"]) == UID
    with pytest.raises(DeliverySettingsInvalid, match="TAIPEI_CALDAV_PASSWORD"):
        CalDavDelivery.from_settings(settings, {})
    with pytest.raises(DeliverySettingsInvalid, match=r"delivery\.url"):
        CalDavDelivery.from_settings({"backend": "caldav"}, {})


def test_busy_takes_any_zone_and_answers_in_utc(radicale: Radicale,
                                                delivery: CalDavDelivery) -> None:
    delivery.send(make_invite(0))
    taipei = ZoneInfo("Asia/Taipei")
    (span,) = delivery.busy([SPECIALIST], datetime(2026, 3, 2, 0, 0, tzinfo=taipei),
                            datetime(2026, 3, 3, 0, 0, tzinfo=taipei))[SPECIALIST]
    assert span == (START, START + timedelta(hours=1))
    assert span[0].utcoffset() == span[1].utcoffset() == timedelta(0)
