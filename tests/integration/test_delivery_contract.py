"""The delivery port's contract, run against every backend that can run here.

One body for all: the life of one meeting (invited, the invitation resent, moved, cancelled).
Each backend takes every message, says where it went, and answers a resend as it answered the
first send. What the recipient ends up with is backend-specific, so each backend brings a
function that looks at its own sink.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from caldav.davclient import DAVClient
from icalendar import Calendar

from scheduler.delivery import DeliveryReceipt, InviteDelivery
from scheduler.outbox import OutboxDelivery
from scheduler.smtp_delivery import SmtpDelivery
from tests.integration.delivery_servers import (
    SPECIALIST,
    SPECIALIST_PASSWORD,
    START,
    MailSink,
    Radicale,
    make_invite,
    running_mail_sink,
    running_radicale,
)

UID = "8d1c4d0e@fasttrack.example.com"
MOVED = START + timedelta(days=1)


@dataclass
class Backend:
    delivery: InviteDelivery
    observe: Callable[[], None]
    """Asserts that the recipient ends with the cancellation of the moved meeting."""


def outbox(tmp_path: Path) -> Backend:
    directory = tmp_path / "outbox"

    def observe() -> None:
        ics = (directory / f"{UID}.ics").read_bytes()
        assert b"METHOD:CANCEL\r\n" in ics
        assert Calendar.from_ical(ics).events[0].sequence == 2
        assert (directory / f"{UID}.eml").exists()

    return Backend(OutboxDelivery(directory), observe)


def smtp(sink: MailSink) -> Backend:
    def observe() -> None:
        ids = [received.message["Message-ID"] for received in sink.received]
        assert len(ids) == 4 and ids[0] == ids[1] and len(set(ids)) == 3
        methods = [part.get_param("method") for received in sink.received
                   for part in received.message.walk()
                   if part.get_content_type() == "text/calendar"]
        assert methods == ["REQUEST", "REQUEST", "REQUEST", "CANCEL"]

    return Backend(SmtpDelivery(sink.host, sink.port, starttls=False, timeout=5), observe)


def caldav(radicale: Radicale) -> Backend:
    delivery = radicale.delivery()

    def observe() -> None:
        with DAVClient(url=radicale.url, username=SPECIALIST,
                       password=SPECIALIST_PASSWORD) as client:
            calendar = client.calendar(url=delivery.calendar_path(SPECIALIST))
            (stored,) = [event.icalendar_component for event in calendar.get_events()]
        assert (stored["STATUS"], stored.sequence, stored.start) == ("CANCELLED", 2, MOVED)

    return Backend(delivery, observe)


@pytest.fixture(scope="module")
def radicale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Radicale]:
    with running_radicale(tmp_path_factory.mktemp("radicale")) as server:
        yield server


@pytest.fixture(params=["outbox", "smtp", "caldav"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "outbox":
        yield outbox(tmp_path)
    elif request.param == "smtp":
        with running_mail_sink() as sink:
            yield smtp(sink)
    else:
        yield caldav(request.getfixturevalue("radicale"))


def test_the_life_of_one_meeting(backend: Backend) -> None:
    invited = backend.delivery.send(make_invite(0))
    resent = backend.delivery.send(make_invite(0))
    moved = backend.delivery.send(make_invite(1, start=MOVED))
    cancelled = backend.delivery.send(make_invite(2, "CANCEL", start=MOVED))

    for receipt in (invited, resent, moved, cancelled):
        assert isinstance(receipt, DeliveryReceipt) and receipt.location
    assert resent == invited
    backend.observe()


def test_the_name_is_the_directory_backend_name(backend: Backend,
                                                request: pytest.FixtureRequest) -> None:
    assert backend.delivery.name == request.node.callspec.params["backend"]
