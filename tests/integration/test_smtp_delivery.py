"""SMTP delivery against a real SMTP server (aiosmtpd): what arrives, and how refusals map."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from icalendar import Calendar

from scheduler.delivery import DeliveryFailed
from scheduler.delivery_settings import DeliverySettingsInvalid
from scheduler.smtp_delivery import SmtpDelivery
from tests.integration.delivery_servers import (
    SMTP_PASSWORD,
    SMTP_USER,
    SPECIALIST,
    MailSink,
    TlsFiles,
    free_port,
    make_invite,
    make_tls_files,
    running_mail_sink,
    running_submission_server,
)

ATTENDEES = {"requester@contoso.example", "partner@fabrikam.example", SPECIALIST}
ORGANIZER = "fasttrack.taipei@example.com"


@pytest.fixture
def smtp_sink() -> Iterator[MailSink]:
    with running_mail_sink() as sink:
        yield sink


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def submission_sink(tls_files: TlsFiles) -> Iterator[MailSink]:
    with running_submission_server(tls_files) as sink:
        yield sink


def plain(sink: MailSink, **options: object) -> SmtpDelivery:
    return SmtpDelivery(sink.host, sink.port, starttls=False, timeout=5, **options)  # type: ignore[arg-type]


def test_delivers_the_imip_message_once_to_every_attendee(smtp_sink: MailSink) -> None:
    invite = make_invite()
    receipt = plain(smtp_sink).send(invite)

    (received,) = smtp_sink.received
    assert set(received.recipients) == ATTENDEES
    assert received.sender == ORGANIZER
    message = received.message
    assert message["Message-ID"] == invite.email["Message-ID"] == receipt.external_id
    assert receipt.location == f"smtp://127.0.0.1:{smtp_sink.port}"
    assert message.get_content_type() == "multipart/mixed"
    (alternative,) = [p for p in message.iter_parts()
                      if p.get_content_type() == "multipart/alternative"]
    (part,) = [p for p in alternative.iter_parts() if p.get_content_type() == "text/calendar"]
    assert dict(part["Content-Type"].params) == {"method": "REQUEST", "charset": "UTF-8"}
    ics = part.get_content()
    assert ics.encode() == invite.ics
    (event,) = Calendar.from_ical(ics).events
    (sender,) = message["From"].addresses
    assert str(event["ORGANIZER"]) == f"mailto:{sender.addr_spec}" == f"mailto:{ORGANIZER}"


def test_a_resend_is_the_same_message(smtp_sink: MailSink) -> None:
    backend = plain(smtp_sink)
    backend.send(make_invite(0))
    backend.send(make_invite(0))
    backend.send(make_invite(1))
    first, again, update = smtp_sink.received
    assert again.data == first.data
    assert first.message["Message-ID"] == again.message["Message-ID"]
    assert update.message["Message-ID"] != first.message["Message-ID"]


@pytest.mark.parametrize("where,reply,transient", [
    pytest.param("data", "550 5.7.1 message rejected", False, id="550-on-data-is-permanent"),
    pytest.param("data", "451 4.3.0 try again later", True, id="451-on-data-is-transient"),
    pytest.param("rcpt", "550 5.1.1 no such user", False, id="550-for-everyone-is-permanent"),
    pytest.param("rcpt", "450 4.2.1 mailbox busy", True, id="450-for-everyone-is-transient"),
])
def test_refusals_map_to_transient_or_permanent(smtp_sink: MailSink, where: str, reply: str,
                                                transient: bool) -> None:
    if where == "data":
        smtp_sink.data_reply = reply
    else:
        smtp_sink.rcpt_replies = dict.fromkeys(ATTENDEES, reply)
    with pytest.raises(DeliveryFailed) as failed:
        plain(smtp_sink).send(make_invite())
    assert failed.value.transient is transient
    assert failed.value.backend == "smtp" and reply[:3] in str(failed.value)
    assert smtp_sink.received == []


@pytest.mark.parametrize("reply,transient", [
    pytest.param("550 5.1.1 no such user", False, id="permanent"),
    pytest.param("452 4.2.2 mailbox full", True, id="transient"),
])
def test_one_refused_recipient_fails_the_delivery_after_the_others_got_it(
        smtp_sink: MailSink, reply: str, transient: bool) -> None:
    smtp_sink.rcpt_replies = {SPECIALIST: reply}
    with pytest.raises(DeliveryFailed, match=SPECIALIST) as failed:
        plain(smtp_sink).send(make_invite())
    assert failed.value.transient is transient
    (received,) = smtp_sink.received
    assert set(received.recipients) == ATTENDEES - {SPECIALIST}


def test_a_refused_connection_is_transient() -> None:
    with pytest.raises(DeliveryFailed, match="unreachable") as failed:
        SmtpDelivery("127.0.0.1", free_port(), starttls=False, timeout=5).send(make_invite())
    assert failed.value.transient is True


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never says a word."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def test_a_server_that_does_not_answer_times_out_as_transient(silent_server: int) -> None:
    backend = SmtpDelivery("127.0.0.1", silent_server, starttls=False, timeout=0.5)
    with pytest.raises(DeliveryFailed) as failed:
        backend.send(make_invite())
    assert failed.value.transient is True


# -- STARTTLS and authentication ---------------------------------------------------------------


def test_starttls_then_login(submission_sink: MailSink, tls_files: TlsFiles) -> None:
    backend = SmtpDelivery(submission_sink.host, submission_sink.port, starttls=True,
                           username=SMTP_USER, password=SMTP_PASSWORD, timeout=5,
                           tls_context=tls_files.client_context())
    backend.send(make_invite())
    (received,) = submission_sink.received
    assert set(received.recipients) == ATTENDEES


def test_auto_starttls_upgrades_when_offered(submission_sink: MailSink,
                                             tls_files: TlsFiles) -> None:
    backend = SmtpDelivery.from_settings(
        {"host": "127.0.0.1", "port": submission_sink.port, "username": SMTP_USER,
         "password_env": "TAIPEI_SMTP_PASSWORD", "ca_file": str(tls_files.cert), "timeout": 5},
        {"TAIPEI_SMTP_PASSWORD": SMTP_PASSWORD})
    assert backend.starttls == "auto"
    backend.send(make_invite())
    assert len(submission_sink.received) == 1


def test_a_wrong_password_is_permanent(submission_sink: MailSink, tls_files: TlsFiles) -> None:
    backend = SmtpDelivery(submission_sink.host, submission_sink.port, starttls=True,
                           username=SMTP_USER, password="wrong", timeout=5,
                           tls_context=tls_files.client_context())
    with pytest.raises(DeliveryFailed, match="535") as failed:
        backend.send(make_invite())
    assert failed.value.transient is False
    assert submission_sink.received == []


def test_an_untrusted_certificate_is_permanent(submission_sink: MailSink) -> None:
    backend = SmtpDelivery(submission_sink.host, submission_sink.port, starttls=True,
                           username=SMTP_USER, password=SMTP_PASSWORD, timeout=5)
    with pytest.raises(DeliveryFailed, match="CERTIFICATE_VERIFY_FAILED") as failed:
        backend.send(make_invite())
    assert failed.value.transient is False


def test_without_starttls_the_submission_server_refuses(submission_sink: MailSink) -> None:
    with pytest.raises(DeliveryFailed, match="AUTH extension is not supported") as failed:
        plain(submission_sink, username=SMTP_USER, password=SMTP_PASSWORD).send(make_invite())
    assert failed.value.transient is False


# -- settings ----------------------------------------------------------------------------------


def test_settings_name_the_password_variable_never_the_password() -> None:
    with pytest.raises(DeliverySettingsInvalid, match=r"password_env: .*'SMTP_PW' is not set"):
        SmtpDelivery.from_settings({"host": "mail.example.com", "username": "u",
                                    "password_env": "SMTP_PW"}, {})
    with pytest.raises(DeliverySettingsInvalid, match=r"delivery\.host"):
        SmtpDelivery.from_settings({"port": 25}, {})
    with pytest.raises(DeliverySettingsInvalid, match="starttls"):
        SmtpDelivery.from_settings({"host": "h", "starttls": "sometimes"}, {})


@pytest.mark.parametrize("settings,port,starttls", [
    pytest.param({"host": "h"}, 25, "auto", id="relay"),
    pytest.param({"host": "h", "starttls": True}, 587, True, id="submission"),
    pytest.param({"host": "h", "tls": True}, 465, False, id="implicit-tls"),
    pytest.param({"host": "h", "port": 2525, "starttls": False}, 2525, False, id="explicit"),
])
def test_default_ports(settings: dict[str, object], port: int, starttls: object) -> None:
    backend = SmtpDelivery.from_settings(settings, {})
    assert (backend.port, backend.starttls) == (port, starttls)
