"""Real servers for the delivery backends: an aiosmtpd mail sink and a Radicale CalDAV server.

Context managers, so each test module declares the fixtures (and scopes) it needs in a few lines.
``make_invite`` builds the invite every backend is given, with the real renderers.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scheduler.caldav_delivery import CalDavDelivery
from scheduler.delivery import Invite, Method
from scheduler.directory import Center
from scheduler.invites import build_imip_message, build_invite
from schemas.events import Meeting
from schemas.help_request import HelpRequest

NOW = datetime(2026, 2, 27, 8, 30, tzinfo=UTC)
START = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)
SPECIALIST = "mei.lin@example.com"
SERVICE_USER, SERVICE_PASSWORD = "fasttrack", "service-secret"
SPECIALIST_PASSWORD = "specialist-secret"

# -- the invite ---------------------------------------------------------------------------------


def make_center(specialist_email: str = SPECIALIST, **delivery: Any) -> Center:
    return Center.model_validate({
        "id": "taipei", "name": "FastTrack Center Taipei", "region": "APAC",
        "timezone": "Asia/Taipei", "country": "TW", "languages": ["zh-Hant", "en"],
        "hours": {"mon": ["09:00-12:00", "13:00-18:00"]},
        "mailbox": "fasttrack.taipei@example.com", "delivery": delivery or {"backend": "outbox"},
        "specialists": [{"id": "tpe-01", "name": "Lin Mei", "email": specialist_email,
                         "languages": ["zh-Hant", "en"]}],
    })


def make_request() -> HelpRequest:
    return HelpRequest.model_validate({
        "request_id": "req-0001", "submitted_at": "2026-02-27T08:00:00Z",
        "source": "partner",
        "tenant": {"id": "tenant-1", "name": "Contoso 股份有限公司", "country": "TW"},
        "requester": {"name": "陳 小明", "email": "requester@contoso.example",
                      "language": "zh-Hant"},
        "partner": {"id": "partner-1", "name": "Fabrikam Partners",
                    "email": "partner@fabrikam.example"},
        "topic": "core_onboarding",
    })


def make_invite(sequence: int = 0, method: Method = "REQUEST", *, uid: str | None = None,
                start: datetime = START, center: Center | None = None,
                now: datetime = NOW) -> Invite:
    """The invite for one meeting as the pipeline builds it; ``start`` moves the meeting."""
    center = center or make_center()
    request = make_request()
    meeting = Meeting(request_id=request.request_id, center_id=center.id,
                      specialist_id=center.specialists[0].id, language="zh-Hant", start=start,
                      end=start + timedelta(hours=1), revision=sequence + 1,
                      uid=uid or "8d1c4d0e@fasttrack.example.com",
                      join_url="https://teams.example.com/l/meetup-join/req-0001")
    ics = build_invite(meeting, request, center, sequence=sequence, method=method, now=now)
    email = build_imip_message(ics, meeting, request, center, method=method, now=now)
    return Invite(meeting, request, center, sequence, method, ics, email)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- SMTP ---------------------------------------------------------------------------------------


@dataclass
class Received:
    sender: str
    recipients: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        parsed = BytesParser(policy=policy.default).parsebytes(self.data)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class MailSink:
    """An aiosmtpd handler that keeps what it accepts; ``rcpt_replies``/``data_reply`` make it
    refuse (e.g. ``"550 5.1.1 no such user"``) instead."""

    received: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    host: str = "127.0.0.1"
    port: int = 0

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope,
                          address: str, rcpt_options: list[str]) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        assert isinstance(envelope.content, bytes) and envelope.mail_from
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                      envelope.content))
        return "250 2.0.0 Message accepted for delivery"


@contextmanager
def running_mail_sink(**smtp_options: Any) -> Iterator[MailSink]:
    """An SMTP server on a free loopback port that stores every message it accepts;
    ``smtp_options`` go to aiosmtpd's SMTP (TLS, authentication)."""
    sink = MailSink(port=free_port())
    controller = Controller(sink, hostname=sink.host, port=sink.port, **smtp_options)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


def make_tls_files(folder: Path) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1, made at test time."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                 x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    files = TlsFiles(folder / "cert.pem", folder / "key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    return files


SMTP_USER, SMTP_PASSWORD = "taipei-relay", "relay-secret"


def _check_login(server: SMTP, session: Session, envelope: Envelope, mechanism: str,
                 auth_data: Any) -> AuthResult:
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == SMTP_USER.encode()
          and auth_data.password == SMTP_PASSWORD.encode())
    return AuthResult(success=ok, handled=False)  # handled=True would mean "I replied"


def running_submission_server(tls_files: TlsFiles) -> AbstractContextManager[MailSink]:
    """A submission server: STARTTLS required, then AUTH (``SMTP_USER``/``SMTP_PASSWORD``)."""
    return running_mail_sink(tls_context=tls_files.server_context(), require_starttls=True,
                             authenticator=_check_login, auth_required=True)


# -- CalDAV -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Radicale:
    url: str

    def delivery(self) -> CalDavDelivery:
        """The service's backend, writing to calendars of its own for each test."""
        return CalDavDelivery(self.url, SERVICE_USER, SERVICE_PASSWORD,
                              calendar_path_template=f"/{{email}}/t{uuid.uuid4().hex[:12]}/")


@contextmanager
def running_radicale(folder: Path) -> Iterator[Radicale]:
    """Radicale in a subprocess on a free loopback port: storage under ``folder``, htpasswd
    (plain) users for the service and the specialist, any user may write any calendar."""
    users = folder / "users"
    users.write_text(f"{SERVICE_USER}:{SERVICE_PASSWORD}\n{SPECIALIST}:{SPECIALIST_PASSWORD}\n")
    port = free_port()
    config = folder / "config"
    config.write_text(f"""\
[server]
hosts = 127.0.0.1:{port}
[auth]
type = htpasswd
htpasswd_filename = {users}
htpasswd_encryption = plain
delay = 0
[rights]
type = authenticated
[storage]
filesystem_folder = {folder / "collections"}
[logging]
level = warning
""")
    log = (folder / "radicale.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "radicale", "--config", str(config)],
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(url, process, folder / "radicale.log")
        yield Radicale(url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait_until_up(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"radicale exited with {process.returncode}: {log.read_text()}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"radicale did not answer on {url} within 30 s: {log.read_text()}")
